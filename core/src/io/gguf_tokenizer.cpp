// The tokenizer in a GGUF file's metadata, and tokenizers in the form an archive embeds.
#include "pocket/io/bpe_tokenizer.h"
#include "pocket/io/atomic_file.h"
#include "pocket/io/gguf.h"
#include "pocket/io/tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace pocket {

namespace {

namespace fs = std::filesystem;
const char* const kMetaspace = "\xE2\x96\x81";

enum GgufTokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

std::string replaceAll(std::string s, const std::string& from, const std::string& to)
{
    for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
        s.replace(pos, from.size(), to);
    return s;
}

// "llama": SentencePiece pieces and scores, merged by score (the llama2.c algorithm).
Result<std::unique_ptr<Tokenizer>> llamaTokenizer(const GgufFile& g, const GgufValue& tokens)
{
    std::vector<std::string> pieces;
    pieces.reserve(tokens.strings.size());
    for (const std::string& t : tokens.strings)
        pieces.push_back(replaceAll(t, kMetaspace, " "));
    std::vector<float> scores(pieces.size(), 0.0f);
    if (const GgufValue* s = g.find("tokenizer.ggml.scores")) {
        if (s->type != GgufValueType::Array || s->numbers.size() != pieces.size())
            return fileError(g.path(), "tokenizer.ggml.scores does not hold one number per token");
        for (std::size_t i = 0; i < pieces.size(); ++i)
            scores[i] = static_cast<float>(s->numbers[i]);
    }
    const auto bos = static_cast<std::int32_t>(g.optionalInteger("tokenizer.ggml.bos_token_id").value_or(1));
    const auto eos = static_cast<std::int32_t>(g.optionalInteger("tokenizer.ggml.eos_token_id").value_or(2));
    return std::unique_ptr<Tokenizer>(Llama2cTokenizer::fromPieces(std::move(pieces), std::move(scores), bos, eos, "gguf-llama"));
}

// "gpt2": byte-level BPE with merges, the pre-tokenizer named by tokenizer.ggml.pre.
Result<BpeSpec> gpt2Spec(const GgufFile& g, const GgufValue& tokens)
{
    BpeSpec spec;
    spec.mode = BpeSpec::Mode::ByteLevel;
    spec.vocab = tokens.strings;
    const std::string pre = g.find("tokenizer.ggml.pre") ? g.text("tokenizer.ggml.pre").value() : std::string("default");
    spec.splitPatterns = bpePreTokenizerPatterns(pre);
    if (spec.splitPatterns.empty())
        return Error{g.path() + ": the pre-tokenizer '" + pre + "' (tokenizer.ggml.pre) is not supported (supported: llama-bpe, qwen2, gpt2, default, smollm)",
                     ErrorKind::Unsupported};
    spec.ignoreMerges = pre == "llama-bpe" || pre == "llama3";
    const GgufValue* merges = g.find("tokenizer.ggml.merges");
    if (!merges || merges->type != GgufValueType::Array || merges->elementType != GgufValueType::String)
        return fileError(g.path(), "a gpt2 tokenizer needs tokenizer.ggml.merges (an array of strings)");
    for (const std::string& m : merges->strings) {
        const std::size_t space = m.find(' ', 1);
        if (space == std::string::npos)
            return fileError(g.path(), "merge '" + m + "' is not two pieces");
        spec.merges.push_back({m.substr(0, space), m.substr(space + 1)});
    }
    if (const GgufValue* types = g.find("tokenizer.ggml.token_type"); types && types->numbers.size() == spec.vocab.size())
        for (std::size_t i = 0; i < spec.vocab.size(); ++i) {
            const int type = static_cast<int>(types->numbers[i]);
            if (type == kControl || type == kUserDefined)
                spec.added.push_back({spec.vocab[i], static_cast<std::int32_t>(i), type == kControl});
        }
    spec.bos = static_cast<std::int32_t>(g.optionalInteger("tokenizer.ggml.bos_token_id").value_or(-1));
    spec.eos = static_cast<std::int32_t>(g.optionalInteger("tokenizer.ggml.eos_token_id").value_or(-1));
    if (spec.bos < 0)
        spec.bos = spec.eos;
    spec.kind = "gguf-gpt2";
    return spec;
}


// A tokenizer.json that describes `spec` (a byte-level BPE), for archives of GGUF models.
std::vector<std::uint8_t> tokenizerJsonOf(const BpeSpec& spec)
{
    nlohmann::json vocab = nlohmann::json::object();
    for (std::size_t i = 0; i < spec.vocab.size(); ++i) // (a sorted map: an ordered_json object is quadratic here)
        vocab.emplace(spec.vocab[i], i);                 // the first id of a duplicated piece stays
    nlohmann::json merges = nlohmann::json::array();
    for (const auto& [a, b] : spec.merges)
        merges.push_back({a, b});
    nlohmann::json pre = nlohmann::json::array();
    for (const std::string& p : spec.splitPatterns)
        pre.push_back({{"type", "Split"}, {"pattern", {{"Regex", p}}}, {"behavior", "Isolated"}, {"invert", false}});
    pre.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}});
    nlohmann::json added = nlohmann::json::array();
    for (const BpeSpec::Added& a : spec.added)
        added.push_back({{"id", a.id}, {"content", a.content}, {"special", a.special}});
    nlohmann::json single = nlohmann::json::array();
    if (spec.bos >= 0)
        single.push_back({{"SpecialToken", {{"id", spec.vocab[static_cast<std::size_t>(spec.bos)]}, {"type_id", 0}}}});
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    nlohmann::json j{{"version", "1.0"},
                             {"added_tokens", added},
                             {"normalizer", nullptr},
                             {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", pre}}},
                             {"post_processor", {{"type", "TemplateProcessing"}, {"single", single}}},
                             {"decoder", {{"type", "ByteLevel"}}},
                             {"model", {{"type", "BPE"}, {"ignore_merges", spec.ignoreMerges}, {"vocab", vocab}, {"merges", merges}}}};
    const std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return std::vector<std::uint8_t>(text.begin(), text.end());
}

} // namespace

Result<std::unique_ptr<Tokenizer>> loadGgufTokenizer(const std::string& path)
{
    auto gguf = GgufFile::open(path);
    if (!gguf)
        return gguf.error();
    const GgufFile& g = **gguf;
    auto model = g.text("tokenizer.ggml.model");
    if (!model)
        return Error{path + ": the GGUF file carries no tokenizer (tokenizer.ggml.model); give one", ErrorKind::Input, "tokenizer"};
    const GgufValue* tokens = g.find("tokenizer.ggml.tokens");
    if (!tokens || tokens->type != GgufValueType::Array || tokens->elementType != GgufValueType::String || tokens->strings.empty())
        return fileError(path, "tokenizer.ggml.tokens is missing or not an array of strings");
    if (*model == "llama")
        return llamaTokenizer(g, *tokens);
    if (*model == "gpt2") {
        auto spec = gpt2Spec(g, *tokens);
        if (!spec)
            return spec.error();
        auto t = BpeTokenizer::create(std::move(*spec), path);
        if (!t)
            return t.error();
        return std::unique_ptr<Tokenizer>(std::move(t).value());
    }
    return Error{path + ": GGUF tokenizer model '" + *model + "' is not supported (supported: llama, gpt2)", ErrorKind::Unsupported};
}

Result<EmbeddableTokenizer> embeddableTokenizer(const std::string& path)
{
    const fs::path p(path);
    if (p.extension() == ".model" || p.extension() == ".json" || !isGgufFile(path)) {
        auto bytes = readWholeFile(path);
        if (!bytes)
            return bytes.error();
        if (p.extension() == ".model")
            return EmbeddableTokenizer{"sentencepiece", "tokenizer.model", std::move(*bytes)};
        if (p.extension() == ".json")
            return EmbeddableTokenizer{"tokenizer.json", "tokenizer.json", std::move(*bytes)};
        return EmbeddableTokenizer{"llama2c", "tokenizer.bin", std::move(*bytes)};
    }
    auto tokenizer = loadGgufTokenizer(path);
    if (!tokenizer)
        return tokenizer.error();
    if (const auto* llama = dynamic_cast<const Llama2cTokenizer*>(tokenizer->get()))
        return EmbeddableTokenizer{"llama2c", "tokenizer.bin", llama->serialize()};
    if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(tokenizer->get()))
        return EmbeddableTokenizer{"tokenizer.json", "tokenizer.json", tokenizerJsonOf(bpe->spec())};
    return fileError(path, "this tokenizer cannot be embedded in an archive", ErrorKind::Unsupported);
}

} // namespace pocket
