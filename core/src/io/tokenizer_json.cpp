// tokenizer.json (Hugging Face tokenizers) -> BpeSpec.
#include "pocket/io/bpe_tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <fstream>
#include <iterator>

namespace pocket {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const char* const kMetaspace = "\xE2\x96\x81";

Result<json> readJson(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "cannot open");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.empty())
        return fileError(path, "empty file");
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return fileError(path, "not a JSON object");
    return j;
}

Error unsupported(const std::string& path, const std::string& what)
{
    return Error{path + ": " + what + " is not supported", ErrorKind::Unsupported, {}};
}

// The pre-tokenizer: regex splits (Isolated), ByteLevel, Digits, Metaspace. Sets the mode.
Status readPreTokenizer(const json& p, const std::string& path, BpeSpec& spec, bool& byteLevel, bool& metaspace)
{
    if (p.is_null())
        return {};
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
        for (const json& q : p.value("pretokenizers", json::array()))
            POCKET_TRY(readPreTokenizer(q, path, spec, byteLevel, metaspace));
        return {};
    }
    if (type == "ByteLevel") {
        byteLevel = true;
        if (p.value("add_prefix_space", false))
            return unsupported(path, "a ByteLevel pre-tokenizer with add_prefix_space");
        if (p.value("use_regex", true))
            spec.splitPatterns.push_back(bpePreTokenizerPatterns("gpt2").front());
        return {};
    }
    if (type == "Split") {
        const json& pattern = p.value("pattern", json::object());
        if (!pattern.contains("Regex") || !pattern["Regex"].is_string())
            return unsupported(path, "a Split pre-tokenizer without a regex");
        if (p.value("behavior", "") != "Isolated" || p.value("invert", false))
            return unsupported(path, "a Split pre-tokenizer with behavior '" + p.value("behavior", std::string()) + "'");
        spec.splitPatterns.push_back(pattern["Regex"].get<std::string>());
        return {};
    }
    if (type == "Digits") {
        if (!p.value("individual_digits", false))
            return unsupported(path, "a Digits pre-tokenizer that keeps digits together");
        spec.splitPatterns.push_back(R"(\p{N})");
        return {};
    }
    if (type == "Metaspace") {
        metaspace = true;
        if (p.value("replacement", std::string(kMetaspace)) != kMetaspace)
            return unsupported(path, "a Metaspace pre-tokenizer with another replacement character");
        spec.prependSpace = p.value("prepend_scheme", std::string("always")) != "never" && p.value("add_prefix_space", true);
        return {};
    }
    return unsupported(path, "the pre-tokenizer '" + type + "'");
}

// The normaliser: NFC, or SentencePiece's Prepend("▁") + Replace(" ", "▁").
Status readNormalizer(const json& n, const std::string& path, BpeSpec& spec, bool& metaspace, bool& prepend)
{
    if (n.is_null())
        return {};
    const std::string type = n.value("type", "");
    if (type == "Sequence") {
        for (const json& m : n.value("normalizers", json::array()))
            POCKET_TRY(readNormalizer(m, path, spec, metaspace, prepend));
        return {};
    }
    if (type == "NFC") {
        spec.nfc = true;
        return {};
    }
    if (type == "Prepend" && n.value("prepend", "") == kMetaspace) {
        prepend = true;
        return {};
    }
    if (type == "Replace" && n.value("content", "") == kMetaspace && n.value("pattern", json::object()).value("String", "") == " ") {
        metaspace = true;
        return {};
    }
    return unsupported(path, "the normalizer '" + type + "'");
}

constexpr std::int64_t kMaxVocab = 1 << 24;

// A token id: an integer in [0, kMaxVocab), else nothing.
std::optional<std::int64_t> tokenId(const json& v)
{
    if (!v.is_number_integer())
        return std::nullopt;
    if (v.is_number_unsigned())
        return v.get<std::uint64_t>() < static_cast<std::uint64_t>(kMaxVocab) ? std::optional<std::int64_t>(v.get<std::int64_t>()) : std::nullopt;
    const std::int64_t id = v.get<std::int64_t>();
    return id >= 0 && id < kMaxVocab ? std::optional<std::int64_t>(id) : std::nullopt;
}

// Vocabulary (id order), merges ("a b" strings or [a, b] pairs) and added tokens.
Status readModel(const json& root, const std::string& path, BpeSpec& spec)
{
    const json& model = root.value("model", json::object());
    if (model.value("type", "BPE") != "BPE")
        return unsupported(path, "the tokenizer model '" + model.value("type", std::string()) + "' (only BPE)");
    const json& vocab = model.value("vocab", json::object());
    if (!vocab.is_object() || vocab.empty())
        return fileError(path, "the model has no vocabulary");
    const json added = root.value("added_tokens", json::array());
    if (!added.is_array())
        return fileError(path, "added_tokens is not an array");
    std::int64_t size = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        const auto id = tokenId(it.value());
        if (!id)
            return fileError(path, "vocabulary entry '" + it.key() + "' has no valid id (an integer from 0 to " + std::to_string(kMaxVocab - 1) + ")");
        size = std::max(size, *id + 1);
    }
    for (const json& a : added) {
        const auto id = a.is_object() && a.contains("id") ? tokenId(a["id"]) : std::nullopt;
        if (!id || !a.contains("content") || !a["content"].is_string())
            return fileError(path, "an added token has no valid id and content");
        size = std::max(size, *id + 1);
    }
    spec.vocab.assign(static_cast<std::size_t>(size), std::string());
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
        spec.vocab[static_cast<std::size_t>(*tokenId(it.value()))] = it.key();
    const json merges = model.value("merges", json::array());
    if (!merges.is_array())
        return fileError(path, "merges is not an array");
    for (const json& m : merges) {
        if (m.is_string()) {
            const std::string s = m.get<std::string>();
            const std::size_t space = s.find(' ', 1);
            if (space == std::string::npos)
                return fileError(path, "merge '" + s + "' is not two pieces");
            spec.merges.push_back({s.substr(0, space), s.substr(space + 1)});
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            spec.merges.push_back({m[0].get<std::string>(), m[1].get<std::string>()});
        } else {
            return fileError(path, "a merge is neither \"a b\" nor [a, b]");
        }
    }
    const auto flag = [](const json& o, const char* key) { return o.contains(key) && o[key].is_boolean() && o[key].get<bool>(); };
    spec.ignoreMerges = flag(model, "ignore_merges");
    spec.byteFallback = flag(model, "byte_fallback");
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
        const auto it = vocab.find(model["unk_token"].get<std::string>());
        if (it != vocab.end())
            spec.unk = static_cast<std::int32_t>(*tokenId(it.value()));
    }
    for (const json& a : added) {
        BpeSpec::Added token{a["content"].get<std::string>(), static_cast<std::int32_t>(*tokenId(a["id"])), flag(a, "special")};
        spec.vocab[static_cast<std::size_t>(token.id)] = token.content;
        spec.added.push_back(std::move(token));
    }
    return {};
}

std::int32_t idOf(const BpeSpec& spec, const json& token)
{
    std::string content;
    if (token.is_string())
        content = token.get<std::string>();
    else if (token.is_object() && token.contains("content") && token["content"].is_string())
        content = token["content"].get<std::string>();
    else
        return -1;
    for (const BpeSpec::Added& a : spec.added)
        if (a.content == content)
            return a.id;
    for (std::size_t i = 0; i < spec.vocab.size(); ++i)
        if (spec.vocab[i] == content)
            return static_cast<std::int32_t>(i);
    return -1;
}

// The special token a TemplateProcessing post-processor puts before the sequence, or -1.
std::int32_t templateBos(const BpeSpec& spec, const json& root)
{
    json p = root.value("post_processor", json());
    if (p.is_object() && p.value("type", "") == "Sequence")
        for (const json& q : p.value("processors", json::array()))
            if (q.value("type", "") == "TemplateProcessing")
                p = q;
    if (!p.is_object() || p.value("type", "") != "TemplateProcessing")
        return -1;
    const json single = p.value("single", json::array());
    if (single.empty() || !single[0].is_object() || !single[0].contains("SpecialToken"))
        return -1;
    return idOf(spec, single[0]["SpecialToken"].value("id", json()));
}

// BOS and EOS from tokenizer_config.json; without a BOS (Qwen), "<|endoftext|>" stands in, as
// llama.cpp does, so that every window can start with a known token.
void readSpecialTokens(const fs::path& dir, const json& root, BpeSpec& spec)
{
    if (auto config = readJson((dir / "tokenizer_config.json").string())) {
        spec.bos = idOf(spec, config->value("bos_token", json()));
        spec.eos = idOf(spec, config->value("eos_token", json()));
    }
    if (spec.bos < 0) // the BOS the post-processor puts first (Llama-2, Llama-3)
        spec.bos = templateBos(spec, root);
    // By name, among the added tokens only: a plain vocabulary piece spelled "<s>" (Qwen has
    // one) is text, not a control token.
    const auto addedId = [&spec](const char* content) {
        for (const BpeSpec::Added& a : spec.added)
            if (a.content == content)
                return a.id;
        return std::int32_t{-1};
    };
    for (const char* name : {"<s>", "<|begin_of_text|>", "<|endoftext|>"})
        if (spec.bos < 0)
            spec.bos = addedId(name);
    for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>"})
        if (spec.eos < 0)
            spec.eos = addedId(name);
}

} // namespace

static Result<std::unique_ptr<BpeTokenizer>> loadTokenizerJsonChecked(const std::string& path)
{
    auto root = readJson(path);
    if (!root)
        return root.error();
    BpeSpec spec;
    bool byteLevel = false, metaspace = false, prepend = false;
    POCKET_TRY(readModel(*root, path, spec));
    POCKET_TRY(readNormalizer(root->value("normalizer", json()), path, spec, metaspace, prepend));
    POCKET_TRY(readPreTokenizer(root->value("pre_tokenizer", json()), path, spec, byteLevel, metaspace));
    if (byteLevel == metaspace)
        return unsupported(path, byteLevel ? "a tokenizer both byte-level and SentencePiece-style" : "a BPE tokenizer that is neither byte-level nor SentencePiece-style");
    spec.mode = byteLevel ? BpeSpec::Mode::ByteLevel : BpeSpec::Mode::Metaspace;
    if (metaspace && !root->value("pre_tokenizer", json()).is_null() && root->value("pre_tokenizer", json()).value("type", "") == "Metaspace")
        prepend = spec.prependSpace;
    spec.prependSpace = metaspace && prepend;
    const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
    readSpecialTokens(dir, *root, spec);
    spec.kind = "tokenizer.json";
    return BpeTokenizer::create(std::move(spec), path);
}

Result<std::unique_ptr<BpeTokenizer>> loadTokenizerJson(const std::string& path)
{
    // A key of an unexpected JSON type anywhere below (nlohmann's type errors) is bad input too.
    try {
        return loadTokenizerJsonChecked(path);
    } catch (const json::exception& e) {
        return fileError(path, std::string("malformed tokenizer.json: ") + e.what());
    }
}

} // namespace pocket
