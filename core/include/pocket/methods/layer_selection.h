// Which linear matrices of a model a compression run touches: by block ranges, matrix types and
// name patterns, plus presets. Pure value type; any thread.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/io/model_config.h"
#include "pocket/support/result.h"

#include <string>
#include <vector>

namespace pocket {

struct LayerSelection {
    // Inclusive block ranges; empty means every block. An end of -1 means "to the last block".
    std::vector<std::pair<int, int>> blocks;
    // Matrix types; empty means all seven.
    std::vector<MatrixType> types;
    // ECMAScript patterns searched in the full tensor name; empty means no filter.
    std::string include;
    std::string exclude;
    // Exact tensor names (e.g. picked one by one in the workbench); empty means no such filter.
    std::vector<std::string> names;
    // Blocks left out at either end (the reference code's preset skips 3 and 2).
    int skipFirst = 0;
    int skipLast = 0;

    // Parses "0-2,5,10-" (ranges, single blocks, open ends). Errors name the option and the bad part.
    static Result<std::vector<std::pair<int, int>>> parseBlocks(const std::string& spec);
    // Parses "q,k,v", "attn", "mlp", "all", HF names (q_proj, ...) or llama2.c names (wq, w1, ...).
    static Result<std::vector<MatrixType>> parseTypes(const std::string& spec);
    // "all" or "reference" (skip the first 3 and last 2 blocks, as PocketLLM's reference code does).
    static Result<LayerSelection> preset(const std::string& name);

    // The selected matrices' tensor names in canonical order (block by block, q k v o gate up down).
    // Errors: a block past the model's last one, an invalid pattern.
    Result<std::vector<std::string>> select(const ModelConfig& config) const;
};

// `selection` as the JSON object stored in archives, job identities and the experiment store.
std::string layerSelectionJson(const LayerSelection& selection);

} // namespace pocket
