// Static rANS (see rans.h for the stream layout). The coder is ryg_rans's 64-bit one (public
// domain, Fabian Giesen) re-derived from Duda's formulas:
//   encode s:  x' = floor(x / f_s) * 2^P + (x mod f_s) + c_s        (after pushing low words out)
//   decode:    s = slot(x mod 2^P);  x = f_s * floor(x / 2^P) + (x mod 2^P) - c_s  (then pull words in)
// with x kept in [L, 2^32 L), L = 2^31, so one 32-bit word at most moves per symbol.
#include "pocket/support/rans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <queue>
#include <stdexcept>
#include <string>

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

// The hot loop: Lanes states in registers. A group of Lanes symbols pulls at most Lanes words, so
// while that many remain, reads need no bounds check; the rest goes through decodeGeneric's checks.
template <int Lanes>
bool decodeLanes(const std::uint32_t* words, std::uint64_t wordCount, std::uint64_t count, int precision, const DecodeEntry* table,
                 std::uint16_t* out);

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

template <int Lanes>
bool decodeLanes(const std::uint32_t* words, std::uint64_t wordCount, std::uint64_t count, int precision, const DecodeEntry* table,
                 std::uint16_t* out)
{
    std::uint64_t x[Lanes];
    for (int l = 0; l < Lanes; ++l)
        x[l] = static_cast<std::uint64_t>(words[2 * l]) | static_cast<std::uint64_t>(words[2 * l + 1]) << 32;
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
        for (int l = 0; l < Lanes; ++l) {
            const bool pull = x[l] < kLow;
            const std::uint64_t word = words[pos];
            x[l] = pull ? (x[l] << 32 | word) : x[l];
            pos += pull;
        }
    }
    return decodeGeneric(words, wordCount, i, count, Lanes, precision, table, out, x, pos);
}

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

std::vector<std::uint8_t> encodeWith(const std::uint16_t* symbols, std::uint64_t count, int symbolBits, int precision, int lanes)
{
    if (symbolBits < 1 || symbolBits > kMaxSymbolBits || precision < 1 || precision > kMaxPrecision || lanes < 1 || lanes > kMaxLanes)
        throw std::invalid_argument("rans::encode: bad arguments");
    std::vector<std::uint8_t> out = {static_cast<std::uint8_t>(kFormat), static_cast<std::uint8_t>(symbolBits),
                                     static_cast<std::uint8_t>(precision), static_cast<std::uint8_t>(lanes)};
    putVarint(out, count);
    if (count == 0)
        return out;
    const std::vector<std::uint64_t> counts = histogram(symbols, count, symbolBits);
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

std::vector<std::uint8_t> encode(const std::uint16_t* symbols, std::uint64_t count, int symbolBits)
{
    if (symbolBits < 1 || symbolBits > kMaxSymbolBits)
        throw std::invalid_argument("rans::encode: bad symbol width");
    const int lanes = count < 4096 ? 1 : 8;
    if (count == 0)
        return encodeWith(symbols, count, symbolBits, 1, lanes);
    const std::vector<std::uint64_t> counts = histogram(symbols, count, symbolBits);
    std::uint64_t distinct = 0;
    for (std::uint64_t c : counts)
        distinct += c != 0;
    int best = 0;
    double bestBits = 0;
    for (int p = 1; p <= kMaxPrecision; ++p) {
        if ((1ull << p) < distinct)
            continue;
        const std::vector<std::uint32_t> f = normalise(counts, count, p);
        const double bits = codeBits(counts, f, p) + 8.0 * static_cast<double>(tableBytes(f));
        if (best == 0 || bits < bestBits) {
            best = p;
            bestBits = bits;
        }
    }
    return encodeWith(symbols, count, symbolBits, best, lanes);
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
    std::vector<std::uint32_t> words(wordCount);
    std::memcpy(words.data(), coded + parsed->wordsAt, info.wordBytes);
    bool ok = false;
    if (info.lanes == 8) {
        ok = decodeLanes<8>(words.data(), wordCount, count, info.precision, table.data(), out);
    } else if (info.lanes == 16) {
        ok = decodeLanes<16>(words.data(), wordCount, count, info.precision, table.data(), out);
    } else if (info.lanes == 4) {
        ok = decodeLanes<4>(words.data(), wordCount, count, info.precision, table.data(), out);
    } else {
        std::uint64_t x[kMaxLanes];
        for (int l = 0; l < info.lanes; ++l)
            x[l] = static_cast<std::uint64_t>(words[2 * l]) | static_cast<std::uint64_t>(words[2 * l + 1]) << 32;
        ok = decodeGeneric(words.data(), wordCount, 0, count, info.lanes, info.precision, table.data(), out, x,
                           2 * static_cast<std::uint64_t>(info.lanes));
    }
    if (!ok)
        return Error("word stream damaged: the coder's states do not come back to their start");
    return {};
}

std::vector<std::uint8_t> encodePacked(const std::uint8_t* packed, std::uint64_t packedBytes, std::uint64_t count, int bits)
{
    if (bits < 1 || bits > kMaxSymbolBits || (count * static_cast<std::uint64_t>(bits) + 7) / 8 > packedBytes)
        throw std::invalid_argument("rans::encodePacked: bad arguments");
    std::vector<std::uint16_t> symbols(count);
    const std::uint32_t mask = (1u << bits) - 1;
    for (std::uint64_t i = 0; i < count; ++i) {
        const std::uint64_t bit = i * static_cast<std::uint64_t>(bits);
        const std::uint64_t at = bit >> 3;
        std::uint32_t word = 0;
        for (std::uint64_t k = 0; k < 3 && at + k < packedBytes; ++k)
            word |= static_cast<std::uint32_t>(packed[at + k]) << (8 * k);
        symbols[i] = static_cast<std::uint16_t>((word >> (bit & 7)) & mask);
    }
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
    std::memset(packed, 0, packedBytes);
    if (bits == 8) {
        for (std::uint64_t i = 0; i < count; ++i)
            packed[i] = static_cast<std::uint8_t>(symbols[i]);
        return {};
    }
    if (bits == 16) {
        for (std::uint64_t i = 0; i < count; ++i) {
            packed[2 * i] = static_cast<std::uint8_t>(symbols[i]);
            packed[2 * i + 1] = static_cast<std::uint8_t>(symbols[i] >> 8);
        }
        return {};
    }
    std::uint64_t acc = 0;
    int held = 0;
    std::uint64_t at = 0;
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
    return {};
}

} // namespace pocket::rans
