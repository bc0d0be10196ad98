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

// Loads a SentencePiece `*.model` file (through libsentencepiece) or a llama2.c tokenizer.bin
// (anything else). Errors name the file: missing, empty, truncated, corrupt.
Result<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string& path);

// The llama2.c tokenizer, exposed for tests: score-ordered BPE merges with byte fallback, as
// llama2.c's run.c encodes, but in O(n log n) instead of O(n^2).
class Llama2cTokenizer final : public Tokenizer {
public:
    static Result<std::unique_ptr<Llama2cTokenizer>> load(const std::string& path);
    std::vector<std::int32_t> encode(std::string_view text) const override;
    std::string decode(const std::vector<std::int32_t>& ids) const override;
    std::int32_t vocabSize() const override { return static_cast<std::int32_t>(m_pieces.size()); }
    std::int32_t bosId() const override { return 1; }
    std::int32_t eosId() const override { return 2; }
    const char* kind() const override { return "llama2c"; }

    const std::string& piece(std::int32_t id) const { return m_pieces[static_cast<std::size_t>(id)]; }
    float score(std::int32_t id) const { return m_scores[static_cast<std::size_t>(id)]; }
    // The id of an exact piece string, or -1.
    std::int32_t lookup(std::string_view piece) const;

private:
    std::vector<std::string> m_pieces;
    std::vector<float> m_scores;
    std::vector<std::int32_t> m_sorted; // ids sorted by piece, for lookup
};

} // namespace pocket
