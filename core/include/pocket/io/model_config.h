// The architecture hyper-parameters of a Llama-family model, read from or written to a
// Hugging Face config.json. Plain value type.
#pragma once

#include "pocket/support/result.h"

#include <cstdint>
#include <string>

namespace pocket {

struct ModelConfig {
    std::string architecture = "LlamaForCausalLM"; // LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM
    std::string modelType = "llama";
    std::int64_t hiddenSize = 0;       // dim
    std::int64_t intermediateSize = 0; // SwiGLU hidden size
    std::int64_t numLayers = 0;
    std::int64_t numHeads = 0;
    std::int64_t numKvHeads = 0;
    std::int64_t headDim = 0;          // hiddenSize / numHeads unless the config says otherwise
    std::int64_t vocabSize = 0;
    std::int64_t maxPositions = 2048;
    double rmsNormEps = 1e-6;
    double ropeTheta = 10000.0;
    bool tieWordEmbeddings = false;
    bool attentionBias = false;        // q/k/v projections carry biases (Qwen2 always)
    std::int64_t slidingWindow = 0;    // Mistral; 0 means none
    std::int32_t bosTokenId = 1;
    std::int32_t eosTokenId = 2;
    std::string torchDtype;            // as declared in config.json, informational

    // Number of parameters the tensors of this architecture hold.
    std::int64_t parameterCount() const;
    // Checks internal consistency (positive sizes, heads divide evenly). `source` names the file.
    Status validate(const std::string& source) const;
};

// Parses a Hugging Face config.json. Errors name the file and the missing/bad key or the
// unsupported architecture.
Result<ModelConfig> parseHfConfig(const std::string& jsonText, const std::string& sourcePath);
Result<ModelConfig> loadHfConfig(const std::string& path);
// The config.json text for `config` (the keys transformers reads).
std::string hfConfigJson(const ModelConfig& config);

} // namespace pocket
