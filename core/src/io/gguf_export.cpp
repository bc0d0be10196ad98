#include "pocket/io/gguf_export.h"

#include "pocket/io/bpe_tokenizer.h"
#include "pocket/io/gguf.h"
#include "pocket/io/gguf_writer.h"
#include "pocket/io/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <memory>

namespace pocket {

namespace {

// llama.cpp's GGUF name of a Hugging Face tensor name.
std::string ggufName(const std::string& hf)
{
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    const std::string prefix = "model.layers.";
    const std::size_t dot = hf.find('.', prefix.size());
    const std::string layer = "blk." + hf.substr(prefix.size(), dot - prefix.size()) + ".";
    const std::string rest = hf.substr(dot + 1);
    static const std::pair<const char*, const char*> map[] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},       {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},       {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},        {"mlp.down_proj.weight", "ffn_down.weight"}};
    for (const auto& [from, to] : map)
        if (rest == from)
            return layer + to;
    return {};
}

// The inverse of interleavedToHalfRows: Hugging Face's rotate-half rows back to Meta's interleaved
// order, which llama.cpp's "llama" architecture expects.
void halfToInterleavedRows(const float* in, float* out, std::int64_t rows, std::int64_t cols, std::int64_t heads)
{
    const std::int64_t hd = rows / heads;
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < hd / 2; ++i)
            for (std::int64_t pair = 0; pair < 2; ++pair)
                std::copy(in + (h * hd + pair * (hd / 2) + i) * cols, in + (h * hd + pair * (hd / 2) + i + 1) * cols,
                          out + (h * hd + 2 * i + pair) * cols);
}

Status writeModelMetadata(const ModelConfig& c, const std::string& name, DType dtype, GgufWriter& w)
{
    const bool qwen = c.modelType == "qwen2";
    if (c.modelType != "llama" && !qwen && c.modelType != "mistral")
        return Error{"GGUF export: model type '" + c.modelType + "' has no GGUF architecture here (llama, mistral, qwen2)", ErrorKind::Unsupported};
    const std::string a = qwen ? "qwen2" : "llama";
    w.setString("general.architecture", a);
    w.setString("general.name", name);
    w.setU32("general.file_type", dtype == DType::F32 ? 0 : dtype == DType::F16 ? 1 : 32);
    w.setU32(a + ".context_length", static_cast<std::uint32_t>(c.maxPositions));
    w.setU32(a + ".embedding_length", static_cast<std::uint32_t>(c.hiddenSize));
    w.setU32(a + ".block_count", static_cast<std::uint32_t>(c.numLayers));
    w.setU32(a + ".feed_forward_length", static_cast<std::uint32_t>(c.intermediateSize));
    w.setU32(a + ".attention.head_count", static_cast<std::uint32_t>(c.numHeads));
    w.setU32(a + ".attention.head_count_kv", static_cast<std::uint32_t>(c.numKvHeads));
    w.setF32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rmsNormEps));
    w.setF32(a + ".rope.freq_base", static_cast<float>(c.ropeTheta));
    w.setU32(a + ".rope.dimension_count", static_cast<std::uint32_t>(c.headDim));
    if (c.headDim * c.numHeads != c.hiddenSize) {
        w.setU32(a + ".attention.key_length", static_cast<std::uint32_t>(c.headDim));
        w.setU32(a + ".attention.value_length", static_cast<std::uint32_t>(c.headDim));
    }
    w.setU32(a + ".vocab_size", static_cast<std::uint32_t>(c.vocabSize));
    return {};
}

// The tokenizer in llama.cpp's metadata keys.
Status writeTokenizer(const std::string& path, std::int64_t vocabSize, GgufWriter& w)
{
    if (isGgufFile(path)) { // copy the source's own tokenizer keys
        auto g = GgufFile::open(path);
        if (!g)
            return g.error();
        for (const auto& [key, value] : (*g)->metadata())
            if (key.rfind("tokenizer.", 0) == 0)
                w.set(key, value);
        return {};
    }
    if (std::filesystem::path(path).extension() == ".json") {
        auto tok = loadTokenizerJson(path);
        if (!tok)
            return tok.error();
        const BpeSpec& s = (*tok)->spec();
        if (s.mode != BpeSpec::Mode::ByteLevel)
            return Error{path + ": a SentencePiece-style tokenizer.json cannot be written to GGUF yet; give the tokenizer.model", ErrorKind::Unsupported};
        std::string pre;
        for (const char* name : {"llama-bpe", "qwen2", "gpt2", "smollm"})
            if (bpePreTokenizerPatterns(name) == s.splitPatterns)
                pre = name;
        if (pre.empty())
            return Error{path + ": its pre-tokenizer has no llama.cpp name", ErrorKind::Unsupported};
        std::vector<std::int32_t> types(s.vocab.size(), 1);
        for (const BpeSpec::Added& a : s.added)
            types[static_cast<std::size_t>(a.id)] = a.special ? 3 : 4;
        std::vector<std::string> merges;
        for (const auto& [a, b] : s.merges)
            merges.push_back(a + " " + b);
        w.setString("tokenizer.ggml.model", "gpt2");
        w.setString("tokenizer.ggml.pre", pre);
        w.setStrings("tokenizer.ggml.tokens", s.vocab);
        w.setI32s("tokenizer.ggml.token_type", types);
        w.setStrings("tokenizer.ggml.merges", merges);
        if (s.bos >= 0)
            w.setU32("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(s.bos));
        if (s.eos >= 0)
            w.setU32("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(s.eos));
        return {};
    }
    auto vocab = sentencePieceVocab(path);
    if (!vocab)
        return vocab.error();
    if (static_cast<std::int64_t>(vocab->pieces.size()) != vocabSize)
        return fileError(path, "the tokenizer has " + std::to_string(vocab->pieces.size()) + " tokens but the model's vocabulary has " +
                                   std::to_string(vocabSize));
    // llama.cpp's token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
    static const std::int32_t kType[] = {1, 2, 3, 5, 6};
    std::vector<std::int32_t> types;
    for (int k : vocab->kinds)
        types.push_back(kType[k]);
    w.setString("tokenizer.ggml.model", "llama");
    w.setStrings("tokenizer.ggml.tokens", vocab->pieces);
    w.setF32s("tokenizer.ggml.scores", vocab->scores);
    w.setI32s("tokenizer.ggml.token_type", types);
    w.setU32("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(vocab->bos));
    w.setU32("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(vocab->eos));
    w.setU32("tokenizer.ggml.unknown_token_id", 0);
    w.setBool("tokenizer.ggml.add_bos_token", true);
    w.setBool("tokenizer.ggml.add_eos_token", false);
    return {};
}

} // namespace

Status writeGgufModel(const Checkpoint& ckpt, const std::string& outPath, const GgufExportOptions& options)
{
    if (options.dtype != DType::F32 && options.dtype != DType::F16 && options.dtype != DType::BF16)
        return Error::usage(std::string("dtype: a GGUF is written as f32, f16 or bf16, not ") + dtypeName(options.dtype), "dtype");
    std::error_code ec;
    if (std::filesystem::exists(outPath, ec) && !options.overwrite)
        return Error{outPath + ": already exists; choose to overwrite it to replace it", ErrorKind::Input, "overwrite"};
    const ModelConfig& c = ckpt.config();
    GgufWriter w;
    POCKET_TRY(writeModelMetadata(c, std::filesystem::path(ckpt.path()).filename().string(), options.dtype, w));
    const std::string tokenizer = options.tokenizerPath.empty() ? ckpt.tokenizerPath() : options.tokenizerPath;
    if (!tokenizer.empty())
        POCKET_TRY(writeTokenizer(tokenizer, c.vocabSize, w));
    const bool interleave = c.modelType != "qwen2";
    const int total = static_cast<int>(ckpt.tensors().size());
    auto done = std::make_shared<int>(0);
    for (const TensorInfo& t : ckpt.tensors()) {
        const std::string name = ggufName(t.name);
        if (name.empty())
            return fileError(ckpt.path(), "tensor '" + t.name + "' has no GGUF name");
        const bool matrix = t.shape.size() == 2;
        const DType stored = matrix ? options.dtype : DType::F32;
        const GgmlType type = stored == DType::F32 ? GgmlType::F32 : stored == DType::F16 ? GgmlType::F16 : GgmlType::BF16;
        std::int64_t heads = 0;
        if (interleave && name.find(".attn_q.") != std::string::npos)
            heads = c.numHeads;
        else if (interleave && name.find(".attn_k.") != std::string::npos)
            heads = c.numKvHeads;
        w.add(name, type, t.shape, [&ckpt, &options, t, stored, heads, done, total](const GgufWriter::Sink& sink) -> Status {
            auto data = ckpt.load(t.name);
            if (!data)
                return data.error();
            std::vector<float> values = data->toFloat();
            if (heads > 0) {
                std::vector<float> reordered(values.size());
                const std::int64_t rows = t.shape[0], cols = t.shape.size() == 2 ? t.shape[1] : 1;
                halfToInterleavedRows(values.data(), reordered.data(), rows, cols, heads);
                values = std::move(reordered);
            }
            std::vector<std::uint8_t> bytes(values.size() * dtypeSize(stored));
            convertFromFloat(values.data(), values.size(), stored, bytes.data());
            POCKET_TRY(sink(bytes.data(), bytes.size()));
            if (options.onTensor && !options.onTensor(++*done, total))
                return Error::cancelled();
            return {};
        });
    }
    return w.write(outPath);
}

} // namespace pocket
