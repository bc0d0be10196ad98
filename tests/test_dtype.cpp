// Element types: half/bfloat16 conversions checked exhaustively and against slow double-precision
// references, array conversions, dtype names and shape helpers.
#include "pocket/io/dtype.h"
#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace pocket;

namespace {

std::uint32_t bitsOf(float f)
{
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

float floatOf(std::uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// IEEE binary16 decoded straight from its definition, in double (independent of the code under test).
// Returns NaN for NaN patterns and +-inf for the infinities.
double refHalfValue(std::uint16_t h)
{
    const int sign = (h & 0x8000) ? -1 : 1;
    const int e = (h >> 10) & 0x1f;
    const int m = h & 0x3ff;
    if (e == 0x1f)
        return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
    if (e == 0)
        return sign * std::ldexp(static_cast<double>(m), -24);
    return sign * std::ldexp(static_cast<double>(1024 + m), e - 25);
}

// bfloat16 decoded from its definition (8 exponent bits, 7 mantissa bits, bias 127).
double refBf16Value(std::uint16_t b)
{
    const int sign = (b & 0x8000) ? -1 : 1;
    const int e = (b >> 7) & 0xff;
    const int m = b & 0x7f;
    if (e == 0xff)
        return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
    if (e == 0)
        return sign * std::ldexp(static_cast<double>(m), -133);
    return sign * std::ldexp(static_cast<double>(128 + m), e - 134);
}

// A sorted table of the non-negative finite values of a 16-bit format, plus one entry past the
// largest finite value: the value the next code would have with an unbounded exponent (IEEE
// rounds as if the exponent were unbounded, then overflows to infinity). That entry's code is the
// infinity code.
struct Table {
    std::vector<double> values;
    std::vector<std::uint16_t> codes;
};

Table makeTable(std::uint16_t maxFinite, std::uint16_t infCode, double (*decode)(std::uint16_t), double overflowValue)
{
    Table t;
    for (std::uint32_t c = 0; c <= maxFinite; ++c) {
        t.values.push_back(decode(static_cast<std::uint16_t>(c)));
        t.codes.push_back(static_cast<std::uint16_t>(c));
    }
    t.values.push_back(overflowValue);
    t.codes.push_back(infCode);
    return t;
}

// The nearest entry of `t` to |x| by bisection, ties to the even code; beyond the overflow entry:
// infinity. Sign applied afterwards. All arithmetic in double, where each difference is exact.
std::uint16_t refRound(const Table& t, float x)
{
    const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(static_cast<double>(x));
    if (a >= t.values.back())
        return sign | t.codes.back();
    const auto it = std::lower_bound(t.values.begin(), t.values.end(), a); // first value >= a
    const std::size_t hi = static_cast<std::size_t>(it - t.values.begin());
    if (t.values[hi] == a)
        return sign | t.codes[hi];
    const std::size_t lo = hi - 1; // hi > 0 because values[0] == 0 <= a
    const double dLo = a - t.values[lo];
    const double dHi = t.values[hi] - a;
    std::uint16_t code;
    if (dLo < dHi) code = t.codes[lo];
    else if (dHi < dLo) code = t.codes[hi];
    else code = (t.codes[lo] & 1) == 0 ? t.codes[lo] : t.codes[hi];
    return sign | code;
}

const Table& halfTable()
{
    static const Table t = makeTable(0x7bff, 0x7c00, refHalfValue, 65536.0);
    return t;
}

const Table& bf16Table()
{
    static const Table t = makeTable(0x7f7f, 0x7f80, refBf16Value, std::ldexp(1.0, 128));
    return t;
}

bool isHalfNaN(std::uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }
bool isBf16NaN(std::uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

// Test inputs for a 16-bit format: every midpoint between neighbouring finite values (the ties),
// one float ulp either side of each, and `randomCount` random floats of both signs spread
// log-uniformly over [2^minExp, 2^maxExp).
std::vector<float> roundingInputs(const Table& t, int minExp, int maxExp, int randomCount, std::uint32_t seed)
{
    std::vector<float> xs;
    for (std::size_t i = 0; i + 1 < t.values.size(); ++i) {
        const double mid = 0.5 * (t.values[i] + t.values[i + 1]);
        const float f = static_cast<float>(mid);
        if (static_cast<double>(f) != mid)
            continue; // not representable as float (cannot happen for half/bf16, kept for safety)
        for (const float x : {f, std::nextafter(f, 0.0f), std::nextafter(f, std::numeric_limits<float>::infinity())}) {
            xs.push_back(x);
            xs.push_back(-x);
        }
    }
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> expDist(minExp, maxExp);
    std::uniform_real_distribution<double> mant(1.0, 2.0);
    for (int i = 0; i < randomCount; ++i) {
        const double v = std::ldexp(mant(rng), static_cast<int>(std::floor(expDist(rng))));
        const float f = static_cast<float>(v);
        xs.push_back((i & 1) ? -f : f);
    }
    return xs;
}

} // namespace

class TestDType : public QObject {
    Q_OBJECT
private Q_SLOTS:
    // ------------------------------------------------------------------ half
    void halfDecodeMatchesDefinition()
    {
        int nan = 0;
        for (std::uint32_t h = 0; h <= 0xffff; ++h) {
            const float f = halfToFloat(static_cast<std::uint16_t>(h));
            const double want = refHalfValue(static_cast<std::uint16_t>(h));
            if (std::isnan(want)) {
                ++nan;
                QVERIFY2(std::isnan(f), qPrintable(QString("half 0x%1 should decode to NaN").arg(h, 4, 16, QChar('0'))));
                continue;
            }
            if (static_cast<double>(f) != want || std::signbit(f) != std::signbit(want))
                QFAIL(qPrintable(QString("half 0x%1 decodes to %2, expected %3").arg(h, 4, 16, QChar('0')).arg(f, 0, 'g', 17).arg(want, 0, 'g', 17)));
        }
        QCOMPARE(nan, 2 * 1023);
    }

    void halfRoundTripsEveryNonNaNPattern()
    {
        int checked = 0;
        for (std::uint32_t h = 0; h <= 0xffff; ++h) {
            if (isHalfNaN(static_cast<std::uint16_t>(h)))
                continue;
            const std::uint16_t back = floatToHalf(halfToFloat(static_cast<std::uint16_t>(h)));
            if (back != h)
                QFAIL(qPrintable(QString("half 0x%1 came back as 0x%2").arg(h, 4, 16, QChar('0')).arg(back, 4, 16, QChar('0'))));
            ++checked;
        }
        QCOMPARE(checked, 65536 - 2 * 1023);
    }

    void halfNaNStaysNaN()
    {
        for (const std::uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0xff800001u}) {
            const std::uint16_t h = floatToHalf(floatOf(bits));
            QVERIFY2(isHalfNaN(h), qPrintable(QString("float 0x%1 -> half 0x%2").arg(bits, 8, 16, QChar('0')).arg(h, 4, 16, QChar('0'))));
            QCOMPARE((h & 0x8000) != 0, (bits & 0x80000000u) != 0);
        }
    }

    void halfKnownValues_data()
    {
        QTest::addColumn<float>("value");
        QTest::addColumn<int>("bits");
        QTest::newRow("1.0") << 1.0f << 0x3c00;
        QTest::newRow("-2.0") << -2.0f << 0xc000;
        QTest::newRow("0.5") << 0.5f << 0x3800;
        QTest::newRow("+0") << 0.0f << 0x0000;
        QTest::newRow("-0") << -0.0f << 0x8000;
        QTest::newRow("max 65504") << 65504.0f << 0x7bff;
        QTest::newRow("65519 rounds down to max") << 65519.0f << 0x7bff;
        QTest::newRow("65520 overflows to inf") << 65520.0f << 0x7c00;
        QTest::newRow("-65520 overflows to -inf") << -65520.0f << 0xfc00;
        QTest::newRow("1e6 to inf") << 1e6f << 0x7c00;
        QTest::newRow("float max to inf") << std::numeric_limits<float>::max() << 0x7c00;
        QTest::newRow("+inf") << std::numeric_limits<float>::infinity() << 0x7c00;
        QTest::newRow("-inf") << -std::numeric_limits<float>::infinity() << 0xfc00;
        QTest::newRow("smallest normal 2^-14") << std::ldexp(1.0f, -14) << 0x0400;
        QTest::newRow("largest subnormal") << std::ldexp(1023.0f, -24) << 0x03ff;
        QTest::newRow("smallest subnormal 2^-24") << std::ldexp(1.0f, -24) << 0x0001;
        QTest::newRow("2^-25 ties to even zero") << std::ldexp(1.0f, -25) << 0x0000;
        QTest::newRow("just above 2^-25 rounds up") << std::nextafter(std::ldexp(1.0f, -25), 1.0f) << 0x0001;
        QTest::newRow("1.5 * 2^-24 ties to even 2") << std::ldexp(3.0f, -25) << 0x0002;
        QTest::newRow("2^-26 to zero") << std::ldexp(1.0f, -26) << 0x0000;
        QTest::newRow("float denormal to zero") << std::numeric_limits<float>::denorm_min() << 0x0000;
        QTest::newRow("-float denormal to -zero") << -std::numeric_limits<float>::denorm_min() << 0x8000;
        QTest::newRow("1 + 2^-11 ties to even 1") << 1.0f + std::ldexp(1.0f, -11) << 0x3c00;
        QTest::newRow("1 + 3*2^-11 ties to even up") << 1.0f + 3 * std::ldexp(1.0f, -11) << 0x3c02;
        QTest::newRow("pi") << 3.14159265f << 0x4248;
        QTest::newRow("0.1") << 0.1f << 0x2e66;
    }
    void halfKnownValues()
    {
        QFETCH(float, value);
        QFETCH(int, bits);
        QCOMPARE(static_cast<int>(floatToHalf(value)), bits);
        // And decoding gives the value the reference says the pattern has.
        const double want = refHalfValue(static_cast<std::uint16_t>(bits));
        QCOMPARE(static_cast<double>(halfToFloat(static_cast<std::uint16_t>(bits))), want);
    }

    void halfRoundsToNearestEvenLikeReference()
    {
        // Range: from below half the smallest subnormal up to past the overflow threshold.
        const auto xs = roundingInputs(halfTable(), -27, 17, 100000, 12345u);
        QVERIFY(xs.size() > 200000);
        int mismatches = 0;
        QString first;
        for (const float x : xs) {
            const std::uint16_t got = floatToHalf(x);
            const std::uint16_t want = refRound(halfTable(), x);
            if (got != want) {
                if (mismatches++ == 0)
                    first = QString("float %1 (0x%2): got 0x%3, want 0x%4").arg(x, 0, 'g', 9).arg(bitsOf(x), 8, 16, QChar('0')).arg(got, 4, 16, QChar('0')).arg(want, 4, 16, QChar('0'));
            }
        }
        QVERIFY2(mismatches == 0, qPrintable(QString::number(mismatches) + " mismatches; first: " + first));
    }

    // ------------------------------------------------------------------ bfloat16
    void bf16DecodeMatchesDefinition()
    {
        for (std::uint32_t b = 0; b <= 0xffff; ++b) {
            const float f = bf16ToFloat(static_cast<std::uint16_t>(b));
            const double want = refBf16Value(static_cast<std::uint16_t>(b));
            if (std::isnan(want)) {
                QVERIFY(std::isnan(f));
                continue;
            }
            if (static_cast<double>(f) != want || std::signbit(f) != std::signbit(want))
                QFAIL(qPrintable(QString("bf16 0x%1 decodes to %2, expected %3").arg(b, 4, 16, QChar('0')).arg(f, 0, 'g', 17).arg(want, 0, 'g', 17)));
        }
    }

    void bf16RoundTripsEveryNonNaNPattern()
    {
        int checked = 0;
        for (std::uint32_t b = 0; b <= 0xffff; ++b) {
            if (isBf16NaN(static_cast<std::uint16_t>(b)))
                continue;
            const std::uint16_t back = floatToBf16(bf16ToFloat(static_cast<std::uint16_t>(b)));
            if (back != b)
                QFAIL(qPrintable(QString("bf16 0x%1 came back as 0x%2").arg(b, 4, 16, QChar('0')).arg(back, 4, 16, QChar('0'))));
            ++checked;
        }
        QCOMPARE(checked, 65536 - 2 * 127);
    }

    void bf16NaNStaysNaN()
    {
        // Including NaNs whose payload lies only in the low 16 bits (plain truncation would give inf).
        for (const std::uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7fffffffu}) {
            const std::uint16_t b = floatToBf16(floatOf(bits));
            QVERIFY2(isBf16NaN(b), qPrintable(QString("float 0x%1 -> bf16 0x%2").arg(bits, 8, 16, QChar('0')).arg(b, 4, 16, QChar('0'))));
            QCOMPARE((b & 0x8000) != 0, (bits & 0x80000000u) != 0);
        }
    }

    void bf16KnownValues_data()
    {
        QTest::addColumn<float>("value");
        QTest::addColumn<int>("bits");
        QTest::newRow("1.0") << 1.0f << 0x3f80;
        QTest::newRow("-2.0") << -2.0f << 0xc000;
        QTest::newRow("-0") << -0.0f << 0x8000;
        QTest::newRow("+inf") << std::numeric_limits<float>::infinity() << 0x7f80;
        QTest::newRow("-inf") << -std::numeric_limits<float>::infinity() << 0xff80;
        QTest::newRow("float max overflows to inf") << std::numeric_limits<float>::max() << 0x7f80;
        QTest::newRow("bf16 max stays") << floatOf(0x7f7f0000u) << 0x7f7f;
        QTest::newRow("just below overflow tie") << floatOf(0x7f7f7fffu) << 0x7f7f;
        QTest::newRow("overflow tie to inf") << floatOf(0x7f7f8000u) << 0x7f80;
        QTest::newRow("1 + 2^-8 ties to even 1") << 1.0f + std::ldexp(1.0f, -8) << 0x3f80;
        QTest::newRow("1 + 3*2^-8 ties to even up") << 1.0f + 3 * std::ldexp(1.0f, -8) << 0x3f82;
        QTest::newRow("pi") << 3.14159265f << 0x4049;
        QTest::newRow("float denormal min to zero") << std::numeric_limits<float>::denorm_min() << 0x0000;
        QTest::newRow("float denormal rounds up") << floatOf(0x00008001u) << 0x0001;
    }
    void bf16KnownValues()
    {
        QFETCH(float, value);
        QFETCH(int, bits);
        QCOMPARE(static_cast<int>(floatToBf16(value)), bits);
    }

    void bf16RoundsToNearestEvenLikeReference()
    {
        // Every finite float is in range for bf16: use random bit patterns over the whole float
        // range (subnormals included), plus the ties and their neighbours.
        std::vector<float> xs;
        std::mt19937 rng(777u);
        while (xs.size() < 100000) {
            const float f = floatOf(static_cast<std::uint32_t>(rng()));
            if (std::isfinite(f))
                xs.push_back(f);
        }
        // The ties: float midpoints between neighbouring bf16 values, and their neighbours.
        for (std::uint32_t b = 0; b < 0x7f7f; b += 7) {
            const float mid = floatOf((b << 16) | 0x8000u);
            for (const float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, std::numeric_limits<float>::infinity())}) {
                xs.push_back(x);
                xs.push_back(-x);
            }
        }
        int mismatches = 0;
        QString first;
        for (const float x : xs) {
            const std::uint16_t got = floatToBf16(x);
            const std::uint16_t want = refRound(bf16Table(), x);
            if (got != want && mismatches++ == 0)
                first = QString("float 0x%1: got 0x%2, want 0x%3").arg(bitsOf(x), 8, 16, QChar('0')).arg(got, 4, 16, QChar('0')).arg(want, 4, 16, QChar('0'));
        }
        QVERIFY2(mismatches == 0, qPrintable(QString::number(mismatches) + " mismatches; first: " + first));
    }

    // ------------------------------------------------------------------ arrays
    void convertArraysToFloat()
    {
        // F16 little-endian bytes, written by hand: 1.0, -2.0, 65504, 2^-24, -0, inf.
        const std::uint8_t f16[] = {0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x00, 0x80, 0x00, 0x7c};
        std::vector<float> out(6, 123.0f);
        convertToFloat(DType::F16, f16, 6, out.data());
        QCOMPARE(out[0], 1.0f);
        QCOMPARE(out[1], -2.0f);
        QCOMPARE(out[2], 65504.0f);
        QCOMPARE(out[3], std::ldexp(1.0f, -24));
        QVERIFY(out[4] == 0.0f && std::signbit(out[4]));
        QVERIFY(std::isinf(out[5]) && out[5] > 0);

        // BF16: 1.0, -2.0, pi(0x4049 = 3.140625).
        const std::uint8_t bf16[] = {0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40};
        std::vector<float> outB(3);
        convertToFloat(DType::BF16, bf16, 3, outB.data());
        QCOMPARE(outB[0], 1.0f);
        QCOMPARE(outB[1], -2.0f);
        QCOMPARE(outB[2], 3.140625f);

        // F32 is a copy, bit for bit (NaN payloads and -0 included).
        const std::vector<std::uint32_t> f32bits{0x3f800000u, 0x80000000u, 0x7fc01234u, 0x00000001u, 0xc2f6e979u};
        std::vector<float> outF(f32bits.size());
        convertToFloat(DType::F32, f32bits.data(), f32bits.size(), outF.data());
        for (std::size_t i = 0; i < f32bits.size(); ++i) QCOMPARE(bitsOf(outF[i]), f32bits[i]);

        // F64 narrows with the usual rounding.
        const double f64[] = {0.1, -1e300, 1.0 / 3.0};
        std::vector<float> outD(3);
        convertToFloat(DType::F64, f64, 3, outD.data());
        QCOMPARE(outD[0], 0.1f);
        QVERIFY(std::isinf(outD[1]) && outD[1] < 0);
        QCOMPARE(outD[2], static_cast<float>(1.0 / 3.0));

        // Zero elements: nothing written.
        float sentinel = 42.0f;
        convertToFloat(DType::F16, f16, 0, &sentinel);
        QCOMPARE(sentinel, 42.0f);
    }

    void convertArraysFromFloat_data()
    {
        QTest::addColumn<int>("dtype");
        QTest::newRow("F32") << static_cast<int>(DType::F32);
        QTest::newRow("F16") << static_cast<int>(DType::F16);
        QTest::newRow("BF16") << static_cast<int>(DType::BF16);
    }
    void convertArraysFromFloat()
    {
        QFETCH(int, dtype);
        const auto type = static_cast<DType>(dtype);
        std::mt19937 rng(99u);
        std::normal_distribution<float> dist(0.0f, 3.0f);
        std::vector<float> src(1001);
        for (auto& v : src) v = dist(rng);
        src[0] = 0.0f;
        src[1] = -0.0f;
        src[2] = 1e6f; // overflows F16

        std::vector<std::uint8_t> bytes(src.size() * dtypeSize(type) + 4, 0xAB); // 4 guard bytes
        convertFromFloat(src.data(), src.size(), type, bytes.data());
        for (std::size_t i = src.size() * dtypeSize(type); i < bytes.size(); ++i) QCOMPARE(bytes[i], std::uint8_t(0xAB));

        for (std::size_t i = 0; i < src.size(); ++i) {
            const std::uint8_t* p = bytes.data() + i * dtypeSize(type);
            if (type == DType::F32) {
                const std::uint32_t got = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
                QCOMPARE(got, bitsOf(src[i]));
            } else {
                const std::uint16_t got = static_cast<std::uint16_t>(p[0] | (p[1] << 8)); // little-endian
                const std::uint16_t want = type == DType::F16 ? refRound(halfTable(), src[i]) : refRound(bf16Table(), src[i]);
                if (got != want)
                    QFAIL(qPrintable(QString("element %1 (%2): got 0x%3 want 0x%4").arg(i).arg(src[i]).arg(got, 4, 16, QChar('0')).arg(want, 4, 16, QChar('0'))));
            }
        }

        // And back: within half an ulp of the stored format (relative 2^-11 for F16, 2^-8 for BF16).
        std::vector<float> back(src.size());
        convertToFloat(type, bytes.data(), src.size(), back.data());
        const double rel = type == DType::F32 ? 0.0 : type == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
        for (std::size_t i = 0; i < src.size(); ++i) {
            if (type == DType::F16 && std::fabs(src[i]) >= 65520.0f) {
                QVERIFY(std::isinf(back[i]));
                continue;
            }
            if (type == DType::F16 && std::fabs(src[i]) < std::ldexp(1.0f, -14)) {
                QVERIFY(std::fabs(back[i] - src[i]) <= std::ldexp(1.0, -25));
                continue;
            }
            QVERIFY2(std::fabs(static_cast<double>(back[i]) - src[i]) <= rel * std::fabs(src[i]),
                     qPrintable(QString("element %1: %2 -> %3").arg(i).arg(src[i], 0, 'g', 9).arg(back[i], 0, 'g', 9)));
        }
    }

    // ------------------------------------------------------------------ names and sizes
    void dtypeNamesRoundTrip_data()
    {
        QTest::addColumn<QString>("name");
        QTest::addColumn<int>("size");
        QTest::addColumn<bool>("isFloat");
        // Spellings and sizes as the safetensors format defines them.
        QTest::newRow("F64") << "F64" << 8 << true;
        QTest::newRow("F32") << "F32" << 4 << true;
        QTest::newRow("F16") << "F16" << 2 << true;
        QTest::newRow("BF16") << "BF16" << 2 << true;
        QTest::newRow("I64") << "I64" << 8 << false;
        QTest::newRow("I32") << "I32" << 4 << false;
        QTest::newRow("I16") << "I16" << 2 << false;
        QTest::newRow("I8") << "I8" << 1 << false;
        QTest::newRow("U8") << "U8" << 1 << false;
        QTest::newRow("BOOL") << "BOOL" << 1 << false;
    }
    void dtypeNamesRoundTrip()
    {
        QFETCH(QString, name);
        QFETCH(int, size);
        QFETCH(bool, isFloat);
        const auto t = parseDType(name.toStdString());
        QVERIFY(t.has_value());
        QCOMPARE(QString(dtypeName(*t)), name);
        QCOMPARE(static_cast<int>(dtypeSize(*t)), size);
        QCOMPARE(isFloatType(*t), isFloat);
    }

    void parseDTypeRejects_data()
    {
        QTest::addColumn<QString>("name");
        QTest::newRow("empty") << "";
        QTest::newRow("lower f32") << "f32"; // case-sensitive
        QTest::newRow("lower bf16") << "bf16";
        QTest::newRow("Bool") << "Bool";
        QTest::newRow("F8_E4M3") << "F8_E4M3";
        QTest::newRow("U16") << "U16";
        QTest::newRow("trailing space") << "F32 ";
        QTest::newRow("prefix") << "F3";
        QTest::newRow("longer") << "F322";
    }
    void parseDTypeRejects()
    {
        QFETCH(QString, name);
        QVERIFY(!parseDType(name.toStdString()).has_value());
    }

    void parseDTypeNotNulTerminated()
    {
        // A string_view into a longer buffer: only the viewed characters count.
        const std::string buffer = "F16F32";
        QVERIFY(parseDType(std::string_view(buffer).substr(0, 3)) == DType::F16);
        QVERIFY(parseDType(std::string_view(buffer).substr(3, 3)) == DType::F32);
        QVERIFY(!parseDType(std::string_view(buffer).substr(0, 2)).has_value());
    }

    void parseFloatDTypeOption_data()
    {
        QTest::addColumn<QString>("text");
        QTest::addColumn<int>("expected"); // -1: rejected
        QTest::newRow("f32") << "f32" << static_cast<int>(DType::F32);
        QTest::newRow("F32") << "F32" << static_cast<int>(DType::F32);
        QTest::newRow("fp32") << "fp32" << static_cast<int>(DType::F32);
        QTest::newRow("Float32") << "Float32" << static_cast<int>(DType::F32);
        QTest::newRow("f16") << "f16" << static_cast<int>(DType::F16);
        QTest::newRow("FP16") << "FP16" << static_cast<int>(DType::F16);
        QTest::newRow("float16") << "float16" << static_cast<int>(DType::F16);
        QTest::newRow("bf16") << "bf16" << static_cast<int>(DType::BF16);
        QTest::newRow("BF16") << "BF16" << static_cast<int>(DType::BF16);
        QTest::newRow("bfloat16") << "bfloat16" << static_cast<int>(DType::BF16);
        QTest::newRow("f8") << "f8" << -1;
        QTest::newRow("int8") << "int8" << -1;
        QTest::newRow("i32") << "i32" << -1;
        QTest::newRow("empty") << "" << -1;
        QTest::newRow("f 32") << "f 32" << -1;
        QTest::newRow("f32x") << "f32x" << -1;
        QTest::newRow("bf") << "bf" << -1;
    }
    void parseFloatDTypeOption()
    {
        QFETCH(QString, text);
        QFETCH(int, expected);
        const auto t = pocket::parseFloatDTypeOption(text.toStdString());
        if (expected < 0) {
            QVERIFY2(!t.has_value(), qPrintable("accepted '" + text + "'"));
        } else {
            QVERIFY2(t.has_value(), qPrintable("rejected '" + text + "'"));
            QCOMPARE(static_cast<int>(*t), expected);
        }
    }

    void elementCountAndShapeString_data()
    {
        QTest::addColumn<QList<qint64>>("shape");
        QTest::addColumn<qint64>("count");
        QTest::addColumn<QString>("text");
        QTest::newRow("scalar") << QList<qint64>{} << qint64(1) << "[]";
        QTest::newRow("vector") << QList<qint64>{7} << qint64(7) << "[7]";
        QTest::newRow("matrix") << QList<qint64>{4, 64} << qint64(256) << "[4, 64]";
        QTest::newRow("zero dim") << QList<qint64>{3, 0, 5} << qint64(0) << "[3, 0, 5]";
        QTest::newRow("llama embedding") << QList<qint64>{32000, 4096} << qint64(131072000) << "[32000, 4096]";
        QTest::newRow("past 32 bits") << QList<qint64>{1 << 20, 1 << 20, 3} << (qint64(3) << 40) << "[1048576, 1048576, 3]";
    }
    void elementCountAndShapeString()
    {
        QFETCH(QList<qint64>, shape);
        QFETCH(qint64, count);
        QFETCH(QString, text);
        const std::vector<std::int64_t> s(shape.begin(), shape.end());
        QCOMPARE(static_cast<qint64>(elementCount(s)), count);
        QCOMPARE(QString::fromStdString(shapeString(s)), text);
    }
};

QTEST_APPLESS_MAIN(TestDType)
#include "test_dtype.moc"
