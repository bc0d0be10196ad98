#include "pocket/io/dtype.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <sstream>

namespace pocket {

namespace {
struct DTypeRow {
    DType type;
    const char* name;
    std::size_t size;
    bool isFloat;
};
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8, true},   {DType::F32, "F32", 4, true},  {DType::F16, "F16", 2, true},
    {DType::BF16, "BF16", 2, true}, {DType::I64, "I64", 8, false}, {DType::I32, "I32", 4, false},
    {DType::I16, "I16", 2, false},  {DType::I8, "I8", 1, false},   {DType::U8, "U8", 1, false},
    {DType::Bool, "BOOL", 1, false},
};
const DTypeRow& row(DType type)
{
    return kDTypes[static_cast<int>(type)];
}
} // namespace

std::size_t dtypeSize(DType type) { return row(type).size; }
const char* dtypeName(DType type) { return row(type).name; }
bool isFloatType(DType type) { return row(type).isFloat; }

std::optional<DType> parseDType(std::string_view name)
{
    for (const auto& r : kDTypes)
        if (name == r.name)
            return r.type;
    return std::nullopt;
}

std::optional<DType> parseFloatDTypeOption(std::string_view name)
{
    std::string s(name);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "f32" || s == "fp32" || s == "float32") return DType::F32;
    if (s == "f16" || s == "fp16" || s == "float16" || s == "half") return DType::F16;
    if (s == "bf16" || s == "bfloat16") return DType::BF16;
    return std::nullopt;
}

float halfToFloat(std::uint16_t h)
{
    const std::uint32_t sign = (h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    std::uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                --exp;
            }
            mant &= 0x3ffu;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

std::uint16_t floatToHalf(float f)
{
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) // NaN
        return static_cast<std::uint16_t>(sign | 0x7e00u);
    if (absx >= 0x477ff000u) // rounds to >= 65520: inf
        return static_cast<std::uint16_t>(sign | 0x7c00u);
    if (absx < 0x38800000u) { // below the smallest normal half: subnormal or zero
        if (absx < 0x33000000u) // < 2^-25 rounds to zero
            return static_cast<std::uint16_t>(sign);
        const std::uint32_t exp = absx >> 23;
        const std::uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126 - exp; // 14..24
        std::uint32_t half = mant >> shift;
        const std::uint32_t rem = mant & ((1u << shift) - 1);
        const std::uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half & 1u)))
            ++half;
        return static_cast<std::uint16_t>(sign | half);
    }
    std::uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
    const std::uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        ++h;
    return static_cast<std::uint16_t>(sign | h);
}

float bf16ToFloat(std::uint16_t b)
{
    const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

std::uint16_t floatToBf16(float f)
{
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return static_cast<std::uint16_t>((x >> 16) | 0x40u);
    const std::uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return static_cast<std::uint16_t>(x >> 16);
}

void convertToFloat(DType type, const void* src, std::size_t count, float* dst)
{
    switch (type) {
    case DType::F32:
        std::memcpy(dst, src, count * 4);
        return;
    // Element reads go through memcpy: a file's data section need not be aligned.
    case DType::F64: {
        const auto* s = static_cast<const std::uint8_t*>(src);
        for (std::size_t i = 0; i < count; ++i) {
            double d;
            std::memcpy(&d, s + 8 * i, 8);
            dst[i] = static_cast<float>(d);
        }
        return;
    }
    case DType::F16: {
        // Every half value precomputed once (256 KiB): loading weights is bound by this loop.
        static const std::vector<float> table = [] {
            std::vector<float> t(65536);
            for (std::uint32_t h = 0; h < 65536; ++h) t[h] = halfToFloat(static_cast<std::uint16_t>(h));
            return t;
        }();
        const auto* s = static_cast<const std::uint8_t*>(src);
        for (std::size_t i = 0; i < count; ++i) {
            std::uint16_t h;
            std::memcpy(&h, s + 2 * i, 2);
            dst[i] = table[h];
        }
        return;
    }
    case DType::BF16: {
        const auto* s = static_cast<const std::uint8_t*>(src);
        for (std::size_t i = 0; i < count; ++i) {
            std::uint16_t b;
            std::memcpy(&b, s + 2 * i, 2);
            dst[i] = bf16ToFloat(b);
        }
        return;
    }
    default:
        std::fill(dst, dst + count, 0.0f);
    }
}

void convertFromFloat(const float* src, std::size_t count, DType type, void* dst)
{
    switch (type) {
    case DType::F32:
        std::memcpy(dst, src, count * 4);
        return;
    case DType::F16: {
        auto* d = static_cast<std::uint16_t*>(dst);
        for (std::size_t i = 0; i < count; ++i) d[i] = floatToHalf(src[i]);
        return;
    }
    case DType::BF16: {
        auto* d = static_cast<std::uint16_t*>(dst);
        for (std::size_t i = 0; i < count; ++i) d[i] = floatToBf16(src[i]);
        return;
    }
    case DType::F64: {
        auto* d = static_cast<double*>(dst);
        for (std::size_t i = 0; i < count; ++i) d[i] = src[i];
        return;
    }
    default:
        return;
    }
}

std::int64_t elementCount(const std::vector<std::int64_t>& shape)
{
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

std::string shapeString(const std::vector<std::int64_t>& shape)
{
    std::ostringstream out;
    out << '[';
    for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
    out << ']';
    return out.str();
}

} // namespace pocket
