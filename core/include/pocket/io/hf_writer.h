// Writing Hugging Face model folders: conversion of any checkpoint we read, and random
// Llama-shaped checkpoints for tests and benchmarks. One tensor is in memory at a time, so
// folders larger than RAM can be written. Not thread-safe; call from one thread.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <string>

namespace pocket {

struct HfWriteOptions {
    DType dtype = DType::F32;           // stored dtype of every tensor
    std::uint64_t maxShardBytes = 0;    // > 0: split into model-0000i-of-0000n.safetensors + index
    std::string tokenizerPath;          // copied in as tokenizer.model (*.model) or tokenizer.bin ("" = none)
    bool overwrite = false;             // replace an existing folder (only after the new one is complete)
    // Called after each tensor is written; returning false cancels (nothing is left behind).
    std::function<bool(int done, int total)> onTensor;
};

// Writes config.json, the safetensors file(s) and the tokenizer of `config` into `outDir`.
// `valuesOf(name, out)` fills the float32 values of each tensor of expectedTensors(config).
// The folder is assembled under a temporary name and renamed into place when complete.
Status writeHfFolder(const ModelConfig& config, const std::function<Status(const TensorInfo& info, std::vector<float>& out)>& valuesOf,
                     const std::string& outDir, const HfWriteOptions& options);

// Converts any checkpoint we can read (e.g. llama2.c) to a Hugging Face folder.
Status convertToHf(const Checkpoint& checkpoint, const std::string& outDir, const HfWriteOptions& options);

// Writes a Llama-shaped checkpoint with random weights (normal, std 0.02; norm weights near 1),
// reproducible from `seed`.
Status writeRandomCheckpoint(const ModelConfig& config, std::uint64_t seed, const std::string& outDir, const HfWriteOptions& options);

} // namespace pocket
