// Reading a .pllm archive as a model: a Checkpoint whose compressed matrices are decoded by their
// methods, and the decoded model written out as a Hugging Face folder.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <memory>
#include <string>

namespace pocket {

// A Checkpoint over a .pllm archive: compressed matrices are decoded by their method (one group
// at a time, cached until each of its matrices has been read once), the rest read as stored.
// `registry` must outlive the checkpoint. Loads return F32 for decoded matrices (fp16-exact values).
Result<std::unique_ptr<Checkpoint>> openArchiveCheckpoint(const std::string& path, const MethodRegistry& registry);

// Opens a model or, for a .pllm file, the decoding view of an archive (see openArchiveCheckpoint).
Result<std::unique_ptr<Checkpoint>> openModelOrArchive(const std::string& path, const MethodRegistry& registry);

// Writes the decoded model of an archive as a Hugging Face folder (config.json, safetensors,
// tokenizer), weights stored as `options.dtype`.
Status decompressArchive(const std::string& archivePath, const MethodRegistry& registry, const std::string& outDir,
                         HfWriteOptions options);

} // namespace pocket
