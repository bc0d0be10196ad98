// The rANS coder (pocket/support/rans.h) against a slow reference written here from the format
// description alone: its own header and table parser, a cumulative-frequency search instead of a
// slot table, one state at a time, arbitrary-precision bookkeeping of the ideal code length. The
// fast encoder must write exactly the reference's bytes, the fast decoder must read the reference's
// streams, sizes must come within 1% of the empirical entropy plus the stored table, and damaged or
// truncated streams must be refused.
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/rans.h"
#include "test_support.h"

#include <cmath>
#include <cstring>
#include <random>

using namespace pocket;

namespace {

// ---- the reference ------------------------------------------------------------------------------
struct RefTable {
    int symbolBits = 0, precision = 0, lanes = 0;
    std::uint64_t count = 0;
    std::vector<std::uint64_t> freq;
    std::size_t wordsAt = 0;
};

std::uint64_t refVarint(const std::vector<std::uint8_t>& b, std::size_t& pos)
{
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        if (pos >= b.size())
            throw std::runtime_error("truncated varint");
        const std::uint8_t byte = b[pos++];
        v |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return v;
    }
}

RefTable refParse(const std::vector<std::uint8_t>& b)
{
    RefTable t;
    t.symbolBits = b.at(1);
    t.precision = b.at(2);
    t.lanes = b.at(3);
    std::size_t pos = 4;
    t.count = refVarint(b, pos);
    if (t.count) {
        const std::uint64_t n = refVarint(b, pos);
        t.freq.assign(n, 0);
        for (std::uint64_t s = 0; s < n; ++s) {
            t.freq[s] = refVarint(b, pos);
            if (t.freq[s] == 0)
                s += refVarint(b, pos);
        }
    }
    t.wordsAt = pos;
    return t;
}

// One symbol at a time, straight from the formulas: encode in reverse, state i mod lanes.
std::vector<std::uint8_t> refEncode(const std::vector<std::uint16_t>& symbols, const RefTable& t, const std::vector<std::uint8_t>& header)
{
    if (symbols.empty())
        return header;
    const std::uint64_t L = 1ull << 31, M = 1ull << t.precision;
    std::vector<std::uint64_t> cum(t.freq.size() + 1, 0);
    for (std::size_t s = 0; s < t.freq.size(); ++s)
        cum[s + 1] = cum[s] + t.freq[s];
    std::vector<std::uint64_t> x(t.lanes, L);
    std::vector<std::uint32_t> backwards;
    for (std::size_t i = symbols.size(); i-- > 0;) {
        std::uint64_t& st = x[i % t.lanes];
        const std::uint64_t f = t.freq.at(symbols[i]), c = cum[symbols[i]];
        while (st >= (L / M) * f * (1ull << 32)) { // renormalise until the symbol fits
            backwards.push_back(static_cast<std::uint32_t>(st & 0xffffffffu));
            st >>= 32;
        }
        st = (st / f) * M + st % f + c;
    }
    for (int l = t.lanes - 1; l >= 0; --l) {
        backwards.push_back(static_cast<std::uint32_t>(x[l] >> 32));
        backwards.push_back(static_cast<std::uint32_t>(x[l] & 0xffffffffu));
    }
    std::vector<std::uint8_t> out(header.begin(), header.begin() + static_cast<std::ptrdiff_t>(t.wordsAt));
    for (std::size_t k = backwards.size(); k-- > 0;)
        for (int byte = 0; byte < 4; ++byte)
            out.push_back(static_cast<std::uint8_t>(backwards[k] >> (8 * byte)));
    return out;
}

std::vector<std::uint16_t> refDecode(const std::vector<std::uint8_t>& b)
{
    const RefTable t = refParse(b);
    if (t.count == 0)
        return {};
    const std::uint64_t L = 1ull << 31, M = 1ull << t.precision;
    std::vector<std::uint32_t> words;
    for (std::size_t p = t.wordsAt; p + 4 <= b.size(); p += 4)
        words.push_back(b[p] | b[p + 1] << 8 | b[p + 2] << 16 | static_cast<std::uint32_t>(b[p + 3]) << 24);
    std::size_t pos = 0;
    std::vector<std::uint64_t> x(t.lanes);
    for (int l = 0; l < t.lanes; ++l) {
        x[l] = words.at(pos) | static_cast<std::uint64_t>(words.at(pos + 1)) << 32;
        pos += 2;
    }
    std::vector<std::uint16_t> out;
    for (std::uint64_t i = 0; i < t.count; ++i) {
        std::uint64_t& st = x[i % t.lanes];
        const std::uint64_t slot = st % M;
        std::uint64_t s = 0, c = 0;
        while (c + t.freq[s] <= slot) // linear search of the cumulative frequencies
            c += t.freq[s++];
        out.push_back(static_cast<std::uint16_t>(s));
        st = t.freq[s] * (st / M) + slot - c;
        while (st < L)
            st = st << 32 | words.at(pos++);
    }
    if (pos != words.size())
        throw std::runtime_error("words left over");
    for (std::uint64_t v : x)
        if (v != L)
            throw std::runtime_error("final state");
    return out;
}

// ---- data ---------------------------------------------------------------------------------------
// Discretised Laplace-like symbols around the middle of the alphabet (like codes of bell-shaped
// weights), `spread` in symbols.
std::vector<std::uint16_t> bellSymbols(std::uint64_t count, int bits, double spread, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::exponential_distribution<double> mag(1.0 / spread);
    const double mid = ((1 << bits) - 1) / 2.0;
    std::vector<std::uint16_t> s(count);
    for (auto& v : s) {
        const double sign = (rng() & 1) ? 1 : -1;
        v = static_cast<std::uint16_t>(std::clamp(std::lround(mid + sign * mag(rng)), 0L, (1L << bits) - 1));
    }
    return s;
}

std::vector<std::uint16_t> uniformSymbols(std::uint64_t count, std::uint32_t alphabet, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::vector<std::uint16_t> s(count);
    for (auto& v : s)
        v = static_cast<std::uint16_t>(rng() % alphabet);
    return s;
}

void roundTrip(const std::vector<std::uint16_t>& s, int bits, const char* what)
{
    const std::vector<std::uint8_t> coded = rans::encode(s.data(), s.size(), bits);
    std::vector<std::uint16_t> back(s.size(), 0xffff);
    const Status st = rans::decode(coded.data(), coded.size(), s.size(), bits, back.data());
    if (!st)
        QFAIL(qPrintable(QString("%1: %2").arg(what, QString::fromStdString(st.message()))));
    QVERIFY2(back == s, what);
    QVERIFY2(refDecode(coded) == s, what);
    QCOMPARE(refEncode(s, refParse(coded), coded), coded);
}

} // namespace

class TestRans : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void roundTripsAndMatchesReference()
    {
        roundTrip({}, 8, "empty");
        roundTrip({5}, 3, "one symbol");
        roundTrip(std::vector<std::uint16_t>(10000, 7), 3, "one value only");
        roundTrip(uniformSymbols(4095, 256, 1), 8, "uniform 8-bit, one lane");
        roundTrip(uniformSymbols(100003, 256, 2), 8, "uniform 8-bit, eight lanes, odd tail");
        roundTrip(bellSymbols(50000, 3, 0.7, 3), 3, "bell 3-bit");
        roundTrip(bellSymbols(50000, 4, 1.5, 4), 4, "bell 4-bit");
        roundTrip(bellSymbols(20000, 8, 30, 5), 8, "bell 8-bit");
        roundTrip(uniformSymbols(70000, 50000, 6), 16, "16-bit alphabet");
        roundTrip(uniformSymbols(9000, 2, 7), 1, "bits");
        // A very skewed stream: one symbol in 10^4 differs (long runs without a renormalisation).
        std::vector<std::uint16_t> skew(200000, 0);
        for (std::size_t i = 0; i < skew.size(); i += 9973)
            skew[i] = 1;
        roundTrip(skew, 2, "skewed");
        // Every lane count the format allows, and every precision the alphabet allows.
        const auto s = bellSymbols(5000, 5, 3, 8);
        for (int lanes : {1, 2, 3, 7, 8, 9, 32})
            for (int p : {5, 9, 12, 16}) {
                const auto coded = rans::encodeWith(s.data(), s.size(), 5, p, lanes);
                std::vector<std::uint16_t> back(s.size());
                QVERIFY(rans::decode(coded.data(), coded.size(), s.size(), 5, back.data()).ok());
                QCOMPARE(back, s);
                QCOMPARE(refDecode(coded), s);
                QCOMPARE(refEncode(s, refParse(coded), coded), coded);
            }
    }

    void sizeNearEntropy()
    {
        struct Case { std::vector<std::uint16_t> s; int bits; const char* what; };
        const Case cases[] = {{uniformSymbols(1 << 20, 256, 11), 8, "uniform 8-bit"},
                              {bellSymbols(1 << 20, 8, 20, 12), 8, "bell 8-bit"},
                              {bellSymbols(1 << 20, 4, 1.2, 13), 4, "bell 4-bit"},
                              {bellSymbols(1 << 20, 3, 0.6, 14), 3, "bell 3-bit"},
                              {bellSymbols(1 << 20, 2, 0.3, 15), 2, "bell 2-bit"}};
        for (const Case& c : cases) {
            const auto coded = rans::encode(c.s.data(), c.s.size(), c.bits);
            const auto info = rans::inspect(coded.data(), coded.size());
            QVERIFY(info.ok());
            const double entropyBytes = rans::entropyBits(rans::histogram(c.s.data(), c.s.size(), c.bits)) / 8;
            const double overhead = static_cast<double>(info->headerBytes + info->tableBytes);
            const double excess = (static_cast<double>(coded.size()) - overhead) / entropyBytes - 1;
            qInfo("%s: entropy %.0f B, coded %zu B (table %llu B), excess %.3f%%", c.what, entropyBytes, coded.size(),
                  static_cast<unsigned long long>(info->tableBytes), 100 * excess);
            QVERIFY2(excess < 0.01, c.what);
            QVERIFY2(excess > 0, c.what); // no coder beats the entropy: a check on the check
        }
    }

    void packedStreams()
    {
        for (int bits = 1; bits <= 16; ++bits) {
            const auto s = bellSymbols(3001, bits, std::max(0.5, (1 << bits) / 8.0), 20 + bits);
            std::vector<std::int32_t> values(s.begin(), s.end());
            const std::vector<std::uint8_t> packed = packBits(values.data(), static_cast<std::int64_t>(values.size()), bits);
            const auto coded = rans::encodePacked(packed.data(), packed.size(), s.size(), bits);
            std::vector<std::uint8_t> back(packed.size(), 0xaa);
            QVERIFY(rans::decodePacked(coded.data(), coded.size(), s.size(), bits, back.data(), back.size()).ok());
            QCOMPARE(back, packed);
            QVERIFY(!rans::decodePacked(coded.data(), coded.size(), s.size(), bits, back.data(), back.size() + 1).ok());
        }
    }

    void damagedStreamsRefused()
    {
        const auto s = bellSymbols(3000, 4, 1.5, 30);
        const auto coded = rans::encode(s.data(), s.size(), 4);
        std::vector<std::uint16_t> back(s.size());
        // Every truncation.
        for (std::size_t n = 0; n < coded.size(); ++n)
            QVERIFY2(!rans::decode(coded.data(), n, s.size(), 4, back.data()).ok(), qPrintable(QString("prefix %1").arg(n)));
        // Every single-byte change of the header and table is refused. A change in the word stream
        // usually gives another valid stream (a near-optimal code leaves few invalid bit strings):
        // the archive's section checksum refuses those before decoding (test_archive); here the
        // decoder must only stay inside its buffers and fill exactly `count` symbols.
        const auto info = rans::inspect(coded.data(), coded.size());
        QVERIFY(info.ok());
        int wordChangesRefused = 0;
        for (std::size_t at = 0; at < coded.size(); ++at)
            for (std::uint8_t flip : {std::uint8_t(0x01), std::uint8_t(0x80)}) {
                auto bad = coded;
                bad[at] ^= flip;
                const bool refused = !rans::decode(bad.data(), bad.size(), s.size(), 4, back.data()).ok();
                if (at < info->headerBytes + info->tableBytes)
                    QVERIFY2(refused, qPrintable(QString("table byte %1").arg(at)));
                else
                    wordChangesRefused += refused;
            }
        qInfo("word-stream byte changes refused by the decoder alone: %d of %d", wordChangesRefused,
              static_cast<int>(2 * info->wordBytes));
        // Wrong expectations.
        QVERIFY(!rans::decode(coded.data(), coded.size(), s.size() + 1, 4, back.data()).ok());
        QVERIFY(!rans::decode(coded.data(), coded.size(), s.size(), 5, back.data()).ok());
        QVERIFY(!rans::inspect(coded.data(), 3).ok());
    }

    // The AVX2 decoder (where the CPU has it) and the plain one agree on every stream, damaged
    // ones included (POCKET_RANS_ISA=generic selects the plain one).
    void instructionSetPathsAgree()
    {
        std::mt19937 rng(40);
        for (int round = 0; round < 200; ++round) {
            const int bits = 1 + round % 16;
            const auto s = bellSymbols(5000 + rng() % 20000, bits, std::max(0.3, (1 << bits) / 10.0), rng());
            auto coded = rans::encode(s.data(), s.size(), bits);
            if (round % 2) // damage the word stream (the first state words too: states past 2^63)
                for (int k = 0; k < 1 + round % 5; ++k)
                    coded[coded.size() / 3 + rng() % (2 * coded.size() / 3)] ^= static_cast<std::uint8_t>(1 + rng() % 255);
            std::vector<std::uint16_t> fast(s.size()), plain(s.size());
            qunsetenv("POCKET_RANS_ISA");
            const bool okFast = rans::decode(coded.data(), coded.size(), s.size(), bits, fast.data()).ok();
            qputenv("POCKET_RANS_ISA", "generic");
            const bool okPlain = rans::decode(coded.data(), coded.size(), s.size(), bits, plain.data()).ok();
            qunsetenv("POCKET_RANS_ISA");
            QCOMPARE(okFast, okPlain);
            QCOMPARE(fast, plain);
            if (round % 2 == 0)
                QVERIFY(okFast && fast == s);
        }
    }

    void outOfRangeSymbolThrows()
    {
        const std::vector<std::uint16_t> s = {1, 2, 8};
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, rans::encode(s.data(), s.size(), 3));
    }
};

QTEST_GUILESS_MAIN(TestRans)
#include "test_rans.moc"
