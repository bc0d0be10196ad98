// Writing a model as a GGUF file that llama.cpp loads: the llama (or qwen2) metadata, the
// tokenizer in llama.cpp's "llama" (SentencePiece pieces and scores) or "gpt2" (byte-level BPE)
// form, and every tensor in llama.cpp's names and q/k row order, as F32, F16 or BF16 (norms and
// biases stay F32, as llama.cpp keeps them). One tensor is in memory at a time. Any thread, one
// call at a time.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/support/result.h"

#include <functional>
#include <string>

namespace pocket {

struct GgufExportOptions {
    DType dtype = DType::F16;  // of the 2-D tensors: F32, F16 or BF16
    std::string tokenizerPath; // "" = the checkpoint's own
    bool overwrite = false;
    // Called after each tensor; returning false cancels (nothing is left behind).
    std::function<bool(int done, int total)> onTensor;
};

Status writeGgufModel(const Checkpoint& checkpoint, const std::string& outPath, const GgufExportOptions& options);

} // namespace pocket
