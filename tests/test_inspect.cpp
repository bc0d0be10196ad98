// The Inspect tab's data (core's inspectMatrix) against slow recomputations from the archive and
// the original model, and the settings proposal (suggestSettings, checkPlan) on the demo model and
// on a Llama-2-7B-shaped plan.
#include "pocket/analysis/inspect.h"
#include "pocket/archive/archive_checkpoint.h"
#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/methods/vq_kernels.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace pocket;

namespace {

std::vector<float> floatsOf(const Checkpoint& c, const std::string& name)
{
    auto t = c.load(name);
    if (!t)
        qFatal("%s", t.message().c_str());
    return t->toFloat();
}

// A checkpoint with Llama-2-7B's tensor list and no data: enough for a plan.
class ShapeOnly final : public Checkpoint {
public:
    explicit ShapeOnly(const ModelConfig& config)
    {
        m_config = config;
        m_path = "llama-2-7b-shapes";
        m_tensors = expectedTensors(config);
        for (TensorInfo& t : m_tensors) {
            t.dtype = DType::F16;
            std::uint64_t n = 1;
            for (std::int64_t s : t.shape)
                n *= static_cast<std::uint64_t>(s);
            t.byteSize = 2 * n;
        }
        buildIndex();
    }
    std::string fileOf(const std::string&) const override { return m_path; }
    Result<TensorData> load(const std::string& name) const override { return Error("no data for " + name); }
};

ModelConfig llama2_7b()
{
    ModelConfig c;
    c.hiddenSize = 4096;
    c.intermediateSize = 11008;
    c.numLayers = 32;
    c.numHeads = c.numKvHeads = 32;
    c.headDim = 128;
    c.vocabSize = 32000;
    return c;
}

// The archive payload's codebook (fp16 -> float) and the matrix's codes, read directly.
struct Payload {
    nlohmann::json meta;
    std::vector<float> codebook;
    std::vector<std::int32_t> codes;
    std::vector<float> rowScales;
    float scale = 1;
};
Payload readPayload(const std::string& archive, const std::string& matrix)
{
    auto a = Archive::open(archive);
    if (!a)
        qFatal("%s", a.message().c_str());
    for (std::size_t g = 0; g < (*a)->manifest().groups.size(); ++g)
        for (const MatrixResult& m : (*a)->manifest().groups[g].payload.matrices)
            if (m.ref.name == matrix) {
                auto p = (*a)->groupPayload(g);
                Payload out;
                out.meta = nlohmann::json::parse(p->metaJson);
                const auto& book = p->section("codebook")->bytes;
                out.codebook.resize(book.size() / 2);
                convertToFloat(DType::F16, book.data(), out.codebook.size(), out.codebook.data());
                const std::int64_t d = out.meta["d"], count = m.ref.rows * ((m.ref.cols + d - 1) / d);
                out.codes.resize(static_cast<std::size_t>(count));
                const auto& idx = p->section("indices/" + matrix)->bytes;
                if (!unpackBits(idx.data(), idx.size(), count, out.meta["index_bits"], out.codes.data()))
                    qFatal("indices");
                if (const PayloadSection* rs = p->section("row_scales/" + matrix)) {
                    out.rowScales.resize(rs->bytes.size() / 2);
                    convertToFloat(DType::F16, rs->bytes.data(), out.rowScales.size(), out.rowScales.data());
                }
                if (const PayloadSection* s = p->section("scale"))
                    std::memcpy(&out.scale, s->bytes.data(), 4);
                return out;
            }
    qFatal("no matrix %s", matrix.c_str());
}

} // namespace

class TestInspect : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    MethodRegistry m_registry;
    std::unique_ptr<Checkpoint> m_model;
    std::string m_vq, m_pocket, m_rtn;

    std::string compress(const std::string& method, const std::vector<std::string>& settings, const std::string& name)
    {
        CompressJobParams p;
        p.modelPath = testsupport::demoModel();
        p.methodId = method;
        p.settings = settings;
        p.selection.blocks = {{0, 1}};
        p.outPath = m_tmp.filePath(QString::fromStdString(name)).toStdString();
        auto r = runCompressJob(p, m_registry);
        if (!r)
            qFatal("%s", r.message().c_str());
        return p.outPath;
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        m_registry.loadDefaultFolders();
        m_registry.loadFolder(POCKET_PLUGIN_DIR);
        auto c = openCheckpoint(testsupport::demoModel());
        QVERIFY(bool(c));
        m_model = std::move(*c);
        m_vq = compress("vq", {"d=2", "K=16", "sharing=model"}, "vq.pllm");
        m_pocket = compress("pocketllm", {"sharing=model", "K=64", "epochs=5"}, "pocket.pllm");
        m_rtn = compress("rtn", {"bits=3", "group=32"}, "rtn.pllm");
    }

    void eigenvectorsOfARotatedDiagonal()
    {
        const int d = 5;
        std::mt19937 rng(3);
        std::normal_distribution<double> normal;
        // Q from Gram-Schmidt of a random matrix; A = Q diag(9, 4, 1, 0.5, 0.1) Q^T.
        std::vector<double> q(d * d);
        for (double& v : q) v = normal(rng);
        for (int i = 0; i < d; ++i) {
            for (int j = 0; j < i; ++j) {
                double dot = 0;
                for (int k = 0; k < d; ++k) dot += q[i * d + k] * q[j * d + k];
                for (int k = 0; k < d; ++k) q[i * d + k] -= dot * q[j * d + k];
            }
            double norm = 0;
            for (int k = 0; k < d; ++k) norm += q[i * d + k] * q[i * d + k];
            for (int k = 0; k < d; ++k) q[i * d + k] /= std::sqrt(norm);
        }
        const double lambda[d] = {0.5, 9, 0.1, 4, 1}; // rows of q are the eigenvectors, unsorted
        std::vector<double> a(d * d, 0);
        for (int i = 0; i < d; ++i)
            for (int j = 0; j < d; ++j)
                for (int k = 0; k < d; ++k) a[i * d + j] += q[k * d + i] * lambda[k] * q[k * d + j];
        std::vector<double> vectors;
        double values[2];
        leadingEigenvectors(a, d, vectors, values);
        QVERIFY(std::abs(values[0] - 9) < 1e-9 && std::abs(values[1] - 4) < 1e-9);
        for (int r = 0; r < 2; ++r) {
            double dot = 0;
            for (int k = 0; k < d; ++k) dot += vectors[r * d + k] * q[(r == 0 ? 1 : 3) * d + k];
            QVERIFY2(std::abs(std::abs(dot) - 1) < 1e-9, qPrintable(QString::number(dot)));
        }
    }

    // Histogram, error map and MSE against loops over the weights decoded by the archive checkpoint.
    void histogramAndErrorMapMatchSlowLoops()
    {
        auto decodedModel = openArchiveCheckpoint(m_pocket, m_registry);
        QVERIFY(bool(decodedModel));
        for (const std::string name : {"model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight"}) {
            InspectOptions o;
            o.bins = 37;
            o.maxCells = 7; // 64 x 172 -> cells of 10 x 25 (the last ones smaller)
            auto r = inspectMatrix(m_pocket, name, m_model.get(), m_registry, o);
            QVERIFY2(bool(r), r ? "" : r.message().c_str());
            const std::vector<float> w = floatsOf(*m_model, name), wHat = floatsOf(**decodedModel, name);
            QCOMPARE(std::size_t(r->rows * r->cols), w.size());
            QVERIFY(r->hasOriginal);
            // Histogram: every weight once, in the bin a direct computation gives.
            std::vector<double> ho(37, 0), hd(37, 0);
            const double width = (r->histogram.hi - r->histogram.lo) / 37;
            for (std::size_t i = 0; i < w.size(); ++i) {
                ho[std::clamp<int>(int((w[i] - r->histogram.lo) / width), 0, 36)] += 1;
                hd[std::clamp<int>(int((wHat[i] - r->histogram.lo) / width), 0, 36)] += 1;
            }
            QCOMPARE(r->histogram.original, ho);
            QCOMPARE(r->histogram.decoded, hd);
            QVERIFY(r->histogram.lo <= *std::min_element(w.begin(), w.end()) && r->histogram.hi >= *std::max_element(w.begin(), w.end()));
            double err = 0, sig = 0;
            for (std::size_t i = 0; i < w.size(); ++i) {
                err += (double(w[i]) - wHat[i]) * (double(w[i]) - wHat[i]);
                sig += double(w[i]) * w[i];
            }
            QVERIFY(std::abs(r->mse - err / w.size()) <= 1e-12 * (1 + err));
            QVERIFY(std::abs(r->snrDb - 10 * std::log10(sig / err)) < 1e-9);
            // Error map: each cell's mean and RMS over its weights.
            const ErrorMap& e = r->error;
            QVERIFY(e.rows <= 7 && e.cols <= 7 && e.rows * e.rowsPerCell >= r->rows && e.cols * e.colsPerCell >= r->cols);
            for (int cr = 0; cr < e.rows; ++cr)
                for (int cc = 0; cc < e.cols; ++cc) {
                    double s = 0, s2 = 0, n = 0;
                    for (std::int64_t row = cr * e.rowsPerCell; row < std::min(r->rows, (cr + 1) * e.rowsPerCell); ++row)
                        for (std::int64_t col = cc * e.colsPerCell; col < std::min(r->cols, (cc + 1) * e.colsPerCell); ++col) {
                            const double x = double(w[row * r->cols + col]) - wHat[row * r->cols + col];
                            s += x;
                            s2 += x * x;
                            n += 1;
                        }
                    QVERIFY(std::abs(e.mean[cr * e.cols + cc] - s / n) < 1e-6 * (1 + std::abs(s / n)));
                    QVERIFY(std::abs(e.rms[cr * e.cols + cc] - std::sqrt(s2 / n)) < 1e-6);
                }
        }
    }

    // vq with d = 2: the axes are the coordinates; every decoded sub-vector is a codeword, and the
    // usage counts are how often each distinct decoded pair occurs.
    void vqCodebookAndUsageMatchTheDecodedPairs()
    {
        const std::string name = "model.layers.0.self_attn.q_proj.weight";
        auto r = inspectMatrix(m_vq, name, m_model.get(), m_registry);
        QVERIFY2(bool(r), r ? "" : r.message().c_str());
        QVERIFY(r->codebook.has_value());
        const CodebookView& v = *r->codebook;
        QCOMPARE(v.d, 2);
        QVERIFY(!v.pca);
        QCOMPARE(v.codewords, std::int64_t(16));
        QCOMPARE(v.codebook.size(), std::size_t(32));
        QVERIFY(v.decodedCodewords.empty()); // vq: its codewords are their own decoding
        auto decodedModel = openArchiveCheckpoint(m_vq, m_registry);
        const std::vector<float> wHat = floatsOf(**decodedModel, name);
        std::map<std::pair<float, float>, std::int64_t> pairs;
        for (std::int64_t b = 0; b < r->cols / 2; ++b) // sub-vector b*rows + row: row, columns 2b, 2b+1
            for (std::int64_t row = 0; row < r->rows; ++row)
                ++pairs[{wHat[row * r->cols + 2 * b], wHat[row * r->cols + 2 * b + 1]}];
        std::int64_t total = 0, used = 0;
        for (std::int64_t k = 0; k < 16; ++k) {
            total += v.usage[k];
            if (v.usage[k] == 0)
                continue;
            ++used;
            const auto it = pairs.find({v.codebook[2 * k], v.codebook[2 * k + 1]});
            QVERIFY2(it != pairs.end(), qPrintable(QString("codeword %1 is never decoded").arg(k)));
            QCOMPARE(it->second, v.usage[k]);
        }
        QCOMPARE(total, r->rows * r->cols / 2);
        QCOMPARE(used, std::int64_t(pairs.size()));
        QCOMPARE(v.dead, int(16 - used));
        double entropy = 0;
        for (std::int64_t u : v.usage)
            if (u > 0) entropy -= double(u) / total * std::log(double(u) / total);
        QVERIFY(std::abs(v.indexPerplexity - std::exp(entropy)) < 1e-9);
        // The axes' shares of the variance: each coordinate's variance over their sum.
        {
            const std::vector<float> w = floatsOf(*m_model, name);
            double s[2] = {0, 0}, s2[2] = {0, 0};
            for (std::size_t i = 0; i < w.size(); ++i) {
                s[i % 2] += w[i];
                s2[i % 2] += double(w[i]) * w[i];
            }
            const double n = w.size() / 2.0, v0 = s2[0] / n - s[0] * s[0] / n / n, v1 = s2[1] / n - s[1] * s[1] / n / n;
            QVERIFY(std::abs(v.explained[0] - v0 / (v0 + v1)) < 1e-9 && std::abs(v.explained[1] - v1 / (v0 + v1)) < 1e-9);
        }
        // The sampled points are original sub-vectors: the first is row 0, columns 0 and 1.
        const std::vector<float> w = floatsOf(*m_model, name);
        QCOMPARE(v.points[0], w[0]);
        QCOMPARE(v.points[1], w[1]);
    }

    // pocketllm (d 4, PCA): the axes are the leading eigenvectors of the sub-vectors' covariance;
    // the decoder's map is the projected mean of the decoded sub-vectors (in codebook units) that
    // use each codeword; the tiles' statistics are those of the codewords RLN3 normalises together.
    void pocketllmDecoderViewMatchesTheArchive()
    {
        const std::string name = "model.layers.1.mlp.up_proj.weight";
        auto r = inspectMatrix(m_pocket, name, m_model.get(), m_registry);
        QVERIFY2(bool(r), r ? "" : r.message().c_str());
        const CodebookView& v = *r->codebook;
        QCOMPARE(v.d, 4);
        QVERIFY(v.pca);
        const Payload p = readPayload(m_pocket, name);
        const int d = 4;
        const std::int64_t rows = r->rows, cols = r->cols, n = rows * cols / d;
        auto units = [&](const std::vector<float>& m) { // divide out row scales and the group scale, cut into sub-vectors
            std::vector<float> scaled(m), sub(m.size());
            for (std::int64_t row = 0; row < rows; ++row)
                for (std::int64_t c = 0; c < cols; ++c)
                    scaled[row * cols + c] /= p.rowScales[row] * p.scale;
            toSubvectors(scaled.data(), rows, cols, d, sub.data());
            return sub;
        };
        const std::vector<float> orig = units(floatsOf(*m_model, name));
        auto decodedModel = openArchiveCheckpoint(m_pocket, m_registry);
        const std::vector<float> dec = units(floatsOf(**decodedModel, name));
        // Axes: unit length, orthogonal, eigenvectors of the covariance with the explained shares.
        std::vector<double> mean(d, 0), cov(d * d, 0);
        for (std::int64_t i = 0; i < n; ++i) for (int j = 0; j < d; ++j) mean[j] += orig[i * d + j] / double(n);
        for (std::int64_t i = 0; i < n; ++i)
            for (int a = 0; a < d; ++a) for (int b = 0; b < d; ++b) cov[a * d + b] += (orig[i * d + a] - mean[a]) * (orig[i * d + b] - mean[b]);
        double trace = 0;
        for (int a = 0; a < d; ++a) trace += cov[a * d + a];
        for (int ax = 0; ax < 2; ++ax) {
            const double lambda = v.explained[ax] * trace;
            for (int a = 0; a < d; ++a) {
                double cv = 0;
                for (int b = 0; b < d; ++b) cv += cov[a * d + b] * v.axes[ax * d + b];
                QVERIFY2(std::abs(cv - lambda * v.axes[ax * d + a]) < 1e-6 * trace, qPrintable(QString("axis %1").arg(ax)));
            }
        }
        QVERIFY(v.explained[0] >= v.explained[1] && v.explained[0] + v.explained[1] <= 1 + 1e-9);
        auto proj = [&](const double* s, int ax) {
            double x = 0;
            for (int j = 0; j < d; ++j) x += (s[j] - v.center[j]) * v.axes[ax * d + j];
            return x;
        };
        // The decoder's map, codeword by codeword; the codewords themselves on the same axes.
        std::vector<double> sums(64 * d, 0), counts(64, 0);
        for (std::int64_t i = 0; i < n; ++i) {
            counts[p.codes[i]] += 1;
            for (int j = 0; j < d; ++j) sums[p.codes[i] * d + j] += dec[i * d + j];
        }
        for (int k = 0; k < 64; ++k) {
            QCOMPARE(double(v.usage[k]), counts[k]);
            double cw[4];
            for (int j = 0; j < d; ++j) cw[j] = p.codebook[k * d + j];
            QVERIFY(std::abs(v.codebook[2 * k] - proj(cw, 0)) < 1e-5 && std::abs(v.codebook[2 * k + 1] - proj(cw, 1)) < 1e-5);
            if (counts[k] == 0) {
                QVERIFY(std::isnan(v.decodedCodewords[2 * k]));
                continue;
            }
            double m[4];
            for (int j = 0; j < d; ++j) m[j] = sums[k * d + j] / counts[k];
            QVERIFY2(std::abs(v.decodedCodewords[2 * k] - proj(m, 0)) < 1e-4 && std::abs(v.decodedCodewords[2 * k + 1] - proj(m, 1)) < 1e-4,
                     qPrintable(QString("codeword %1").arg(k)));
        }
        // RLN tiles: G consecutive codes' latents.
        const int g = p.meta["rln_group"];
        QCOMPARE(v.rlnGroup, g);
        QCOMPARE(std::int64_t(v.tileMean.size()), n / g);
        for (std::int64_t t : {std::int64_t(0), n / g - 1}) {
            double s = 0, s2 = 0;
            for (std::int64_t i = t * g; i < (t + 1) * g; ++i)
                for (int j = 0; j < d; ++j) {
                    const double q = p.codebook[p.codes[i] * d + j];
                    s += q;
                    s2 += q * q;
                }
            const double m = s / (g * d);
            QVERIFY(std::abs(v.tileMean[t] - m) < 1e-5);
            QVERIFY(std::abs(v.tileStd[t] - std::sqrt(s2 / (g * d) - m * m)) < 1e-4);
        }
    }

    void withoutACodebookOrTheOriginal()
    {
        auto r = inspectMatrix(m_rtn, "model.layers.0.self_attn.v_proj.weight", nullptr, m_registry);
        QVERIFY2(bool(r), r ? "" : r.message().c_str());
        QVERIFY(!r->codebook.has_value());
        QVERIFY(!r->hasOriginal && r->error.mean.empty() && r->histogram.original.empty());
        QVERIFY(QString::fromStdString(r->note).contains("stories260K"));
        double total = 0;
        for (double c : r->histogram.decoded) total += c;
        QCOMPARE(total, 32.0 * 64);
        // A model that is not the original: no error map, a note that says so.
        auto llama = ShapeOnly(llama2_7b());
        auto other = inspectMatrix(m_rtn, "model.layers.0.self_attn.v_proj.weight", &llama, m_registry);
        QVERIFY(bool(other) && !other->hasOriginal);
        QVERIFY(QString::fromStdString(other->note).contains("not this archive's original"));
        // Errors name the archive or the matrix.
        auto missing = inspectMatrix(m_rtn, "model.layers.9.mlp.up_proj.weight", nullptr, m_registry);
        QVERIFY(!missing && QString::fromStdString(missing.message()).contains("rtn.pllm"));
        const auto bytes = testsupport::readBytes(m_rtn);
        const std::string cut = m_tmp.filePath("cut.pllm").toStdString();
        testsupport::writeBytes(cut, bytes.data(), bytes.size() / 2);
        auto truncated = inspectMatrix(cut, "model.layers.0.self_attn.v_proj.weight", nullptr, m_registry);
        QVERIFY(!truncated && QString::fromStdString(truncated.message()).contains("cut.pllm"));
        auto names = archiveMatrixNames(m_rtn);
        QVERIFY(names && names->size() == 14);
    }

    // The demo model with the paper's per-matrix defaults: warnings, and a suggestion that shares one
    // network and shrinks K until the overhead is under a tenth; a 7B model keeps the paper's setting.
    void suggestionsFitTheModel()
    {
        auto method = m_registry.find("pocketllm");
        QVERIFY(bool(method));
        CompressJobParams p;
        p.modelPath = testsupport::demoModel();
        p.methodId = "pocketllm";
        auto plan = planCompressJob(p, *m_model, **method);
        QVERIFY(bool(plan));
        const PlanCheck before = checkPlan(*plan, *m_model);
        QCOMPARE(before.warnings.size(), std::size_t(2));
        QVERIFY(QString::fromStdString(before.warnings[0]).contains("more than fp16's 16"));
        QVERIFY(QString::fromStdString(before.warnings[1]).contains("larger than the model"));
        QVERIFY(before.overhead > 10);
        auto s = suggestSettings(p, *m_model, **method);
        QVERIFY2(bool(s), s ? "" : s.message().c_str());
        QVERIFY(s->changed);
        QCOMPARE(s->changes, (std::vector<std::string>{"sharing=model", "K=512"}));
        QVERIFY(s->overhead <= 0.1);
        p.settings = s->settings;
        auto after = planCompressJob(p, *m_model, **method);
        QVERIFY(checkPlan(*after, *m_model).warnings.empty());
        QVERIFY(std::abs(after->estimatedBits.bpwCompressed() - s->bpwCompressed) < 1e-12);
        // One step larger (K 1024) would not fit: the suggestion is the largest codebook that does.
        p.settings.push_back("K=1024");
        QVERIFY(checkPlan(*planCompressJob(p, *m_model, **method), *m_model).overhead > 0.1);

        const ShapeOnly llama(llama2_7b());
        CompressJobParams big;
        big.methodId = "pocketllm";
        auto paper = suggestSettings(big, llama, **method);
        QVERIFY2(bool(paper), paper ? "" : paper.message().c_str());
        QVERIFY(!paper->changed);
        QVERIFY(paper->overhead < 0.1);
        QVERIFY(checkPlan(*planCompressJob(big, llama, **method), llama).warnings.empty());
        // Methods without codebooks have nothing to suggest.
        CompressJobParams rtn;
        rtn.methodId = "rtn";
        auto none = suggestSettings(rtn, *m_model, **m_registry.find("rtn"));
        QVERIFY(none && !none->changed && none->overhead == 0);
    }
};

QTEST_GUILESS_MAIN(TestInspect)
#include "test_inspect.moc"
