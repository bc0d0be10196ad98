#include "pocket/methods/vq_kernels.h"

#include "pocket/io/dtype.h"

#include <algorithm>
#include <exception>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <system_error>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define POCKET_VQ_X86 1
#endif

namespace pocket {

namespace {

struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

// 64-byte alignment lets every kernel use aligned loads: rows are padded to 16 floats.
AlignedFloats allocFloats(std::size_t count)
{
    const std::size_t bytes = std::max<std::size_t>(64, (count * sizeof(float) + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, bytes);
    if (!p)
        throw std::bad_alloc();
    return AlignedFloats(static_cast<float*>(p));
}

constexpr std::int64_t kPad = 16; // multiple of every Vec::W

// The codebook as the kernels read it: centred on its mean (so the expanded form |c|^2 - 2 z.c
// loses less to cancellation when the data sits away from the origin), with -2 folded into the
// coordinates (exact), in panels of kPad codewords: kPad norms, then kPad first coordinates, and
// so on. Within a panel the SIMD loads are structure-of-arrays; panels follow each other, so the
// search reads one sequential stream (one row per coordinate would put every row in the same L1
// set). The count is padded to a whole panel with codewords of norm +inf, so every codeword goes
// through the same SIMD lanes (identical codewords get identical scores).
struct Codebook {
    int dim = 0;
    std::int64_t stride = 0;     // padded codeword count
    std::int64_t block = 0;      // codewords between checks of the running minimum
    std::int64_t superBlock = 0; // codewords kept in L1 while a range of vectors walks them
    const float* mean = nullptr;
    const float* panels = nullptr;
};

constexpr int kMaxTile = 16;         // >= every Vec::T
constexpr int kMaxLanes = 16;        // >= every Vec::W
constexpr std::int64_t kChunk = 256; // vectors whose running best is kept in scratch at a time

namespace generic {
struct Vec {
    static constexpr int W = 4;
    static constexpr int T = 4;
    struct R {
        float v[W];
    };
    static R load(const float* p)
    {
        R r;
        for (int l = 0; l < W; ++l)
            r.v[l] = p[l];
        return r;
    }
    static R set1(float x)
    {
        R r;
        for (int l = 0; l < W; ++l)
            r.v[l] = x;
        return r;
    }
    static R fmadd(const R& a, const R& b, const R& c)
    {
        R r;
        for (int l = 0; l < W; ++l)
            r.v[l] = a.v[l] * b.v[l] + c.v[l];
        return r;
    }
    static R min(const R& s, const R& acc)
    {
        R r;
        for (int l = 0; l < W; ++l)
            r.v[l] = s.v[l] < acc.v[l] ? s.v[l] : acc.v[l];
        return r;
    }
    static R inf() { return set1(std::numeric_limits<float>::infinity()); }
    static bool anyLess(const R& a, float x)
    {
        bool any = false;
        for (int l = 0; l < W; ++l)
            any |= a.v[l] < x;
        return any;
    }
    static void store(float* p, const R& a)
    {
        for (int l = 0; l < W; ++l)
            p[l] = a.v[l];
    }
};
#include "vq_kernels_simd.inc"
} // namespace generic

#ifdef POCKET_VQ_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
struct Vec {
    static constexpr int W = 8;
    static constexpr int T = 6; // 6 scores + 6 minima + codeword + norm: 14 of 16 registers
    using R = __m256;
    static R load(const float* p) { return _mm256_load_ps(p); }
    static R set1(float x) { return _mm256_set1_ps(x); }
    static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static R min(R s, R acc) { return _mm256_min_ps(s, acc); }
    static R inf() { return _mm256_set1_ps(std::numeric_limits<float>::infinity()); }
    static bool anyLess(R a, float x) { return _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(x), _CMP_LT_OQ)) != 0; }
    static void store(float* p, R a) { _mm256_store_ps(p, a); }
};
#include "vq_kernels_simd.inc"
} // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
// GCC 12 flags the deliberately undefined pass-through operand inside _mm512_min_ps.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace avx512 {
struct Vec {
    static constexpr int W = 16;
    static constexpr int T = 12; // of 32 registers
    using R = __m512;
    static R load(const float* p) { return _mm512_load_ps(p); }
    static R set1(float x) { return _mm512_set1_ps(x); }
    static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static R min(R s, R acc) { return _mm512_min_ps(s, acc); }
    static R inf() { return _mm512_set1_ps(std::numeric_limits<float>::infinity()); }
    static bool anyLess(R a, float x) { return _mm512_cmp_ps_mask(a, _mm512_set1_ps(x), _CMP_LT_OQ) != 0; }
    static void store(float* p, R a) { _mm512_store_ps(p, a); }
};
#include "vq_kernels_simd.inc"
} // namespace avx512
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

using RangeFn = generic::RangeFn;

// The widest instruction set the CPU has, capped by POCKET_VQ_ISA (generic|avx2|avx512) so tests
// and benchmarks can exercise the narrower paths on a wide machine.
RangeFn chooseKernel(int dim)
{
    const char* cap = std::getenv("POCKET_VQ_ISA");
    const std::string limit = cap ? cap : "";
#ifdef POCKET_VQ_X86
    __builtin_cpu_init();
    const bool hasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (limit != "generic" && limit != "avx2" && hasAvx2 && __builtin_cpu_supports("avx512f"))
        return avx512::rangeFunction(dim);
    if (limit != "generic" && hasAvx2)
        return avx2::rangeFunction(dim);
#endif
    return generic::rangeFunction(dim);
}

} // namespace

void nearestCodewords(const float* vectors, std::int64_t count, const float* codewords, std::int64_t codewordCount, int dim,
                      std::int32_t* indices, float* distances, int threads)
{
    if (count < 0 || dim < 1 || codewordCount < 1 || codewordCount > std::numeric_limits<std::int32_t>::max() ||
        (count > 0 && (!vectors || !codewords || !indices)))
        throw std::invalid_argument("nearestCodewords: bad arguments");
    if (count == 0)
        return;

    const std::int64_t k = codewordCount;
    Codebook cb;
    cb.dim = dim;
    cb.stride = (k + kPad - 1) / kPad * kPad;
    const std::size_t dims = static_cast<std::size_t>(dim);
    AlignedFloats storage = allocFloats((dims + 15) / 16 * 16 + static_cast<std::size_t>(cb.stride) * (dims + 1));
    float* mean = storage.get();
    float* panels = mean + (dims + 15) / 16 * 16;
    const auto at = [&](std::int64_t j) { return panels + (j / kPad) * (dim + 1) * kPad + j % kPad; };
    for (int i = 0; i < dim; ++i) {
        double sum = 0;
        for (std::int64_t j = 0; j < k; ++j)
            sum += codewords[j * dim + i];
        mean[i] = static_cast<float>(sum / static_cast<double>(k));
    }
    for (std::int64_t j = 0; j < k; ++j) {
        double norm = 0;
        for (int i = 0; i < dim; ++i) {
            const float c = static_cast<float>(static_cast<double>(codewords[j * dim + i]) - static_cast<double>(mean[i]));
            norm += static_cast<double>(c) * c;
            at(j)[(i + 1) * kPad] = -2.0f * c;
        }
        at(j)[0] = static_cast<float>(norm);
    }
    for (std::int64_t j = k; j < cb.stride; ++j) {
        at(j)[0] = std::numeric_limits<float>::infinity();
        for (int i = 0; i < dim; ++i)
            at(j)[(i + 1) * kPad] = 0.0f;
    }
    cb.mean = mean;
    cb.panels = panels;
    // A block long enough to amortise the per-block check, a superblock that fits in L1 with room
    // for the broadcast coordinates.
    const std::int64_t bytesPerCodeword = 4 * (static_cast<std::int64_t>(dim) + 1);
    cb.block = std::clamp<std::int64_t>(8192 / bytesPerCodeword / kPad * kPad, kPad, 256);
    cb.superBlock = std::max(cb.block, 24576 / bytesPerCodeword / cb.block * cb.block);

    const RangeFn search = chooseKernel(dim);

    // Under ~4M multiply-adds a thread (well under a millisecond) a thread costs about what it saves.
    int parts = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const double work = static_cast<double>(count) * static_cast<double>(cb.stride) * (dim + 1);
    parts = static_cast<int>(std::min<double>({static_cast<double>(parts), std::max(1.0, work / 4e6), static_cast<double>(count)}));

    const std::size_t zbFloats = static_cast<std::size_t>(kMaxTile) * dims * kMaxLanes;
    const std::size_t scratchFloats = zbFloats + static_cast<std::size_t>(kChunk);
    AlignedFloats scratch = allocFloats(scratchFloats * static_cast<std::size_t>(parts));

    auto run = [&](int part) {
        const std::int64_t begin = part * (count / parts) + std::min<std::int64_t>(part, count % parts);
        const std::int64_t end = begin + count / parts + (part < count % parts ? 1 : 0);
        float* zb = scratch.get() + scratchFloats * static_cast<std::size_t>(part);
        for (std::int64_t c0 = begin; c0 < end; c0 += kChunk)
            search(cb, vectors, c0, std::min(end, c0 + kChunk), indices, zb + zbFloats, zb);
        if (distances)
            for (std::int64_t v = begin; v < end; ++v) {
                const float* z = vectors + v * dim;
                const float* c = codewords + static_cast<std::int64_t>(indices[v]) * dim;
                double sum = 0;
                for (int i = 0; i < dim; ++i) {
                    const double diff = static_cast<double>(z[i]) - static_cast<double>(c[i]);
                    sum += diff * diff;
                }
                distances[v] = static_cast<float>(sum);
            }
    };
    std::vector<std::thread> workers;
    int next = 1;
    try {
        for (; next < parts; ++next)
            workers.emplace_back(run, next);
    } catch (const std::system_error&) {
        // No more threads to be had: this thread does the rest.
    }
    run(0);
    for (int part = next; part < parts; ++part)
        run(part);
    for (std::thread& w : workers)
        w.join();
}

int indexBits(std::int64_t codewordCount)
{
    int bits = 1;
    while (bits < 63 && (std::int64_t{1} << bits) < codewordCount)
        ++bits;
    return bits;
}

std::vector<std::uint8_t> packBits(const std::int32_t* values, std::int64_t count, int bits)
{
    if (bits < 1 || bits > 32 || count < 0 || count > std::numeric_limits<std::int64_t>::max() / 32 || (count > 0 && !values))
        throw std::invalid_argument("packBits: bad arguments");
    std::vector<std::uint8_t> out((static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(bits) + 7) / 8);
    std::uint8_t* p = out.data();
    // Up to 31 pending bits plus one value of up to 32 fit the 64-bit accumulator; flushing 32
    // bits at a time keeps the stores few.
    std::uint64_t acc = 0;
    int filled = 0;
    for (std::int64_t i = 0; i < count; ++i) {
        const auto v = static_cast<std::uint32_t>(values[i]);
        if (bits < 32 && (v >> bits) != 0)
            throw std::invalid_argument("packBits: value does not fit in the bit width");
        acc |= static_cast<std::uint64_t>(v) << filled;
        filled += bits;
        if (filled >= 32) {
            p[0] = static_cast<std::uint8_t>(acc);
            p[1] = static_cast<std::uint8_t>(acc >> 8);
            p[2] = static_cast<std::uint8_t>(acc >> 16);
            p[3] = static_cast<std::uint8_t>(acc >> 24);
            p += 4;
            acc >>= 32;
            filled -= 32;
        }
    }
    for (; filled > 0; filled -= 8) {
        *p++ = static_cast<std::uint8_t>(acc);
        acc >>= 8;
    }
    return out;
}

bool unpackBits(const std::uint8_t* bytes, std::uint64_t byteCount, std::int64_t count, int bits, std::int32_t* values)
{
    if (bits < 1 || bits > 32 || count < 0 || count > std::numeric_limits<std::int64_t>::max() / 32)
        return false;
    const std::uint64_t needed = (static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(bits) + 7) / 8;
    if (byteCount < needed || (count > 0 && (!bytes || !values)))
        return false;
    const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
    std::uint64_t acc = 0;
    int filled = 0;
    std::uint64_t pos = 0;
    for (std::int64_t i = 0; i < count; ++i) {
        if (filled < bits) {
            // Never reads past `needed`, so a buffer of exactly that size is enough.
            if (pos + 4 <= needed) {
                const std::uint64_t word = static_cast<std::uint64_t>(bytes[pos]) | static_cast<std::uint64_t>(bytes[pos + 1]) << 8 |
                                           static_cast<std::uint64_t>(bytes[pos + 2]) << 16 |
                                           static_cast<std::uint64_t>(bytes[pos + 3]) << 24;
                acc |= word << filled;
                filled += 32;
                pos += 4;
            } else {
                for (; filled < bits; filled += 8)
                    acc |= static_cast<std::uint64_t>(bytes[pos++]) << filled;
            }
        }
        values[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(acc & mask));
        acc >>= bits;
        filled -= bits;
    }
    return true;
}

void unpackThroughTable(const std::uint8_t* bytes, std::uint64_t byteCount, std::uint64_t first, std::int64_t count, int bits,
                        const float* table, float* out)
{
    const std::uint64_t firstBit = first * static_cast<std::uint64_t>(bits);
    std::int64_t i = 0;
    if (firstBit % 8 == 0 && (bits == 2 || bits == 4 || bits == 8)) {
        const std::uint8_t* p = bytes + firstBit / 8;
        const int perByte = 8 / bits;
        const std::int64_t whole = count / perByte;
        if (bits == 8) {
            for (std::int64_t b = 0; b < whole; ++b)
                out[b] = table[p[b]];
        } else if (bits == 4) {
            for (std::int64_t b = 0; b < whole; ++b) {
                out[2 * b] = table[p[b] & 15];
                out[2 * b + 1] = table[p[b] >> 4];
            }
        } else {
            for (std::int64_t b = 0; b < whole; ++b) {
                const unsigned v = p[b];
                out[4 * b] = table[v & 3];
                out[4 * b + 1] = table[(v >> 2) & 3];
                out[4 * b + 2] = table[(v >> 4) & 3];
                out[4 * b + 3] = table[v >> 6];
            }
        }
        i = whole * perByte;
    }
    for (; i < count; ++i)
        out[i] = table[packedValue(bytes, byteCount, first + static_cast<std::uint64_t>(i), bits)];
}

#ifdef POCKET_VQ_X86
namespace {
__attribute__((target("f16c,avx"))) void roundThroughHalfF16c(float* values, std::size_t n)
{
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(values + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_ps(values + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; ++i)
        values[i] = halfToFloat(floatToHalf(values[i]));
}
} // namespace

#endif

void roundThroughHalf(float* values, std::size_t n)
{
#ifdef POCKET_VQ_X86
    static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") && !std::getenv("POCKET_NO_F16C");
    if (f16c) {
        roundThroughHalfF16c(values, n);
        return;
    }
#endif
    for (std::size_t i = 0; i < n; ++i)
        values[i] = halfToFloat(floatToHalf(values[i]));
}


void toSubvectors(const float* matrix, std::int64_t rows, std::int64_t cols, int d, float* out)
{
    const std::int64_t blocks = (cols + d - 1) / d;
    for (std::int64_t b = 0; b < blocks; ++b)
        for (std::int64_t r = 0; r < rows; ++r) {
            float* dst = out + (b * rows + r) * d;
            for (int j = 0; j < d; ++j) {
                const std::int64_t c = b * d + j;
                dst[j] = c < cols ? matrix[r * cols + c] : 0.0f;
            }
        }
}

void fromSubvectors(const float* subvectors, std::int64_t rows, std::int64_t cols, int d, float* matrix)
{
    const std::int64_t blocks = (cols + d - 1) / d;
    for (std::int64_t b = 0; b < blocks; ++b)
        for (std::int64_t r = 0; r < rows; ++r) {
            const float* src = subvectors + (b * rows + r) * d;
            for (int j = 0; j < d; ++j) {
                const std::int64_t c = b * d + j;
                if (c < cols)
                    matrix[r * cols + c] = src[j];
            }
        }
}

} // namespace pocket
