// Codebook usage of a .pllm archive's groups, for the benchmarks: prints one JSON object per line
// with the group id, method, K, and, where the method recorded them in its metadata (vq,
// pocketllm), the codewords used, the entropy of the index histogram in bits, and training losses.
// Run: build/bin/archive_usage ARCHIVE
#include "pocket/archive/model_archive.h"

#include <nlohmann/json.hpp>

#include <cstdio>

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ARCHIVE\n", argv[0]);
        return 2;
    }
    auto archive = pocket::Archive::open(argv[1]);
    if (!archive) {
        std::fprintf(stderr, "%s\n", archive.message().c_str());
        return 1;
    }
    for (std::size_t g = 0; g < (*archive)->manifest().groups.size(); ++g) {
        auto p = (*archive)->groupPayload(g);
        if (!p) {
            std::fprintf(stderr, "%s\n", p.message().c_str());
            return 1;
        }
        const auto meta = nlohmann::json::parse(p->metaJson, nullptr, false);
        nlohmann::json out{{"group", p->groupId}, {"method", p->methodId}};
        if (meta.is_object())
            for (const char* key : {"K", "d", "used_codewords", "index_entropy_bits", "train_loss_start", "train_loss_end",
                                    "finetune_loss_start", "M", "B", "g", "code_entropy_bits", "objective_rounds", "seconds"})
                if (meta.contains(key))
                    out[key] = meta[key];
        std::printf("%s\n", out.dump().c_str());
    }
    return 0;
}
