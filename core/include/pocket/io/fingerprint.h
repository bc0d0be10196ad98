// Fast content fingerprints (XXH64, seed 0) of models on disk, whole files and texts, as
// "xxh64:<16 hex digits>": the keys that identify models and datasets in the experiment store.
// Pure functions; any thread.
#pragma once

#include "pocket/support/result.h"

#include <string>

namespace pocket {

// A fast fingerprint of a model on disk, "xxh64:<16 hex digits>" (XXH64, seed 0). For a folder:
// config.json's bytes, then for every regular file whose name ends in .safetensors, .bin, .pth or
// .json other than config.json (sorted by name): its name, size, first and last MiB. For a file
// (llama2.c .bin, .safetensors, .pllm): its size, first and last MiB. Reads at most ~2 MiB per
// file, so it is cheap for a 7B model; it tells apart checkpoints that differ in those bytes only.
Result<std::string> modelFingerprint(const std::string& path);

// XXH64 of a whole file, "xxh64:<16 hex digits>" (streamed; datasets, text files).
Result<std::string> fileFingerprint(const std::string& path);

// XXH64 of some bytes, "xxh64:<16 hex digits>" (identities made of names and configurations).
std::string textFingerprint(const std::string& text);

} // namespace pocket
