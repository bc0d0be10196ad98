// Static rANS (see rans.h for the stream layout). The coder is ryg_rans's 64-bit one (public
// domain, Fabian Giesen) re-derived from Duda's formulas:
//   encode s:  x' = floor(x / f_s) * 2^P + (x mod f_s) + c_s        (after pushing low words out)
//   decode:    s = slot(x mod 2^P);  x = f_s * floor(x / 2^P) + (x mod 2^P) - c_s  (then pull words in)
// with x kept in [L, 2^32 L), L = 2^31, so one 32-bit word at most moves per symbol.
#include "pocket/support/rans.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <queue>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace pocket::rans {
namespace {

constexpr std::uint64_t kLow = 1ull << 31;
constexpr int kMaxLanes = 32;
constexpr int kMaxPrecision = 16;

void putVarint(std::vector<std::uint8_t>& out, std::uint64_t v)
{
    while (v >= 0x80) {
        out.push_back(static_cast<std::uint8_t>(v | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<std::uint8_t>(v));
}

bool getVarint(const std::uint8_t* data, std::uint64_t size, std::uint64_t& pos, std::uint64_t& v)
{
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (pos >= size)
            return false;
        const std::uint8_t b = data[pos++];
        if (shift == 63 && (b & 0x7e))
            return false;
        v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

// Frequencies summing to 2^precision, every counted symbol at least 1, close to proportional:
// rounded, then corrected one unit at a time where the unit costs (or saves) the fewest bits.
std::vector<std::uint32_t> normalise(const std::vector<std::uint64_t>& counts, std::uint64_t total, int precision)
{
    const std::uint64_t target = 1ull << precision;
    std::vector<std::uint32_t> f(counts.size(), 0);
    std::int64_t sum = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (!counts[s])
            continue;
        const double exact = static_cast<double>(counts[s]) * static_cast<double>(target) / static_cast<double>(total);
        f[s] = static_cast<std::uint32_t>(std::max<double>(1.0, std::floor(exact + 0.5)));
        sum += f[s];
    }
    // Bits a unit more (gain) or less (loss) would change the code by: c log2((f+1)/f), c log2(f/(f-1)).
    using Entry = std::pair<double, std::uint32_t>;
    if (sum > static_cast<std::int64_t>(target)) {
        std::priority_queue<Entry, std::vector<Entry>, std::greater<>> cheapest;
        for (std::size_t s = 0; s < f.size(); ++s)
            if (f[s] > 1)
                cheapest.push({static_cast<double>(counts[s]) * std::log2(f[s] / (f[s] - 1.0)), static_cast<std::uint32_t>(s)});
        while (sum > static_cast<std::int64_t>(target)) {
            const auto [cost, s] = cheapest.top();
            cheapest.pop();
            --f[s];
            --sum;
            if (f[s] > 1)
                cheapest.push({static_cast<double>(counts[s]) * std::log2(f[s] / (f[s] - 1.0)), s});
        }
    } else if (sum < static_cast<std::int64_t>(target)) {
        std::priority_queue<Entry> best;
        for (std::size_t s = 0; s < f.size(); ++s)
            if (f[s])
                best.push({static_cast<double>(counts[s]) * std::log2((f[s] + 1.0) / f[s]), static_cast<std::uint32_t>(s)});
        while (sum < static_cast<std::int64_t>(target)) {
            const auto [gain, s] = best.top();
            best.pop();
            ++f[s];
            ++sum;
            best.push({static_cast<double>(counts[s]) * std::log2((f[s] + 1.0) / f[s]), s});
        }
    }
    std::size_t n = f.size();
    while (n > 0 && f[n - 1] == 0)
        --n;
    f.resize(n);
    return f;
}

void putTable(std::vector<std::uint8_t>& out, const std::vector<std::uint32_t>& f)
{
    putVarint(out, f.size());
    for (std::size_t s = 0; s < f.size(); ++s) {
        putVarint(out, f[s]);
        if (f[s] == 0) {
            std::size_t run = 0;
            while (s + 1 + run < f.size() && f[s + 1 + run] == 0)
                ++run;
            putVarint(out, run);
            s += run;
        }
    }
}

std::uint64_t tableBytes(const std::vector<std::uint32_t>& f)
{
    std::vector<std::uint8_t> bytes;
    putTable(bytes, f);
    return bytes.size();
}

double codeBits(const std::vector<std::uint64_t>& counts, const std::vector<std::uint32_t>& f, int precision)
{
    double bits = 0;
    for (std::size_t s = 0; s < f.size(); ++s)
        if (counts[s])
            bits += static_cast<double>(counts[s]) * (precision - std::log2(static_cast<double>(f[s])));
    return bits;
}

struct Parsed {
    StreamInfo info;
    std::uint64_t wordsAt = 0;
    std::vector<std::uint32_t> cumulative; // n + 1 entries
};

Result<Parsed> parse(const std::uint8_t* coded, std::uint64_t size)
{
    Parsed p;
    StreamInfo& info = p.info;
    if (!coded || size < 5)
        return Error("coded stream too short for its header (" + std::to_string(size) + " bytes)");
    if (coded[0] != kFormat)
        return Error("coded stream format " + std::to_string(coded[0]) + " unknown (expected 1)");
    info.symbolBits = coded[1];
    info.precision = coded[2];
    info.lanes = coded[3];
    if (info.symbolBits < 1 || info.symbolBits > kMaxSymbolBits)
        return Error("coded stream: symbol width " + std::to_string(info.symbolBits) + " outside 1..16");
    if (info.precision < 1 || info.precision > kMaxPrecision)
        return Error("coded stream: precision " + std::to_string(info.precision) + " outside 1..16");
    if (info.lanes < 1 || info.lanes > kMaxLanes)
        return Error("coded stream: lane count " + std::to_string(info.lanes) + " outside 1..32");
    std::uint64_t pos = 4;
    if (!getVarint(coded, size, pos, info.count))
        return Error("coded stream: symbol count truncated");
    info.headerBytes = pos;
    if (info.count == 0) {
        if (pos != size)
            return Error("coded stream: bytes after an empty stream");
        return p;
    }
    std::uint64_t n = 0;
    if (!getVarint(coded, size, pos, n) || n == 0 || n > (1ull << info.symbolBits))
        return Error("frequency table damaged: alphabet size out of range");
    info.frequencies.assign(n, 0);
    std::uint64_t sum = 0;
    for (std::uint64_t s = 0; s < n; ++s) {
        std::uint64_t f = 0;
        if (!getVarint(coded, size, pos, f) || f > (1ull << info.precision))
            return Error("frequency table damaged at symbol " + std::to_string(s));
        info.frequencies[s] = static_cast<std::uint32_t>(f);
        sum += f;
        if (f == 0) {
            std::uint64_t run = 0;
            if (!getVarint(coded, size, pos, run) || run > n - 1 - s)
                return Error("frequency table damaged: zero run past the alphabet");
            s += run;
        }
    }
    if (sum != (1ull << info.precision))
        return Error("frequency table damaged: frequencies sum to " + std::to_string(sum) + ", not 2^" + std::to_string(info.precision));
    if (info.frequencies.back() == 0)
        return Error("frequency table damaged: last symbol has frequency 0");
    info.tableBytes = pos - info.headerBytes;
    info.wordBytes = size - pos;
    if (info.wordBytes % 4 != 0 || info.wordBytes < 8ull * static_cast<std::uint64_t>(info.lanes))
        return Error("word stream damaged: " + std::to_string(info.wordBytes) + " bytes is not the states plus whole words");
    p.wordsAt = pos;
    p.cumulative.assign(n + 1, 0);
    for (std::uint64_t s = 0; s < n; ++s)
        p.cumulative[s + 1] = p.cumulative[s] + info.frequencies[s];
    return p;
}

struct DecodeEntry {
    std::uint32_t freq;
    std::uint16_t start;
    std::uint16_t symbol;
};

// The initial states: two words each, low first, lane 0 first.
void loadStates(const std::uint32_t* words, int lanes, std::uint64_t* x)
{
    for (int l = 0; l < lanes; ++l)
        x[l] = static_cast<std::uint64_t>(words[2 * l]) | static_cast<std::uint64_t>(words[2 * l + 1]) << 32;
}

// Symbols [first, count) with states x (lane of symbol i: i mod lanes) and the next word at pos.
bool decodeGeneric(const std::uint32_t* words, std::uint64_t wordCount, std::uint64_t first, std::uint64_t count, int lanes,
                   int precision, const DecodeEntry* table, std::uint16_t* out, std::uint64_t* x, std::uint64_t pos)
{
    const std::uint64_t mask = (1ull << precision) - 1;
    for (std::uint64_t i = first; i < count; ++i) {
        std::uint64_t& state = x[i % static_cast<std::uint64_t>(lanes)];
        const std::uint64_t slot = state & mask;
        const DecodeEntry e = table[slot];
        out[i] = e.symbol;
        state = e.freq * (state >> precision) + slot - e.start;
        if (state < kLow) {
            if (pos >= wordCount)
                return false;
            state = state << 32 | words[pos++];
        }
    }
    if (pos != wordCount)
        return false;
    for (int l = 0; l < lanes; ++l)
        if (x[l] != kLow)
            return false;
    return true;
}

// The hot loop: Lanes states in registers. A group of Lanes symbols pulls at most Lanes words, so
// while that many remain, reads need no bounds check; the rest goes through decodeGeneric's checks.
template <int Lanes>
bool decodeLanes(const std::uint32_t* words, std::uint64_t wordCount, std::uint64_t count, int precision, const DecodeEntry* table,
                 std::uint16_t* out)
{
    std::uint64_t x[Lanes];
    loadStates(words, Lanes, x);
    std::uint64_t pos = 2 * Lanes;
    const std::uint64_t mask = (1ull << precision) - 1;
    std::uint64_t i = 0;
    for (; i + Lanes <= count && pos + Lanes <= wordCount; i += Lanes) {
        for (int l = 0; l < Lanes; ++l) {
            const std::uint64_t slot = x[l] & mask;
            const DecodeEntry e = table[slot];
            out[i + l] = e.symbol;
            x[l] = e.freq * (x[l] >> precision) + slot - e.start;
        }
        // Each lane's word sits at pos + (pulls of the lanes before it): the loads do not wait
        // for one another.
        std::uint64_t offset = 0;
        for (int l = 0; l < Lanes; ++l) {
            const bool pull = x[l] < kLow;
            const std::uint64_t word = words[pos + offset];
            x[l] = pull ? (x[l] << 32 | word) : x[l];
            offset += pull;
        }
        pos += offset;
    }
    return decodeGeneric(words, wordCount, i, count, Lanes, precision, table, out, x, pos);
}

#if defined(__x86_64__) || defined(__i386__)
#define POCKET_RANS_X86 1
// Eight lanes in two AVX2 registers of four 64-bit states. A table entry read as one u64 is
// freq | start << 32 | symbol << 48. The renormalisation words of a register's pulling lanes are
// consecutive: one 8-word load, a permutation chosen by the pull mask (lane l takes word
// popcount(mask below l)), a blend. Gives exactly decodeLanes<8>'s symbols and states.
struct PullPermutes {
    alignas(32) std::int32_t index[16][8];
    PullPermutes()
    {
        for (int m = 0; m < 16; ++m)
            for (int l = 0; l < 4; ++l) {
                index[m][2 * l] = __builtin_popcount(static_cast<unsigned>(m) & ((1u << l) - 1));
                index[m][2 * l + 1] = 0; // high half, masked off
            }
    }
};

#define POCKET_AVX2 __attribute__((target("avx2,popcnt"), always_inline)) inline

// One decoding step of four states: their symbols in `symbols`, the states before renormalising.
POCKET_AVX2 __m256i advance4(__m256i state, __m256i& symbols, const long long* entries, __m256i mask, __m128i shift)
{
    const __m256i low32 = _mm256_set1_epi64x(0xffffffffll);
    const __m256i low16 = _mm256_set1_epi64x(0xffffll);
    const __m256i slot = _mm256_and_si256(state, mask);
    const __m256i e = _mm256_i64gather_epi64(entries, slot, 8);
    const __m256i freq = _mm256_and_si256(e, low32);
    const __m256i start = _mm256_and_si256(_mm256_srli_epi64(e, 32), low16);
    symbols = _mm256_srli_epi64(e, 48);
    const __m256i q = _mm256_srl_epi64(state, shift);
    const __m256i product = _mm256_add_epi64(_mm256_mul_epu32(q, freq), _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(q, 32), freq), 32));
    return _mm256_sub_epi64(_mm256_add_epi64(product, slot), start);
}

// Renormalises four states from the words at `pos` (advanced past the words taken).
POCKET_AVX2 __m256i pull4(__m256i state, const std::uint32_t* words, std::uint64_t& pos, const PullPermutes& permutes)
{
    // Unsigned x < 2^31 as a signed compare of both sides with the sign bit flipped (a damaged
    // stream can push a state past 2^63; the plain decoder's result must hold there too).
    const __m256i sign = _mm256_set1_epi64x(static_cast<long long>(1ull << 63));
    const __m256i need = _mm256_cmpgt_epi64(_mm256_xor_si256(_mm256_set1_epi64x(static_cast<long long>(kLow)), sign), _mm256_xor_si256(state, sign));
    const int m = _mm256_movemask_pd(_mm256_castsi256_pd(need));
    const __m256i next = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + pos));
    const __m256i index = _mm256_load_si256(reinterpret_cast<const __m256i*>(permutes.index[m]));
    const __m256i w = _mm256_and_si256(_mm256_permutevar8x32_epi32(next, index), _mm256_set1_epi64x(0xffffffffll));
    pos += static_cast<std::uint64_t>(__builtin_popcount(static_cast<unsigned>(m)));
    return _mm256_blendv_epi8(state, _mm256_or_si256(_mm256_slli_epi64(state, 32), w), need);
}

__attribute__((target("avx2,popcnt"))) bool decodeLanes8Avx2(const std::uint32_t* words, std::uint64_t wordCount, std::uint64_t count,
                                                              int precision, const DecodeEntry* table, std::uint16_t* out)
{
    static const PullPermutes permutes;
    const auto* entries = reinterpret_cast<const long long*>(table);
    std::uint64_t x[8];
    loadStates(words, 8, x);
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 4));
    const __m256i mask = _mm256_set1_epi64x(static_cast<long long>((1ull << precision) - 1));
    const __m128i shift = _mm_cvtsi32_si128(precision);
    const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    std::uint64_t pos = 16;
    std::uint64_t i = 0;
    // Each register loads 8 words at most 4 past the other's: 16 words of room keep loads inside.
    for (; i + 8 <= count && pos + 16 <= wordCount; i += 8) {
        __m256i sa, sb;
        a = advance4(a, sa, entries, mask, shift);
        b = advance4(b, sb, entries, mask, shift);
        const __m256i both = _mm256_permutevar8x32_epi32(_mm256_or_si256(sa, _mm256_slli_epi64(sb, 32)), order);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm_packus_epi32(_mm256_castsi256_si128(both), _mm256_extracti128_si256(both, 1)));
        a = pull4(a, words, pos, permutes);
        b = pull4(b, words, pos, permutes);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(x), a);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + 4), b);
    return decodeGeneric(words, wordCount, i, count, 8, precision, table, out, x, pos);
}

bool useAvx2()
{
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    const char* isa = std::getenv("POCKET_RANS_ISA"); // "generic" caps the decoder at plain C++ (tests, benchmarks)
    return avx2 && !(isa && std::string(isa) == "generic");
}
#endif

} // namespace

double entropyBits(const std::vector<std::uint64_t>& counts)
{
    double total = 0;
    for (std::uint64_t c : counts)
        total += static_cast<double>(c);
    double bits = 0;
    for (std::uint64_t c : counts)
        if (c)
            bits += static_cast<double>(c) * std::log2(total / static_cast<double>(c));
    return bits;
}

std::vector<std::uint64_t> histogram(const std::uint16_t* symbols, std::uint64_t count, int symbolBits)
{
    std::vector<std::uint64_t> counts(1ull << symbolBits, 0);
    const std::uint64_t limit = counts.size();
    for (std::uint64_t i = 0; i < count; ++i) {
        if (symbols[i] >= limit)
            throw std::invalid_argument("rans::histogram: symbol " + std::to_string(symbols[i]) + " is not below 2^" +
                                        std::to_string(symbolBits));
        ++counts[symbols[i]];
    }
    return counts;
}

Result<StreamInfo> inspect(const std::uint8_t* coded, std::uint64_t size)
{
    Result<Parsed> p = parse(coded, size);
    if (!p)
        return p.error();
    return std::move(p->info);
}

namespace {

// encodeWith() with the symbols' counts (histogram()) already taken.
std::vector<std::uint8_t> encodeCounted(const std::uint16_t* symbols, std::uint64_t count, int symbolBits, int precision, int lanes,
                                        const std::vector<std::uint64_t>& counts)
{
    if (symbolBits < 1 || symbolBits > kMaxSymbolBits || precision < 1 || precision > kMaxPrecision || lanes < 1 || lanes > kMaxLanes)
        throw std::invalid_argument("rans::encode: bad arguments");
    std::vector<std::uint8_t> out = {static_cast<std::uint8_t>(kFormat), static_cast<std::uint8_t>(symbolBits),
                                     static_cast<std::uint8_t>(precision), static_cast<std::uint8_t>(lanes)};
    putVarint(out, count);
    if (count == 0)
        return out;
    std::uint64_t distinct = 0;
    for (std::uint64_t c : counts)
        distinct += c != 0;
    if (distinct > (1ull << precision))
        throw std::invalid_argument("rans::encode: precision too low for the alphabet");
    const std::vector<std::uint32_t> f = normalise(counts, count, precision);
    putTable(out, f);
    std::vector<std::uint32_t> start(f.size() + 1, 0);
    for (std::size_t s = 0; s < f.size(); ++s)
        start[s + 1] = start[s] + f[s];

    // Words are produced last first; collected reversed, then flipped.
    std::vector<std::uint32_t> words;
    words.reserve(count * static_cast<std::uint64_t>(symbolBits) / 32 + 2 * static_cast<std::uint64_t>(lanes) + 16);
    std::vector<std::uint64_t> x(static_cast<std::size_t>(lanes), kLow);
    for (std::uint64_t i = count; i-- > 0;) {
        std::uint64_t& state = x[i % static_cast<std::uint64_t>(lanes)];
        const std::uint16_t s = symbols[i];
        const std::uint64_t freq = f[s];
        const std::uint64_t limit = ((kLow >> precision) << 32) * freq;
        if (state >= limit) {
            words.push_back(static_cast<std::uint32_t>(state));
            state >>= 32;
        }
        state = ((state / freq) << precision) + (state % freq) + start[s];
    }
    for (int l = lanes; l-- > 0;) {
        words.push_back(static_cast<std::uint32_t>(x[static_cast<std::size_t>(l)] >> 32));
        words.push_back(static_cast<std::uint32_t>(x[static_cast<std::size_t>(l)]));
    }
    std::reverse(words.begin(), words.end());
    const std::size_t at = out.size();
    out.resize(at + words.size() * 4);
    std::memcpy(out.data() + at, words.data(), words.size() * 4); // little-endian host (x86-64, aarch64)
    return out;
}

} // namespace

std::vector<std::uint8_t> encodeWith(const std::uint16_t* symbols, std::uint64_t count, int symbolBits, int precision, int lanes)
{
    if (symbolBits < 1 || symbolBits > kMaxSymbolBits)
        throw std::invalid_argument("rans::encode: bad symbol width");
    return encodeCounted(symbols, count, symbolBits, precision, lanes, histogram(symbols, count, symbolBits));
}

std::vector<std::uint8_t> encode(const std::uint16_t* symbols, std::uint64_t count, int symbolBits)
{
    if (symbolBits < 1 || symbolBits > kMaxSymbolBits)
        throw std::invalid_argument("rans::encode: bad symbol width");
    const int lanes = count < 4096 ? 1 : 8;
    const std::vector<std::uint64_t> counts = histogram(symbols, count, symbolBits);
    if (count == 0)
        return encodeCounted(symbols, count, symbolBits, 1, lanes, counts);
    std::uint64_t distinct = 0;
    for (std::uint64_t c : counts)
        distinct += c != 0;
    int best = 0;
    double bestBits = 0;
    // A decoder builds a table of 2^P entries per stream: no larger than the stream (or the
    // alphabet needs), so short streams do not pay more for the table than for their codes.
    // And at most 2^12 entries (32 KiB, the first-level cache) unless the alphabet needs more:
    // beyond that the table's reads cost more time than the finer frequencies save bits.
    int maxPrecision = 1;
    while (maxPrecision < kMaxPrecision && ((1ull << maxPrecision) < count || (1ull << maxPrecision) < 4 * distinct) &&
           (maxPrecision < 12 || (1ull << maxPrecision) < 2 * distinct))
        ++maxPrecision;
    for (int p = 1; p <= maxPrecision; ++p) {
        if ((1ull << p) < distinct)
            continue;
        const std::vector<std::uint32_t> f = normalise(counts, count, p);
        const double bits = codeBits(counts, f, p) + 8.0 * static_cast<double>(tableBytes(f));
        if (best == 0 || bits < bestBits) {
            best = p;
            bestBits = bits;
        }
    }
    return encodeCounted(symbols, count, symbolBits, best, lanes, counts);
}

Status decode(const std::uint8_t* coded, std::uint64_t size, std::uint64_t count, int symbolBits, std::uint16_t* out)
{
    Result<Parsed> parsed = parse(coded, size);
    if (!parsed)
        return parsed.error();
    const StreamInfo& info = parsed->info;
    if (info.count != count)
        return Error("coded stream holds " + std::to_string(info.count) + " symbols, expected " + std::to_string(count));
    if (info.symbolBits != symbolBits)
        return Error("coded stream has " + std::to_string(info.symbolBits) + "-bit symbols, expected " + std::to_string(symbolBits));
    if (count == 0)
        return {};
    std::vector<DecodeEntry> table(1ull << info.precision);
    for (std::size_t s = 0; s < info.frequencies.size(); ++s)
        for (std::uint32_t k = parsed->cumulative[s]; k < parsed->cumulative[s + 1]; ++k)
            table[k] = {info.frequencies[s], static_cast<std::uint16_t>(parsed->cumulative[s]), static_cast<std::uint16_t>(s)};
    // One symbol at full precision: frequency 2^16 does not fit start + 16 bits; the decode step
    // is then x = 2^P floor(x / 2^P) + slot, which the uint32 freq holds.
    const std::uint64_t wordCount = info.wordBytes / 4;
    // Aligned copy of the words only when the stream's words are not 4-byte aligned in memory.
    std::vector<std::uint32_t> copy;
    const std::uint32_t* words = nullptr;
    if (reinterpret_cast<std::uintptr_t>(coded + parsed->wordsAt) % alignof(std::uint32_t) == 0) {
        using AliasedWord = std::uint32_t __attribute__((may_alias)); // read through the byte buffer
        words = reinterpret_cast<const AliasedWord*>(coded + parsed->wordsAt);
    } else {
        copy.resize(wordCount);
        std::memcpy(copy.data(), coded + parsed->wordsAt, info.wordBytes);
        words = copy.data();
    }
    // Eight lanes (what encode() writes for all but short streams) take the fast decoders; any
    // other lane count the format allows, the plain one.
    bool ok = false;
    if (info.lanes == 8) {
#ifdef POCKET_RANS_X86
        if (useAvx2())
            ok = decodeLanes8Avx2(words, wordCount, count, info.precision, table.data(), out);
        else
#endif
            ok = decodeLanes<8>(words, wordCount, count, info.precision, table.data(), out);
    } else {
        std::uint64_t x[kMaxLanes];
        loadStates(words, info.lanes, x);
        ok = decodeGeneric(words, wordCount, 0, count, info.lanes, info.precision, table.data(), out, x, 2 * static_cast<std::uint64_t>(info.lanes));
    }
    if (!ok)
        return Error("word stream damaged: the coder's states do not come back to their start");
    return {};
}

void unpack(const std::uint8_t* packed, std::uint64_t packedBytes, std::uint64_t count, int bits, std::uint16_t* symbols)
{
    const std::uint32_t mask = (1u << bits) - 1;
    for (std::uint64_t i = 0; i < count; ++i) {
        const std::uint64_t bit = i * static_cast<std::uint64_t>(bits);
        const std::uint64_t at = bit >> 3;
        std::uint32_t word = 0;
        for (std::uint64_t k = 0; k < 3 && at + k < packedBytes; ++k)
            word |= static_cast<std::uint32_t>(packed[at + k]) << (8 * k);
        symbols[i] = static_cast<std::uint16_t>((word >> (bit & 7)) & mask);
    }
}

std::vector<std::uint8_t> encodePacked(const std::uint8_t* packed, std::uint64_t packedBytes, std::uint64_t count, int bits)
{
    if (bits < 1 || bits > kMaxSymbolBits || (count * static_cast<std::uint64_t>(bits) + 7) / 8 > packedBytes)
        throw std::invalid_argument("rans::encodePacked: bad arguments");
    std::vector<std::uint16_t> symbols(count);
    unpack(packed, packedBytes, count, bits, symbols.data());
    return encode(symbols.data(), count, bits);
}

Status decodePacked(const std::uint8_t* coded, std::uint64_t size, std::uint64_t count, int bits, std::uint8_t* packed,
                    std::uint64_t packedBytes)
{
    if (bits < 1 || bits > kMaxSymbolBits || (count * static_cast<std::uint64_t>(bits) + 7) / 8 != packedBytes)
        return Error("coded stream: the packed size does not match " + std::to_string(count) + " symbols of " + std::to_string(bits) +
                     " bits");
    std::vector<std::uint16_t> symbols(count);
    if (Status s = decode(coded, size, count, bits, symbols.data()); !s)
        return s;
    pack(symbols.data(), count, bits, packed);
    return {};
}

namespace {

// Byte-aligned widths (1, 2, 4, 8, 16 bits) by whole bytes, the compiler vectorises them; the
// others through a 64-bit accumulator.
template <class T>
void packAny(const T* symbols, std::uint64_t count, int bits, std::uint8_t* packed)
{
    const std::uint64_t bytes = (count * static_cast<std::uint64_t>(bits) + 7) / 8;
    if (bits == 8) {
        for (std::uint64_t i = 0; i < count; ++i)
            packed[i] = static_cast<std::uint8_t>(symbols[i]);
        return;
    }
    if (bits == 16) {
        for (std::uint64_t i = 0; i < count; ++i) {
            packed[2 * i] = static_cast<std::uint8_t>(symbols[i]);
            packed[2 * i + 1] = static_cast<std::uint8_t>(symbols[i] >> 8);
        }
        return;
    }
    if (bits == 1 || bits == 2 || bits == 4) {
        const int per = 8 / bits;
        const std::uint64_t whole = count / static_cast<std::uint64_t>(per);
        for (std::uint64_t b = 0; b < whole; ++b) {
            unsigned v = 0;
            for (int k = 0; k < per; ++k)
                v |= static_cast<unsigned>(symbols[b * per + k]) << (k * bits);
            packed[b] = static_cast<std::uint8_t>(v);
        }
        if (whole < bytes) {
            unsigned v = 0;
            for (std::uint64_t i = whole * per; i < count; ++i)
                v |= static_cast<unsigned>(symbols[i]) << ((i - whole * per) * bits);
            packed[whole] = static_cast<std::uint8_t>(v);
        }
        return;
    }
    std::uint64_t acc = 0, at = 0;
    int held = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        acc |= static_cast<std::uint64_t>(symbols[i]) << held;
        held += bits;
        while (held >= 8) {
            packed[at++] = static_cast<std::uint8_t>(acc);
            acc >>= 8;
            held -= 8;
        }
    }
    if (held > 0)
        packed[at] = static_cast<std::uint8_t>(acc);
}

} // namespace

void pack(const std::uint16_t* symbols, std::uint64_t count, int bits, std::uint8_t* packed) { packAny(symbols, count, bits, packed); }
void pack(const std::uint8_t* symbols, std::uint64_t count, int bits, std::uint8_t* packed) { packAny(symbols, count, bits, packed); }

} // namespace pocket::rans
