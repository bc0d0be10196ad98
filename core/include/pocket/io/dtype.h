// Element types of stored tensors and conversions between them, without LibTorch.
// All functions are pure and may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pocket {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

// Bytes per element.
std::size_t dtypeSize(DType type);
// The safetensors spelling: "F32", "BF16", ...
const char* dtypeName(DType type);
// Parses the safetensors spelling (case-sensitive, as the format defines it).
std::optional<DType> parseDType(std::string_view name);
// Parses a user's option spelling ("f32", "fp16", "bf16", case-insensitive) for float types only.
std::optional<DType> parseFloatDTypeOption(std::string_view name);
bool isFloatType(DType type);

float halfToFloat(std::uint16_t h);
std::uint16_t floatToHalf(float f);  // round to nearest even, saturating to inf
float bf16ToFloat(std::uint16_t b);
std::uint16_t floatToBf16(float f);  // round to nearest even, NaN kept

// Converts `count` elements of a float dtype (F64/F32/F16/BF16) to float32.
void convertToFloat(DType type, const void* src, std::size_t count, float* dst);
// Converts float32 to `type` (F32/F16/BF16) into `dst` (count * dtypeSize(type) bytes).
void convertFromFloat(const float* src, std::size_t count, DType type, void* dst);

// Product of the dimensions (1 for a scalar).
std::int64_t elementCount(const std::vector<std::int64_t>& shape);
// "[4, 64]"
std::string shapeString(const std::vector<std::int64_t>& shape);

} // namespace pocket
