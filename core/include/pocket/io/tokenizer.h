// Text <-> token ids. Implementations are immutable once loaded and safe to use from any thread.
#pragma once

#include "pocket/support/result.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pocket {

class Tokenizer {
public:
    virtual ~Tokenizer() = default;
    // Token ids for `text`, without BOS/EOS (a leading-space "dummy prefix" is added the way
    // SentencePiece and llama2.c do).
    virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
    virtual std::string decode(const std::vector<std::int32_t>& ids) const = 0;
    virtual std::int32_t vocabSize() const = 0;
    virtual std::int32_t bosId() const = 0;
    virtual std::int32_t eosId() const = 0;
    // "sentencepiece" or "llama2c"
    virtual const char* kind() const = 0;
};

// Loads a tokenizer by its file: a SentencePiece `*.model` (through libsentencepiece), a Hugging
// Face `tokenizer.json` (BPE, see bpe_tokenizer.h), the tokenizer in a `.gguf` file's metadata, or a
// llama2.c tokenizer.bin (anything else). Errors name the file: missing, empty, truncated, corrupt,
// unsupported.
Result<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string& path);

// The tokenizer in a GGUF file's metadata: "llama" (SentencePiece pieces and scores, merged by score
// with byte fallback, as a Llama2cTokenizer) or "gpt2" (byte-level BPE, the pre-tokenizer named by
// tokenizer.ggml.pre). Others are refused by name.
Result<std::unique_ptr<Tokenizer>> loadGgufTokenizer(const std::string& path);

// A tokenizer in the form an archive embeds: a SentencePiece model, a llama2.c tokenizer.bin or a
// tokenizer.json, with the file name it is written back under. A GGUF's tokenizer is converted
// (llama -> tokenizer.bin, gpt2 -> tokenizer.json) rather than copying the whole GGUF.
struct EmbeddableTokenizer {
    std::string kind;     // "sentencepiece", "llama2c" or "tokenizer.json"
    std::string fileName; // "tokenizer.model", "tokenizer.bin", "tokenizer.json"
    std::vector<std::uint8_t> bytes;
};
Result<EmbeddableTokenizer> embeddableTokenizer(const std::string& path);

// The vocabulary of a SentencePiece-style tokenizer (a *.model, a llama2.c tokenizer.bin, a GGUF
// "llama" tokenizer): pieces with "▁" for spaces and <0xXX> byte pieces, scores, and kinds
// (0 normal, 1 unknown, 2 control, 3 unused, 4 byte). Used to write GGUF files.
struct SpmVocab {
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<int> kinds;
    std::int32_t bos = 1;
    std::int32_t eos = 2;
};
Result<SpmVocab> sentencePieceVocab(const std::string& path);

// True for a file that loadTokenizer() reads as a tokenizer on its own (by name: *.model,
// tokenizer.json, tokenizer.bin, tok*.bin), false for a model.
bool isTokenizerFile(const std::string& path);

// The llama2.c tokenizer, exposed for tests: score-ordered BPE merges with byte fallback, as
// llama2.c's run.c encodes, but in O(n log n) instead of O(n^2). The same algorithm is
// SentencePiece's BPE as llama.cpp runs it, so it also serves a GGUF's "llama" tokenizer.
class Llama2cTokenizer final : public Tokenizer {
public:
    static Result<std::unique_ptr<Llama2cTokenizer>> load(const std::string& path);
    // From pieces (spaces as " ", byte tokens as "<0xXX>") and scores. Byte fallback uses the
    // "<0xXX>" pieces when there are all 256 of them, else id byte + 3 (llama2.c's convention).
    static std::unique_ptr<Llama2cTokenizer> fromPieces(std::vector<std::string> pieces, std::vector<float> scores, std::int32_t bos,
                                                        std::int32_t eos, std::string kind);
    std::vector<std::int32_t> encode(std::string_view text) const override;
    std::string decode(const std::vector<std::int32_t>& ids) const override;
    std::int32_t vocabSize() const override { return static_cast<std::int32_t>(m_pieces.size()); }
    std::int32_t bosId() const override { return m_bos; }
    std::int32_t eosId() const override { return m_eos; }
    const char* kind() const override { return m_kind.c_str(); }
    // The tokenizer.bin bytes of llama2.c's format (max length, then score, length, bytes per piece).
    std::vector<std::uint8_t> serialize() const;

    const std::string& piece(std::int32_t id) const { return m_pieces[static_cast<std::size_t>(id)]; }
    float score(std::int32_t id) const { return m_scores[static_cast<std::size_t>(id)]; }
    // The id of an exact piece string, or -1.
    std::int32_t lookup(std::string_view piece) const;

private:
    void index();
    std::vector<std::string> m_pieces;
    std::vector<float> m_scores;
    std::vector<std::int32_t> m_sorted; // ids sorted by piece, for lookup
    std::int32_t m_bos = 1;
    std::int32_t m_eos = 2;
    std::int32_t m_byteIds[256] = {};
    std::string m_kind = "llama2c";
};

// Text of a token stream as it grows, for printing generated tokens as they come: push() returns
// the text the new token adds, holding back an incomplete UTF-8 sequence until it completes
// (byte-fallback tokens). Decodes the whole stream each time (fine for thousands of tokens).
class IncrementalDecoder {
public:
    // `context`: the tokens before the first pushed one (the prompt), decoded with them so that
    // word boundaries come out right (SentencePiece drops the space of a text's first word) but
    // never returned.
    explicit IncrementalDecoder(const Tokenizer& tokenizer, std::vector<std::int32_t> context = {});
    std::string push(std::int32_t id);
    // The text of every token pushed (all of it, incomplete UTF-8 included).
    std::string text() const;

private:
    const Tokenizer& m_tokenizer;
    std::vector<std::int32_t> m_ids;  // context, then the pushed tokens
    std::size_t m_contextBytes = 0;   // of the decoded context
    std::size_t m_emitted = 0;        // bytes of the decoded text already returned (context included)
};

// Length of the longest prefix of `text` that does not end inside a UTF-8 sequence.
std::size_t completeUtf8Length(std::string_view text);

} // namespace pocket
