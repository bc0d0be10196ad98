#include "pocket/io/tokenizer.h"

#include "pocket/io/bpe_tokenizer.h"
#include "pocket/io/gguf.h"

#include "pocket/support/app_paths.h"

#include "pocket/io/mapped_file.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <queue>

namespace pocket {

namespace {

// The shim module around libsentencepiece (see core/spm_shim/spm_shim.cpp for why it is separate).
struct SpmShim {
    void* library = nullptr;
    void* (*load)(const char*, char*, std::size_t) = nullptr;
    void (*free)(void*) = nullptr;
    int* (*encode)(void*, const char*, std::size_t, std::size_t*) = nullptr;
    char* (*decode)(void*, const int*, std::size_t) = nullptr;
    int (*vocabSize)(void*) = nullptr;
    int (*bosId)(void*) = nullptr;
    int (*eosId)(void*) = nullptr;
    const char* (*piece)(void*, int) = nullptr;
    float (*score)(void*, int) = nullptr;
    int (*pieceKind)(void*, int) = nullptr;
    std::string error;
};

// Loads the shim local and deep-bound, so that libsentencepiece keeps its embedded protobuf apart
// from LibTorch's. AddressSanitizer's dlopen interceptor refuses RTLD_DEEPBIND (google/sanitizers
// issue 611): in a sanitizer build (scripts/sanitize.sh) glibc's own dlopen is called instead, which
// is safe there because the shim, built with the sanitizer too, binds to its runtime first.
void* openDeepBound(const std::string& path)
{
    const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#if defined(__SANITIZE_ADDRESS__)
    if (void* libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD))
        if (auto glibcDlopen = reinterpret_cast<void* (*)(const char*, int)>(::dlsym(libc, "dlopen")))
            return glibcDlopen(path.c_str(), flags);
#endif
    return ::dlopen(path.c_str(), flags);
}

const SpmShim& spmShim()
{
    static const SpmShim shim = [] {
        SpmShim s;
        std::vector<std::string> candidates;
        if (const char* env = std::getenv("POCKETLLM_SPM_SHIM"); env && *env)
            candidates.push_back(env);
        const std::string exeDir = executableDir();
        if (!exeDir.empty()) {
            candidates.push_back(exeDir + "/../lib/" POCKET_SPM_SHIM_NAME);
            candidates.push_back(exeDir + "/../lib/pocketllm-workbench/" POCKET_SPM_SHIM_NAME);
            candidates.push_back(exeDir + "/" POCKET_SPM_SHIM_NAME);
        }
        candidates.push_back(POCKET_SPM_SHIM_BUILD_PATH);
        for (const auto& path : candidates) {
            std::error_code ec;
            if (!std::filesystem::exists(path, ec))
                continue;
            s.library = openDeepBound(path);
            if (s.library)
                break;
            s.error = ::dlerror();
        }
        if (!s.library) {
            if (s.error.empty())
                s.error = "the SentencePiece module " POCKET_SPM_SHIM_NAME " was not found next to the program";
            return s;
        }
        s.load = reinterpret_cast<decltype(s.load)>(::dlsym(s.library, "pocket_spm_load"));
        s.free = reinterpret_cast<decltype(s.free)>(::dlsym(s.library, "pocket_spm_free"));
        s.encode = reinterpret_cast<decltype(s.encode)>(::dlsym(s.library, "pocket_spm_encode"));
        s.decode = reinterpret_cast<decltype(s.decode)>(::dlsym(s.library, "pocket_spm_decode"));
        s.vocabSize = reinterpret_cast<decltype(s.vocabSize)>(::dlsym(s.library, "pocket_spm_vocab_size"));
        s.bosId = reinterpret_cast<decltype(s.bosId)>(::dlsym(s.library, "pocket_spm_bos_id"));
        s.eosId = reinterpret_cast<decltype(s.eosId)>(::dlsym(s.library, "pocket_spm_eos_id"));
        s.piece = reinterpret_cast<decltype(s.piece)>(::dlsym(s.library, "pocket_spm_piece"));
        s.score = reinterpret_cast<decltype(s.score)>(::dlsym(s.library, "pocket_spm_score"));
        s.pieceKind = reinterpret_cast<decltype(s.pieceKind)>(::dlsym(s.library, "pocket_spm_kind"));
        if (!s.load || !s.free || !s.encode || !s.decode || !s.vocabSize || !s.bosId || !s.eosId || !s.piece || !s.score || !s.pieceKind) {
            s.error = "the SentencePiece module lacks expected functions";
            s.library = nullptr;
        }
        return s;
    }();
    return shim;
}

class SentencePieceTokenizer final : public Tokenizer {
public:
    static Result<std::unique_ptr<Tokenizer>> load(const std::string& path)
    {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec))
            return fileError(path, "no such file");
        if (std::filesystem::file_size(path, ec) == 0)
            return fileError(path, "empty tokenizer file");
        const SpmShim& shim = spmShim();
        if (!shim.library)
            return fileError(path, "cannot load SentencePiece: " + shim.error);
        char error[512] = {0};
        void* handle = shim.load(path.c_str(), error, sizeof error);
        if (!handle)
            return fileError(path, std::string("not a valid SentencePiece model: ") + error);
        auto tok = std::make_unique<SentencePieceTokenizer>();
        tok->m_handle = handle;
        return std::unique_ptr<Tokenizer>(std::move(tok));
    }
    ~SentencePieceTokenizer() override
    {
        if (m_handle)
            spmShim().free(m_handle);
    }
    std::vector<std::int32_t> encode(std::string_view text) const override
    {
        std::size_t count = 0;
        int* ids = spmShim().encode(m_handle, text.data(), text.size(), &count);
        std::vector<std::int32_t> out(ids, ids + count);
        std::free(ids);
        return out;
    }
    std::string decode(const std::vector<std::int32_t>& ids) const override
    {
        const std::vector<int> in(ids.begin(), ids.end());
        char* text = spmShim().decode(m_handle, in.data(), in.size());
        std::string out(text ? text : "");
        std::free(text);
        return out;
    }
    std::int32_t vocabSize() const override { return spmShim().vocabSize(m_handle); }
    std::int32_t bosId() const override { return spmShim().bosId(m_handle); }
    std::int32_t eosId() const override { return spmShim().eosId(m_handle); }
    const char* kind() const override { return "sentencepiece"; }
    SpmVocab vocabulary() const
    {
        SpmVocab v;
        const SpmShim& shim = spmShim();
        for (int id = 0; id < vocabSize(); ++id) {
            v.pieces.emplace_back(shim.piece(m_handle, id));
            v.scores.push_back(shim.score(m_handle, id));
            v.kinds.push_back(shim.pieceKind(m_handle, id));
        }
        v.bos = bosId();
        v.eos = eosId();
        return v;
    }

private:
    void* m_handle = nullptr;
};

} // namespace

Result<std::unique_ptr<Llama2cTokenizer>> Llama2cTokenizer::load(const std::string& path)
{
    auto mapped = MappedFile::open(path);
    if (!mapped)
        return mapped.error();
    const auto& file = *mapped;
    if (file->size() == 0)
        return fileError(path, "empty tokenizer file");
    if (file->size() < 4)
        return fileError(path, "truncated: too short for a llama2.c tokenizer header");
    const std::uint8_t* p = file->data();
    const std::uint8_t* end = p + file->size();
    std::int32_t maxLen;
    std::memcpy(&maxLen, p, 4);
    p += 4;
    if (maxLen <= 0 || maxLen > 4096)
        return fileError(path, "not a llama2.c tokenizer: max_token_length " + std::to_string(maxLen) + " is implausible");
    auto tok = std::make_unique<Llama2cTokenizer>();
    while (p < end) {
        const std::size_t index = tok->m_pieces.size();
        if (end - p < 8)
            return fileError(path, "truncated inside token " + std::to_string(index));
        float score;
        std::int32_t len;
        std::memcpy(&score, p, 4);
        std::memcpy(&len, p + 4, 4);
        p += 8;
        if (len < 0 || len > 4 * maxLen + 16)
            return fileError(path, "corrupt: token " + std::to_string(index) + " has length " + std::to_string(len));
        if (end - p < len)
            return fileError(path, "truncated inside token " + std::to_string(index));
        tok->m_pieces.emplace_back(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
        tok->m_scores.push_back(score);
        p += len;
    }
    if (tok->m_pieces.size() < 3 + 256)
        return fileError(path, "corrupt: only " + std::to_string(tok->m_pieces.size()) + " tokens; a llama2.c tokenizer has 3 specials and 256 byte tokens");
    tok->index();
    return tok;
}

std::unique_ptr<Llama2cTokenizer> Llama2cTokenizer::fromPieces(std::vector<std::string> pieces, std::vector<float> scores, std::int32_t bos,
                                                               std::int32_t eos, std::string kind)
{
    auto tok = std::make_unique<Llama2cTokenizer>();
    tok->m_pieces = std::move(pieces);
    tok->m_scores = std::move(scores);
    tok->m_scores.resize(tok->m_pieces.size(), 0.0f);
    tok->m_bos = bos;
    tok->m_eos = eos;
    tok->m_kind = std::move(kind);
    tok->index();
    return tok;
}

void Llama2cTokenizer::index()
{
    m_sorted.resize(m_pieces.size());
    for (std::size_t i = 0; i < m_sorted.size(); ++i) m_sorted[i] = static_cast<std::int32_t>(i);
    std::stable_sort(m_sorted.begin(), m_sorted.end(), [&](std::int32_t a, std::int32_t b) { return m_pieces[a] < m_pieces[b]; });
    bool allBytes = true;
    for (int b = 0; b < 256; ++b) {
        char piece[8];
        std::snprintf(piece, sizeof piece, "<0x%02X>", b);
        m_byteIds[b] = lookup(piece);
        allBytes = allBytes && m_byteIds[b] >= 0;
    }
    if (!allBytes)
        for (int b = 0; b < 256; ++b) m_byteIds[b] = b + 3;
}

std::vector<std::uint8_t> Llama2cTokenizer::serialize() const
{
    std::int32_t maxLen = 1;
    for (const std::string& p : m_pieces) maxLen = std::max<std::int32_t>(maxLen, static_cast<std::int32_t>(p.size()));
    std::vector<std::uint8_t> out(4);
    std::memcpy(out.data(), &maxLen, 4);
    for (std::size_t i = 0; i < m_pieces.size(); ++i) {
        const std::int32_t len = static_cast<std::int32_t>(m_pieces[i].size());
        const std::size_t at = out.size();
        out.resize(at + 8 + m_pieces[i].size());
        std::memcpy(out.data() + at, &m_scores[i], 4);
        std::memcpy(out.data() + at + 4, &len, 4);
        std::memcpy(out.data() + at + 8, m_pieces[i].data(), m_pieces[i].size());
    }
    return out;
}

std::int32_t Llama2cTokenizer::lookup(std::string_view piece) const
{
    const auto it = std::lower_bound(m_sorted.begin(), m_sorted.end(), piece,
                                     [&](std::int32_t id, std::string_view s) { return std::string_view(m_pieces[id]) < s; });
    if (it != m_sorted.end() && m_pieces[*it] == piece)
        return *it;
    return -1;
}

std::vector<std::int32_t> Llama2cTokenizer::encode(std::string_view text) const
{
    // 1. Initial tokens as run.c makes them: the dummy-prefix " ", then one token per UTF-8
    //    code point, or its byte tokens (<0xXX>, else id = byte + 3) where it is not in the vocabulary.
    std::vector<std::int32_t> tokens;
    if (text.empty())
        return tokens;
    tokens.reserve(text.size() + 1);
    if (const std::int32_t space = lookup(" "); space >= 0)
        tokens.push_back(space);
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t len = 1;
        while (len < 4 && i + len < text.size() && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80) ++len;
        const std::int32_t id = lookup(text.substr(i, len));
        if (id >= 0) {
            tokens.push_back(id);
        } else {
            for (std::size_t b = 0; b < len; ++b) tokens.push_back(m_byteIds[static_cast<unsigned char>(text[i + b])]);
        }
        i += len;
    }

    // 2. Merges. run.c repeatedly merges the adjacent pair whose merged piece has the highest
    //    score (the leftmost on ties). A heap of candidate pairs ordered by (score desc, position
    //    asc), with stale entries skipped, makes the same choices.
    const std::size_t n = tokens.size();
    std::vector<std::int32_t> prev(n), next(n);
    std::vector<std::uint32_t> version(n, 0);
    std::vector<bool> alive(n, true);
    for (std::size_t k = 0; k < n; ++k) {
        prev[k] = static_cast<std::int32_t>(k) - 1;
        next[k] = k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1;
    }
    struct Candidate {
        float score;
        std::int32_t left, right, merged;
        std::uint32_t leftVersion, rightVersion;
    };
    auto worse = [](const Candidate& a, const Candidate& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
    std::string buffer;
    auto consider = [&](std::int32_t left) {
        if (left < 0 || next[left] < 0)
            return;
        const std::int32_t right = next[left];
        buffer = m_pieces[tokens[left]];
        buffer += m_pieces[tokens[right]];
        const std::int32_t merged = lookup(buffer);
        if (merged >= 0)
            heap.push({m_scores[merged], left, right, merged, version[left], version[right]});
    };
    for (std::size_t k = 0; k + 1 < n; ++k) consider(static_cast<std::int32_t>(k));
    while (!heap.empty()) {
        const Candidate c = heap.top();
        heap.pop();
        if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || version[c.left] != c.leftVersion || version[c.right] != c.rightVersion)
            continue;
        tokens[c.left] = c.merged;
        ++version[c.left];
        alive[c.right] = false;
        next[c.left] = next[c.right];
        if (next[c.right] >= 0)
            prev[next[c.right]] = c.left;
        consider(prev[c.left]);
        consider(c.left);
    }
    std::vector<std::int32_t> out;
    for (std::int32_t k = n ? 0 : -1; k >= 0; k = next[k]) out.push_back(tokens[k]);
    return out;
}

std::string Llama2cTokenizer::decode(const std::vector<std::int32_t>& ids) const
{
    std::string out;
    for (std::size_t k = 0; k < ids.size(); ++k) {
        const std::int32_t id = ids[k];
        if (id < 0 || id >= vocabSize() || id == bosId() || id == eosId())
            continue;
        const std::string& piece = m_pieces[id];
        unsigned int byte = 0;
        if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1) {
            out.push_back(static_cast<char>(byte));
            continue;
        }
        out += piece;
    }
    if (!out.empty() && out[0] == ' ') // the dummy prefix
        out.erase(0, 1);
    return out;
}

Result<SpmVocab> sentencePieceVocab(const std::string& path)
{
    if (std::filesystem::path(path).extension() == ".model") {
        auto tok = SentencePieceTokenizer::load(path);
        if (!tok)
            return tok.error();
        return static_cast<const SentencePieceTokenizer&>(**tok).vocabulary();
    }
    auto tok = loadTokenizer(path);
    if (!tok)
        return tok.error();
    const auto* llama = dynamic_cast<const Llama2cTokenizer*>(tok->get());
    if (!llama)
        return Error{path + ": not a SentencePiece-style tokenizer (pieces with scores)", ErrorKind::Unsupported};
    SpmVocab v;
    for (std::int32_t id = 0; id < llama->vocabSize(); ++id) {
        std::string piece = llama->piece(id);
        unsigned int byte = 0;
        const bool isByte = piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1;
        for (std::size_t pos = 0; !isByte && (pos = piece.find(' ', pos)) != std::string::npos; pos += 3)
            piece.replace(pos, 1, "\xE2\x96\x81");
        v.pieces.push_back(std::move(piece));
        v.scores.push_back(llama->score(id));
        v.kinds.push_back(isByte ? 4 : id == 0 ? 1 : id == llama->bosId() || id == llama->eosId() ? 2 : 0);
    }
    v.bos = llama->bosId();
    v.eos = llama->eosId();
    return v;
}

bool isTokenizerFile(const std::string& path)
{
    const std::filesystem::path p(path);
    const std::string name = p.filename().string();
    // Any .json but a model folder's other JSON files is taken for a tokenizer.json by another name.
    const bool json = p.extension() == ".json" && name != "config.json" && name != "tokenizer_config.json" && name != "generation_config.json" &&
                      name != "special_tokens_map.json" && name.find(".index.json") == std::string::npos;
    return p.extension() == ".model" || json || name == "tokenizer.bin" ||
           (name.rfind("tok", 0) == 0 && p.extension() == ".bin" && name.find("stories") == std::string::npos);
}

Result<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string& path)
{
    if (path.empty())
        return Error{"no tokenizer found: put tokenizer.model, tokenizer.json or tokenizer.bin beside the model, or give one", ErrorKind::Input, "tokenizer"};
    if (std::filesystem::path(path).extension() == ".model")
        return SentencePieceTokenizer::load(path);
    if (std::filesystem::path(path).extension() == ".gguf" || isGgufFile(path))
        return loadGgufTokenizer(path);
    if (std::filesystem::path(path).extension() == ".json") {
        auto json = loadTokenizerJson(path);
        if (!json)
            return json.error();
        return std::unique_ptr<Tokenizer>(std::move(json).value());
    }
    auto tok = Llama2cTokenizer::load(path);
    if (!tok)
        return tok.error();
    return std::unique_ptr<Tokenizer>(std::move(tok).value());
}

std::size_t completeUtf8Length(std::string_view text)
{
    // Walk back over at most 3 continuation bytes to the lead byte of the last sequence.
    std::size_t i = text.size();
    int continuation = 0;
    while (i > 0 && continuation < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) {
        --i;
        ++continuation;
    }
    if (i == 0)
        return continuation > 0 ? 0 : text.size();
    const auto lead = static_cast<unsigned char>(text[i - 1]);
    const int need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    if (lead < 0x80 || continuation >= need)
        return text.size();
    return i - 1; // the last sequence is incomplete
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, std::vector<std::int32_t> context)
    : m_tokenizer(tokenizer), m_ids(std::move(context))
{
    m_contextBytes = m_emitted = m_ids.empty() ? 0 : m_tokenizer.decode(m_ids).size();
}

std::string IncrementalDecoder::text() const
{
    const std::string all = m_tokenizer.decode(m_ids);
    return all.size() > m_contextBytes ? all.substr(m_contextBytes) : std::string();
}

std::string IncrementalDecoder::push(std::int32_t id)
{
    m_ids.push_back(id);
    const std::string all = m_tokenizer.decode(m_ids);
    const std::size_t complete = completeUtf8Length(all);
    if (complete <= m_emitted)
        return {};
    std::string added = all.substr(m_emitted, complete - m_emitted);
    m_emitted = complete;
    return added;
}

} // namespace pocket

