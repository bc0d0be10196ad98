// Reading a .pllm archive as a model: a Checkpoint whose compressed matrices are decoded by their
// methods, and the decoded model written out as a Hugging Face folder.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace pocket {

// A Checkpoint over a .pllm archive: compressed matrices are decoded by their method (one group
// at a time, cached until each of its matrices has been read once), the rest read as stored.
// `registry` must outlive the checkpoint. Loads return F32 for decoded matrices (fp16-exact values).
Result<std::unique_ptr<Checkpoint>> openArchiveCheckpoint(const std::string& path, const MethodRegistry& registry);

// The matrices of one group's payload as weights a model keeps compressed and decodes just before
// each use (LoadOptions::compressed, LlamaModel::setWeight), by name; each counts its share of the
// decoder's bytes. Decoded bit for bit as `method`.decode() would.
Result<std::map<std::string, std::shared_ptr<const CompressedMatrix>>> payloadMatrices(const CompressionMethod& method, GroupPayload payload);

// Opens a model or, for a .pllm file, the decoding view of an archive (see openArchiveCheckpoint).
Result<std::unique_ptr<Checkpoint>> openModelOrArchive(const std::string& path, const MethodRegistry& registry);

// How to run a model (see LoadOptions): the compute precision, and for an archive the memory
// budget within which its compressed matrices are kept decoded (the rest stay in payload form and
// are decoded by their methods' payload decoders just before use).
struct RunOptions {
    ComputePrecision precision = ComputePrecision::F32;
    std::int64_t memoryBudget = LoadOptions::kUnlimited; // bytes, or LoadOptions::kUnlimited / kAuto
    // For adapter training (LoadOptions::trainable): the model starts from an archive's decoded
    // weights without the adapters it may have (training replaces them).
    bool trainable = false;
};

// A model ready to run, and the checkpoint it came from (which keeps the tokenizer file).
struct RunnableModel {
    std::unique_ptr<Checkpoint> checkpoint;
    std::unique_ptr<LlamaModel> model;
};

// Opens a model or a .pllm archive and loads it to run. A memory budget other than unlimited
// needs an archive (a Usage error naming "memory budget" otherwise).
Result<RunnableModel> loadRunnableModel(const std::string& path, const MethodRegistry& registry, const RunOptions& options,
                                        const std::function<bool(int done, int total)>& onTensor = {});
// The same for a checkpoint already open (openModelOrArchive): its file is not read again.
Result<RunnableModel> loadRunnableModel(std::unique_ptr<Checkpoint> checkpoint, const RunOptions& options,
                                        const std::function<bool(int done, int total)>& onTensor = {});

// Parses a memory budget: "auto", "unlimited" (or "all"), or a number of MiB; nullopt otherwise.
std::optional<std::int64_t> parseMemoryBudget(const std::string& text);

// Writes the decoded model of an archive as a Hugging Face folder (config.json, safetensors,
// tokenizer), weights stored as `options.dtype`.
Status decompressArchive(const std::string& archivePath, const MethodRegistry& registry, const std::string& outDir,
                         HfWriteOptions options);

} // namespace pocket
