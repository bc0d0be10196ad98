// The RTN and k-means VQ baseline plugins, loaded from the plugin folder: RTN against a slow
// reference quantiser, VQ's k-means against its defining properties (every code is the nearest
// codeword, every used codeword is the mean of its members, Lloyd never gets worse), bits against
// section sizes, reproducibility, and damaged payloads.
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/methods/method_registry.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/rans.h"
#include "pocket/methods/vq_kernels.h"
#include "plugin_test_support.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace pocket;

namespace {

using testsupport::pluginMethod;

pocket::CompressionMethod& method(const std::string& id) { return pluginMethod(id); }

ParamSet paramsOf(const std::string& id, const std::vector<std::string>& settings) { return testsupport::pluginParams(id, settings); }

WeightMatrix randomMatrix(const std::string& name, std::int64_t rows, std::int64_t cols, unsigned seed)
{
    return testsupport::randomWeights(name, MatrixType::Q, 0, rows, cols, seed);
}


GroupPayload compressOrDie(const std::string& id, const MatrixGroup& group, const ParamSet& params, const CompressContext& context = {})
{
    auto p = method(id).compress(group, params, context);
    if (!p)
        qFatal("%s", p.message().c_str());
    return std::move(*p);
}

std::vector<float> decodeOne(const std::string& id, const GroupPayload& p, std::size_t index = 0)
{
    auto d = method(id).decode(p);
    if (!d)
        qFatal("%s", d.message().c_str());
    return (*d)[index];
}

// Slow reference RTN: asymmetric min/max per group of `group` columns, fp16 scale and minimum.
std::vector<float> referenceRtn(const WeightMatrix& m, int bits, std::int64_t group, std::vector<float>* steps = nullptr)
{
    const std::int64_t g = group <= 0 ? m.ref.cols : std::min(group, m.ref.cols);
    const int top = (1 << bits) - 1;
    std::vector<float> out(m.values.size());
    if (steps)
        steps->assign(m.values.size(), 0);
    for (std::int64_t r = 0; r < m.ref.rows; ++r)
        for (std::int64_t c0 = 0; c0 < m.ref.cols; c0 += g) {
            const std::int64_t c1 = std::min(m.ref.cols, c0 + g);
            float lo = m.values[r * m.ref.cols + c0], hi = lo;
            for (std::int64_t c = c0; c < c1; ++c) {
                lo = std::min(lo, m.values[r * m.ref.cols + c]);
                hi = std::max(hi, m.values[r * m.ref.cols + c]);
            }
            const float mn = halfToFloat(floatToHalf(lo));
            const float scale = halfToFloat(floatToHalf((hi - mn) / top));
            for (std::int64_t c = c0; c < c1; ++c) {
                const double q = std::clamp(std::round((m.values[r * m.ref.cols + c] - mn) / static_cast<double>(scale)), 0.0,
                                            static_cast<double>(top));
                out[r * m.ref.cols + c] = halfToFloat(floatToHalf(static_cast<float>(q) * scale + mn));
                if (steps)
                    (*steps)[r * m.ref.cols + c] = scale;
            }
        }
    return out;
}

MatrixGroup groupOf(std::vector<WeightMatrix> matrices)
{
    MatrixGroup g;
    g.id = "g";
    g.matrices = std::move(matrices);
    return g;
}

std::size_t sectionBytes(const GroupPayload& p)
{
    std::size_t n = 0;
    for (const auto& s : p.sections)
        n += s.bytes.size();
    return n;
}

// Empirical entropy (bits per code) of a payload's code stream.
double codeEntropy(const GroupPayload& p)
{
    const PayloadSection& s = p.sections.front();
    std::vector<std::uint16_t> symbols(s.symbols);
    rans::unpack(s.bytes.data(), s.bytes.size(), s.symbols, s.symbolBits, symbols.data());
    return rans::entropyBits(rans::histogram(symbols.data(), symbols.size(), s.symbolBits)) / static_cast<double>(s.symbols);
}

} // namespace

class TestBaselines : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void rtnMatchesTheSlowReference_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("group");
        QTest::addColumn<int>("cols");
        for (int bits : {2, 3, 4, 8})
            for (int group : {0, 32, 64})
                QTest::newRow(qPrintable(QString("%1 bits g%2").arg(bits).arg(group))) << bits << group << 172;
        QTest::newRow("group wider than the row") << 4 << 256 << 100;
    }
    void rtnMatchesTheSlowReference()
    {
        QFETCH(int, bits);
        QFETCH(int, group);
        QFETCH(int, cols);
        const WeightMatrix m = randomMatrix("w", 16, cols, static_cast<unsigned>(bits * 100 + group));
        const GroupPayload p = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=" + std::to_string(bits), "group=" + std::to_string(group)}));
        const std::vector<float> got = decodeOne("rtn", p);
        std::vector<float> steps;
        const std::vector<float> want = referenceRtn(m, bits, group, &steps);
        std::size_t same = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
            same += got[i] == want[i] ? 1 : 0;
            // Round to nearest: within half a step (plus fp16 rounding of the result).
            QVERIFY(std::fabs(got[i] - m.values[i]) <= 0.5f * steps[i] + 2e-3f * std::fabs(m.values[i]) + 1e-7f);
        }
        QVERIFY2(same >= got.size() * 999 / 1000, qPrintable(QString("%1 of %2 identical").arg(same).arg(got.size())));
        // Bits: codes plus 32 per group, and the sections hold exactly that (codes rounded up to bytes).
        const std::int64_t g = group <= 0 || group > cols ? cols : group;
        const std::uint64_t groups = 16 * static_cast<std::uint64_t>((cols + g - 1) / g);
        QCOMPARE(p.matrices[0].bits.indexBits, static_cast<std::uint64_t>(16 * cols * bits));
        QCOMPARE(p.matrices[0].bits.scaleBits, 32 * groups);
        QCOMPARE(sectionBytes(p), (p.matrices[0].bits.indexBits + 7) / 8 + 4 * groups);
    }

    // zero=sym: the zero point is 2^(bits-1) in every group, a zero weight decodes to exactly 0,
    // errors stay within half a step of max|w| / (2^(bits-1) - 1), and the payload is zero=int's.
    void rtnSymmetricZeroPoint()
    {
        WeightMatrix m = randomMatrix("w", 8, 96, 3);
        for (std::size_t i = 0; i < m.values.size(); i += 7)
            m.values[i] = 0.0f;
        for (int bits : {3, 4, 8}) {
            const GroupPayload p = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=" + std::to_string(bits), "group=32", "zero=sym"}));
            QVERIFY(p.metaJson.find("\"zero\":\"int\"") != std::string::npos);
            const std::vector<float> got = decodeOne("rtn", p);
            for (std::int64_t r = 0; r < 8; ++r)
                for (std::int64_t c0 = 0; c0 < 96; c0 += 32) {
                    float mx = 0;
                    for (std::int64_t c = c0; c < c0 + 32; ++c)
                        mx = std::max(mx, std::fabs(m.values[r * 96 + c]));
                    const float step = mx / static_cast<float>((1 << (bits - 1)) - 1);
                    for (std::int64_t c = c0; c < c0 + 32; ++c) {
                        const std::size_t i = static_cast<std::size_t>(r * 96 + c);
                        if (m.values[i] == 0.0f)
                            QCOMPARE(got[i], 0.0f);
                        QVERIFY(std::fabs(got[i] - m.values[i]) <= 0.51f * step + 2e-3f * mx);
                    }
                }
            std::vector<std::int32_t> codes(m.values.size());
            QVERIFY(unpackBits(p.sections[0].bytes.data(), p.sections[0].bytes.size(), static_cast<std::int64_t>(codes.size()), bits, codes.data()));
            for (std::size_t i = 0; i < codes.size(); i += 7)
                QCOMPARE(codes[i], 1 << (bits - 1));
        }
    }

    // prune: exactly floor(fraction * cols) weights of each row decode to zero (zero=sym), the
    // smallest |w|, or with prune_by=input the smallest |w| * sqrt(H_jj).
    void rtnPrunesTheLeastImportantWeights()
    {
        WeightMatrix m = randomMatrix("w", 6, 40, 4);
        const GroupPayload p = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=8", "group=0", "zero=sym", "prune=0.25"}));
        const std::vector<float> got = decodeOne("rtn", p);
        for (std::int64_t r = 0; r < 6; ++r) {
            std::vector<float> mags;
            for (std::int64_t c = 0; c < 40; ++c)
                mags.push_back(std::fabs(m.values[r * 40 + c]));
            std::vector<float> sorted = mags;
            std::sort(sorted.begin(), sorted.end());
            int zeros = 0;
            for (std::int64_t c = 0; c < 40; ++c)
                if (got[r * 40 + c] == 0.0f) {
                    ++zeros;
                    QVERIFY(mags[c] <= sorted[9]);
                }
            QCOMPARE(zeros, 10);
        }
        // Column 3 feeds a huge input: never pruned by input norm, pruned by magnitude when small.
        {
            std::vector<float> row0;
            for (int c = 0; c < 40; ++c)
                row0.push_back(std::fabs(m.values[c]));
            std::sort(row0.begin(), row0.end());
            m.values[3] = 0.5f * row0[9]; // among the 10 smallest, yet several 8-bit steps from zero
        }
        m.hessian.assign(40 * 40, 0.0f);
        for (int j = 0; j < 40; ++j)
            m.hessian[j * 40 + j] = j == 3 ? 1e8f : 1.0f;
        const GroupPayload byInput = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=8", "group=0", "zero=sym", "prune=0.25", "prune_by=input"}));
        const GroupPayload byMagnitude = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=8", "group=0", "zero=sym", "prune=0.25"}));
        QVERIFY(decodeOne("rtn", byInput)[3] != 0.0f);
        QCOMPARE(decodeOne("rtn", byMagnitude)[3], 0.0f);
        QVERIFY(method("rtn").needsCalibration(paramsOf("rtn", {"prune=0.25", "prune_by=input"})));
        QVERIFY(!method("rtn").needsCalibration(paramsOf("rtn", {"prune=0.25"})));
        m.hessian.clear();
        QVERIFY(!method("rtn").compress(groupOf({m}), paramsOf("rtn", {"prune=0.25", "prune_by=input"}), {}).ok());
    }

    // rate: rate=0 is round to nearest; a larger rate lowers the codes' entropy and raises the error,
    // for rtn and for gptq (whose error feedback keeps its error below rtn's at the same rate).
    void rateTradesErrorForEntropy()
    {
        WeightMatrix m = randomMatrix("w", 64, 128, 5);
        m.hessian.assign(128 * 128, 0.0f);
        for (int j = 0; j < 128; ++j)
            m.hessian[j * 128 + j] = 1.0f;
        const GroupPayload plain = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=4", "group=32"}));
        const GroupPayload zeroRate = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=4", "group=32", "rate=0"}));
        QCOMPARE(zeroRate.sections[0].bytes, plain.sections[0].bytes);
        for (const char* id : {"rtn", "gptq"}) {
            double entropy = codeEntropy(plain), mse = 0;
            for (const char* rate : {"0.1", "0.5", "2"}) {
                const GroupPayload p = compressOrDie(id, groupOf({m}), paramsOf(id, {"bits=4", "group=32", std::string("rate=") + rate}));
                const double e = codeEntropy(p);
                qInfo("%s rate %s: entropy %.3f bits, mse %.3g", id, rate, e, p.matrices[0].mse);
                QVERIFY2(e < entropy, qPrintable(QString("%1 rate %2").arg(id, rate)));
                QVERIFY2(p.matrices[0].mse > mse, qPrintable(QString("%1 rate %2").arg(id, rate)));
                entropy = e;
                mse = p.matrices[0].mse;
            }
        }
    }

    void rtnErrorShrinksWithBits()
    {
        const WeightMatrix m = randomMatrix("w", 32, 64, 1);
        double previous = 1e9;
        for (int bits = 2; bits <= 8; ++bits) {
            const GroupPayload p = compressOrDie("rtn", groupOf({m}), paramsOf("rtn", {"bits=" + std::to_string(bits), "group=32"}));
            QVERIFY2(p.matrices[0].mse < previous / 2.5, qPrintable(QString("%1 bits: %2").arg(bits).arg(p.matrices[0].mse)));
            previous = p.matrices[0].mse;
        }
    }

    void vqCodesAreNearestAndCodewordsAreMeans()
    {
        const WeightMatrix a = randomMatrix("a", 24, 32, 2), b = randomMatrix("b", 16, 30, 3); // 30: padded block
        const GroupPayload p = compressOrDie("vq", groupOf({a, b}), paramsOf("vq", {"K=32", "d=4", "iters=200"}));
        const auto meta = nlohmann::json::parse(p.metaJson);
        QCOMPARE(meta["K"].get<int>(), 32);
        std::vector<float> codebook(32 * 4);
        convertToFloat(DType::F16, p.section("codebook")->bytes.data(), codebook.size(), codebook.data());
        std::map<int, std::vector<double>> sums;
        std::map<int, int> members;
        for (const WeightMatrix* m : {&a, &b}) {
            const std::int64_t count = (m->ref.cols + 3) / 4 * m->ref.rows;
            std::vector<float> sub(static_cast<std::size_t>(count * 4));
            toSubvectors(m->values.data(), m->ref.rows, m->ref.cols, 4, sub.data());
            std::vector<std::int32_t> idx(static_cast<std::size_t>(count));
            const auto& packed = p.section("indices/" + m->ref.name)->bytes;
            QVERIFY(unpackBits(packed.data(), packed.size(), count, 5, idx.data()));
            for (std::int64_t i = 0; i < count; ++i) {
                // The stored code is a nearest fp16 codeword (brute force).
                double best = 1e30, chosen = 0;
                for (int c = 0; c < 32; ++c) {
                    double dist = 0;
                    for (int j = 0; j < 4; ++j)
                        dist += std::pow(sub[i * 4 + j] - codebook[c * 4 + j], 2);
                    best = std::min(best, dist);
                    if (c == idx[i])
                        chosen = dist;
                }
                QVERIFY(chosen <= best * (1 + 1e-5) + 1e-12);
                auto& s = sums[idx[i]];
                s.resize(4, 0.0);
                for (int j = 0; j < 4; ++j)
                    s[j] += sub[i * 4 + j];
                ++members[idx[i]];
            }
        }
        // Converged Lloyd: each used codeword is its members' mean (up to fp16 rounding).
        for (const auto& [c, s] : sums)
            for (int j = 0; j < 4; ++j) {
                const double mean = s[j] / members[c];
                QVERIFY2(std::fabs(mean - codebook[c * 4 + j]) <= 1e-3 * std::fabs(mean) + 1e-5,
                         qPrintable(QString("codeword %1: %2 vs %3").arg(c).arg(mean).arg(codebook[c * 4 + j])));
            }
        QVERIFY(members.size() > 24); // k-means++ and empty-cluster refills keep codewords in use
    }

    void vqLloydNeverGetsWorseAndReproduces()
    {
        const WeightMatrix m = randomMatrix("a", 64, 64, 4);
        std::vector<double> losses;
        CompressContext context;
        context.onProgress = [&](const TrainProgress& t) {
            losses.push_back(t.loss);
            return true;
        };
        const GroupPayload p = compressOrDie("vq", groupOf({m}), paramsOf("vq", {"K=64", "iters=30"}), context);
        QVERIFY(losses.size() >= 2);
        for (std::size_t i = 1; i < losses.size(); ++i)
            QVERIFY2(losses[i] <= losses[i - 1] * (1 + 1e-6), qPrintable(QString("iteration %1").arg(i)));
        const GroupPayload again = compressOrDie("vq", groupOf({m}), paramsOf("vq", {"K=64", "iters=30"}));
        for (std::size_t i = 0; i < p.sections.size(); ++i)
            QVERIFY(p.sections[i].bytes == again.sections[i].bytes);
        // Bits: indices at ceil(log2 K) per sub-vector, 16*K*d codebook, matching the sections.
        QCOMPARE(p.matrices[0].bits.indexBits, std::uint64_t{16 * 64 * 6});
        QCOMPARE(p.sharedBits.codebookBits, std::uint64_t{16 * 64 * 4});
        QCOMPARE(sectionBytes(p) * 8, p.matrices[0].bits.indexBits + p.sharedBits.codebookBits);
    }

    void vqIsExactWhenCodewordsSuffice()
    {
        // Only 5 distinct fp16-exact sub-vectors: K = 8 reproduces the matrix exactly.
        WeightMatrix m;
        m.ref = {"w", 0, MatrixType::Up, 20, 8};
        for (int i = 0; i < 20 * 8; ++i)
            m.values.push_back(static_cast<float>(((i / 4 + i / 8) % 5) - 2) * 0.125f);
        const GroupPayload p = compressOrDie("vq", groupOf({m}), paramsOf("vq", {"K=8", "d=4"}));
        QCOMPARE(decodeOne("vq", p), m.values);
        QCOMPARE(p.matrices[0].mse, 0.0);
    }

    // GPTVQ-style feedback: with correlated inputs, the Hessian-weighted error tr(E H E^T) drops
    // against plain nearest-codeword assignment with the same codebook; storage is unchanged.
    void vqErrorFeedbackLowersTheHessianWeightedError()
    {
        const std::int64_t rows = 16, cols = 32, n = 512;
        std::mt19937 gen(7);
        std::normal_distribution<double> normal(0, 1);
        std::vector<double> factors(4 * cols);
        for (double& f : factors)
            f = normal(gen);
        std::vector<float> h(cols * cols, 0.0f);
        std::vector<double> hd(cols * cols, 0.0);
        for (std::int64_t s = 0; s < n; ++s) {
            double z[4] = {normal(gen), normal(gen), normal(gen), normal(gen)};
            std::vector<double> x(cols);
            for (std::int64_t c = 0; c < cols; ++c)
                x[c] = 0.3 * normal(gen) + z[0] * factors[c] + z[1] * factors[cols + c] + z[2] * factors[2 * cols + c] +
                       z[3] * factors[3 * cols + c];
            for (std::int64_t a = 0; a < cols; ++a)
                for (std::int64_t b = 0; b < cols; ++b)
                    hd[a * cols + b] += 2.0 * x[a] * x[b] / n;
        }
        for (std::size_t i = 0; i < h.size(); ++i)
            h[i] = static_cast<float>(hd[i]);
        const auto proxy = [&](const WeightMatrix& m, const std::vector<float>& q) {
            double total = 0;
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t a = 0; a < cols; ++a)
                    for (std::int64_t b = 0; b < cols; ++b)
                        total += (m.values[r * cols + a] - q[r * cols + a]) * hd[a * cols + b] * (m.values[r * cols + b] - q[r * cols + b]);
            return total;
        };
        QVERIFY(method("vq").needsCalibration(paramsOf("vq", {"feedback=true"})));
        QVERIFY(!method("vq").needsCalibration(paramsOf("vq", {})));
        double plainTotal = 0, fedTotal = 0;
        for (unsigned seed = 1; seed <= 4; ++seed) {
            WeightMatrix m = randomMatrix("w", rows, cols, seed);
            m.hessian = h;
            const GroupPayload plain = compressOrDie("vq", groupOf({m}), paramsOf("vq", {"K=16"}));
            const GroupPayload fed = compressOrDie("vq", groupOf({m}), paramsOf("vq", {"K=16", "feedback=true"}));
            QVERIFY(plain.section("codebook")->bytes == fed.section("codebook")->bytes);
            plainTotal += proxy(m, decodeOne("vq", plain));
            fedTotal += proxy(m, decodeOne("vq", fed));
        }
        QVERIFY2(fedTotal < 0.8 * plainTotal, qPrintable(QString("feedback %1 vs plain %2").arg(fedTotal).arg(plainTotal)));

        WeightMatrix uncalibrated = randomMatrix("w", rows, cols, 1);
        auto refused = method("vq").compress(groupOf({uncalibrated}), paramsOf("vq", {"K=16", "feedback=true"}), {});
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("needs calibration") != std::string::npos, refused.message().c_str());
    }

    // Feedback with a shared codebook: fitted on the whole group (same codebook as without
    // feedback), each matrix's codes chosen with its own Hessian.
    void vqFeedbackWorksOnSharedGroups()
    {
        const std::int64_t rows = 16, cols = 32, n = 512;
        std::mt19937 gen(11);
        std::normal_distribution<double> normal(0, 1);
        const auto hessian = [&](unsigned) {
            std::vector<double> factors(3 * cols);
            for (double& f : factors)
                f = normal(gen);
            std::vector<double> hd(cols * cols, 0.0);
            for (std::int64_t s = 0; s < n; ++s) {
                const double z[3] = {normal(gen), normal(gen), normal(gen)};
                std::vector<double> x(cols);
                for (std::int64_t c = 0; c < cols; ++c)
                    x[c] = 0.3 * normal(gen) + z[0] * factors[c] + z[1] * factors[cols + c] + z[2] * factors[2 * cols + c];
                for (std::int64_t a = 0; a < cols; ++a)
                    for (std::int64_t b = 0; b < cols; ++b)
                        hd[a * cols + b] += 2.0 * x[a] * x[b] / n;
            }
            return hd;
        };
        const std::vector<double> h1 = hessian(1), h2 = hessian(2);
        WeightMatrix a = randomMatrix("a", rows, cols, 1), b = randomMatrix("b", rows, cols, 2);
        a.hessian.assign(h1.begin(), h1.end());
        b.hessian.assign(h2.begin(), h2.end());
        const auto proxy = [&](const WeightMatrix& m, const std::vector<float>& q, const std::vector<double>& hd) {
            double total = 0;
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t x = 0; x < cols; ++x)
                    for (std::int64_t y = 0; y < cols; ++y)
                        total += (m.values[r * cols + x] - q[r * cols + x]) * hd[x * cols + y] * (m.values[r * cols + y] - q[r * cols + y]);
            return total;
        };
        for (const char* rowScale : {"row_scale=false", "row_scale=true"}) {
            const GroupPayload plain = compressOrDie("vq", groupOf({a, b}), paramsOf("vq", {"K=16", "sharing=type", rowScale}));
            const GroupPayload fed = compressOrDie("vq", groupOf({a, b}), paramsOf("vq", {"K=16", "sharing=type", "feedback=true", rowScale}));
            QVERIFY(plain.section("codebook")->bytes == fed.section("codebook")->bytes);
            const double plainErr = proxy(a, decodeOne("vq", plain, 0), h1) + proxy(b, decodeOne("vq", plain, 1), h2);
            const double fedErr = proxy(a, decodeOne("vq", fed, 0), h1) + proxy(b, decodeOne("vq", fed, 1), h2);
            QVERIFY2(fedErr < 0.85 * plainErr, qPrintable(QString("%1: feedback %2 vs plain %3").arg(rowScale).arg(fedErr).arg(plainErr)));
        }
    }

    // Row scales: fp16 per output row, stored and counted; decoding multiplies each row back; the
    // default payload stays version 1 and unscaled.
    void vqRowScalesAreStoredAndCounted()
    {
        WeightMatrix m = randomMatrix("w", 12, 16, 3);
        for (std::int64_t c = 0; c < 16; ++c) // rows of very different magnitude
            for (std::int64_t r = 0; r < 12; ++r)
                m.values[r * 16 + c] *= static_cast<float>(1 + 3 * r);
        const ParamSet params = paramsOf("vq", {"K=16", "row_scale=true"});
        const GroupPayload p = compressOrDie("vq", groupOf({m}), params);
        QCOMPARE(p.methodVersion, 2);
        QCOMPARE(p.matrices[0].bits.scaleBits, std::uint64_t{16 * 12});
        QCOMPARE(p.section("row_scales/w")->bytes.size() * 8, p.matrices[0].bits.scaleBits);
        std::vector<BitCounts> perMatrix;
        auto shared = method("vq").estimateBits({m.ref}, params, perMatrix);
        QVERIFY(shared.ok());
        QCOMPARE(perMatrix[0].total(), p.matrices[0].bits.total());
        QCOMPARE(shared->total(), p.sharedBits.total());
        // Every decoded row is its fp16 scale times codewords of the stored codebook.
        const std::vector<float> w = decodeOne("vq", p);
        std::vector<float> scales(12), book(16 * 4);
        convertToFloat(DType::F16, p.section("row_scales/w")->bytes.data(), 12, scales.data());
        convertToFloat(DType::F16, p.section("codebook")->bytes.data(), book.size(), book.data());
        std::vector<std::int32_t> idx(48);
        QVERIFY(unpackBits(p.section("indices/w")->bytes.data(), p.section("indices/w")->bytes.size(), 48, 4, idx.data()));
        for (std::int64_t r = 0; r < 12; ++r)
            for (std::int64_t c = 0; c < 16; ++c)
                QCOMPARE(w[r * 16 + c], scales[r] * book[idx[(c / 4) * 12 + r] * 4 + c % 4]);
        // Scaled rows cluster better than raw rows of such different magnitudes.
        const GroupPayload raw = compressOrDie("vq", groupOf({m}), paramsOf("vq", {"K=16"}));
        QCOMPARE(raw.methodVersion, 1);
        QVERIFY(raw.section("row_scales/w") == nullptr);
        QVERIFY2(p.matrices[0].snrDb > raw.matrices[0].snrDb, qPrintable(QString("%1 vs %2 dB").arg(p.matrices[0].snrDb).arg(raw.matrices[0].snrDb)));
        // Weighting by the Hessian diagonal needs calibration.
        QVERIFY(method("vq").needsCalibration(paramsOf("vq", {"weighting=hessian_diag"})));
        auto refused = method("vq").compress(groupOf({m}), paramsOf("vq", {"K=16", "weighting=hessian_diag"}), {});
        QVERIFY(!refused.ok());
    }

    void sharingScopesGroupLikePocketLlm()
    {
        std::vector<MatrixRef> refs;
        for (int layer = 0; layer < 2; ++layer)
            for (MatrixType t : kMatrixTypes)
                refs.push_back({matrixTensorName(layer, t), layer, t, 8, 8});
        QCOMPARE(method("vq").planGroups(refs, paramsOf("vq", {"sharing=matrix"}))->size(), std::size_t{14});
        QCOMPARE(method("vq").planGroups(refs, paramsOf("vq", {"sharing=type"}))->size(), std::size_t{7});
        QCOMPARE(method("vq").planGroups(refs, paramsOf("vq", {"sharing=model"}))->size(), std::size_t{1});
        QCOMPARE(method("rtn").planGroups(refs, paramsOf("rtn", {}))->size(), std::size_t{14});
    }

    void damagedPayloadsAreRefused_data()
    {
        QTest::addColumn<QString>("methodId");
        QTest::addColumn<QString>("damage");
        QTest::addColumn<QString>("expected");
        QTest::newRow("rtn short codes") << "rtn" << "truncate codes/w" << "codes section too short";
        QTest::newRow("rtn missing scales") << "rtn" << "drop scales/w" << "sections missing or of the wrong size";
        QTest::newRow("rtn bad meta") << "rtn" << "meta" << "bad metadata";
        QTest::newRow("vq short indices") << "vq" << "truncate indices/w" << "index section missing or too short";
        QTest::newRow("vq bad codebook") << "vq" << "truncate codebook" << "codebook section missing or of the wrong size";
        QTest::newRow("vq index out of range") << "vq" << "fill indices/w" << "index out of the codebook's range";
        QTest::newRow("vq bad meta") << "vq" << "meta" << "bad metadata";
    }
    void damagedPayloadsAreRefused()
    {
        QFETCH(QString, methodId);
        QFETCH(QString, damage);
        QFETCH(QString, expected);
        const std::string id = methodId.toStdString();
        const std::vector<std::string> settings = id == "vq" ? std::vector<std::string>{"K=40"} : std::vector<std::string>{};
        GroupPayload p = compressOrDie(id, groupOf({randomMatrix("w", 8, 16, 5)}), paramsOf(id, settings));
        const std::string what = damage.section(' ', 0, 0).toStdString(), name = damage.section(' ', 1).toStdString();
        if (what == "meta")
            p.metaJson = "[1,2]";
        for (auto it = p.sections.begin(); it != p.sections.end(); ++it) {
            if (it->name != name)
                continue;
            if (what == "truncate")
                it->bytes.resize(it->bytes.size() / 2);
            else if (what == "fill")
                std::fill(it->bytes.begin(), it->bytes.end(), 0xff); // 63 >= K = 40
            else if (what == "drop") {
                p.sections.erase(it);
                break;
            }
        }
        auto r = method(id).decode(p);
        QVERIFY(!r.ok());
        QVERIFY2(r.message().find(expected.toStdString()) != std::string::npos, r.message().c_str());
        // The fast decoder refuses the same payload, when it is prepared or when the matrix is decoded.
        auto decoder = method(id).prepareDecoder(p);
        Status status = decoder ? Status{} : Status{decoder.error()};
        if (decoder) {
            std::vector<float> out(8 * 16);
            status = (*decoder)->decodeMatrix(0, out.data(), 2);
        }
        QVERIFY(!status.ok());
        QVERIFY2(status.message().find(expected.toStdString()) != std::string::npos, status.message().c_str());
    }

    // The payload decoders inference uses give decode()'s weights bit for bit, whatever the
    // thread count, bit width, group width, odd shapes and row scales.
    void fastDecodersMatchDecodeBitForBit_data()
    {
        QTest::addColumn<QString>("methodId");
        QTest::addColumn<QString>("settings");
        QTest::addColumn<int>("cols");
        for (int bits = 2; bits <= 8; ++bits)
            for (const char* group : {"0", "7", "32", "128"})
                QTest::newRow(qPrintable(QString("rtn %1 bits g%2").arg(bits).arg(group)))
                    << "rtn" << QString("bits=%1 group=%2").arg(bits).arg(group) << 172;
        QTest::newRow("rtn odd cols") << "rtn" << "bits=4 group=16" << 173;
        QTest::newRow("rtn zero=int") << "rtn" << "bits=4 group=32 zero=int" << 172;
        QTest::newRow("rtn 3 bits zero=int") << "rtn" << "bits=3 group=64 zero=int" << 171;
        for (const char* d : {"1", "2", "3", "4", "8"})
            QTest::newRow(qPrintable(QString("vq d%1").arg(d))) << "vq" << QString("d=%1 K=300").arg(d) << 172;
        QTest::newRow("vq row scales") << "vq" << "d=4 K=64 row_scale=true" << 173;
        QTest::newRow("vq 2 codewords") << "vq" << "d=2 K=2" << 64;
        QTest::newRow("pocketllm") << "pocketllm" << "d=4 K=64 epochs=1" << 64;
    }
    void fastDecodersMatchDecodeBitForBit()
    {
        QFETCH(QString, methodId);
        QFETCH(QString, settings);
        QFETCH(int, cols);
        const std::string id = methodId.toStdString();
        std::vector<std::string> assignments;
        for (const QString& s : settings.split(' ', Qt::SkipEmptyParts))
            assignments.push_back(s.toStdString());
        const MatrixGroup group = groupOf({randomMatrix("a", 40, cols, 11), randomMatrix("b", 24, cols, 12)});
        const GroupPayload p = compressOrDie(id, group, paramsOf(id, assignments));
        auto want = method(id).decode(p);
        if (!want)
            QFAIL(want.message().c_str());
        auto decoder = method(id).prepareDecoder(p);
        if (!decoder)
            QFAIL(decoder.message().c_str());
        QCOMPARE((*decoder)->matrixCount(), p.matrices.size());
        QVERIFY((*decoder)->bytes() > 0);
        for (std::size_t i = 0; i < p.matrices.size(); ++i)
            for (int threads : {1, 3}) {
                std::vector<float> got(static_cast<std::size_t>(p.matrices[i].ref.weights()), -1234.5f);
                auto status = (*decoder)->decodeMatrix(i, got.data(), threads);
                if (!status)
                    QFAIL(status.message().c_str());
                QCOMPARE(got.size(), (*want)[i].size());
                QVERIFY2(std::memcmp(got.data(), (*want)[i].data(), got.size() * sizeof(float)) == 0,
                         qPrintable(QString("matrix %1, %2 threads differs").arg(i).arg(threads)));
            }
        std::vector<float> out(1);
        QVERIFY(!(*decoder)->decodeMatrix(p.matrices.size(), out.data(), 1).ok());
    }
};

QTEST_APPLESS_MAIN(TestBaselines)
#include "test_baselines.moc"
