// A model or a .pllm archive written as a GGUF file that llama.cpp loads while it stays compressed.
// Matrices an archive stores as rtn or gptq codes (both: asymmetric min/max groups, an fp16 scale and
// minimum per group) are re-encoded exactly where a ggml block type has the same arithmetic:
// 4-bit codes as Q4_1 and 5-bit codes as Q5_1 (w = d*q + m, 32 weights a block), when the group
// width and the row length are multiples of 32; the codes, scales and minima are copied, not
// re-quantised. Everything else (other methods, 2/3/6/7/8-bit codes, groups that do not fill 32-blocks)
// is decoded and written in the fallback type (F16, BF16, Q8_0 or F32), the embedding and output
// head in theirs. The report says what each tensor became and why. Any thread, one call at a time.
#pragma once

#include "pocket/io/ggml_types.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pocket {

struct ArchiveGgufOptions {
    GgmlType fallback = GgmlType::F16;  // decoded matrices: F16, BF16, Q8_0 or F32
    GgmlType embedding = GgmlType::F16; // token_embd.weight and output.weight: F16, BF16, Q8_0 or F32
    bool exact = true;                  // re-encode rtn/gptq codes where a block type fits (false: decode all)
    bool overwrite = false;
    std::function<bool(int done, int total)> onTensor; // false cancels; nothing is left behind
};

struct ArchiveGgufTensor {
    std::string name;         // Hugging Face name
    std::string type;         // GGUF type written ("Q4_1", "F16", ...)
    std::string how;          // "exact" (codes copied), "decoded" (a compressed matrix decoded and re-stored),
                              // "stored" (a tensor the archive or model keeps uncompressed)
    std::string method;       // the archive's method for compressed matrices ("" otherwise)
    std::string reason;       // "decoded": why no exact block type fits
    double maxDeviation = 0;  // "exact": largest |llama.cpp's dequantised weight - the archive's decoded weight|
    std::int64_t weights = 0;
    std::uint64_t bytes = 0;  // in the file
};

struct ArchiveGgufReport {
    std::vector<ArchiveGgufTensor> tensors;
    int exact = 0;            // matrices re-encoded exactly
    int decoded = 0;          // compressed matrices decoded into the fallback type
    double bpwLinear = 0;     // bits per weight of the block linear matrices in the file
    double bpwAllIn = 0;      // of every tensor in the file
    double archiveBpwLinear = 0; // the archive's own figure (bpw_c), 0 for a plain model
    std::uint64_t fileBytes = 0;
};

// What exportGguf would make of each tensor, without writing (a preview): type, how, method and
// reason; maxDeviation and bytes are left 0. A tensor the chosen types cannot hold (Q8_0 on rows
// that are not multiples of 32) has how "refused" and the reason.
Result<std::vector<ArchiveGgufTensor>> planGgufExport(const std::string& modelOrArchive, const MethodRegistry& registry,
                                                      const ArchiveGgufOptions& options);

// Writes `modelOrArchive` (a .pllm archive, or any model openCheckpoint reads) to `outPath`.
// Errors name the file; an option llama.cpp cannot load (a Q8_0 fallback on rows that are not
// multiples of 32) is refused before anything is written. The file is written under a temporary
// name and renamed into place.
Result<ArchiveGgufReport> exportGguf(const std::string& modelOrArchive, const std::string& outPath, const MethodRegistry& registry,
                                     const ArchiveGgufOptions& options);

} // namespace pocket
