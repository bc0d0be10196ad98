#include "pocket/io/model_config.h"

#include "pocket/io/checkpoint.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace pocket {

namespace {
struct ArchRow {
    const char* architecture;
    const char* modelType;
    bool alwaysBias;
};
constexpr ArchRow kArchitectures[] = {
    {"LlamaForCausalLM", "llama", false},
    {"MistralForCausalLM", "mistral", false},
    {"Qwen2ForCausalLM", "qwen2", true},
};
} // namespace

std::int64_t ModelConfig::parameterCount() const
{
    // One source of truth for the architecture's tensors: expectedTensors() in checkpoint.cpp.
    std::int64_t total = 0;
    for (const auto& t : expectedTensors(*this)) total += elementCount(t.shape);
    return total;
}

Status ModelConfig::validate(const std::string& source) const
{
    auto bad = [&](const std::string& what) { return fileError(source, what); };
    // Upper bounds well above any published model keep every size product inside int64 and stop a
    // hostile config from making us enumerate billions of tensors.
    constexpr std::int64_t kMaxDim = 1 << 20, kMaxLayers = 4096, kMaxHeads = 4096, kMaxVocab = 1 << 23, kMaxPositions = 1 << 24;
    if (hiddenSize > kMaxDim || intermediateSize > kMaxDim || headDim > kMaxDim)
        return bad("hidden_size, intermediate_size and head_dim must be at most " + std::to_string(kMaxDim));
    if (numLayers > kMaxLayers) return bad("num_hidden_layers must be at most " + std::to_string(kMaxLayers));
    if (numHeads > kMaxHeads || numKvHeads > kMaxHeads) return bad("attention head counts must be at most " + std::to_string(kMaxHeads));
    if (vocabSize > kMaxVocab) return bad("vocab_size must be at most " + std::to_string(kMaxVocab));
    if (maxPositions > kMaxPositions) return bad("max_position_embeddings must be at most " + std::to_string(kMaxPositions));
    if (numHeads * headDim > kMaxDim) return bad("num_attention_heads x head_dim must be at most " + std::to_string(kMaxDim));
    if (hiddenSize <= 0) return bad("hidden_size must be positive");
    if (intermediateSize <= 0) return bad("intermediate_size must be positive");
    if (numLayers <= 0) return bad("num_hidden_layers must be positive");
    if (numHeads <= 0) return bad("num_attention_heads must be positive");
    if (numKvHeads <= 0 || numHeads % numKvHeads != 0)
        return bad("num_key_value_heads (" + std::to_string(numKvHeads) + ") must divide num_attention_heads (" + std::to_string(numHeads) + ")");
    if (headDim <= 0 || headDim % 2 != 0) return bad("head_dim (" + std::to_string(headDim) + ") must be positive and even for RoPE");
    if (vocabSize <= 0) return bad("vocab_size must be positive");
    if (maxPositions <= 0) return bad("max_position_embeddings must be positive");
    if (!(rmsNormEps > 0)) return bad("rms_norm_eps must be positive");
    if (!(ropeTheta > 0)) return bad("rope_theta must be positive");
    return {};
}

Result<ModelConfig> parseHfConfig(const std::string& jsonText, const std::string& sourcePath)
{
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(jsonText);
    } catch (const std::exception& e) {
        return fileError(sourcePath, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object())
        return fileError(sourcePath, "not a JSON object");

    ModelConfig c;
    std::string arch;
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() && j["architectures"][0].is_string())
        arch = j["architectures"][0].get<std::string>();
    if (j.contains("model_type") && !j["model_type"].is_string())
        return fileError(sourcePath, "key 'model_type' must be a string");
    const std::string modelType = j.value("model_type", std::string());
    const ArchRow* found = nullptr;
    for (const auto& row : kArchitectures)
        if ((!arch.empty() && arch == row.architecture) || (arch.empty() && modelType == row.modelType))
            found = &row;
    if (!found) {
        std::string what = !arch.empty() ? "architecture '" + arch + "'" : (!modelType.empty() ? "model_type '" + modelType + "'" : "a config without 'architectures' or 'model_type'");
        return fileError(sourcePath, "unsupported " + what + " (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)", ErrorKind::Unsupported);
    }
    c.architecture = found->architecture;
    c.modelType = found->modelType;

    auto requireInt = [&](const char* key, std::int64_t& out) -> Status {
        if (!j.contains(key))
            return fileError(sourcePath, std::string("missing key '") + key + "'");
        if (!j[key].is_number_integer())
            return fileError(sourcePath, std::string("key '") + key + "' must be an integer");
        out = j[key].get<std::int64_t>();
        return {};
    };
    for (auto [key, out] : {std::pair<const char*, std::int64_t*>{"hidden_size", &c.hiddenSize},
                            {"intermediate_size", &c.intermediateSize},
                            {"num_hidden_layers", &c.numLayers},
                            {"num_attention_heads", &c.numHeads},
                            {"vocab_size", &c.vocabSize}}) {
        if (auto s = requireInt(key, *out); !s)
            return s.error();
    }
    // Optional keys: absent or null keeps `out` at its default; a wrong type is an error.
    auto optional = [&](const char* key, auto& out, bool (nlohmann::json::*isType)() const noexcept, const char* typeName) -> Status {
        if (!j.contains(key) || j[key].is_null())
            return {};
        if (!(j[key].*isType)())
            return fileError(sourcePath, std::string("key '") + key + "' must be " + typeName);
        out = j[key].get<std::remove_reference_t<decltype(out)>>();
        return {};
    };
    using J = nlohmann::json;
    c.numKvHeads = c.numHeads;
    c.headDim = c.numHeads > 0 ? c.hiddenSize / c.numHeads : 0;
    bool bias = false;
    for (const Status& s : {optional("num_key_value_heads", c.numKvHeads, &J::is_number_integer, "an integer"),
                            optional("max_position_embeddings", c.maxPositions, &J::is_number_integer, "an integer"),
                            optional("head_dim", c.headDim, &J::is_number_integer, "an integer"),
                            optional("sliding_window", c.slidingWindow, &J::is_number_integer, "an integer"),
                            optional("rms_norm_eps", c.rmsNormEps, &J::is_number, "a number"),
                            optional("rope_theta", c.ropeTheta, &J::is_number, "a number"),
                            optional("tie_word_embeddings", c.tieWordEmbeddings, &J::is_boolean, "true or false"),
                            optional("attention_bias", bias, &J::is_boolean, "true or false")})
        if (!s)
            return s.error();
    c.attentionBias = found->alwaysBias || bias;
    if (c.modelType == "qwen2") {
        // Qwen2 slides the window only in layers >= max_window_layers; the forward pass applies one
        // mask to all layers, so refuse rather than compute something else.
        const auto& use = j.contains("use_sliding_window") ? j["use_sliding_window"] : nlohmann::json(false);
        if (!use.is_boolean())
            return fileError(sourcePath, "key 'use_sliding_window' must be true or false");
        if (use.get<bool>())
            return fileError(sourcePath, "use_sliding_window = true (Qwen2's per-layer sliding window) is not supported", ErrorKind::Unsupported);
        c.slidingWindow = 0;
    }
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
        const auto& rs = j["rope_scaling"];
        std::string type = "?";
        for (const char* key : {"type", "rope_type"})
            if (rs.is_object() && rs.contains(key) && rs[key].is_string())
                type = rs[key].get<std::string>();
        if (type != "default")
            return fileError(sourcePath, "rope_scaling of type '" + type + "' is not supported", ErrorKind::Unsupported);
    }
    if (j.contains("hidden_act") && j["hidden_act"].is_string() && j["hidden_act"] != "silu")
        return fileError(sourcePath, "hidden_act '" + j["hidden_act"].get<std::string>() + "' is not supported (only silu)", ErrorKind::Unsupported);
    if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
        c.bosTokenId = j["bos_token_id"].get<std::int32_t>();
    if (j.contains("eos_token_id")) {
        const auto& e = j["eos_token_id"];
        if (e.is_number_integer())
            c.eosTokenId = e.get<std::int32_t>();
        else if (e.is_array() && !e.empty() && e[0].is_number_integer())
            c.eosTokenId = e[0].get<std::int32_t>();
    }
    if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) // informational only
        c.torchDtype = j["torch_dtype"].get<std::string>();
    if (auto s = c.validate(sourcePath); !s)
        return s.error();
    return c;
}

Result<ModelConfig> loadHfConfig(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "no such file");
    std::stringstream text;
    text << in.rdbuf();
    return parseHfConfig(text.str(), path);
}

std::string hfConfigJson(const ModelConfig& c)
{
    nlohmann::ordered_json j;
    j["architectures"] = {c.architecture};
    j["model_type"] = c.modelType;
    j["hidden_size"] = c.hiddenSize;
    j["intermediate_size"] = c.intermediateSize;
    j["num_hidden_layers"] = c.numLayers;
    j["num_attention_heads"] = c.numHeads;
    j["num_key_value_heads"] = c.numKvHeads;
    j["head_dim"] = c.headDim;
    j["vocab_size"] = c.vocabSize;
    j["max_position_embeddings"] = c.maxPositions;
    j["rms_norm_eps"] = c.rmsNormEps;
    j["rope_theta"] = c.ropeTheta;
    j["tie_word_embeddings"] = c.tieWordEmbeddings;
    j["attention_bias"] = c.attentionBias;
    if (c.slidingWindow > 0)
        j["sliding_window"] = c.slidingWindow;
    j["hidden_act"] = "silu";
    j["bos_token_id"] = c.bosTokenId;
    j["eos_token_id"] = c.eosTokenId;
    if (!c.torchDtype.empty())
        j["torch_dtype"] = c.torchDtype;
    return j.dump(2) + "\n";
}

} // namespace pocket
