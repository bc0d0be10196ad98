// Decode throughput of a .pllm archive: weights/s from payload to fp16-exact weights, against a
// plain memcpy of the same number of fp16 bytes (the floor any format pays to materialise weights).
// Run: build/bin/bench_decode ARCHIVE [--threads N]
#include "pocket/archive/model_archive.h"
#include "pocket/model/llama_model.h"
#include "pocket/methods/method_registry.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
double now()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ARCHIVE [--threads N]\n", argv[0]);
        return 2;
    }
    int threads = 0;
    for (int i = 2; i + 1 < argc; ++i)
        if (std::string(argv[i]) == "--threads")
            threads = std::stoi(argv[i + 1]);
    pocket::setComputeThreads(threads);
    pocket::MethodRegistry registry;
    registry.loadDefaultFolders();
    auto archive = pocket::Archive::open(argv[1]);
    if (!archive) {
        std::fprintf(stderr, "%s\n", archive.message().c_str());
        return 1;
    }
    double decodeSeconds = 0;
    std::uint64_t weights = 0;
    for (std::size_t g = 0; g < (*archive)->manifest().groups.size(); ++g) {
        auto payload = (*archive)->groupPayload(g);
        auto method = registry.find(payload->methodId);
        if (!payload || !method) {
            std::fprintf(stderr, "cannot decode group %zu\n", g);
            return 1;
        }
        const double start = now();
        auto decoded = (*method)->decode(*payload);
        decodeSeconds += now() - start;
        if (!decoded) {
            std::fprintf(stderr, "%s\n", decoded.message().c_str());
            return 1;
        }
        for (const auto& m : *decoded)
            weights += m.size();
    }
    // memcpy of the same fp16 bytes, repeated until it takes measurable time.
    std::vector<std::uint8_t> src(weights * 2, 1), dst(weights * 2);
    int repeats = 0;
    const double start = now();
    double copySeconds = 0;
    do {
        std::memcpy(dst.data(), src.data(), src.size());
        ++repeats;
        copySeconds = now() - start;
    } while (copySeconds < 0.2);
    const double copyRate = static_cast<double>(weights) * repeats / copySeconds;
    std::printf("decoded %llu weights in %zu group(s) in %.3f s: %.3g weights/s (%d threads)\n",
                static_cast<unsigned long long>(weights), (*archive)->manifest().groups.size(), decodeSeconds,
                static_cast<double>(weights) / decodeSeconds, pocket::computeThreads());
    std::printf("memcpy of the same %llu fp16 bytes: %.3g weights/s; decode is %.1fx slower\n",
                static_cast<unsigned long long>(weights * 2), copyRate, copyRate / (static_cast<double>(weights) / decodeSeconds));
    return dst[0] == 1 ? 0 : 1;
}
