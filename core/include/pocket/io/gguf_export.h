// Writing a model as a GGUF file that llama.cpp loads: the llama (or qwen2) metadata, the
// tokenizer in llama.cpp's "llama" (SentencePiece pieces and scores) or "gpt2" (byte-level BPE)
// form, and every tensor in llama.cpp's names and q/k row order, as F32, F16, BF16 or Q8_0 (norms
// and biases stay F32, as llama.cpp keeps them), or in a block type given by the caller for
// matrices it can encode exactly (an archive's RTN/GPTQ codes as Q4_1/Q5_1). One tensor is in
// memory at a time. Any thread, one call at a time.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/io/ggml_types.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

// A matrix already in a ggml block type: the type, and its blocks (rows in the checkpoint's Hugging
// Face order) produced when the tensor is written, so that one tensor is in memory at a time.
struct GgufEncodedTensor {
    GgmlType type = GgmlType::F16;
    std::function<Result<std::vector<std::uint8_t>>()> produce;
};

// What became of one tensor.
struct GgufTensorReport {
    std::string name;       // the checkpoint's (Hugging Face) name
    std::string ggufName;
    std::string type;       // "Q4_1", "F16", ...
    bool encoded = false;   // written from GgufExportOptions::encode
    std::int64_t elements = 0;
    std::uint64_t bytes = 0;
};

struct GgufExportOptions {
    DType dtype = DType::F16;  // of the 2-D tensors: F32, F16 or BF16
    std::string tokenizerPath; // "" = the checkpoint's own
    bool overwrite = false;
    // Called after each tensor; returning false cancels (nothing is left behind).
    std::function<bool(int done, int total)> onTensor;
    // The matrices' type instead of `dtype`: F32, F16, BF16 or Q8_0 (quantised as llama.cpp's
    // quantize_row_q8_0_ref does; rows must be multiples of 32 weights).
    std::optional<GgmlType> matrixType;
    // The embedding and the output head (token_embd.weight, output.weight); unset = the matrices'.
    std::optional<GgmlType> embeddingType;
    // A matrix's exact encoding in a block type, or nothing for the type above. Called from the
    // writing thread, one tensor at a time.
    std::function<Result<std::optional<GgufEncodedTensor>>(const TensorInfo&)> encode;
    // general.file_type (llama_ftype); unset = the matrices' type's.
    std::optional<std::uint32_t> fileType;
    // Filled with one entry per tensor written, in file order.
    std::vector<GgufTensorReport>* report = nullptr;
};

Status writeGgufModel(const Checkpoint& checkpoint, const std::string& outPath, const GgufExportOptions& options);

} // namespace pocket
