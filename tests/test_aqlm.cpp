// The AQLM plugin, loaded from the plugin folder, and PocketLLM's additive codebooks: the code
// search against exhaustive enumeration on tiny cases (a beam covering every combination must find
// the optimum), the objective never rising across rounds and matching what the decoded weights
// give, bits against section sizes and the estimate, the payload decoder against decode(), the
// calibration requirement, and damaged payloads.
#include "pocket/io/dtype.h"
#include "pocket/methods/method_registry.h"
#include "pocket/methods/vq_kernels.h"
#include "plugin_test_support.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <random>

using namespace pocket;

namespace {

CompressionMethod& method(const std::string& id) { return testsupport::pluginMethod(id); }

ParamSet paramsOf(const std::string& id, const std::vector<std::string>& settings) { return testsupport::pluginParams(id, settings); }

MatrixGroup groupOf(std::vector<WeightMatrix> matrices)
{
    MatrixGroup g;
    g.id = matrices.size() == 1 ? matrices.front().ref.name : "model";
    g.matrices = std::move(matrices);
    return g;
}

// A random symmetric positive-definite Hessian 2/n X^T X of n correlated inputs.
std::vector<float> randomHessian(std::int64_t cols, unsigned seed)
{
    std::mt19937 gen(seed);
    std::normal_distribution<double> dist(0, 1);
    const std::int64_t n = 4 * cols;
    std::vector<double> x(static_cast<std::size_t>(n * cols));
    for (std::int64_t t = 0; t < n; ++t) {
        const double shared = dist(gen);
        for (std::int64_t c = 0; c < cols; ++c)
            x[static_cast<std::size_t>(t * cols + c)] = dist(gen) * (1 + c % 3) + 0.7 * shared;
    }
    std::vector<float> h(static_cast<std::size_t>(cols * cols));
    for (std::int64_t i = 0; i < cols; ++i)
        for (std::int64_t j = 0; j < cols; ++j) {
            double s = 0;
            for (std::int64_t t = 0; t < n; ++t)
                s += x[static_cast<std::size_t>(t * cols + i)] * x[static_cast<std::size_t>(t * cols + j)];
            h[static_cast<std::size_t>(i * cols + j)] = static_cast<float>(2 * s / n);
        }
    return h;
}

WeightMatrix calibrated(WeightMatrix m, unsigned seed)
{
    m.hessian = randomHessian(m.ref.cols, seed);
    return m;
}

GroupPayload compressOrDie(const std::string& id, const MatrixGroup& group, const ParamSet& params)
{
    auto p = method(id).compress(group, params, {});
    if (!p)
        qFatal("%s", p.message().c_str());
    return std::move(*p);
}

std::vector<std::vector<float>> decodeOrDie(const std::string& id, const GroupPayload& p)
{
    auto d = method(id).decode(p);
    if (!d)
        qFatal("%s", d.message().c_str());
    return std::move(*d);
}

std::vector<float> halfSection(const GroupPayload& p, const std::string& name)
{
    const PayloadSection* s = p.section(name);
    if (!s)
        qFatal("no section %s", name.c_str());
    std::vector<float> v(s->bytes.size() / 2);
    convertToFloat(DType::F16, s->bytes.data(), v.size(), v.data());
    return v;
}

// e^T H e of one row's error (double).
double rowCost(const std::vector<double>& e, const std::vector<float>& h)
{
    const std::size_t n = e.size();
    double s = 0;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j)
            s += e[i] * static_cast<double>(h[i * n + j]) * e[j];
    return s;
}

// tr(E H E^T) / tr(W H W^T) of decoded weights against the original (H as given).
double relativeOutputError(const WeightMatrix& m, const std::vector<float>& decoded, const std::vector<float>& h)
{
    double err = 0, norm = 0;
    for (std::int64_t r = 0; r < m.ref.rows; ++r) {
        std::vector<double> e(static_cast<std::size_t>(m.ref.cols)), w(e.size());
        for (std::int64_t c = 0; c < m.ref.cols; ++c) {
            w[static_cast<std::size_t>(c)] = m.values[static_cast<std::size_t>(r * m.ref.cols + c)];
            e[static_cast<std::size_t>(c)] = w[static_cast<std::size_t>(c)] - decoded[static_cast<std::size_t>(r * m.ref.cols + c)];
        }
        err += rowCost(e, h);
        norm += rowCost(w, h);
    }
    return err / norm;
}

} // namespace

class TestAqlm : public QObject {
    Q_OBJECT

private Q_SLOTS:
    // One column group per row (cols = g), so a row's output error depends on its M codes only:
    // a beam of K^(M-1) covers every combination and must find the exhaustive optimum.
    void fullBeamFindsTheExhaustiveOptimum()
    {
        const int m = 2, k = 8, g = 4;
        const WeightMatrix w = calibrated(testsupport::randomWeights("a", MatrixType::Q, 0, 24, g, 11), 12);
        const GroupPayload p = compressOrDie("aqlm", groupOf({w}), paramsOf("aqlm", {"M=2", "B=3", "g=4", "beam=8", "rounds=1", "steps=0",
                                                                                      "damp=0", "kmeans_iters=3"}));
        const std::vector<float> books = halfSection(p, "codebooks"), scales = halfSection(p, "row_scales/a");
        QCOMPARE(books.size(), std::size_t(m * k * g));
        const std::vector<float> decoded = decodeOrDie("aqlm", p)[0];
        for (std::int64_t r = 0; r < w.ref.rows; ++r) {
            double best = 1e300;
            for (int a = 0; a < k; ++a)
                for (int b = 0; b < k; ++b) {
                    std::vector<double> e(g);
                    for (int j = 0; j < g; ++j) {
                        const float y = books[static_cast<std::size_t>((0 * k + a) * g + j)] + books[static_cast<std::size_t>((1 * k + b) * g + j)];
                        e[static_cast<std::size_t>(j)] = w.values[static_cast<std::size_t>(r * g + j)] - static_cast<double>(y * scales[static_cast<std::size_t>(r)]);
                    }
                    best = std::min(best, rowCost(e, w.hessian));
                }
            std::vector<double> e(g);
            for (int j = 0; j < g; ++j)
                e[static_cast<std::size_t>(j)] = w.values[static_cast<std::size_t>(r * g + j)] - decoded[static_cast<std::size_t>(r * g + j)];
            const double got = rowCost(e, w.hessian);
            QVERIFY2(got <= best * (1 + 1e-4) + 1e-12, qPrintable(QString("row %1: %2 > optimum %3").arg(r).arg(got).arg(best)));
        }
    }

    // With a beam of 1 the search is greedy; on correlated inputs it misses the optimum somewhere,
    // so the test above would notice a search that ignored its beam.
    void greedySearchIsWorseSomewhere()
    {
        const WeightMatrix w = calibrated(testsupport::randomWeights("a", MatrixType::Q, 0, 64, 4, 21), 22);
        const auto err = [&](const char* beam) {
            const GroupPayload p = compressOrDie("aqlm", groupOf({w}), paramsOf("aqlm", {"M=3", "B=3", "g=4", beam, "rounds=1", "steps=0",
                                                                                          "damp=0", "kmeans_iters=3"}));
            return relativeOutputError(w, decodeOrDie("aqlm", p)[0], w.hessian);
        };
        const double full = err("beam=64"), greedy = err("beam=1");
        QVERIFY2(full < greedy, qPrintable(QString("full beam %1, greedy %2").arg(full).arg(greedy)));
    }

    void objectiveNeverRisesAndMatchesTheDecodedWeights()
    {
        const WeightMatrix a = calibrated(testsupport::randomWeights("a", MatrixType::Q, 0, 32, 40, 31), 32);
        const WeightMatrix b = calibrated(testsupport::randomWeights("b", MatrixType::Q, 1, 16, 40, 33), 34);
        // A large learning rate provokes Adam overshoots, which a round must not keep.
        const GroupPayload p = compressOrDie("aqlm", groupOf({a, b}), paramsOf("aqlm", {"M=2", "B=4", "g=8", "rounds=5", "steps=30",
                                                                                          "lr=0.05", "damp=0", "sharing=model"}));
        const auto meta = nlohmann::json::parse(p.metaJson);
        const auto trace = meta.at("objective_rounds").get<std::vector<double>>();
        QCOMPARE(trace.size(), std::size_t{6});
        for (std::size_t i = 1; i < trace.size(); ++i)
            QVERIFY2(trace[i] <= trace[i - 1] * (1 + 1e-5), qPrintable(QString("round %1: %2 > %3").arg(i).arg(trace[i]).arg(trace[i - 1])));
        QVERIFY2(trace.back() < 0.9 * trace.front(), qPrintable(QString("%1 -> %2").arg(trace.front()).arg(trace.back())));
        // The reported objective is what the archive's weights give: sum of tr(E H E^T) over sum of
        // tr(W H W^T), each H normalised to a mean diagonal of 1.
        const auto decoded = decodeOrDie("aqlm", p);
        double err = 0, norm = 0;
        for (int i = 0; i < 2; ++i) {
            const WeightMatrix& m = i == 0 ? a : b;
            std::vector<float> h = m.hessian;
            double mean = 0;
            for (std::int64_t j = 0; j < m.ref.cols; ++j)
                mean += h[static_cast<std::size_t>(j * m.ref.cols + j)];
            mean /= static_cast<double>(m.ref.cols);
            for (float& v : h)
                v = static_cast<float>(v / mean);
            const double rel = relativeOutputError(m, decoded[static_cast<std::size_t>(i)], h);
            double wn = 0;
            for (std::int64_t r = 0; r < m.ref.rows; ++r) {
                std::vector<double> row(m.values.begin() + r * m.ref.cols, m.values.begin() + (r + 1) * m.ref.cols);
                wn += rowCost(row, h);
            }
            err += rel * wn;
            norm += wn;
        }
        QVERIFY2(std::abs(err / norm - trace.back()) <= 1e-3 * trace.back(), qPrintable(QString("%1 vs %2").arg(err / norm).arg(trace.back())));
    }

    void bitsMatchTheSectionsAndTheEstimate()
    {
        // 20 columns with g = 8: three groups per row, the last padded.
        const auto group = groupOf({testsupport::randomWeights("a", MatrixType::Q, 0, 12, 20, 41),
                                    testsupport::randomWeights("b", MatrixType::K, 0, 6, 20, 42)});
        const ParamSet params = paramsOf("aqlm", {"M=3", "B=5", "g=8", "sharing=model", "objective=weights", "rounds=2", "steps=5"});
        const GroupPayload p = compressOrDie("aqlm", group, params);
        QCOMPARE(p.matrices[0].bits.indexBits, std::uint64_t(12 * 3 * 3 * 5));
        QCOMPARE(p.matrices[1].bits.indexBits, std::uint64_t(6 * 3 * 3 * 5));
        for (const MatrixResult& r : p.matrices) {
            QCOMPARE(p.section("codes/" + r.ref.name)->bytes.size(), std::size_t((r.bits.indexBits + 7) / 8));
            QCOMPARE(p.section("codes/" + r.ref.name)->symbolBits, 5);
            QCOMPARE(r.bits.scaleBits, std::uint64_t(16 * r.ref.rows));
            QCOMPARE(p.section("row_scales/" + r.ref.name)->bytes.size() * 8, std::size_t(r.bits.scaleBits));
        }
        QCOMPARE(p.sharedBits.codebookBits, std::uint64_t(16 * 3 * 32 * 8));
        QCOMPARE(p.section("codebooks")->bytes.size() * 8, std::size_t(p.sharedBits.codebookBits));
        std::vector<BitCounts> perMatrix;
        auto shared = method("aqlm").estimateBits({group.matrices[0].ref, group.matrices[1].ref}, params, perMatrix);
        QVERIFY(shared.ok());
        QCOMPARE(shared->total(), p.sharedBits.total());
        QCOMPARE(perMatrix[0].total(), p.matrices[0].bits.total());
        QCOMPARE(perMatrix[1].total(), p.matrices[1].bits.total());
        // Same inputs, same bytes.
        const GroupPayload again = compressOrDie("aqlm", group, params);
        QCOMPARE(again.sections.size(), p.sections.size());
        for (std::size_t i = 0; i < p.sections.size(); ++i)
            QVERIFY(again.sections[i].bytes == p.sections[i].bytes);
    }

    void payloadDecoderMatchesDecode()
    {
        const auto group = groupOf({testsupport::randomWeights("a", MatrixType::Q, 0, 16, 24, 51),
                                    testsupport::randomWeights("b", MatrixType::Q, 1, 8, 36, 52)});
        const GroupPayload p = compressOrDie("aqlm", group, paramsOf("aqlm", {"M=2", "B=4", "g=6", "sharing=model", "objective=weights",
                                                                               "rounds=1", "steps=3"}));
        const auto decoded = decodeOrDie("aqlm", p);
        auto dec = method("aqlm").prepareDecoder(p);
        QVERIFY(dec.ok());
        QCOMPARE((*dec)->matrixCount(), std::size_t{2});
        for (std::size_t i = 0; i < 2; ++i) {
            std::vector<float> out(decoded[i].size());
            QVERIFY((*dec)->decodeMatrix(i, out.data(), 2).ok());
            QCOMPARE(out, decoded[i]);
            // Each weight is the row scale times the sum of its group's codewords: a sane reconstruction.
            double err = 0, norm = 0;
            for (std::size_t j = 0; j < out.size(); ++j) {
                err += std::pow(out[j] - group.matrices[i].values[j], 2);
                norm += std::pow(group.matrices[i].values[j], 2);
            }
            QVERIFY2(err < 0.5 * norm, qPrintable(QString("relative error %1").arg(err / norm)));
        }
    }

    void calibrationIsNeededForTheOutputObjective()
    {
        QVERIFY(method("aqlm").needsCalibration(paramsOf("aqlm", {})));
        QVERIFY(!method("aqlm").needsCalibration(paramsOf("aqlm", {"objective=weights"})));
        const auto group = groupOf({testsupport::randomWeights("a", MatrixType::Q, 0, 8, 16, 61)});
        auto r = method("aqlm").compress(group, paramsOf("aqlm", {"B=3", "g=4"}), {});
        QVERIFY(!r.ok());
        QVERIFY2(r.message().find("needs calibration data") != std::string::npos, r.message().c_str());
        QVERIFY(method("aqlm").compress(group, paramsOf("aqlm", {"B=3", "g=4", "objective=weights", "steps=2"}), {}).ok());
    }

    void damagedPayloadsAreRefused()
    {
        const auto group = groupOf({testsupport::randomWeights("a", MatrixType::Q, 0, 8, 16, 71)});
        const GroupPayload good = compressOrDie("aqlm", group, paramsOf("aqlm", {"B=3", "g=4", "objective=weights", "steps=2"}));
        const auto expectError = [](const GroupPayload& p, const std::string& what) {
            auto r = method("aqlm").decode(p);
            QVERIFY(!r.ok());
            QVERIFY2(r.message().find(what) != std::string::npos, r.message().c_str());
            auto d = method("aqlm").prepareDecoder(p);
            QVERIFY(!d.ok());
        };
        GroupPayload p = good;
        for (auto& s : p.sections)
            if (s.name == "codes/a")
                s.bytes.resize(2);
        expectError(p, "a: code section missing or too short");
        p = good;
        for (auto& s : p.sections)
            if (s.name == "codebooks")
                s.bytes.pop_back();
        expectError(p, "codebook section missing or of the wrong size");
        p = good;
        for (auto& s : p.sections)
            if (s.name == "row_scales/a")
                s.bytes.clear();
        expectError(p, "a: row scale section missing");
        p = good;
        p.metaJson = "{\"M\": 2}";
        expectError(p, "bad or missing metadata");
    }

    // PocketLLM with codebooks=2 and no training keeps its identity decoder, so each decoded
    // sub-vector is the scaled sum of two codewords: a beam covering all K combinations must give
    // every sub-vector its best pair, and the payload decoder agrees with decode().
    void pocketllmAdditiveCodesAreOptimalAndDecode()
    {
        const WeightMatrix w = testsupport::randomWeights("a", MatrixType::Q, 0, 16, 32, 81);
        const int k = 8, d = 4;
        const GroupPayload p = compressOrDie("pocketllm", groupOf({w}), paramsOf("pocketllm", {"codebooks=2", "K=8", "d=4", "epochs=0",
                                                                                                "beam=8", "kmeans_iters=3"}));
        QCOMPARE(p.methodVersion, 3);
        QCOMPARE(p.matrices[0].bits.indexBits, std::uint64_t(16 * 8 * 2 * 3));
        QCOMPARE(p.sharedBits.codebookBits, std::uint64_t(16 * 2 * k * d));
        const auto decoded = decodeOrDie("pocketllm", p)[0];
        auto dec = method("pocketllm").prepareDecoder(p);
        QVERIFY(dec.ok());
        std::vector<float> fast(decoded.size());
        QVERIFY((*dec)->decodeMatrix(0, fast.data(), 2).ok());
        QCOMPARE(fast, decoded);
        // Exhaustive: every sub-vector's error against the best pair of codewords under the stored
        // scales (group scale times row scale), with fp16 rounding's slack.
        const std::vector<float> books = halfSection(p, "codebook"), rows = halfSection(p, "row_scales/a");
        float scale = 0;
        std::memcpy(&scale, p.section("scale")->bytes.data(), sizeof scale);
        double chosen = 0, optimum = 0;
        for (std::int64_t r = 0; r < w.ref.rows; ++r)
            for (std::int64_t b = 0; b < w.ref.cols / d; ++b) {
                const auto err = [&](const std::vector<float>& y) {
                    double e = 0;
                    for (int j = 0; j < d; ++j)
                        e += std::pow(w.values[static_cast<std::size_t>(r * w.ref.cols + b * d + j)] - y[static_cast<std::size_t>(j)], 2);
                    return e;
                };
                std::vector<float> got(decoded.begin() + r * w.ref.cols + b * d, decoded.begin() + r * w.ref.cols + b * d + d);
                double best = 1e300;
                for (int a = 0; a < k; ++a)
                    for (int c = 0; c < k; ++c) {
                        std::vector<float> y(d);
                        for (int j = 0; j < d; ++j)
                            y[static_cast<std::size_t>(j)] = halfToFloat(floatToHalf(
                                (books[static_cast<std::size_t>(a * d + j)] + books[static_cast<std::size_t>((k + c) * d + j)]) * scale *
                                rows[static_cast<std::size_t>(r)]));
                        best = std::min(best, err(y));
                    }
                chosen += err(got);
                optimum += best;
            }
        QVERIFY2(chosen <= optimum * 1.002, qPrintable(QString("chosen %1, optimum %2").arg(chosen).arg(optimum)));
        // More codebooks at the same K: a better reconstruction than one codebook.
        const GroupPayload one = compressOrDie("pocketllm", groupOf({w}), paramsOf("pocketllm", {"K=8", "d=4", "epochs=0", "kmeans_iters=3"}));
        QVERIFY2(p.matrices[0].snrDb > one.matrices[0].snrDb + 1, qPrintable(QString("%1 vs %2 dB").arg(p.matrices[0].snrDb).arg(one.matrices[0].snrDb)));
        // Additive codebooks need the assign path from init=vq.
        auto refused = method("pocketllm").compress(groupOf({w}), paramsOf("pocketllm", {"codebooks=2", "K=8", "init=normal"}), {});
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("codebooks > 1 needs") != std::string::npos, refused.message().c_str());
    }

    // feedback=true with codebooks=2: AQLM's output-error search over the latent sums (the decoder is
    // still the identity) lowers tr(E H E^T) against the weight-space codes of the same start, and
    // rounds of search and fine-tune lower it further.
    void pocketllmAdditiveFeedbackLowersTheOutputError()
    {
        const WeightMatrix w = calibrated(testsupport::randomWeights("a", MatrixType::Q, 0, 24, 32, 91), 92);
        const auto err = [&](std::vector<std::string> settings) {
            settings.insert(settings.end(), {"codebooks=2", "K=8", "d=4", "epochs=0", "kmeans_iters=5"});
            const GroupPayload p = compressOrDie("pocketllm", groupOf({w}), paramsOf("pocketllm", settings));
            return relativeOutputError(w, decodeOrDie("pocketllm", p)[0], w.hessian);
        };
        const double plain = err({}), searched = err({"feedback=true"}), tuned = err({"feedback=true", "rounds=3", "finetune=40"});
        QVERIFY2(searched < 0.95 * plain, qPrintable(QString("search %1, weight-space codes %2").arg(searched).arg(plain)));
        QVERIFY2(tuned < searched, qPrintable(QString("rounds with fine-tune %1, search alone %2").arg(tuned).arg(searched)));
        auto refused = method("pocketllm").compress(groupOf({w}), paramsOf("pocketllm", {"codebooks=2", "K=8", "feedback=true", "epochs=5"}), {});
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("epochs=0") != std::string::npos, refused.message().c_str());
    }
};

QTEST_APPLESS_MAIN(TestAqlm)
#include "test_aqlm.moc"
