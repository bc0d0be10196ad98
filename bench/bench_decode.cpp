// Decode throughput of a .pllm archive: weights/s from payload to fp16-exact weights, against a
// plain memcpy of the same number of fp16 bytes (the floor any format pays to materialise weights).
// By default through the methods' payload decoders (what inference from the archive uses: one
// matrix at a time into a reused buffer); --reference times the methods' whole-group decode().
// Run: build/bin/bench_decode ARCHIVE [--threads N] [--reference] [--groups N (the first N only)]
#include "pocket/archive/model_archive.h"
#include "pocket/model/llama_model.h"
#include "pocket/methods/method_registry.h"

#include <algorithm>
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
    bool reference = false;
    std::size_t maxGroups = 0; // 0 = all
    for (int i = 2; i < argc; ++i) {
        if (std::string(argv[i]) == "--threads" && i + 1 < argc)
            threads = std::stoi(argv[i + 1]);
        reference = reference || std::string(argv[i]) == "--reference";
        if (std::string(argv[i]) == "--groups" && i + 1 < argc)
            maxGroups = std::stoul(argv[i + 1]);
    }
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
    std::vector<float> buffer;
    std::size_t groups = (*archive)->manifest().groups.size();
    if (maxGroups > 0)
        groups = std::min(groups, maxGroups);
    for (std::size_t g = 0; g < groups; ++g) {
        auto payload = (*archive)->groupPayload(g);
        auto method = registry.find(payload->methodId);
        if (!payload || !method) {
            std::fprintf(stderr, "cannot decode group %zu\n", g);
            return 1;
        }
        if (reference) {
            const double start = now();
            auto decoded = (*method)->decode(*payload);
            decodeSeconds += now() - start;
            if (!decoded) {
                std::fprintf(stderr, "%s\n", decoded.message().c_str());
                return 1;
            }
            for (const auto& m : *decoded)
                weights += m.size();
            continue;
        }
        auto decoder = (*method)->prepareDecoder(std::move(*payload));
        if (!decoder) {
            std::fprintf(stderr, "%s\n", decoder.message().c_str());
            return 1;
        }
        for (std::size_t m = 0; m < (*decoder)->matrixCount(); ++m) {
            const auto count = static_cast<std::size_t>((*decoder)->matrix(m).weights());
            if (buffer.size() < count)
                buffer.assign(count, 0.0f); // touched once, outside the timing
            const double start = now();
            auto status = (*decoder)->decodeMatrix(m, buffer.data(), threads);
            decodeSeconds += now() - start;
            if (!status) {
                std::fprintf(stderr, "%s\n", status.message().c_str());
                return 1;
            }
            weights += count;
        }
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
    std::printf("%s: decoded %llu weights in %zu group(s) in %.3f s: %.3g weights/s (%d threads)\n",
                reference ? "decode() per group" : "payload decoder per matrix",
                static_cast<unsigned long long>(weights), groups, decodeSeconds,
                static_cast<double>(weights) / decodeSeconds, pocket::computeThreads());
    std::printf("memcpy of the same %llu fp16 bytes: %.3g weights/s; decode is %.3gx of memcpy\n",
                static_cast<unsigned long long>(weights * 2), copyRate, (static_cast<double>(weights) / decodeSeconds) / copyRate);
    return dst[0] == 1 ? 0 : 1;
}
