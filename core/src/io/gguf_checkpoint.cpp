// GGUF files as checkpoints: the model config from the metadata (architectures "llama", which also
// carries Mistral and TinyLlama, and "qwen2"), llama.cpp's tensor names mapped to Hugging Face's,
// and every tensor dequantised to float32 one at a time on load, q/k rows back in the rotate-half
// order (llama.cpp keeps Meta's interleaved order for "llama").
#include "checkpoint_formats.h"

#include "pocket/io/ggml_types.h"
#include "pocket/io/gguf.h"
#include "pocket/io/mapped_file.h"

#include <map>

namespace pocket {

namespace {

class GgufCheckpoint final : public Checkpoint {
public:
    static Result<std::unique_ptr<Checkpoint>> open(const std::string& path);
    std::string fileOf(const std::string&) const override { return m_path; }
    Result<TensorData> load(const std::string& name) const override;

private:
    Status readConfig();
    Status mapTensors();

    std::shared_ptr<GgufFile> m_gguf;
    std::map<std::string, const GgufTensor*> m_source; // HF name -> GGUF tensor
    std::map<std::string, std::int64_t> m_permuteHeads; // HF name -> heads, for interleaved q/k rows
};

Status GgufCheckpoint::readConfig()
{
    const GgufFile& g = *m_gguf;
    auto arch = g.text("general.architecture");
    if (!arch)
        return arch.error();
    ModelConfig& c = m_config;
    if (*arch == "llama") {
        c.architecture = "LlamaForCausalLM";
        c.modelType = "llama";
    } else if (*arch == "qwen2") {
        c.architecture = "Qwen2ForCausalLM";
        c.modelType = "qwen2";
    } else {
        return Error{m_path + ": GGUF architecture '" + *arch + "' is not supported (supported: llama, which includes Mistral and TinyLlama, and qwen2)",
                     ErrorKind::Unsupported};
    }
    const std::string a = *arch + ".";
    const auto need = [&](const std::string& key, std::int64_t& out) -> Status {
        auto v = g.integer(a + key);
        if (!v)
            return v.error();
        out = *v;
        return {};
    };
    POCKET_TRY(need("embedding_length", c.hiddenSize));
    POCKET_TRY(need("feed_forward_length", c.intermediateSize));
    POCKET_TRY(need("block_count", c.numLayers));
    POCKET_TRY(need("attention.head_count", c.numHeads));
    c.numKvHeads = g.optionalInteger(a + "attention.head_count_kv").value_or(c.numHeads);
    c.headDim = c.numHeads > 0 ? g.optionalInteger(a + "attention.key_length").value_or(c.hiddenSize / c.numHeads) : 0;
    c.maxPositions = g.optionalInteger(a + "context_length").value_or(2048);
    c.rmsNormEps = g.optionalNumber(a + "attention.layer_norm_rms_epsilon").value_or(1e-6);
    c.ropeTheta = g.optionalNumber(a + "rope.freq_base").value_or(10000.0);
    if (const auto rot = g.optionalInteger(a + "rope.dimension_count"); rot && *rot != c.headDim)
        return Error{m_path + ": partial rotary embeddings (rope.dimension_count " + std::to_string(*rot) + " of head size " +
                         std::to_string(c.headDim) + ") are not supported",
                     ErrorKind::Unsupported};
    if (const GgufValue* s = g.find(a + "rope.scaling.type"); s && s->type == GgufValueType::String && s->text != "none")
        return Error{m_path + ": rope scaling '" + s->text + "' is not supported", ErrorKind::Unsupported};
    if (g.tensor("rope_freqs.weight"))
        return Error{m_path + ": per-frequency rope factors (rope_freqs.weight, Llama-3.1 rope scaling) are not supported", ErrorKind::Unsupported};
    const GgufValue* tokens = g.find("tokenizer.ggml.tokens");
    const GgufTensor* embed = g.tensor("token_embd.weight");
    if (!embed)
        return fileError(m_path, "no tensor 'token_embd.weight'");
    c.vocabSize = g.optionalInteger(a + "vocab_size").value_or(tokens ? static_cast<std::int64_t>(tokens->strings.size()) : embed->shape[0]);
    c.tieWordEmbeddings = g.tensor("output.weight") == nullptr;
    c.attentionBias = g.tensor("blk.0.attn_q.bias") != nullptr;
    c.bosTokenId = static_cast<std::int32_t>(g.optionalInteger("tokenizer.ggml.bos_token_id").value_or(1));
    c.eosTokenId = static_cast<std::int32_t>(g.optionalInteger("tokenizer.ggml.eos_token_id").value_or(2));
    c.torchDtype = "gguf";
    return c.validate(m_path);
}

Status GgufCheckpoint::mapTensors()
{
    const bool interleaved = m_config.modelType == "llama";
    for (TensorInfo info : expectedTensors(m_config)) {
        const std::string gname = ggufTensorName(info.name);
        const GgufTensor* t = gname.empty() ? nullptr : m_gguf->tensor(gname);
        if (!t)
            return fileError(m_path, "missing tensor '" + gname + "' (" + info.name + ") that the metadata's configuration needs");
        if (t->shape != info.shape)
            return fileError(m_path, "tensor '" + gname + "' has shape " + shapeString(t->shape) + " but the metadata implies " + shapeString(info.shape));
        const GgmlTypeTraits traits = ggmlTypeTraits(static_cast<std::uint32_t>(t->type));
        if (!traits.dequantizable)
            return Error{m_path + ": tensor '" + gname + "' is stored as " + traits.name + ", which this program cannot dequantise yet",
                         ErrorKind::Unsupported};
        info.dtype = DType::F32;
        info.byteSize = t->bytes;
        if (t->type != GgmlType::F32) {
            info.storedType = traits.name;
            info.storedBitsPerWeight = ggmlBitsPerWeight(t->type);
        }
        m_source[info.name] = t;
        if (interleaved) {
            if (gname.find(".attn_q.") != std::string::npos)
                m_permuteHeads[info.name] = m_config.numHeads;
            else if (gname.find(".attn_k.") != std::string::npos)
                m_permuteHeads[info.name] = m_config.numKvHeads;
        }
        m_tensors.push_back(std::move(info));
    }
    buildIndex();
    return {};
}

Result<std::unique_ptr<Checkpoint>> GgufCheckpoint::open(const std::string& path)
{
    auto gguf = GgufFile::open(path);
    if (!gguf)
        return gguf.error();
    std::unique_ptr<GgufCheckpoint> ckpt(new GgufCheckpoint);
    ckpt->m_gguf = *gguf;
    ckpt->m_path = path;
    ckpt->m_format = CheckpointFormat::Gguf;
    POCKET_TRY(ckpt->readConfig());
    POCKET_TRY(ckpt->mapTensors());
    if (ckpt->m_gguf->find("tokenizer.ggml.model"))
        ckpt->m_tokenizerPath = path; // the tokenizer is in the metadata
    if (const auto fileType = ckpt->m_gguf->optionalInteger("general.file_type"); fileType && *fileType >= 0)
        ckpt->m_fileType = ggufFileTypeName(static_cast<std::uint32_t>(*fileType));
    return std::unique_ptr<Checkpoint>(std::move(ckpt));
}

Result<TensorData> GgufCheckpoint::load(const std::string& name) const
{
    const TensorInfo* info = find(name);
    const auto it = m_source.find(name);
    if (!info || it == m_source.end())
        return fileError(m_path, "no tensor named '" + name + "'");
    const GgufTensor& t = *it->second;
    const std::int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const std::int64_t cols = t.elements() / rows;
    auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(t.elements()));
    if (!dequantizeRow(t.type, m_gguf->data(t), values->data(), t.elements()))
        return fileError(m_path, "cannot dequantise tensor '" + t.name + "'");
    m_gguf->file()->release(t.offset, t.bytes);
    if (const auto p = m_permuteHeads.find(name); p != m_permuteHeads.end()) {
        auto reordered = std::make_shared<std::vector<float>>(values->size());
        interleavedToHalfRows(values->data(), reordered->data(), rows, cols, p->second);
        values = std::move(reordered);
    }
    TensorData out;
    out.info = *info;
    out.info.byteSize = values->size() * sizeof(float);
    out.data = reinterpret_cast<const std::uint8_t*>(values->data());
    out.owner = values;
    return out;
}

} // namespace

Result<std::unique_ptr<Checkpoint>> openGgufCheckpoint(const std::string& path) { return GgufCheckpoint::open(path); }

std::string ggufTensorName(const std::string& hf)
{
    static const std::map<std::string, std::string> fixed{
        {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"}, {"lm_head.weight", "output.weight"}};
    if (const auto it = fixed.find(hf); it != fixed.end())
        return it->second;
    const std::string prefix = "model.layers.";
    if (hf.rfind(prefix, 0) != 0)
        return {};
    const std::size_t dot = hf.find('.', prefix.size());
    const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
    static const std::map<std::string, std::string> perLayer{
        {"input_layernorm.weight", "attn_norm.weight"},     {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},       {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},       {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},           {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},           {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},            {"mlp.down_proj.weight", "ffn_down.weight"}};
    const auto it = perLayer.find(hf.substr(dot + 1));
    return it == perLayer.end() ? std::string() : "blk." + layer + "." + it->second;
}

} // namespace pocket
