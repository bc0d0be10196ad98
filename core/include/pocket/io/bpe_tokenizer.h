// Byte-pair-encoding tokenizers as Hugging Face's tokenizer.json describes them, in both forms the
// Llama family ships:
//  - byte-level (GPT-2's byte-to-character map; Llama-3, Qwen2/2.5/3, SmolLM): the text is split
//    by the pre-tokenizer's regular expressions (PCRE2, which knows the Unicode classes they use),
//    each piece's bytes mapped to characters and merged by rank; `ignore_merges` takes a piece that
//    is itself in the vocabulary whole (Llama-3);
//  - SentencePiece-style (Llama-2, Mistral, TinyLlama): spaces become "▁", one is prepended, the
//    text is merged by rank, and characters outside the vocabulary fall back to <0xXX> byte tokens.
// Added and special tokens are matched in the raw text first. NFC normalisation uses utf8proc.
// The same engine reads a GGUF's "gpt2" tokenizer. Immutable once built; any thread.
#pragma once

#include "pocket/io/tokenizer.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pocket {

// Everything a BPE tokenizer is made of, whatever file it came from.
struct BpeSpec {
    enum class Mode { ByteLevel, Metaspace };
    Mode mode = Mode::ByteLevel;
    std::vector<std::string> vocab;                           // id -> piece, as stored (byte-level characters or "▁" pieces)
    std::vector<std::pair<std::string, std::string>> merges;  // in rank order
    std::vector<std::string> splitPatterns;                   // byte-level: the pre-tokenizer's regexes, applied in turn
    bool nfc = false;                                         // NFC-normalise before splitting
    bool ignoreMerges = false;
    bool byteFallback = false;                                // Metaspace: unknown characters as <0xXX> tokens
    bool prependSpace = true;                                 // Metaspace: a "▁" before the text
    struct Added {
        std::string content;
        std::int32_t id = 0;
        bool special = false;
    };
    std::vector<Added> added;                                 // matched literally in the raw text
    std::int32_t bos = -1;
    std::int32_t eos = -1;
    std::int32_t unk = -1;
    std::string kind = "tokenizer.json";                      // what Tokenizer::kind() reports
};

// The pre-tokenizer regexes by llama.cpp's `tokenizer.ggml.pre` names: "llama-bpe" (Llama-3),
// "qwen2", "gpt2"/"default", "smollm", ... Empty for a name this program does not know.
std::vector<std::string> bpePreTokenizerPatterns(const std::string& ggufPreName);

class BpeTokenizer final : public Tokenizer {
public:
    // Checks the spec (ids in range, merges made of known pieces, regexes that compile); errors name `source`.
    static Result<std::unique_ptr<BpeTokenizer>> create(BpeSpec spec, const std::string& source);
    ~BpeTokenizer() override;

    std::vector<std::int32_t> encode(std::string_view text) const override;
    std::string decode(const std::vector<std::int32_t>& ids) const override;
    std::int32_t vocabSize() const override { return static_cast<std::int32_t>(m_spec.vocab.size()); }
    std::int32_t bosId() const override { return m_spec.bos; }
    std::int32_t eosId() const override { return m_spec.eos; }
    const char* kind() const override { return m_spec.kind.c_str(); }
    const BpeSpec& spec() const { return m_spec; }

private:
    BpeTokenizer() = default;
    void encodeSegment(std::string_view segment, std::vector<std::int32_t>& out) const;
    void encodeWord(const std::string& word, std::vector<std::int32_t>& out) const;
    std::vector<std::string> split(const std::string& text) const;

    BpeSpec m_spec;
    std::unordered_map<std::string, std::int32_t> m_ids;
    std::unordered_map<std::string, std::int32_t> m_ranks; // "left\0right" -> rank
    std::int32_t m_byteIds[256] = {};                      // Metaspace byte fallback: <0xXX>
    struct Regex;
    std::vector<std::unique_ptr<Regex>> m_regexes;
};

// A tokenizer.json (with the tokenizer_config.json beside it, when there is one, for BOS/EOS).
// Refuses models other than BPE and pre-tokenizers it cannot follow, naming what it found.
Result<std::unique_ptr<BpeTokenizer>> loadTokenizerJson(const std::string& path);

} // namespace pocket
