// The tensor types of GGUF files (llama.cpp's ggml): their ids, names, block layouts and how many
// bits a weight costs, and dequantisation of a row of blocks to float32. The block layouts and the
// arithmetic follow ggml's ggml-common.h and the reference dequantisers of ggml-quants.c, operation
// for operation, so that a dequantised weight equals llama.cpp's to the bit. Pure functions; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace pocket {

// ggml's type ids (ggml.h enum ggml_type); only the ones a GGUF reader meets.
enum class GgmlType : std::uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct GgmlTypeTraits {
    const char* name = "?";       // llama.cpp's spelling: "F32", "Q4_K", "IQ4_NL", ...
    std::int64_t blockSize = 0;   // weights per block (0 = a type this program does not know)
    std::int64_t blockBytes = 0;  // bytes per block
    bool dequantizable = false;   // dequantizeRow() handles it
};

// The traits of a type id; blockSize 0 for an id this program does not know.
GgmlTypeTraits ggmlTypeTraits(std::uint32_t type);
// The type with llama.cpp's name ("Q4_K", case-insensitive), or nothing.
std::optional<GgmlType> parseGgmlType(const std::string& name);
// Bits per weight of a type (block bytes * 8 / block size).
double ggmlBitsPerWeight(GgmlType type);
// llama.cpp's name of a whole-file type (GGUF general.file_type, enum llama_ftype): 15 -> "Q4_K_M",
// 1 -> "F16", 0 -> "F32"; "" for a value it does not define.
std::string ggufFileTypeName(std::uint32_t fileType);
// Bytes of a row of `n` weights, or nothing when n is not a multiple of the block size.
std::optional<std::uint64_t> ggmlRowBytes(GgmlType type, std::int64_t n);

// Dequantises `n` weights (a multiple of the block size) stored as `type` at `src` into `dst`.
// False for a type that cannot be dequantised here.
bool dequantizeRow(GgmlType type, const std::uint8_t* src, float* dst, std::int64_t n);

// Quantises `n` weights (a multiple of 32) to Q8_0 blocks exactly as ggml's quantize_row_q8_0_ref:
// d = max|x| / 127 (stored fp16), q = round(x / d). `dst` holds n / 32 * 34 bytes.
void quantizeRowQ8_0(const float* src, std::uint8_t* dst, std::int64_t n);

// The 16 values of IQ4_NL's non-linear grid (ggml's kvalues_iq4nl).
extern const std::int8_t kIq4nlValues[16];

} // namespace pocket
