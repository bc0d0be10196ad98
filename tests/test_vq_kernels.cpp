// VQ kernels: nearest-codeword search checked against a slow double-precision reference under the
// documented guarantee (on every instruction-set path this machine has), thread-count invariance,
// and the bit packing of index streams.
#include "pocket/methods/vq_kernels.h"
#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>

using namespace pocket;

namespace {

struct Data {
    std::vector<float> vectors;
    std::vector<float> codewords;
};

// Uniform coordinates in offset +- spread. About a tenth of the codewords repeat an earlier one
// (exact ties) and about a tenth of the vectors are copies of a codeword (distance 0, often tied).
Data makeData(std::uint32_t seed, std::int64_t count, std::int64_t k, int dim, float offset, float spread)
{
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> coord(offset - spread, offset + spread);
    std::uniform_int_distribution<std::int64_t> pick(0, k - 1);
    Data data;
    data.codewords.resize(static_cast<std::size_t>(k * dim));
    for (std::int64_t j = 0; j < k; ++j)
        for (int i = 0; i < dim; ++i)
            data.codewords[j * dim + i] = coord(rng);
    for (std::int64_t j = 1; j < k; ++j)
        if (rng() % 10 == 0) {
            const std::int64_t from = static_cast<std::int64_t>(rng() % static_cast<std::uint32_t>(j));
            std::memcpy(&data.codewords[j * dim], &data.codewords[from * dim], sizeof(float) * dim);
        }
    data.vectors.resize(static_cast<std::size_t>(count * dim));
    for (std::int64_t v = 0; v < count; ++v) {
        if (rng() % 10 == 0)
            std::memcpy(&data.vectors[v * dim], &data.codewords[pick(rng) * dim], sizeof(float) * dim);
        else
            for (int i = 0; i < dim; ++i)
                data.vectors[v * dim + i] = coord(rng);
    }
    return data;
}

double distance(const float* a, const float* b, int dim)
{
    double sum = 0;
    for (int i = 0; i < dim; ++i) {
        const double diff = static_cast<double>(a[i]) - static_cast<double>(b[i]);
        sum += diff * diff;
    }
    return sum;
}

// The true nearest codeword of every vector by plain double loops (lowest index on ties), the
// lowest index of each codeword's identical copies, and the mean codeword as the search rounds it.
struct Reference {
    std::vector<std::int64_t> nearest;
    std::vector<double> nearestDistance;
    std::vector<std::int64_t> firstCopy;
    std::vector<float> mean;
};

Reference reference(const Data& data, std::int64_t count, std::int64_t k, int dim)
{
    Reference ref;
    std::vector<double> sum(static_cast<std::size_t>(dim), 0.0);
    for (std::int64_t j = 0; j < k; ++j)
        for (int i = 0; i < dim; ++i)
            sum[i] += data.codewords[j * dim + i];
    for (int i = 0; i < dim; ++i)
        ref.mean.push_back(static_cast<float>(sum[i] / static_cast<double>(k)));
    for (std::int64_t v = 0; v < count; ++v) {
        const float* z = &data.vectors[v * dim];
        std::int64_t best = 0;
        double bestDistance = std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < k; ++j) {
            const double d = distance(z, &data.codewords[j * dim], dim);
            if (d < bestDistance) {
                bestDistance = d;
                best = j;
            }
        }
        ref.nearest.push_back(best);
        ref.nearestDistance.push_back(bestDistance);
    }
    std::unordered_map<std::string, std::int64_t> firstByBytes;
    for (std::int64_t j = 0; j < k; ++j) {
        const std::string bytes(reinterpret_cast<const char*>(&data.codewords[j * dim]), sizeof(float) * dim);
        ref.firstCopy.push_back(firstByBytes.emplace(bytes, j).first->second);
    }
    return ref;
}

// Checks every result under the guarantee documented in vq_kernels.h.
void checkAgainstReference(const Data& data, const Reference& ref, std::int64_t count, std::int64_t k, int dim,
                           const std::vector<std::int32_t>& indices, const std::vector<float>& distances)
{
    const auto fromMean = [&](const float* x) { return distance(x, ref.mean.data(), dim); };
    const double unit = (dim + 8) * std::ldexp(1.0, -22);
    for (std::int64_t v = 0; v < count; ++v) {
        const float* z = &data.vectors[v * dim];
        const std::int32_t chosen = indices[v];
        QVERIFY2(chosen >= 0 && chosen < k, qPrintable(QString("vector %1: index %2 out of range").arg(v).arg(chosen)));
        const float* c = &data.codewords[chosen * dim];
        const double chosenDistance = distance(z, c, dim);
        const std::int64_t best = ref.nearest[v];
        const double bestDistance = ref.nearestDistance[v];
        const double tolerance = unit * (fromMean(z) + fromMean(c) + fromMean(&data.codewords[best * dim]));
        QVERIFY2(chosenDistance <= bestDistance + tolerance,
                 qPrintable(QString("vector %1: chose %2 at %3, nearest is %4 at %5 (tolerance %6)")
                                .arg(v)
                                .arg(chosen)
                                .arg(chosenDistance, 0, 'g', 17)
                                .arg(best)
                                .arg(bestDistance, 0, 'g', 17)
                                .arg(tolerance)));
        // Identical codewords resolve to the lowest index.
        QVERIFY2(ref.firstCopy[chosen] == chosen,
                 qPrintable(QString("vector %1: chose %2, identical to lower index %3").arg(v).arg(chosen).arg(ref.firstCopy[chosen])));
        // The returned distance is the double sum rounded to float.
        QVERIFY2(std::abs(static_cast<double>(distances[v]) - chosenDistance) <= std::ldexp(chosenDistance, -23),
                 qPrintable(QString("vector %1: distance %2, expected %3").arg(v).arg(distances[v]).arg(chosenDistance, 0, 'g', 17)));
    }
}

// Instruction-set caps to run each search under; the kernel falls back to what the CPU has.
const char* const kIsas[] = {"generic", "avx2", "avx512"};

struct IsaCap {
    explicit IsaCap(const char* isa) { qputenv("POCKET_VQ_ISA", isa); }
    ~IsaCap() { qunsetenv("POCKET_VQ_ISA"); }
};

struct Search {
    std::vector<std::int32_t> indices;
    std::vector<float> distances;
};

Search search(const Data& data, std::int64_t count, std::int64_t k, int dim, int threads)
{
    Search s;
    s.indices.assign(static_cast<std::size_t>(count), -1);
    s.distances.assign(static_cast<std::size_t>(count), -1.0f);
    nearestCodewords(data.vectors.data(), count, data.codewords.data(), k, dim, s.indices.data(), s.distances.data(), threads);
    return s;
}

std::vector<std::int32_t> randomValues(std::mt19937& rng, std::int64_t count, int bits)
{
    const std::uint32_t max = bits == 32 ? 0xffffffffu : (1u << bits) - 1;
    std::uniform_int_distribution<std::uint32_t> value(0, max);
    std::vector<std::int32_t> values(static_cast<std::size_t>(count));
    for (auto& v : values)
        v = static_cast<std::int32_t>(value(rng));
    // The extremes, where there is room for them.
    if (count > 0)
        values[0] = static_cast<std::int32_t>(max);
    if (count > 1)
        values[static_cast<std::size_t>(count - 1)] = static_cast<std::int32_t>(max);
    if (count > 2)
        values[1] = 0;
    return values;
}

} // namespace

class TestVqKernels : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void nearestMatchesReference_data()
    {
        QTest::addColumn<int>("dim");
        QTest::addColumn<qint64>("k");
        QTest::addColumn<qint64>("count");
        QTest::addColumn<float>("offset");
        QTest::addColumn<float>("spread");
        for (int dim : {1, 2, 3, 4, 8, 16, 64})
            for (qint64 k : {1, 2, 7, 256, 4096, 40000}) {
                // Enough vectors to cover several tiles and chunks where the reference is cheap,
                // never a multiple of a tile (4, 6 or 12) or of a chunk.
                const qint64 count = std::clamp<qint64>(10000000 / (k * dim), 37, 1001) | 1;
                QTest::addRow("d%d K%lld centred", dim, k) << dim << k << count << 0.0f << 1.0f;
                if (k >= 256 && (dim == 2 || dim == 4 || dim == 16))
                    // Far from the origin and tightly spread: the case the centring is for.
                    QTest::addRow("d%d K%lld offset", dim, k) << dim << k << count << 30.0f << 0.01f;
            }
    }

    void nearestMatchesReference()
    {
        QFETCH(int, dim);
        QFETCH(qint64, k);
        QFETCH(qint64, count);
        QFETCH(float, offset);
        QFETCH(float, spread);
        const Data data = makeData(static_cast<std::uint32_t>(1000 * dim + k), count, k, dim, offset, spread);
        const Reference ref = reference(data, count, k, dim);
        for (const char* isa : kIsas) {
            IsaCap cap(isa);
            const Search s = search(data, count, k, dim, 2);
            checkAgainstReference(data, ref, count, k, dim, s.indices, s.distances);
            if (QTest::currentTestFailed())
                QFAIL(qPrintable(QString("under POCKET_VQ_ISA=%1").arg(isa)));
        }
    }

    void identicalCodewordsPickTheFirst()
    {
        // 40 copies of one codeword, then one far away: the copies tie exactly, across padding.
        const int dim = 3;
        std::vector<float> codewords;
        for (int j = 0; j < 40; ++j)
            codewords.insert(codewords.end(), {0.5f, -0.25f, 2.0f});
        codewords.insert(codewords.end(), {100.0f, 100.0f, 100.0f});
        const std::vector<float> vectors = {0.5f, -0.25f, 2.0f, 0.0f, 0.0f, 0.0f, 90.0f, 95.0f, 99.0f};
        for (const char* isa : kIsas) {
            IsaCap cap(isa);
            std::vector<std::int32_t> indices(3, -1);
            std::vector<float> distances(3, -1.0f);
            nearestCodewords(vectors.data(), 3, codewords.data(), 41, dim, indices.data(), distances.data(), 1);
            QCOMPARE(indices, (std::vector<std::int32_t>{0, 0, 40}));
            QCOMPARE(distances[0], 0.0f);
            QCOMPARE(distances[1], 0.25f + 0.0625f + 4.0f);
            QCOMPARE(distances[2], 100.0f + 25.0f + 1.0f);
        }
    }

    void threadCountInvariance_data()
    {
        QTest::addColumn<int>("dim");
        QTest::addColumn<qint64>("k");
        QTest::addColumn<qint64>("count");
        QTest::newRow("d4 K4096") << 4 << qint64(4096) << qint64(5003);
        QTest::newRow("d2 K40000") << 2 << qint64(40000) << qint64(1999);
        QTest::newRow("d64 K256") << 64 << qint64(256) << qint64(3001);
        QTest::newRow("d7 K1000") << 7 << qint64(1000) << qint64(2503);
    }

    void threadCountInvariance()
    {
        QFETCH(int, dim);
        QFETCH(qint64, k);
        QFETCH(qint64, count);
        const Data data = makeData(static_cast<std::uint32_t>(7 * dim + k), count, k, dim, 0.0f, 1.0f);
        for (const char* isa : kIsas) {
            IsaCap cap(isa);
            const Search one = search(data, count, k, dim, 1);
            for (int threads : {2, 3, 0}) {
                const Search many = search(data, count, k, dim, threads);
                QVERIFY2(many.indices == one.indices, qPrintable(QString("%1 threads, %2").arg(threads).arg(isa)));
                QVERIFY2(std::memcmp(many.distances.data(), one.distances.data(), sizeof(float) * count) == 0,
                         qPrintable(QString("%1 threads, %2").arg(threads).arg(isa)));
            }
        }
    }

    void nearestWithoutDistances()
    {
        const Data data = makeData(5, 100, 300, 4, 0.0f, 1.0f);
        const Search with = search(data, 100, 300, 4, 1);
        std::vector<std::int32_t> indices(100, -1);
        nearestCodewords(data.vectors.data(), 100, data.codewords.data(), 300, 4, indices.data());
        QCOMPARE(indices, with.indices);
        nearestCodewords(nullptr, 0, data.codewords.data(), 300, 4, nullptr); // nothing to do
    }

    void nearestRejectsBadArguments()
    {
        const float x[4] = {};
        std::int32_t index = 0;
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, nearestCodewords(x, 1, x, 0, 4, &index));
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, nearestCodewords(x, 1, x, 1, 0, &index));
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, nearestCodewords(x, -1, x, 1, 4, &index));
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, nearestCodewords(x, 1, x, 1, 4, nullptr));
    }

    void indexBitsValues_data()
    {
        QTest::addColumn<qint64>("k");
        QTest::addColumn<int>("bits");
        QTest::newRow("1") << qint64(1) << 1;
        QTest::newRow("2") << qint64(2) << 1;
        QTest::newRow("3") << qint64(3) << 2;
        QTest::newRow("4") << qint64(4) << 2;
        QTest::newRow("5") << qint64(5) << 3;
        QTest::newRow("256") << qint64(256) << 8;
        QTest::newRow("257") << qint64(257) << 9;
        QTest::newRow("32768") << qint64(32768) << 15;
        QTest::newRow("65536") << qint64(65536) << 16;
        QTest::newRow("65537") << qint64(65537) << 17;
        QTest::newRow("2^32") << (qint64(1) << 32) << 32;
        QTest::newRow("2^32+1") << (qint64(1) << 32) + 1 << 33;
    }

    void indexBitsValues()
    {
        QFETCH(qint64, k);
        QFETCH(int, bits);
        QCOMPARE(indexBits(k), bits);
    }

    void packRoundTrip_data()
    {
        QTest::addColumn<int>("bits");
        for (int bits = 1; bits <= 32; ++bits)
            QTest::addRow("%d bits", bits) << bits;
    }

    void packRoundTrip()
    {
        QFETCH(int, bits);
        std::mt19937 rng(static_cast<std::uint32_t>(bits));
        for (std::int64_t count : {0, 1, 2, 3, 7, 8, 9, 31, 33, 64, 1001, 4099}) {
            const std::vector<std::int32_t> values = randomValues(rng, count, bits);
            const std::vector<std::uint8_t> bytes = packBits(values.data(), count, bits);
            QCOMPARE(bytes.size(), static_cast<std::size_t>((count * bits + 7) / 8));
            // Exactly the packed size is enough: nothing read past it.
            std::vector<std::uint8_t> exact(bytes);
            std::vector<std::int32_t> back(static_cast<std::size_t>(count), -7);
            QVERIFY(unpackBits(exact.data(), exact.size(), count, bits, back.data()));
            QCOMPARE(back, values);
            // Bit i of the stream is bit (i % bits) of value i / bits.
            for (std::int64_t bit = 0; bit < count * bits; bit += 1 + bit / 7) {
                const int inStream = (bytes[bit / 8] >> (bit % 8)) & 1;
                const int inValue = (static_cast<std::uint32_t>(values[bit / bits]) >> (bit % bits)) & 1;
                QCOMPARE(inStream, inValue);
            }
            if (!bytes.empty())
                QVERIFY(!unpackBits(bytes.data(), bytes.size() - 1, count, bits, back.data()));
        }
    }

    void packKnownBytes()
    {
        const std::int32_t three[] = {1, 2, 3};
        QCOMPARE(packBits(three, 3, 2), (std::vector<std::uint8_t>{0b00111001}));
        const std::int32_t two[] = {5, 1};
        QCOMPARE(packBits(two, 2, 3), (std::vector<std::uint8_t>{0b00001101}));
        const std::int32_t nine[] = {0x1ff, 0x001};
        QCOMPARE(packBits(nine, 2, 9), (std::vector<std::uint8_t>{0xff, 0x03, 0x00}));
        const std::int32_t word[] = {0x12345678, -1};
        QCOMPARE(packBits(word, 2, 32), (std::vector<std::uint8_t>{0x78, 0x56, 0x34, 0x12, 0xff, 0xff, 0xff, 0xff}));
        std::int32_t back[3] = {};
        const std::uint8_t byte[] = {0b00111001};
        QVERIFY(unpackBits(byte, 1, 3, 2, back));
        QCOMPARE(back[0], 1);
        QCOMPARE(back[1], 2);
        QCOMPARE(back[2], 3);
        QVERIFY(packBits(three, 0, 2).empty());
        QVERIFY(unpackBits(nullptr, 0, 0, 2, nullptr));
    }

    void packRejectsBadArguments()
    {
        const std::int32_t values[] = {4, -1};
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, packBits(values, 1, 0));
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, packBits(values, 1, 33));
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, packBits(values, 1, 2)); // 4 needs 3 bits
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, packBits(values + 1, 1, 31));
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, packBits(values, -1, 8));
        std::int32_t back = 0;
        const std::uint8_t bytes[8] = {};
        QVERIFY(!unpackBits(bytes, 8, 1, 0, &back));
        QVERIFY(!unpackBits(bytes, 8, 1, 33, &back));
        QVERIFY(!unpackBits(bytes, 8, -1, 8, &back));
        QVERIFY(!unpackBits(bytes, 0, 1, 1, &back));
    }
};

QTEST_APPLESS_MAIN(TestVqKernels)
#include "test_vq_kernels.moc"
