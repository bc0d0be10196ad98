#include "pocket/io/gguf_export.h"

#include "pocket/io/bpe_tokenizer.h"
#include "pocket/io/gguf.h"
#include "pocket/io/gguf_writer.h"
#include "pocket/io/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>

namespace pocket {

namespace {

Status writeModelMetadata(const ModelConfig& c, const std::string& name, std::uint32_t fileType, GgufWriter& w)
{
    const bool qwen = c.modelType == "qwen2";
    if (c.modelType != "llama" && !qwen && c.modelType != "mistral")
        return Error{"GGUF export: model type '" + c.modelType + "' has no GGUF architecture here (llama, mistral, qwen2)", ErrorKind::Unsupported};
    const std::string a = qwen ? "qwen2" : "llama";
    w.setString("general.architecture", a);
    w.setString("general.name", name);
    w.setU32("general.file_type", fileType);
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

namespace {

// The bytes of `values` (rows x cols) as `type` (F32, F16, BF16 or Q8_0).
Result<std::vector<std::uint8_t>> encodeAs(GgmlType type, const std::vector<float>& values, const std::string& name)
{
    if (type == GgmlType::Q8_0) {
        if (values.size() % 32 != 0)
            return Error{"GGUF export: " + name + " has " + std::to_string(values.size()) + " weights, not a multiple of Q8_0's 32", ErrorKind::Unsupported};
        std::vector<std::uint8_t> bytes(values.size() / 32 * 34);
        quantizeRowQ8_0(values.data(), bytes.data(), static_cast<std::int64_t>(values.size()));
        return bytes;
    }
    const DType d = type == GgmlType::F32 ? DType::F32 : type == GgmlType::F16 ? DType::F16 : DType::BF16;
    std::vector<std::uint8_t> bytes(values.size() * dtypeSize(d));
    convertFromFloat(values.data(), values.size(), d, bytes.data());
    return bytes;
}

// Rows of `rowBytes` bytes from Hugging Face's rotate-half order to llama.cpp's interleaved order.
std::vector<std::uint8_t> interleaveRowBytes(const std::vector<std::uint8_t>& in, std::int64_t rows, std::int64_t heads)
{
    const std::size_t rowBytes = in.size() / static_cast<std::size_t>(rows);
    const std::int64_t hd = rows / heads;
    std::vector<std::uint8_t> out(in.size());
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < hd / 2; ++i)
            for (std::int64_t pair = 0; pair < 2; ++pair)
                std::memcpy(out.data() + static_cast<std::size_t>(h * hd + 2 * i + pair) * rowBytes,
                            in.data() + static_cast<std::size_t>(h * hd + pair * (hd / 2) + i) * rowBytes, rowBytes);
    return out;
}

std::uint32_t fileTypeOf(GgmlType type)
{
    switch (type) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::Q8_0: return 7;
    case GgmlType::BF16: return 32;
    default: return 1;
    }
}

} // namespace

Status writeGgufModel(const Checkpoint& ckpt, const std::string& outPath, const GgufExportOptions& options)
{
    if (options.dtype != DType::F32 && options.dtype != DType::F16 && options.dtype != DType::BF16)
        return Error::usage(std::string("dtype: a GGUF is written as f32, f16 or bf16, not ") + dtypeName(options.dtype), "dtype");
    const GgmlType matrixType = options.matrixType.value_or(options.dtype == DType::F32   ? GgmlType::F32
                                                            : options.dtype == DType::F16 ? GgmlType::F16
                                                                                          : GgmlType::BF16);
    const GgmlType embeddingType = options.embeddingType.value_or(matrixType);
    for (const GgmlType t : {matrixType, embeddingType})
        if (t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16 && t != GgmlType::Q8_0)
            return Error::usage(std::string("a GGUF's plain matrices are written as F32, F16, BF16 or Q8_0, not ") +
                                    ggmlTypeTraits(static_cast<std::uint32_t>(t)).name,
                                "type");
    std::error_code ec;
    if (std::filesystem::exists(outPath, ec) && !options.overwrite)
        return Error{outPath + ": already exists; choose to overwrite it to replace it", ErrorKind::Input, "overwrite"};
    const ModelConfig& c = ckpt.config();
    GgufWriter w;
    POCKET_TRY(writeModelMetadata(c, std::filesystem::path(ckpt.path()).filename().string(), options.fileType.value_or(fileTypeOf(matrixType)), w));
    const std::string tokenizer = options.tokenizerPath.empty() ? ckpt.tokenizerPath() : options.tokenizerPath;
    if (!tokenizer.empty())
        POCKET_TRY(writeTokenizer(tokenizer, c.vocabSize, w));
    const bool interleave = c.modelType != "qwen2";
    const int total = static_cast<int>(ckpt.tensors().size());
    auto done = std::make_shared<int>(0);
    if (options.report)
        options.report->clear();
    for (const TensorInfo& t : ckpt.tensors()) {
        const std::string name = ggufTensorName(t.name);
        if (name.empty())
            return fileError(ckpt.path(), "tensor '" + t.name + "' has no GGUF name");
        const bool matrix = t.shape.size() == 2;
        const bool embedding = name == "token_embd.weight" || name == "output.weight";
        std::optional<GgufEncodedTensor> encoded;
        if (matrix && !embedding && options.encode) {
            auto e = options.encode(t);
            if (!e)
                return e.error();
            encoded = std::move(*e);
        }
        const GgmlType type = encoded ? encoded->type : !matrix ? GgmlType::F32 : embedding ? embeddingType : matrixType;
        const GgmlTypeTraits traits = ggmlTypeTraits(static_cast<std::uint32_t>(type));
        if (matrix && !ggmlRowBytes(type, t.shape[1]))
            return Error{"GGUF export: " + t.name + " has rows of " + std::to_string(t.shape[1]) + " weights, not a multiple of " + traits.name +
                             "'s block of " + std::to_string(traits.blockSize) + "; choose F16, BF16 or F32 for it",
                         ErrorKind::Unsupported};
        std::int64_t heads = 0;
        if (interleave && name.find(".attn_q.") != std::string::npos)
            heads = c.numHeads;
        else if (interleave && name.find(".attn_k.") != std::string::npos)
            heads = c.numKvHeads;
        if (options.report) {
            const std::int64_t n = elementCount(t.shape);
            options.report->push_back({t.name, name, traits.name, encoded.has_value(), n,
                                       static_cast<std::uint64_t>(n / traits.blockSize * traits.blockBytes)});
        }
        auto shared = std::make_shared<std::optional<GgufEncodedTensor>>(std::move(encoded));
        w.add(name, type, t.shape, [&ckpt, &options, t, type, heads, done, total, shared](const GgufWriter::Sink& sink) -> Status {
            std::vector<std::uint8_t> bytes;
            const std::int64_t rows = t.shape[0];
            if (shared->has_value()) {
                auto produced = (*shared)->produce();
                if (!produced)
                    return produced.error();
                bytes = std::move(*produced);
            } else {
                auto data = ckpt.load(t.name);
                if (!data)
                    return data.error();
                auto b = encodeAs(type, data->toFloat(), t.name);
                if (!b)
                    return b.error();
                bytes = std::move(*b);
            }
            if (heads > 0)
                bytes = interleaveRowBytes(bytes, rows, heads);
            POCKET_TRY(sink(bytes.data(), bytes.size()));
            if (options.onTensor && !options.onTensor(++*done, total))
                return Error::cancelled();
            return {};
        });
    }
    return w.write(outPath);
}

} // namespace pocket
