// PocketLLM's fused decoder (see fused_decoder.h).
#include "fused_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace pocket::pocketllm {

namespace {

constexpr std::int64_t kChunk = 64; // rows of an MLP pass (hidden activations stay in L1)

// exp(x) for -87 <= x <= 0 by Cody-Waite reduction and a degree-6 polynomial (about 1 ulp); plain
// arithmetic without branches, so loops over it vectorise.
inline __attribute__((always_inline)) float expNonPositive(float x)
{
    // Round to nearest by the 1.5 * 2^23 trick (|x * log2 e| < 2^22): no libm call, so it vectorises.
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
    return p * __builtin_bit_cast(float, bits);
}

// GELU with erf by Abramowitz-Stegun 7.1.26 (|error| <= 1.5e-7), the formula of ATen's
// vectorised erf.
inline __attribute__((always_inline)) float gelu(float x)
{
    // Branch-free (sign by bits, |z| capped at 9 where erf is 1 in float), so the loop vectorises.
    const float z = x * 0.70710678118654752f;
    const std::uint32_t zBits = __builtin_bit_cast(std::uint32_t, z);
    const float a = std::min(__builtin_bit_cast(float, zBits & 0x7fffffffu), 9.0f);
    const float t = 1.0f / (1.0f + 0.3275911f * a);
    const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float e = 1.0f - poly * expNonPositive(-a * a);
    const float erf = __builtin_bit_cast(float, __builtin_bit_cast(std::uint32_t, e) | (zBits & 0x80000000u));
    return 0.5f * x * (1.0f + erf);
}

// LayerNorm over all values of x [rows][T] (one RLN group), into y; affine weights [rows][T].
inline __attribute__((always_inline)) void rln(const float* x, int rows, std::int64_t t, const float* w, const float* b, float* y)
{
    // Sums in 8 double lanes (vectorised; the lanes fixed, so the result does not depend on the ISA).
    const std::int64_t n = rows * t;
    double lanes[8] = {};
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k)
            lanes[k] += x[i + k];
    for (; i < n; ++i)
        lanes[0] += x[i];
    double sum = 0;
    for (double v : lanes)
        sum += v;
    const auto mean = static_cast<float>(sum / static_cast<double>(n));
    double sqLanes[8] = {};
    for (i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) {
            const float c = x[i + k] - mean;
            sqLanes[k] += static_cast<double>(c) * c;
        }
    for (; i < n; ++i) {
        const float c = x[i] - mean;
        sqLanes[0] += static_cast<double>(c) * c;
    }
    double sq = 0;
    for (double v : sqLanes)
        sq += v;
    const auto rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(n) + 1e-5));
    if (w) {
        for (std::int64_t i = 0; i < n; ++i)
            y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    } else {
        for (std::int64_t i = 0; i < n; ++i)
            y[i] = (x[i] - mean) * rstd;
    }
}

// out[k][t] (+)= MLP(x)[k][t] for t in [0, T), x [in][T], out [out][T] (row stride T).
inline __attribute__((always_inline)) void mlp(const FusedMlp& m, const float* x, std::int64_t t, float* out, bool accumulate, float* hidden)
{
    for (std::int64_t c0 = 0; c0 < t; c0 += kChunk) {
        const std::int64_t c = std::min(kChunk, t - c0);
        for (int j = 0; j < m.hidden; ++j) {
            float* h = hidden + j * kChunk;
            const float bias = m.b1[static_cast<std::size_t>(j)];
            for (std::int64_t i = 0; i < c; ++i)
                h[i] = bias;
            for (int k = 0; k < m.in; ++k) {
                const float w = m.w1[static_cast<std::size_t>(j * m.in + k)];
                const float* xk = x + k * t + c0;
                for (std::int64_t i = 0; i < c; ++i)
                    h[i] += w * xk[i];
            }
            for (std::int64_t i = 0; i < c; ++i)
                h[i] = gelu(h[i]);
        }
        for (int k = 0; k < m.out; ++k) {
            float acc[kChunk];
            const float bias = m.b2[static_cast<std::size_t>(k)];
            for (std::int64_t i = 0; i < c; ++i)
                acc[i] = bias;
            for (int j = 0; j < m.hidden; ++j) {
                const float w = m.w2[static_cast<std::size_t>(k * m.hidden + j)];
                const float* h = hidden + j * kChunk;
                for (std::int64_t i = 0; i < c; ++i)
                    acc[i] += w * h[i];
            }
            float* o = out + k * t + c0;
            if (accumulate) {
                for (std::int64_t i = 0; i < c; ++i)
                    o[i] += acc[i];
            } else {
                for (std::int64_t i = 0; i < c; ++i)
                    o[i] = acc[i];
            }
        }
    }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void decodeGroupKernel(const FusedDecoder& dec, const std::int32_t* codes,
                                                                                       float* out, float* y, float* n, float* o,
                                                                                       float* hidden)
{
    const std::int64_t t = dec.group;
    const int l = dec.latent;
    const int books = dec.books;
    for (std::int64_t i = 0; i < t; ++i) // gather (the sum of the M codewords), transposed to [latent][T]
        for (int k = 0; k < l; ++k) {
            float v = 0;
            for (int m = 0; m < books; ++m) {
                const std::size_t code = static_cast<std::size_t>(m * dec.codewords + codes[i * books + m]);
                v += dec.codebook[code * static_cast<std::size_t>(l) + static_cast<std::size_t>(k)];
            }
            y[k * t + i] = v;
        }
    const bool affine = dec.rlnAffine;
    rln(y, l, t, affine ? dec.rln3w.data() : nullptr, affine ? dec.rln3b.data() : nullptr, n);
    mlp(dec.d1, n, t, y, true, hidden); // y = q + D1(RLN3(q))
    rln(y, l, t, affine ? dec.rln4w.data() : nullptr, affine ? dec.rln4b.data() : nullptr, n);
    mlp(dec.d2, n, t, y, true, hidden); // y = y + D2(RLN4(y))
    if (dec.finalNorm) {
        rln(y, l, t, affine ? dec.rln4pw.data() : nullptr, affine ? dec.rln4pb.data() : nullptr, n);
        std::memcpy(y, n, sizeof(float) * static_cast<std::size_t>(l * t));
    }
    mlp(dec.d0, y, t, o, false, hidden); // s = D0(y) (+ y)
    if (dec.outSkip)
        for (std::int64_t i = 0; i < dec.d * t; ++i)
            o[i] += y[i];
    for (std::int64_t i = 0; i < t; ++i) // back to [T][d], scaled
        for (int j = 0; j < dec.d; ++j)
            out[i * dec.d + j] = o[j * t + i] * dec.scale;
}

} // namespace

void decodeRlnGroup(const FusedDecoder& dec, const std::int32_t* codes, float* out, std::vector<float>& scratch)
{
    const std::int64_t t = dec.group;
    const auto l = static_cast<std::size_t>(dec.latent), d = static_cast<std::size_t>(dec.d);
    const std::size_t need = 2 * l * static_cast<std::size_t>(t) + d * static_cast<std::size_t>(t) +
                             static_cast<std::size_t>(std::max({dec.d0.hidden, dec.d1.hidden, dec.d2.hidden})) * kChunk;
    if (scratch.size() < need)
        scratch.resize(need);
    float* y = scratch.data();
    float* n = y + l * static_cast<std::size_t>(t);
    float* o = n + l * static_cast<std::size_t>(t);
    float* hidden = o + d * static_cast<std::size_t>(t);
    decodeGroupKernel(dec, codes, out, y, n, o, hidden);
}

} // namespace pocket::pocketllm
