// The lossless stage's coder measured on real code streams (prints figures; not a test): for each
// archive, every code stream of every group is coded with rans.h and with libzstd (levels 1, the archive's, and 19,
// one byte per symbol, or two above 8 bits), against the streams' empirical entropy. Timings are one
// thread: rANS encode, rANS decode to symbols and to the packed stream, zstd decode.
// Run: build/bin/bench_entropy ARCHIVE...
#include "pocket/archive/model_archive.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/rans.h"

#include <zstd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

using namespace pocket;

namespace {

struct Stream {
    std::vector<std::uint8_t> packed;
    std::vector<std::uint16_t> symbols;
    int bits = 0;
};

double seconds(const std::function<void()>& f, double minSeconds = 0.3)
{
    int reps = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    do {
        f();
        ++reps;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } while (elapsed < minSeconds);
    return elapsed / reps;
}

std::vector<std::uint8_t> symbolBytes(const Stream& s)
{
    std::vector<std::uint8_t> out;
    for (std::uint16_t v : s.symbols) {
        out.push_back(static_cast<std::uint8_t>(v));
        if (s.bits > 8)
            out.push_back(static_cast<std::uint8_t>(v >> 8));
    }
    return out;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: bench_entropy ARCHIVE...\n");
        return 2;
    }
    for (int a = 1; a < argc; ++a) {
        auto archive = Archive::open(argv[a]);
        if (!archive) {
            std::fprintf(stderr, "%s\n", archive.message().c_str());
            return 1;
        }
        std::vector<Stream> streams;
        for (std::size_t g = 0; g < (*archive)->manifest().groups.size(); ++g) {
            auto p = (*archive)->groupPayload(g);
            if (!p) {
                std::fprintf(stderr, "%s\n", p.message().c_str());
                return 1;
            }
            for (PayloadSection& s : p->sections) {
                if (s.symbolBits < 1 || s.symbolBits > rans::kMaxSymbolBits || s.symbols == 0)
                    continue;
                Stream st;
                st.bits = s.symbolBits;
                std::vector<std::int32_t> v(s.symbols);
                unpackBits(s.bytes.data(), s.bytes.size(), static_cast<std::int64_t>(s.symbols), s.symbolBits, v.data());
                st.symbols.assign(v.begin(), v.end());
                st.packed = std::move(s.bytes);
                streams.push_back(std::move(st));
            }
        }
        double symbols = 0, fixedBytes = 0, entropyBytes = 0, ransBytes = 0, zstd1 = 0, zstd19 = 0;
        std::vector<std::vector<std::uint8_t>> coded, z1;
        for (const Stream& s : streams) {
            symbols += static_cast<double>(s.symbols.size());
            fixedBytes += static_cast<double>(s.packed.size());
            entropyBytes += rans::entropyBits(rans::histogram(s.symbols.data(), s.symbols.size(), s.bits)) / 8;
            coded.push_back(rans::encode(s.symbols.data(), s.symbols.size(), s.bits));
            ransBytes += static_cast<double>(coded.back().size());
            const std::vector<std::uint8_t> raw = symbolBytes(s);
            std::vector<std::uint8_t> z(ZSTD_compressBound(raw.size()));
            if (std::getenv("BENCH_ZSTD19")) // slow to encode (1-4 MB/s): on request
                zstd19 += static_cast<double>(ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 19));
            const std::size_t n1 = ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 1);
            zstd1 += static_cast<double>(n1);
            z.resize(n1);
            z1.push_back(std::move(z));
        }
        const double tEncode = seconds([&] {
            for (const Stream& s : streams)
                (void)rans::encode(s.symbols.data(), s.symbols.size(), s.bits);
        });
        std::vector<std::uint16_t> out;
        std::vector<std::uint8_t> packed, raw;
        const double tDecode = seconds([&] {
            for (std::size_t i = 0; i < streams.size(); ++i) {
                out.resize(streams[i].symbols.size());
                (void)rans::decode(coded[i].data(), coded[i].size(), out.size(), streams[i].bits, out.data());
            }
        });
        const double tDecodePacked = seconds([&] {
            for (std::size_t i = 0; i < streams.size(); ++i) {
                packed.resize(streams[i].packed.size());
                (void)rans::decodePacked(coded[i].data(), coded[i].size(), streams[i].symbols.size(), streams[i].bits, packed.data(), packed.size());
            }
        });
        const double tZstdEncode = seconds([&] {
            for (const Stream& st : streams) {
                const std::vector<std::uint8_t> r = symbolBytes(st);
                std::vector<std::uint8_t> z(ZSTD_compressBound(r.size()));
                (void)ZSTD_compress(z.data(), z.size(), r.data(), r.size(), 1);
            }
        });
        const double tZstd = seconds([&] {
            for (std::size_t i = 0; i < streams.size(); ++i) {
                raw.resize(streams[i].symbols.size() * (streams[i].bits > 8 ? 2 : 1));
                (void)ZSTD_decompress(raw.data(), raw.size(), z1[i].data(), z1[i].size());
            }
        });
        std::printf("%s: %zu streams, %.0f codes, fixed width %.1f KiB (%.3f bits/code)\n", argv[a], streams.size(), symbols,
                    fixedBytes / 1024, 8 * fixedBytes / symbols);
        std::printf("  entropy %.1f KiB (%.3f bits/code); rANS %.1f KiB (%.3f, +%.2f%% over entropy, tables included); "
                    "zstd-1 %.1f KiB (%.3f, +%.2f%%)",
                    entropyBytes / 1024, 8 * entropyBytes / symbols, ransBytes / 1024, 8 * ransBytes / symbols,
                    100 * (ransBytes / entropyBytes - 1), zstd1 / 1024, 8 * zstd1 / symbols, 100 * (zstd1 / entropyBytes - 1));
        if (zstd19 > 0)
            std::printf("; zstd-19 %.1f KiB (%.3f)", zstd19 / 1024, 8 * zstd19 / symbols);
        std::printf("\n  one thread: rANS encode %.0f Mcodes/s; decode %.0f Mcodes/s to symbols, %.0f Mcodes/s to the packed stream "
                    "(%.0f MB/s of packed output); zstd-1 encode %.0f Mcodes/s, decode %.0f Mcodes/s (one byte per code)\n",
                    symbols / tEncode / 1e6, symbols / tDecode / 1e6, symbols / tDecodePacked / 1e6, fixedBytes / tDecodePacked / 1e6,
                    symbols / tZstdEncode / 1e6, symbols / tZstd / 1e6);
    }
    return 0;
}
