// Private to core/src/io: the checkpoint formats that openCheckpoint() dispatches to, and the RoPE
// row order conversion they share.
#pragma once

#include "pocket/io/checkpoint.h"

#include <cstdint>
#include <memory>
#include <string>

namespace pocket {

// A GGUF file (gguf_checkpoint.cpp).
Result<std::unique_ptr<Checkpoint>> openGgufCheckpoint(const std::string& path);

// Reorders the rows of a q or k projection (or its bias, cols = 1) from the interleaved RoPE order
// of Meta's original checkpoints, llama2.c and llama.cpp (pairs 2i, 2i+1 of each head) to the
// rotate-half order of Hugging Face (i, i + headDim/2).
void interleavedToHalfRows(const float* in, float* out, std::int64_t rows, std::int64_t cols, std::int64_t heads);

} // namespace pocket
