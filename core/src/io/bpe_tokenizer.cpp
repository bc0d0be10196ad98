#include "pocket/io/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <queue>

namespace pocket {

namespace {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kMetaspace = "\xE2\x96\x81"; // U+2581 "▁"

// GPT-2's reversible map from bytes to printable characters (bytes_to_unicode), UTF-8 encoded.
struct ByteMap {
    std::string toChar[256];
    std::unordered_map<std::string, std::uint8_t> toByte;
    ByteMap()
    {
        int extra = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            const int cp = printable ? b : 256 + extra++;
            char buf[4];
            const auto n = utf8proc_encode_char(cp, reinterpret_cast<utf8proc_uint8_t*>(buf));
            toChar[b].assign(buf, static_cast<std::size_t>(n));
            toByte[toChar[b]] = static_cast<std::uint8_t>(b);
        }
    }
};

const ByteMap& byteMap()
{
    static const ByteMap map;
    return map;
}

// The length of the UTF-8 sequence starting with `lead` (1 for a stray continuation byte).
std::size_t utf8Length(unsigned char lead)
{
    if (lead < 0x80) return 1;
    if ((lead & 0xE0) == 0xC0) return 2;
    if ((lead & 0xF0) == 0xE0) return 3;
    if ((lead & 0xF8) == 0xF0) return 4;
    return 1;
}

std::vector<std::string> utf8Chars(const std::string& s)
{
    std::vector<std::string> out;
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = std::min(utf8Length(static_cast<unsigned char>(s[i])), s.size() - i);
        out.emplace_back(s, i, n);
        i += n;
    }
    return out;
}

std::string replaceAll(std::string s, const std::string& from, const std::string& to)
{
    for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
        s.replace(pos, from.size(), to);
    return s;
}

std::string nfc(const std::string& s)
{
    utf8proc_uint8_t* out = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()), &out,
                                static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0 || !out)
        return s; // not valid UTF-8: left as it is
    std::string result(reinterpret_cast<char*>(out), static_cast<std::size_t>(n));
    std::free(out);
    return result;
}

std::string mergeKey(const std::string& a, const std::string& b)
{
    std::string k = a;
    k.push_back('\0');
    k += b;
    return k;
}

} // namespace

struct BpeTokenizer::Regex {
    pcre2_code* code = nullptr;
    ~Regex() { pcre2_code_free(code); }
};

std::vector<std::string> bpePreTokenizerPatterns(const std::string& name)
{
    if (name == "llama-bpe" || name == "llama3" || name == "falcon3" || name == "smaug-bpe")
        return {kLlama3Pattern};
    if (name == "qwen2" || name == "qwen3" || name == "deepseek-r1-qwen")
        return {kQwen2Pattern};
    if (name == "gpt2" || name == "default" || name == "gpt-2")
        return {kGpt2Pattern};
    if (name == "smollm" || name == "starcoder" || name == "refact")
        return {R"(\p{N})", kGpt2Pattern};
    return {};
}

BpeTokenizer::~BpeTokenizer() = default;

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::create(BpeSpec spec, const std::string& source)
{
    std::unique_ptr<BpeTokenizer> t(new BpeTokenizer);
    if (spec.vocab.empty())
        return fileError(source, "the tokenizer has an empty vocabulary");
    const auto n = static_cast<std::int32_t>(spec.vocab.size());
    for (std::int32_t id = 0; id < n; ++id)
        t->m_ids.emplace(spec.vocab[static_cast<std::size_t>(id)], id); // the first id of a repeated piece wins
    for (std::size_t r = 0; r < spec.merges.size(); ++r) {
        const auto& [a, b] = spec.merges[r];
        if (!t->m_ids.count(a + b))
            continue; // a merge whose result is not in the vocabulary can never apply
        t->m_ranks.emplace(mergeKey(a, b), static_cast<std::int32_t>(r));
    }
    for (const BpeSpec::Added& a : spec.added)
        if (a.id < 0 || a.id >= n || a.content.empty())
            return fileError(source, "added token '" + a.content + "' has id " + std::to_string(a.id) + " outside the vocabulary of " +
                                         std::to_string(n));
    for (std::int32_t id : {spec.bos, spec.eos, spec.unk})
        if (id >= n)
            return fileError(source, "a special token id " + std::to_string(id) + " lies outside the vocabulary of " + std::to_string(n));
    for (int b = 0; b < 256; ++b) {
        char piece[8];
        std::snprintf(piece, sizeof piece, "<0x%02X>", b);
        const auto it = t->m_ids.find(piece);
        t->m_byteIds[b] = it == t->m_ids.end() ? -1 : it->second;
    }
    for (const std::string& pattern : spec.splitPatterns) {
        int code = 0;
        PCRE2_SIZE offset = 0;
        auto regex = std::make_unique<Regex>();
        regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
        if (!regex->code) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(code, message, sizeof message);
            return fileError(source, "the pre-tokenizer pattern does not compile at offset " + std::to_string(offset) + ": " +
                                         reinterpret_cast<const char*>(message));
        }
        pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is unavailable
        t->m_regexes.push_back(std::move(regex));
    }
    // Longest added tokens first, so that one containing another wins.
    std::stable_sort(spec.added.begin(), spec.added.end(), [](const BpeSpec::Added& a, const BpeSpec::Added& b) { return a.content.size() > b.content.size(); });
    t->m_spec = std::move(spec);
    return t;
}

// Regex splitting with the "Isolated" behaviour: every match is a piece, and so is every gap.
std::vector<std::string> BpeTokenizer::split(const std::string& text) const
{
    std::vector<std::string> pieces{text};
    for (const auto& regex : m_regexes) {
        std::vector<std::string> next;
        pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex->code, nullptr);
        for (const std::string& piece : pieces) {
            PCRE2_SIZE start = 0, gap = 0;
            const auto subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
            std::uint32_t options = 0; // the first call checks the whole piece is UTF-8, later ones need not
            while (start <= piece.size()) {
                const int rc = pcre2_match(regex->code, subject, piece.size(), start, options, md, nullptr);
                if (rc < 0)
                    break;
                options = PCRE2_NO_UTF_CHECK;
                const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
                if (ov[0] > gap)
                    next.emplace_back(piece, gap, ov[0] - gap);
                if (ov[1] > ov[0]) {
                    next.emplace_back(piece, ov[0], ov[1] - ov[0]);
                    gap = start = ov[1];
                } else { // an empty match: step over one character
                    if (ov[0] >= piece.size())
                        break;
                    start = ov[0] + utf8Length(static_cast<unsigned char>(piece[ov[0]]));
                }
            }
            if (gap < piece.size())
                next.emplace_back(piece, gap, piece.size() - gap);
        }
        pcre2_match_data_free(md);
        pieces = std::move(next);
    }
    return pieces;
}

// BPE on one word: its characters, merged by rank (lowest first, leftmost on ties).
void BpeTokenizer::encodeWord(const std::string& word, std::vector<std::int32_t>& out) const
{
    if (m_spec.ignoreMerges) {
        if (const auto it = m_ids.find(word); it != m_ids.end()) {
            out.push_back(it->second);
            return;
        }
    }
    std::vector<std::string> sym = utf8Chars(word);
    const std::size_t n = sym.size();
    std::vector<std::int32_t> next(n), prev(n);
    std::vector<std::uint32_t> version(n, 0);
    std::vector<bool> alive(n, true);
    for (std::size_t k = 0; k < n; ++k) {
        prev[k] = static_cast<std::int32_t>(k) - 1;
        next[k] = k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1;
    }
    struct Candidate {
        std::int32_t rank, left, right;
        std::uint32_t leftVersion, rightVersion;
    };
    const auto worse = [](const Candidate& a, const Candidate& b) { return a.rank > b.rank || (a.rank == b.rank && a.left > b.left); };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
    const auto consider = [&](std::int32_t left) {
        if (left < 0 || next[left] < 0)
            return;
        const std::int32_t right = next[left];
        if (const auto it = m_ranks.find(mergeKey(sym[left], sym[right])); it != m_ranks.end())
            heap.push({it->second, left, right, version[left], version[right]});
    };
    for (std::size_t k = 0; k + 1 < n; ++k)
        consider(static_cast<std::int32_t>(k));
    while (!heap.empty()) {
        const Candidate c = heap.top();
        heap.pop();
        if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || version[c.left] != c.leftVersion || version[c.right] != c.rightVersion)
            continue;
        sym[c.left] += sym[c.right];
        ++version[c.left];
        alive[c.right] = false;
        next[c.left] = next[c.right];
        if (next[c.right] >= 0)
            prev[next[c.right]] = c.left;
        consider(prev[c.left]);
        consider(c.left);
    }
    for (std::int32_t k = n ? 0 : -1; k >= 0; k = next[k]) {
        if (const auto it = m_ids.find(sym[k]); it != m_ids.end()) {
            out.push_back(it->second);
        } else if (m_spec.mode == BpeSpec::Mode::Metaspace && m_spec.byteFallback) {
            for (unsigned char b : sym[k])
                if (m_byteIds[b] >= 0)
                    out.push_back(m_byteIds[b]);
        } else if (m_spec.unk >= 0) {
            out.push_back(m_spec.unk);
        }
    }
}

// Normalise, pre-tokenise and merge a stretch of text without added tokens.
void BpeTokenizer::encodeSegment(std::string_view segment, std::vector<std::int32_t>& out) const
{
    std::string text(segment);
    if (m_spec.nfc)
        text = nfc(text);
    if (m_spec.mode == BpeSpec::Mode::Metaspace) {
        text = replaceAll(std::move(text), " ", kMetaspace);
        if (m_spec.prependSpace)
            text.insert(0, kMetaspace);
        for (const std::string& piece : split(text))
            encodeWord(piece, out);
        return;
    }
    const ByteMap& map = byteMap();
    for (const std::string& piece : split(text)) {
        std::string mapped;
        for (unsigned char b : piece)
            mapped += map.toChar[b];
        encodeWord(mapped, out);
    }
}

std::vector<std::int32_t> BpeTokenizer::encode(std::string_view text) const
{
    std::vector<std::int32_t> out;
    std::size_t done = 0;
    while (done < text.size()) {
        // The leftmost added token (the longest at that place).
        std::size_t best = std::string_view::npos;
        const BpeSpec::Added* token = nullptr;
        for (const BpeSpec::Added& a : m_spec.added) {
            const std::size_t at = text.find(a.content, done);
            if (at != std::string_view::npos && (at < best || (at == best && a.content.size() > token->content.size()))) {
                best = at;
                token = &a;
            }
        }
        const std::size_t end = token ? best : text.size();
        if (end > done)
            encodeSegment(text.substr(done, end - done), out);
        if (!token)
            break;
        out.push_back(token->id);
        done = best + token->content.size();
    }
    return out;
}

std::string BpeTokenizer::decode(const std::vector<std::int32_t>& ids) const
{
    std::string text;
    const ByteMap& map = byteMap();
    for (std::int32_t id : ids) {
        if (id < 0 || id >= vocabSize())
            continue;
        const std::string& piece = m_spec.vocab[static_cast<std::size_t>(id)];
        if (std::any_of(m_spec.added.begin(), m_spec.added.end(), [&](const BpeSpec::Added& a) { return a.id == id; })) {
            text += piece;
            continue;
        }
        if (m_spec.mode == BpeSpec::Mode::Metaspace) {
            unsigned int byte = 0;
            if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1)
                text.push_back(static_cast<char>(byte));
            else
                text += replaceAll(piece, kMetaspace, " ");
            continue;
        }
        for (const std::string& ch : utf8Chars(piece)) {
            const auto it = map.toByte.find(ch);
            text += it == map.toByte.end() ? ch : std::string(1, static_cast<char>(it->second));
        }
    }
    if (m_spec.mode == BpeSpec::Mode::Metaspace && m_spec.prependSpace && !text.empty() && text[0] == ' ')
        text.erase(0, 1);
    return text;
}

} // namespace pocket
