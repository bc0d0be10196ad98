#include "pocket/io/ggml_types.h"

#include "pocket/io/dtype.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

namespace pocket {

const std::int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

namespace {

constexpr std::int64_t kQK = 256; // super-block of the K-quants

struct Entry {
    GgmlType type;
    GgmlTypeTraits traits;
};

const Entry kTypes[] = {
    {GgmlType::F32, {"F32", 1, 4, true}},          {GgmlType::F16, {"F16", 1, 2, true}},
    {GgmlType::BF16, {"BF16", 1, 2, true}},        {GgmlType::F64, {"F64", 1, 8, true}},
    {GgmlType::Q4_0, {"Q4_0", 32, 18, true}},      {GgmlType::Q4_1, {"Q4_1", 32, 20, true}},
    {GgmlType::Q5_0, {"Q5_0", 32, 22, true}},      {GgmlType::Q5_1, {"Q5_1", 32, 24, true}},
    {GgmlType::Q8_0, {"Q8_0", 32, 34, true}},      {GgmlType::Q8_1, {"Q8_1", 32, 36, false}},
    {GgmlType::Q2_K, {"Q2_K", kQK, 84, true}},     {GgmlType::Q3_K, {"Q3_K", kQK, 110, true}},
    {GgmlType::Q4_K, {"Q4_K", kQK, 144, true}},    {GgmlType::Q5_K, {"Q5_K", kQK, 176, true}},
    {GgmlType::Q6_K, {"Q6_K", kQK, 210, true}},    {GgmlType::Q8_K, {"Q8_K", kQK, 292, false}},
    {GgmlType::IQ2_XXS, {"IQ2_XXS", kQK, 66, false}}, {GgmlType::IQ2_XS, {"IQ2_XS", kQK, 74, false}},
    {GgmlType::IQ3_XXS, {"IQ3_XXS", kQK, 98, false}}, {GgmlType::IQ1_S, {"IQ1_S", kQK, 50, false}},
    {GgmlType::IQ4_NL, {"IQ4_NL", 32, 18, true}},  {GgmlType::IQ3_S, {"IQ3_S", kQK, 110, false}},
    {GgmlType::IQ2_S, {"IQ2_S", kQK, 82, false}},  {GgmlType::IQ4_XS, {"IQ4_XS", kQK, 136, false}},
    {GgmlType::I8, {"I8", 1, 1, false}},           {GgmlType::I16, {"I16", 1, 2, false}},
    {GgmlType::I32, {"I32", 1, 4, false}},         {GgmlType::I64, {"I64", 1, 8, false}},
    {GgmlType::IQ1_M, {"IQ1_M", kQK, 56, false}},  {GgmlType::TQ1_0, {"TQ1_0", kQK, 54, false}},
    {GgmlType::TQ2_0, {"TQ2_0", kQK, 66, false}},  {GgmlType::MXFP4, {"MXFP4", 32, 17, false}},
};

float half(const std::uint8_t* p)
{
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return halfToFloat(h);
}

// Block by block, as ggml-quants.c's dequantize_row_* (the same operations in the same order).
void q4_0(const std::uint8_t* b, float* y)
{
    const float d = half(b);
    for (int j = 0; j < 16; ++j) {
        const int x0 = (b[2 + j] & 0x0F) - 8;
        const int x1 = (b[2 + j] >> 4) - 8;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
    }
}

void q4_1(const std::uint8_t* b, float* y)
{
    const float d = half(b), m = half(b + 2);
    for (int j = 0; j < 16; ++j) {
        const int x0 = b[4 + j] & 0x0F;
        const int x1 = b[4 + j] >> 4;
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

void q5_0(const std::uint8_t* b, float* y)
{
    const float d = half(b);
    std::uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    const std::uint8_t* qs = b + 6;
    for (int j = 0; j < 16; ++j) {
        const std::uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
        const std::uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
        const std::int32_t x0 = ((qs[j] & 0x0F) | xh0) - 16;
        const std::int32_t x1 = ((qs[j] >> 4) | xh1) - 16;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
    }
}

void q5_1(const std::uint8_t* b, float* y)
{
    const float d = half(b), m = half(b + 2);
    std::uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    const std::uint8_t* qs = b + 8;
    for (int j = 0; j < 16; ++j) {
        const std::uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
        const std::uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
        const int x0 = (qs[j] & 0x0F) | xh0;
        const int x1 = (qs[j] >> 4) | xh1;
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

void q8_0(const std::uint8_t* b, float* y)
{
    const float d = half(b);
    for (int j = 0; j < 32; ++j)
        y[j] = static_cast<std::int8_t>(b[2 + j]) * d;
}

void iq4_nl(const std::uint8_t* b, float* y)
{
    const float d = half(b);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * kIq4nlValues[b[2 + j] & 0xf];
        y[j + 16] = d * kIq4nlValues[b[2 + j] >> 4];
    }
}

// block_q2_K: scales[16], qs[64], d, dmin.
void q2_k(const std::uint8_t* b, float* y)
{
    const std::uint8_t* scales = b;
    const std::uint8_t* q = b + 16;
    const float d = half(b + 80), min = half(b + 82);
    int is = 0;
    for (int n = 0; n < kQK; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; ++j) {
            std::uint8_t sc = scales[is++];
            float dl = d * (sc & 0xF), ml = min * (sc >> 4);
            for (int l = 0; l < 16; ++l)
                *y++ = dl * static_cast<std::int8_t>((q[l] >> shift) & 3) - ml;
            sc = scales[is++];
            dl = d * (sc & 0xF);
            ml = min * (sc >> 4);
            for (int l = 0; l < 16; ++l)
                *y++ = dl * static_cast<std::int8_t>((q[l + 16] >> shift) & 3) - ml;
            shift += 2;
        }
        q += 32;
    }
}

// block_q3_K: hmask[32], qs[64], scales[12], d.
void q3_k(const std::uint8_t* b, float* y)
{
    const std::uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    const std::uint8_t* hm = b;
    const std::uint8_t* q = b + 32;
    const float dAll = half(b + 108);
    std::uint32_t aux[4];
    std::memcpy(aux, b + 96, 12);
    const std::uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    std::int8_t scales[16];
    std::memcpy(scales, aux, 16);
    std::uint8_t m = 1;
    int is = 0;
    for (int n = 0; n < kQK; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; ++j) {
            float dl = dAll * (scales[is++] - 32);
            for (int l = 0; l < 16; ++l)
                *y++ = dl * (static_cast<std::int8_t>((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
            dl = dAll * (scales[is++] - 32);
            for (int l = 0; l < 16; ++l)
                *y++ = dl * (static_cast<std::int8_t>((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
            shift += 2;
            m <<= 1;
        }
        q += 32;
    }
}

// The 6-bit scale and minimum of sub-block j of a Q4_K/Q5_K super-block.
void scaleMinK4(int j, const std::uint8_t* q, std::uint8_t& d, std::uint8_t& m)
{
    if (j < 4) {
        d = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

// block_q4_K: d, dmin, scales[12], qs[128].
void q4_k(const std::uint8_t* b, float* y)
{
    const float d = half(b), min = half(b + 2);
    const std::uint8_t* scales = b + 4;
    const std::uint8_t* q = b + 16;
    int is = 0;
    std::uint8_t sc, m;
    for (int j = 0; j < kQK; j += 64) {
        scaleMinK4(is + 0, scales, sc, m);
        const float d1 = d * sc, m1 = min * m;
        scaleMinK4(is + 1, scales, sc, m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; ++l)
            *y++ = d1 * (q[l] & 0xF) - m1;
        for (int l = 0; l < 32; ++l)
            *y++ = d2 * (q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

// block_q5_K: d, dmin, scales[12], qh[32], qs[128].
void q5_k(const std::uint8_t* b, float* y)
{
    const float d = half(b), min = half(b + 2);
    const std::uint8_t* scales = b + 4;
    const std::uint8_t* qh = b + 16;
    const std::uint8_t* ql = b + 48;
    int is = 0;
    std::uint8_t sc, m, u1 = 1, u2 = 2;
    for (int j = 0; j < kQK; j += 64) {
        scaleMinK4(is + 0, scales, sc, m);
        const float d1 = d * sc, m1 = min * m;
        scaleMinK4(is + 1, scales, sc, m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; ++l)
            *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l)
            *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
    }
}

// block_q6_K: ql[128], qh[64], scales[16] (int8), d.
void q6_k(const std::uint8_t* b, float* y)
{
    const float d = half(b + 208);
    const std::uint8_t* ql = b;
    const std::uint8_t* qh = b + 128;
    const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(b + 192);
    for (int n = 0; n < kQK; n += 128) {
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const std::int8_t q1 = static_cast<std::int8_t>((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const std::int8_t q2 = static_cast<std::int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const std::int8_t q3 = static_cast<std::int8_t>((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const std::int8_t q4 = static_cast<std::int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l + 0] = d * sc[is + 0] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

} // namespace

GgmlTypeTraits ggmlTypeTraits(std::uint32_t type)
{
    for (const Entry& e : kTypes)
        if (static_cast<std::uint32_t>(e.type) == type)
            return e.traits;
    return {};
}

std::optional<GgmlType> parseGgmlType(const std::string& name)
{
    std::string upper = name;
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    for (const Entry& e : kTypes) {
        std::string n = e.traits.name;
        std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::toupper(c); });
        if (n == upper)
            return e.type;
    }
    return std::nullopt;
}

double ggmlBitsPerWeight(GgmlType type)
{
    const GgmlTypeTraits t = ggmlTypeTraits(static_cast<std::uint32_t>(type));
    return t.blockSize > 0 ? 8.0 * static_cast<double>(t.blockBytes) / static_cast<double>(t.blockSize) : 0.0;
}

std::optional<std::uint64_t> ggmlRowBytes(GgmlType type, std::int64_t n)
{
    const GgmlTypeTraits t = ggmlTypeTraits(static_cast<std::uint32_t>(type));
    if (t.blockSize <= 0 || n < 0 || n % t.blockSize != 0)
        return std::nullopt;
    return static_cast<std::uint64_t>(n / t.blockSize) * static_cast<std::uint64_t>(t.blockBytes);
}

void quantizeRowQ8_0(const float* src, std::uint8_t* dst, std::int64_t n)
{
    for (std::int64_t i = 0; i < n / 32; ++i, src += 32, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j)
            amax = std::max(amax, std::fabs(src[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const std::uint16_t h = floatToHalf(d);
        std::memcpy(dst, &h, 2);
        for (int j = 0; j < 32; ++j)
            dst[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::round(src[j] * id)));
    }
}

bool dequantizeRow(GgmlType type, const std::uint8_t* src, float* dst, std::int64_t n)
{
    const GgmlTypeTraits t = ggmlTypeTraits(static_cast<std::uint32_t>(type));
    if (!t.dequantizable || n % t.blockSize != 0)
        return false;
    switch (type) {
    case GgmlType::F32: convertToFloat(DType::F32, src, static_cast<std::size_t>(n), dst); return true;
    case GgmlType::F16: convertToFloat(DType::F16, src, static_cast<std::size_t>(n), dst); return true;
    case GgmlType::BF16: convertToFloat(DType::BF16, src, static_cast<std::size_t>(n), dst); return true;
    case GgmlType::F64: convertToFloat(DType::F64, src, static_cast<std::size_t>(n), dst); return true;
    default: break;
    }
    void (*block)(const std::uint8_t*, float*) = nullptr;
    switch (type) {
    case GgmlType::Q4_0: block = q4_0; break;
    case GgmlType::Q4_1: block = q4_1; break;
    case GgmlType::Q5_0: block = q5_0; break;
    case GgmlType::Q5_1: block = q5_1; break;
    case GgmlType::Q8_0: block = q8_0; break;
    case GgmlType::Q2_K: block = q2_k; break;
    case GgmlType::Q3_K: block = q3_k; break;
    case GgmlType::Q4_K: block = q4_k; break;
    case GgmlType::Q5_K: block = q5_k; break;
    case GgmlType::Q6_K: block = q6_k; break;
    case GgmlType::IQ4_NL: block = iq4_nl; break;
    default: return false;
    }
    for (std::int64_t i = 0; i < n / t.blockSize; ++i)
        block(src + i * t.blockBytes, dst + i * t.blockSize);
    return true;
}

std::string ggufFileTypeName(std::uint32_t fileType)
{
    // llama.h, enum llama_ftype (4-6 and 33-35 were removed from llama.cpp).
    static const char* const names[] = {"F32",    "F16",     "Q4_0",   "Q4_1",   "",       "",      "",       "Q8_0",  "Q5_0",
                                        "Q5_1",   "Q2_K",    "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M",
                                        "Q6_K",   "IQ2_XXS", "IQ2_XS", "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                        "IQ3_M",  "IQ2_S",   "IQ2_M",  "IQ4_XS", "IQ1_M",  "BF16",   "",       "",       "",
                                        "TQ1_0",  "TQ2_0"};
    return fileType < std::size(names) ? names[fileType] : "";
}

} // namespace pocket
