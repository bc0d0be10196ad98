// The PocketLLM plugin, loaded the way the programs load it (from the plugin folder): the payload
// decodes to what a slow plain-C++ reference of the method doc's decoder computes from the stored
// bytes alone; bits match section sizes; runs are reproducible bit for bit; training helps;
// every option runs; bad payloads are refused.
#include "pocket/io/checkpoint.h"
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

CompressionMethod& method() { return testsupport::pluginMethod("pocketllm"); }

ParamSet paramsOf(const std::vector<std::string>& settings) { return testsupport::pluginParams("pocketllm", settings); }

// The reference code's variant (trained straight-through encoder, affine RLNs, final RLN, its
// optimiser settings), which the defaults no longer select.
ParamSet referenceParams(const std::vector<std::string>& settings)
{
    std::vector<std::string> s{"encoder=trained", "init=normal", "rln_affine=true", "final_norm=true", "row_scale=false",
                               "lr=0.016", "schedule=step", "epochs=50"};
    s.insert(s.end(), settings.begin(), settings.end());
    return paramsOf(s);
}

// Inputs whose channels are strongly correlated: H = 2/n X^T X of `n` samples from 4 factors.
std::vector<double> correlatedHessian(std::int64_t cols, unsigned seed)
{
    const std::int64_t n = 512;
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0, 1);
    std::vector<double> factors(4 * cols);
    for (double& f : factors)
        f = normal(gen);
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
    return hd;
}

// tr(E H E^T) of a matrix against its decoded weights.
double outputError(const WeightMatrix& m, const std::vector<float>& q, const std::vector<double>& hd)
{
    const std::int64_t rows = m.ref.rows, cols = m.ref.cols;
    double total = 0;
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t a = 0; a < cols; ++a)
            for (std::int64_t b = 0; b < cols; ++b)
                total += (m.values[r * cols + a] - q[r * cols + a]) * hd[a * cols + b] * (m.values[r * cols + b] - q[r * cols + b]);
    return total;
}

std::vector<std::vector<float>> decodeOrDie(const GroupPayload& p)
{
    auto d = method().decode(p);
    if (!d)
        qFatal("%s", d.message().c_str());
    return std::move(*d);
}

using testsupport::randomWeights;


MatrixGroup groupOf(std::vector<WeightMatrix> matrices, const std::string& id = "g")
{
    MatrixGroup g;
    g.id = id;
    g.matrices = std::move(matrices);
    return g;
}

GroupPayload compressOrDie(const MatrixGroup& group, const ParamSet& params, const CompressContext& context = {})
{
    auto p = method().compress(group, params, context);
    if (!p)
        qFatal("%s", p.message().c_str());
    return std::move(*p);
}

// ---- The slow reference decoder: method doc section 3, in double precision, from the bytes.
std::vector<double> halves(const std::vector<std::uint8_t>& bytes, std::size_t offset, std::size_t count)
{
    std::vector<double> out(count);
    for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * (offset + i), 2);
        out[i] = halfToFloat(h);
    }
    return out;
}

struct RefLinear {
    std::vector<double> w, b;
    std::size_t in = 0, out = 0;
    std::vector<double> operator()(const std::vector<double>& x) const
    {
        std::vector<double> y(out);
        for (std::size_t o = 0; o < out; ++o) {
            double s = b[o];
            for (std::size_t i = 0; i < in; ++i)
                s += w[o * in + i] * x[i];
            y[o] = s;
        }
        return y;
    }
};

struct RefMlp {
    RefLinear l1, l2;
    std::vector<double> operator()(const std::vector<double>& x) const
    {
        std::vector<double> h = l1(x);
        for (double& v : h)
            v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
        return l2(h);
    }
};

// LayerNorm over G vectors flattened.
void refRln(std::vector<std::vector<double>>& rows, const std::vector<double>& w, const std::vector<double>& b)
{
    double mean = 0, var = 0;
    std::size_t n = 0;
    for (const auto& r : rows)
        for (double v : r) {
            mean += v;
            ++n;
        }
    mean /= static_cast<double>(n);
    for (const auto& r : rows)
        for (double v : r)
            var += (v - mean) * (v - mean);
    var /= static_cast<double>(n);
    const double inv = 1 / std::sqrt(var + 1e-5);
    std::size_t k = 0;
    for (auto& r : rows)
        for (double& v : r) {
            v = (v - mean) * inv * w[k] + b[k];
            ++k;
        }
}

std::vector<std::vector<float>> referenceDecode(const GroupPayload& p)
{
    const auto meta = nlohmann::json::parse(p.metaJson);
    const int d = meta["d"], latent = meta["latent"];
    const std::int64_t K = meta["K"], G = meta["rln_group"];
    const int bits = meta["index_bits"];
    const auto& dec = p.section("decoder")->bytes;
    std::map<std::string, std::vector<double>> t;
    std::map<std::string, std::vector<std::int64_t>> shape;
    std::size_t offset = 0;
    for (const auto& entry : meta["decoder_tensors"]) {
        const std::string name = entry["name"];
        shape[name] = entry["shape"].get<std::vector<std::int64_t>>();
        const auto n = static_cast<std::size_t>(elementCount(shape[name]));
        t[name] = halves(dec, offset, n);
        offset += n;
    }
    if (offset * 2 != dec.size())
        qFatal("decoder section size does not match its tensors");
    const auto mlp = [&](const std::string& prefix) {
        RefMlp m;
        m.l1 = {t[prefix + ".w1"], t[prefix + ".b1"], static_cast<std::size_t>(shape[prefix + ".w1"][1]),
                static_cast<std::size_t>(shape[prefix + ".w1"][0])};
        m.l2 = {t[prefix + ".w2"], t[prefix + ".b2"], static_cast<std::size_t>(shape[prefix + ".w2"][1]),
                static_cast<std::size_t>(shape[prefix + ".w2"][0])};
        return m;
    };
    const RefMlp d0 = mlp("D0"), d1 = mlp("D1"), d2 = mlp("D2");
    // Version 2 flags (version 1: affine RLNs, final RLN, no skip, no row scales).
    const bool v2 = p.methodVersion >= 2;
    const bool finalNorm = v2 ? meta["final_norm"].get<bool>() : true;
    const bool outSkip = v2 ? meta["out_skip"].get<bool>() : false;
    const bool rowScale = v2 ? meta["row_scale"].get<bool>() : false;
    for (const char* rln : {"RLN3", "RLN4", "RLN4p"})
        if (!t.count(std::string(rln) + ".weight")) { // no affine weights: identity
            t[std::string(rln) + ".weight"].assign(static_cast<std::size_t>(G * latent), 1.0);
            t[std::string(rln) + ".bias"].assign(static_cast<std::size_t>(G * latent), 0.0);
        }
    const std::vector<double> codebook = halves(p.section("codebook")->bytes, 0, static_cast<std::size_t>(K * latent));
    float scale;
    std::memcpy(&scale, p.section("scale")->bytes.data(), 4);

    std::vector<std::vector<float>> out;
    for (const MatrixResult& m : p.matrices) {
        const std::int64_t blocks = (m.ref.cols + d - 1) / d, count = blocks * m.ref.rows;
        std::vector<std::int32_t> idx(static_cast<std::size_t>(count));
        const auto& packed = p.section("indices/" + m.ref.name)->bytes;
        if (!unpackBits(packed.data(), packed.size(), count, bits, idx.data()))
            qFatal("short indices");
        std::vector<std::vector<double>> s(static_cast<std::size_t>(count));
        for (std::int64_t g0 = 0; g0 < count; g0 += G) {
            std::vector<std::vector<double>> q(static_cast<std::size_t>(G)), a, y(static_cast<std::size_t>(G));
            for (std::int64_t i = 0; i < G; ++i)
                q[i].assign(codebook.begin() + idx[g0 + i] * latent, codebook.begin() + (idx[g0 + i] + 1) * latent);
            a = q;
            refRln(a, t["RLN3.weight"], t["RLN3.bias"]);
            for (std::int64_t i = 0; i < G; ++i) {
                const auto r = d1(a[i]);
                y[i] = q[i];
                for (int j = 0; j < latent; ++j)
                    y[i][j] += r[j];
            }
            a = y;
            refRln(a, t["RLN4.weight"], t["RLN4.bias"]);
            for (std::int64_t i = 0; i < G; ++i) {
                const auto r = d2(a[i]);
                for (int j = 0; j < latent; ++j)
                    y[i][j] += r[j];
            }
            if (finalNorm)
                refRln(y, t["RLN4p.weight"], t["RLN4p.bias"]);
            for (std::int64_t i = 0; i < G; ++i) {
                s[g0 + i] = d0(y[i]);
                if (outSkip)
                    for (int j = 0; j < d; ++j)
                        s[g0 + i][j] += y[i][j];
            }
        }
        std::vector<double> rs(static_cast<std::size_t>(m.ref.rows), 1.0);
        if (rowScale)
            rs = halves(p.section("row_scales/" + m.ref.name)->bytes, 0, static_cast<std::size_t>(m.ref.rows));
        std::vector<float> w(static_cast<std::size_t>(m.ref.weights()));
        for (std::int64_t r = 0; r < m.ref.rows; ++r)
            for (std::int64_t c = 0; c < m.ref.cols; ++c)
                w[r * m.ref.cols + c] = static_cast<float>(s[(c / d) * m.ref.rows + r][c % d] * scale * rs[r]);
        out.push_back(w);
    }
    return out;
}

double snrDb(const std::vector<float>& w, const std::vector<float>& wHat)
{
    double err = 0, sig = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        const double e = static_cast<double>(w[i]) - wHat[i];
        err += e * e;
        sig += static_cast<double>(w[i]) * w[i];
    }
    return 10 * std::log10(sig / err);
}

WeightMatrix demoMatrix(int layer, MatrixType type)
{
    auto ckpt = openCheckpoint(testsupport::demoModel());
    const std::string name = matrixTensorName(layer, type);
    auto data = (*ckpt)->load(name);
    WeightMatrix m;
    m.ref = {name, layer, type, data->info.shape[0], data->info.shape[1]};
    m.values = data->toFloat();
    return m;
}

} // namespace

class TestPocketLlm : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void bitsMatchTheStoredSections()
    {
        // Two matrices sharing one network; 30 columns is not a multiple of d = 4 (padded).
        const auto group = groupOf({randomWeights("a", MatrixType::Q, 0, 16, 32, 1), randomWeights("b", MatrixType::Q, 1, 24, 30, 2)});
        const ParamSet params = referenceParams({"K=40", "epochs=2", "batch=64", "rln_group=8"});
        const GroupPayload p = compressOrDie(group, params);
        const int bits = indexBits(40);
        QCOMPARE(bits, 6);
        QCOMPARE(p.matrices.size(), std::size_t{2});
        QCOMPARE(p.matrices[0].bits.indexBits, std::uint64_t(16 * 8 * bits));
        QCOMPARE(p.matrices[1].bits.indexBits, std::uint64_t(24 * 8 * bits)); // 30 columns -> 8 blocks of 4
        for (const auto& m : p.matrices)
            QCOMPARE(p.section("indices/" + m.ref.name)->bytes.size() * 8, (m.bits.indexBits + 7) / 8 * 8);
        QCOMPARE(p.section("codebook")->bytes.size() * 8, p.sharedBits.codebookBits);
        QCOMPARE(p.sharedBits.codebookBits, std::uint64_t{16 * 40 * 4});
        QCOMPARE(p.section("decoder")->bytes.size() * 8, p.sharedBits.decoderBits);
        QCOMPARE(p.section("scale")->bytes.size() * 8, p.sharedBits.scaleBits);
        // 3 MLPs (2 of latent->h->latent, 1 of latent->h->d) and 3 RLNs with G*latent affine pairs.
        const std::uint64_t decoderParams = 3 * (4 * 16 + 16 + 16 * 4 + 4) + 3 * 2 * 8 * 4;
        QCOMPARE(p.sharedBits.decoderBits, 16 * decoderParams);

        // The estimate made before compressing agrees with the payload.
        std::vector<BitCounts> perMatrix;
        auto shared = method().estimateBits({group.matrices[0].ref, group.matrices[1].ref}, params, perMatrix);
        QVERIFY(shared.ok());
        QCOMPARE(shared->total(), p.sharedBits.total());
        QCOMPARE(perMatrix[1].indexBits, p.matrices[1].bits.indexBits);
    }

    void decodeMatchesTheSlowReference()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::Up, 0, 24, 32, 3), randomWeights("b", MatrixType::Up, 1, 24, 32, 4)});
        const GroupPayload p = compressOrDie(group, referenceParams({"K=64", "epochs=3", "batch=96", "hidden=8", "latent=6"}));
        auto decoded = method().decode(p);
        QVERIFY(decoded.ok());
        const auto reference = referenceDecode(p);
        QCOMPARE(decoded->size(), reference.size());
        std::size_t exact = 0, total = 0;
        for (std::size_t m = 0; m < reference.size(); ++m) {
            QCOMPARE((*decoded)[m].size(), reference[m].size());
            for (std::size_t i = 0; i < reference[m].size(); ++i) {
                const float got = (*decoded)[m][i], want = reference[m][i];
                // Decoded weights are fp16 values; float vs double arithmetic may flip one rounding.
                QCOMPARE(got, halfToFloat(floatToHalf(got)));
                QVERIFY2(std::fabs(got - want) <= 2e-3f * std::fabs(want) + 1e-6f,
                         qPrintable(QString("%1 vs %2 at %3").arg(got).arg(want).arg(i)));
                exact += halfToFloat(floatToHalf(want)) == got ? 1 : 0;
                ++total;
            }
        }
        QVERIFY2(exact > total * 9 / 10, qPrintable(QString("%1 of %2 exact").arg(exact).arg(total)));
        // The reported error is the error of exactly these decoded weights.
        QCOMPARE(p.matrices[0].snrDb, snrDb(group.matrices[0].values, (*decoded)[0]));
    }

    void sameSeedSameBytesOtherSeedOtherBytes()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::K, 0, 16, 32, 5)});
        const GroupPayload a = compressOrDie(group, referenceParams({"K=32", "epochs=2", "batch=64"}));
        const GroupPayload b = compressOrDie(group, referenceParams({"K=32", "epochs=2", "batch=64"}));
        const GroupPayload c = compressOrDie(group, referenceParams({"K=32", "epochs=2", "batch=64", "seed=2"}));
        QCOMPARE(a.sections.size(), b.sections.size());
        for (std::size_t i = 0; i < a.sections.size(); ++i)
            QVERIFY2(a.sections[i].bytes == b.sections[i].bytes, a.sections[i].name.c_str());
        QCOMPARE(a.metaJson, b.metaJson);
        QCOMPARE(a.matrices[0].mse, b.matrices[0].mse);
        QVERIFY(a.section("decoder")->bytes != c.section("decoder")->bytes);
    }

    void trainingImprovesAStoriesMatrix()
    {
        const auto group = groupOf({demoMatrix(1, MatrixType::Gate)});
        const GroupPayload once = compressOrDie(group, referenceParams({"K=256", "epochs=1", "batch=256"}));
        const GroupPayload trained = compressOrDie(group, referenceParams({"K=256", "epochs=25", "batch=256"}));
        QVERIFY2(trained.matrices[0].snrDb > once.matrices[0].snrDb + 1.0,
                 qPrintable(QString("%1 dB after 25 epochs vs %2 dB after 1").arg(trained.matrices[0].snrDb).arg(once.matrices[0].snrDb)));
        QVERIFY(trained.matrices[0].snrDb > 3.0);
    }

    void everyOptionTrainsAndDecodes_data()
    {
        QTest::addColumn<QStringList>("settings");
        QTest::addColumn<double>("minSnrDb");
        QTest::newRow("ema") << QStringList{"update=ema"} << 0.0;
        QTest::newRow("kmeans init") << QStringList{"init=kmeans", "kmeans_iters=3"} << 0.0;
        QTest::newRow("paper loss") << QStringList{"loss=paper", "lambda=1"} << 0.0;
        QTest::newRow("cosine") << QStringList{"schedule=cosine"} << 0.0;
        QTest::newRow("constant") << QStringList{"schedule=constant"} << 0.0;
        QTest::newRow("shuffle") << QStringList{"shuffle=true"} << 0.0;
        QTest::newRow("latent 8") << QStringList{"latent=8"} << 0.0;
        QTest::newRow("no commitment (reference)") << QStringList{"beta=0"} << 0.0;
        QTest::newRow("no normalisation") << QStringList{"normalize=false"} << -3.0;
        QTest::newRow("d 2") << QStringList{"d=2"} << 0.0;
        QTest::newRow("d 8") << QStringList{"d=8"} << 0.0;
        QTest::newRow("K > sub-vectors") << QStringList{"K=4096"} << 0.0;
    }
    void everyOptionTrainsAndDecodes()
    {
        QFETCH(QStringList, settings);
        QFETCH(double, minSnrDb); // without normalisation, 4 epochs on 0.05-std weights barely start
        std::vector<std::string> s{"K=64", "epochs=4", "batch=64"};
        for (const QString& x : settings)
            s.push_back(x.toStdString());
        const auto group = groupOf({randomWeights("a", MatrixType::V, 0, 32, 32, 6), randomWeights("b", MatrixType::V, 1, 32, 32, 7)});
        const GroupPayload p = compressOrDie(group, referenceParams(s));
        auto decoded = method().decode(p);
        QVERIFY2(decoded.ok(), decoded.ok() ? "" : decoded.message().c_str());
        for (std::size_t m = 0; m < 2; ++m) {
            QVERIFY(std::isfinite(p.matrices[m].snrDb));
            QVERIFY2(p.matrices[m].snrDb > minSnrDb, qPrintable(QString::number(p.matrices[m].snrDb)));
            QCOMPARE(p.matrices[m].snrDb, snrDb(group.matrices[m].values, (*decoded)[m]));
        }
    }

    void progressIsReportedAndCanCancel()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::Q, 0, 32, 32, 8)});
        std::vector<TrainProgress> seen;
        CompressContext context;
        context.onProgress = [&](const TrainProgress& p) {
            seen.push_back(p);
            return true;
        };
        // 256 sub-vectors, batch 64: 4 steps per epoch; lr drops 10x after every 2 epochs.
        compressOrDie(group, referenceParams({"K=16", "epochs=5", "batch=64", "lr_step=2"}), context);
        QCOMPARE(seen.size(), std::size_t{20});
        QCOMPARE(seen.back().step, 20);
        QCOMPARE(seen.back().totalSteps, 20);
        QCOMPARE(seen.back().epoch, 5);
        QCOMPARE(seen.front().lr, 0.016);
        QVERIFY(std::fabs(seen[8].lr - 0.0016) < 1e-12);
        QVERIFY(std::fabs(seen.back().lr - 0.00016) < 1e-12);
        QVERIFY(seen.back().codebookUsage > 0 && seen.back().codebookUsage <= 1);
        QVERIFY(seen.back().deadCodewords >= 0 && seen.back().deadCodewords < 16);
        QVERIFY(seen.back().indexPerplexity >= 1 && seen.back().indexPerplexity <= 16);
        QVERIFY(seen.back().loss > 0);
        QCOMPARE(seen.back().etaSeconds, 0.0);

        int calls = 0;
        context.onProgress = [&](const TrainProgress&) { return ++calls < 3; };
        auto cancelled = method().compress(group, referenceParams({"K=16", "epochs=5", "batch=64"}), context);
        QVERIFY(!cancelled.ok());
        QCOMPARE(cancelled.message(), std::string("cancelled"));
        QCOMPARE(cancelled.kind(), ErrorKind::Cancelled);
        QCOMPARE(calls, 3);
    }

    void sharingScopesAndRlnGroups()
    {
        std::vector<MatrixRef> refs;
        for (int layer = 0; layer < 3; ++layer)
            for (MatrixType t : kMatrixTypes)
                refs.push_back({matrixTensorName(layer, t), layer, t, t == MatrixType::Down ? 64 : 172, t == MatrixType::Down ? 172 : 64});
        QCOMPARE(method().planGroups(refs, paramsOf({"sharing=matrix"}))->size(), std::size_t{21});
        auto byType = method().planGroups(refs, paramsOf({"sharing=type"}));
        QCOMPARE(byType->size(), std::size_t{7});
        QCOMPARE((*byType)[6].size(), std::size_t{3});
        QCOMPARE((*byType)[6][2].name, matrixTensorName(2, MatrixType::Down));
        QCOMPARE(method().planGroups(refs, paramsOf({"sharing=model"}))->front().size(), std::size_t{21});

        // Automatic G: one weight row (in/d) when the group shares `in`, else a common divisor.
        std::vector<BitCounts> perMatrix;
        auto rowGroup = method().estimateBits({refs[0]}, referenceParams({}), perMatrix);
        QVERIFY(rowGroup.ok());
        QCOMPARE(rowGroup->decoderBits, 16ull * (3 * (4 * 16 + 16 + 16 * 4 + 4) + 3 * 2 * 16 * 4)); // G = 64/4
        auto mixed = method().estimateBits(refs, referenceParams({}), perMatrix);
        QVERIFY(mixed.ok());
        // 64/4 * 172 and 172/4 * 64 sub-vectors: gcd 2752, largest divisor <= 1024 is 688.
        QCOMPARE(mixed->decoderBits, 16ull * (3 * (4 * 16 + 16 + 16 * 4 + 4) + 3 * 2 * 688 * 4));

        auto bad = method().estimateBits({refs[0]}, paramsOf({"rln_group=48"}), perMatrix);
        QVERIFY(!bad.ok());
        QVERIFY2(bad.message().find("48 does not divide the 2752 sub-vectors of " + refs[0].name) != std::string::npos,
                 bad.message().c_str());
    }

    // init=vq with no training is the vq method itself: same k-means, same codes, an identity decoder.
    void initVqWithoutTrainingReproducesVq()
    {
        const auto group = groupOf({demoMatrix(1, MatrixType::Gate), demoMatrix(2, MatrixType::Gate)}, "type:gate_proj");
        for (const char* rowScale : {"row_scale=false", "row_scale=true"}) {
            const GroupPayload pocket =
                compressOrDie(group, paramsOf({"init=vq", "encoder=assign", "epochs=0", "K=64", "normalize=false", rowScale}));
            auto vqPayload = testsupport::pluginMethod("vq").compress(
                group, testsupport::pluginParams("vq", {"K=64", "d=4", rowScale}), {});
            QVERIFY(vqPayload.ok());
            auto vq = testsupport::pluginMethod("vq").decode(*vqPayload);
            QVERIFY(vq.ok());
            const auto decoded = decodeOrDie(pocket);
            for (std::size_t m = 0; m < 2; ++m) {
                if (std::string(rowScale) == "row_scale=false") {
                    QVERIFY2(decoded[m] == (*vq)[m], rowScale);
                    QCOMPARE(pocket.section("indices/" + group.matrices[m].ref.name)->bytes,
                             vqPayload->section("indices/" + group.matrices[m].ref.name)->bytes);
                } else { // same codes; PocketLLM rounds scale * codeword to fp16 once more
                    QCOMPARE(pocket.section("indices/" + group.matrices[m].ref.name)->bytes,
                             vqPayload->section("indices/" + group.matrices[m].ref.name)->bytes);
                    QCOMPARE(pocket.section("row_scales/" + group.matrices[m].ref.name)->bytes,
                             vqPayload->section("row_scales/" + group.matrices[m].ref.name)->bytes);
                }
            }
            QCOMPARE(pocket.section("codebook")->bytes, vqPayload->section("codebook")->bytes);
        }
    }

    // The new default variant (codes assigned over decoded codewords, trained decoder, row scales,
    // output skip, no affine RLNs) decodes to what the slow reference computes from the bytes alone.
    void defaultVariantDecodesLikeTheReference()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::Up, 0, 24, 32, 3), randomWeights("b", MatrixType::Up, 1, 24, 32, 4)});
        const GroupPayload p = compressOrDie(group, paramsOf({"K=64", "epochs=12", "assign_every=4", "lr=0.01", "hidden=8"}));
        QCOMPARE(p.methodVersion, 2);
        const auto decoded = decodeOrDie(p);
        const auto reference = referenceDecode(p);
        for (std::size_t m = 0; m < reference.size(); ++m)
            for (std::size_t i = 0; i < reference[m].size(); ++i) {
                const float got = decoded[m][i], want = reference[m][i];
                QVERIFY2(std::fabs(got - want) <= 2e-3f * std::fabs(want) + 1e-6f,
                         qPrintable(QString("%1 vs %2 at %3").arg(got).arg(want).arg(i)));
            }
        QCOMPARE(p.matrices[0].snrDb, snrDb(group.matrices[0].values, decoded[0]));
        // Training moved the decoder off the identity and did not lose to its start.
        const GroupPayload start = compressOrDie(group, paramsOf({"K=64", "epochs=0", "hidden=8"}));
        QVERIFY(p.section("decoder")->bytes != start.section("decoder")->bytes);
        const double trained = p.matrices[0].mse + p.matrices[1].mse, initial = start.matrices[0].mse + start.matrices[1].mse;
        QVERIFY2(trained <= initial * 1.001, qPrintable(QString("%1 vs %2").arg(trained).arg(initial)));
    }

    void rowScaleBitsMatchTheStoredSections()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::Q, 0, 16, 32, 1), randomWeights("b", MatrixType::Q, 1, 24, 32, 2)});
        const ParamSet params = paramsOf({"K=40", "epochs=2", "rln_group=8", "row_scale=true"});
        const GroupPayload p = compressOrDie(group, params);
        std::vector<BitCounts> perMatrix;
        auto shared = method().estimateBits({group.matrices[0].ref, group.matrices[1].ref}, params, perMatrix);
        QVERIFY(shared.ok());
        QCOMPARE(shared->total(), p.sharedBits.total());
        for (std::size_t m = 0; m < 2; ++m) {
            const MatrixResult& r = p.matrices[m];
            QCOMPARE(r.bits.scaleBits, std::uint64_t(16 * r.ref.rows));
            QCOMPARE(p.section("row_scales/" + r.ref.name)->bytes.size() * 8, r.bits.scaleBits);
            QCOMPARE(perMatrix[m].total(), r.bits.total());
        }
        // No affine RLNs, no final RLN: 3 MLPs only.
        QCOMPARE(p.sharedBits.decoderBits, std::uint64_t{16 * 3 * (4 * 16 + 16 + 16 * 4 + 4)});
        QCOMPARE(p.section("decoder")->bytes.size() * 8, p.sharedBits.decoderBits);
    }

    // Error feedback over decoded codewords lowers tr(E H E^T) on correlated inputs, and the
    // fine-tune on the output error lowers it further; both need calibration.
    void feedbackAndFinetuneLowerTheOutputError()
    {
        const std::int64_t rows = 16, cols = 32;
        const std::vector<double> hd = correlatedHessian(cols, 7);
        std::vector<float> h(hd.begin(), hd.end());
        QVERIFY(method().needsCalibration(paramsOf({"feedback=true"})));
        QVERIFY(method().needsCalibration(paramsOf({"finetune=5"})));
        QVERIFY(method().needsCalibration(paramsOf({"weighting=hessian_diag"})));
        QVERIFY(!method().needsCalibration(paramsOf({})));
        double plain = 0, fed = 0, tuned = 0;
        for (unsigned seed = 1; seed <= 3; ++seed) {
            WeightMatrix a = randomWeights("a", MatrixType::Q, 0, rows, cols, seed), b = randomWeights("b", MatrixType::Q, 1, rows, cols, seed + 10);
            a.hessian = h;
            b.hessian = h;
            const auto group = groupOf({a, b});
            const std::vector<std::string> base{"K=16", "epochs=4", "assign_every=2", "hidden=8"};
            auto with = [&](std::vector<std::string> extra) {
                extra.insert(extra.begin(), base.begin(), base.end());
                return compressOrDie(group, paramsOf(extra));
            };
            const auto sum = [&](const GroupPayload& p) {
                const auto d = decodeOrDie(p);
                return outputError(a, d[0], hd) + outputError(b, d[1], hd);
            };
            const GroupPayload p0 = with({}), p1 = with({"feedback=true"}), p2 = with({"feedback=true", "finetune=30", "finetune_lr=0.002"});
            QCOMPARE(p0.section("codebook")->bytes, p1.section("codebook")->bytes); // feedback changes only the codes
            plain += sum(p0);
            fed += sum(p1);
            tuned += sum(p2);
        }
        QVERIFY2(fed < 0.85 * plain, qPrintable(QString("feedback %1 vs plain %2").arg(fed).arg(plain)));
        QVERIFY2(tuned < fed, qPrintable(QString("fine-tuned %1 vs feedback %2").arg(tuned).arg(fed)));

        auto refused = method().compress(groupOf({randomWeights("a", MatrixType::Q, 0, rows, cols, 1)}), paramsOf({"K=16", "feedback=true"}), {});
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("need calibration") != std::string::npos, refused.message().c_str());
    }

    void optionConflictsAreRefused_data()
    {
        QTest::addColumn<QStringList>("settings");
        QTest::addColumn<QString>("expected");
        QTest::newRow("vq init, trained encoder") << QStringList{"encoder=trained"} << "init=vq needs encoder=assign";
        QTest::newRow("vq init, final norm") << QStringList{"final_norm=true"} << "init=vq needs final_norm=false";
        QTest::newRow("assign, affine") << QStringList{"rln_affine=true"} << "encoder=assign needs rln_affine=false";
        QTest::newRow("vq init, latent") << QStringList{"latent=6"} << "init=vq needs latent = d";
        QTest::newRow("trained, feedback") << QStringList{"encoder=trained", "init=normal", "feedback=true"} << "need encoder=assign";
    }
    void optionConflictsAreRefused()
    {
        QFETCH(QStringList, settings);
        QFETCH(QString, expected);
        std::vector<std::string> s;
        for (const QString& x : settings)
            s.push_back(x.toStdString());
        std::vector<BitCounts> perMatrix;
        auto r = method().estimateBits({{"a", 0, MatrixType::Q, 16, 32}}, paramsOf(s), perMatrix);
        QVERIFY(!r.ok());
        QVERIFY2(r.message().find(expected.toStdString()) != std::string::npos, r.message().c_str());
    }

    // Version 1 payloads (affine RLNs, final RLN, no flags) still decode; unknown versions are refused.
    void versionOnePayloadsStillDecode()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::Q, 0, 16, 16, 9)});
        const GroupPayload v2 = compressOrDie(group, referenceParams({"K=40", "epochs=1", "batch=64"}));
        GroupPayload v1 = v2;
        v1.methodVersion = 1;
        auto meta = nlohmann::json::parse(v1.metaJson);
        for (const char* key : {"rln_affine", "final_norm", "out_skip", "row_scale"})
            meta.erase(key);
        v1.metaJson = meta.dump();
        QCOMPARE(decodeOrDie(v1), decodeOrDie(v2));
        GroupPayload v3 = v2;
        v3.methodVersion = 4;
        auto r = method().decode(v3);
        QVERIFY(!r.ok());
        QVERIFY2(r.message().find("payload version 4") != std::string::npos, r.message().c_str());
    }

    void damagedPayloadsAreRefused()
    {
        const auto group = groupOf({randomWeights("a", MatrixType::Q, 0, 16, 16, 9)});
        const GroupPayload good = compressOrDie(group, referenceParams({"K=40", "epochs=1", "batch=64"}));
        QVERIFY(method().decode(good).ok());
        const auto expectError = [](const GroupPayload& p, const std::string& what) {
            auto r = method().decode(p);
            QVERIFY(!r.ok());
            QVERIFY2(r.message().find(what) != std::string::npos, r.message().c_str());
        };
        GroupPayload p = good;
        p.sections[0].bytes.pop_back();
        expectError(p, "decoder section missing or of the wrong size");
        p = good;
        p.section("indices/a");
        for (auto& s : p.sections)
            if (s.name == "indices/a")
                std::fill(s.bytes.begin(), s.bytes.end(), 0xff); // 63 > K - 1 = 39
        expectError(p, "index out of the codebook's range");
        p = good;
        for (auto& s : p.sections)
            if (s.name == "indices/a")
                s.bytes.resize(3);
        expectError(p, "index section missing or too short");
        p = good;
        p.metaJson = "{\"d\": 4}";
        expectError(p, "bad metadata");
        p = good;
        p.metaJson = "not json";
        expectError(p, "not a JSON object");
        p = good;
        for (auto& s : p.sections)
            if (s.name == "scale")
                std::memset(s.bytes.data(), 0, 4);
        expectError(p, "scale is not a positive number");
    }
};

QTEST_APPLESS_MAIN(TestPocketLlm)
#include "test_pocketllm.moc"
