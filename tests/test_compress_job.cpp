// Compression jobs end to end: planning, the work folder and resume (including a process killed
// with SIGKILL mid-run), cancel, the archive's bit accounting against its real section sizes,
// reading an archive as a checkpoint, and decompression to a Hugging Face folder.
#include "pocket/archive/model_archive.h"
#include "pocket/archive/archive_checkpoint.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/io/hf_writer.h"
#include "pocket/model/llama_model.h"
#include "pocket/io/text.h"
#include "pocket/methods/method_registry.h"
#include "fake_method.h"
#include "test_support.h"

#include <QDir>
#include <QElapsedTimer>
#include <QProcess>
#include <QThread>
#include <QTemporaryDir>

#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <set>

using namespace pocket;
namespace fs = std::filesystem;

namespace {

ModelConfig smallConfig()
{
    ModelConfig c;
    c.hiddenSize = 32;
    c.intermediateSize = 48;
    c.numLayers = 3;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 8;
    c.vocabSize = 512; // the demo tokenizer's vocabulary
    c.maxPositions = 64;
    c.attentionBias = true;
    return c;
}

std::string writeSmallModel(const QTemporaryDir& dir)
{
    const std::string path = dir.filePath("model").toStdString();
    HfWriteOptions options;
    options.dtype = DType::BF16;
    options.tokenizerPath = testsupport::demoTokenizer();
    const Status status = writeRandomCheckpoint(smallConfig(), 5, path, options);
    if (!status)
        qFatal("%s", status.message().c_str());
    return path;
}

struct Fixture {
    MethodRegistry registry;
    testsupport::FakeQuantMethod* fake = nullptr;
    Fixture()
    {
        auto method = std::make_unique<testsupport::FakeQuantMethod>();
        fake = method.get();
        (void)registry.addBuiltin(std::move(method));
    }
};

CompressJobParams params(const std::string& model, const std::string& out, std::vector<std::string> settings = {})
{
    CompressJobParams p;
    p.modelPath = model;
    p.methodId = "fakequant";
    p.settings = std::move(settings);
    p.outPath = out;
    return p;
}

std::vector<float> valuesOf(const Checkpoint& ckpt, const std::string& name)
{
    auto data = ckpt.load(name);
    if (!data)
        qFatal("%s", data.message().c_str());
    return data->toFloat();
}

// A weight given as fixed values through the compressed-weight interface (decoded at each use).
class FixedMatrix final : public CompressedMatrix {
public:
    explicit FixedMatrix(std::vector<float> values) : m_values(std::move(values)) {}
    std::uint64_t bytes() const override { return m_values.size() * sizeof(float); }
    Status decodeInto(float* out, int) const override
    {
        std::copy(m_values.begin(), m_values.end(), out);
        return {};
    }
    std::string speedClass() const override { return "fixed"; }

private:
    std::vector<float> m_values;
};

int countGroupFiles(const std::string& workDir)
{
    int n = 0;
    std::error_code ec;
    for (const auto& item : fs::directory_iterator(workDir, ec))
        n += item.path().filename().string().rfind("group-", 0) == 0 ? 1 : 0;
    return n;
}

} // namespace

class TestCompressJob : public QObject {
    Q_OBJECT
    QTemporaryDir m_dataDir;

private Q_SLOTS:
    // The CLI runs below record into the experiment store: outside CTest (which sets
    // POCKETLLM_DATA_DIR per test) they must not reach the user's own store.
    void initTestCase()
    {
        if (qEnvironmentVariableIsEmpty("POCKETLLM_DATA_DIR"))
            qputenv("POCKETLLM_DATA_DIR", m_dataDir.path().toUtf8());
        qunsetenv("POCKETLLM_STORE");
    }

    void planCountsBitsBeforeAnyWork()
    {
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        Fixture f;
        auto ckpt = openCheckpoint(model);
        QVERIFY(ckpt.ok());
        auto p = params(model, dir.filePath("a.pllm").toStdString(), {"bits=3"});
        p.selection.types = {MatrixType::Q, MatrixType::Down};
        auto plan = planCompressJob(p, **ckpt, *f.fake);
        QVERIFY2(plan.ok(), plan.ok() ? "" : plan.message().c_str());
        QCOMPARE(plan->groups.size(), std::size_t{6});
        QCOMPARE(plan->groupIds[0], std::string("model.layers.0.self_attn.q_proj.weight"));
        const std::uint64_t weights = 3 * (32 * 32 + 32 * 48);
        QCOMPARE(plan->estimatedBits.compressedWeights, weights);
        QCOMPARE(plan->estimatedBits.compressed.indexBits, 3 * weights);
        QCOMPARE(plan->estimatedBits.compressed.scaleBits, std::uint64_t{6 * 16});
        QCOMPARE(plan->estimatedBits.totalWeights, static_cast<std::uint64_t>(smallConfig().parameterCount()));
        QCOMPARE(plan->estimatedBits.uncompressedBits, 16 * (plan->estimatedBits.totalWeights - weights));
        QCOMPARE(f.fake->compressCalls, 0);
    }

    // A bit allocation's per-matrix settings: each matrix is compressed with its own settings
    // (the archive's groups carry them, decoding follows them), shared groups are split by
    // settings, the bits add up, and an override for a matrix outside the selection is refused.
    void perMatrixSettingsOverrideTheBase()
    {
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        Fixture f;
        auto ckpt = openCheckpoint(model);
        QVERIFY(ckpt.ok());
        auto p = params(model, dir.filePath("mixed.pllm").toStdString(), {"bits=3", "sharing=model"});
        p.selection.types = {MatrixType::Q, MatrixType::Down};
        const std::string q1 = "model.layers.1.self_attn.q_proj.weight", d2 = "model.layers.2.mlp.down_proj.weight";
        p.matrixSettings[q1] = {"bits=6"};
        p.matrixSettings[d2] = {"bits=6"};
        auto plan = planCompressJob(p, **ckpt, *f.fake);
        QVERIFY2(plan.ok(), plan.ok() ? "" : plan.message().c_str());
        QCOMPARE(plan->groups.size(), std::size_t{2}); // one shared group per distinct setting
        std::set<std::string> ids(plan->groupIds.begin(), plan->groupIds.end());
        QCOMPARE(ids.size(), std::size_t{2});
        const std::uint64_t all = 3 * (32 * 32 + 32 * 48), six = 32 * 32 + 32 * 48;
        QCOMPARE(plan->estimatedBits.compressed.indexBits, 3 * (all - six) + 6 * six);

        p.entropy.mode = EntropyMode::None; // the method's own accounting, codes at their fixed width
        auto result = runCompressJob(p, f.registry);
        QVERIFY2(result.ok(), result.ok() ? "" : result.message().c_str());
        QCOMPARE(result->bits.compressed.indexBits, 3 * (all - six) + 6 * six);
        auto archive = Archive::open(p.outPath);
        QVERIFY(archive.ok());
        int sixBitGroups = 0;
        for (const ArchiveGroup& g : (*archive)->manifest().groups) {
            const auto params = nlohmann::json::parse(g.payload.paramsJson);
            const bool six = params["bits"] == 6;
            sixBitGroups += six;
            for (const MatrixResult& m : g.payload.matrices)
                QCOMPARE(m.ref.name == q1 || m.ref.name == d2, six);
        }
        QCOMPARE(sixBitGroups, 1);
        // Decoding follows each group's own settings: the 6-bit matrices are closer to the original.
        auto decoded = openArchiveCheckpoint(p.outPath, f.registry);
        QVERIFY(decoded.ok());
        const auto error = [&](const std::string& name) {
            const auto a = valuesOf(**ckpt, name), b = valuesOf(**decoded, name);
            double e = 0;
            for (std::size_t i = 0; i < a.size(); ++i)
                e += (a[i] - b[i]) * (a[i] - b[i]);
            return e / a.size();
        };
        QVERIFY(error(q1) < error("model.layers.0.self_attn.q_proj.weight") / 4);

        // The overrides are part of the job's identity: a resume with other overrides is refused.
        auto q = p;
        q.outPath = dir.filePath("other.pllm").toStdString();
        q.keepWorkDir = true;
        QVERIFY(runCompressJob(q, f.registry).ok());
        q.resume = true;
        q.matrixSettings[q1] = {"bits=5"};
        auto refused = runCompressJob(q, f.registry);
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("different job") != std::string::npos, refused.message().c_str());

        auto bad = p;
        bad.matrixSettings["model.layers.0.mlp.up_proj.weight"] = {"bits=2"}; // not selected
        auto badPlan = planCompressJob(bad, **ckpt, *f.fake);
        QVERIFY(!badPlan.ok());
        QVERIFY2(badPlan.message().find("up_proj") != std::string::npos, badPlan.message().c_str());
        bad = p;
        bad.matrixSettings[q1] = {"bits=99"};
        QVERIFY(!planCompressJob(bad, **ckpt, *f.fake).ok());
    }

    void badJobsAreRefusedUpFront_data()
    {
        QTest::addColumn<QString>("setting");
        QTest::addColumn<QString>("expected");
        QTest::addColumn<int>("kind");
        const int usage = int(ErrorKind::Usage), input = int(ErrorKind::Input);
        QTest::newRow("unknown method") << "method=gptqq" << "unknown method 'gptqq'" << usage;
        QTest::newRow("bad parameter") << "bits=12" << "fakequant: parameter 'bits': 12 is out of range" << usage;
        QTest::newRow("unknown parameter") << "K=12" << "unknown parameter 'K'" << usage;
        QTest::newRow("selection empty") << "include=nothing-matches" << "the layer selection matches no matrix" << usage;
        QTest::newRow("block past end") << "blocks=7" << "block 7 is past the model's last block 2" << usage;
        QTest::newRow("no output folder") << "out=/nonexistent/dir/a.pllm" << "/nonexistent/dir/a.pllm: the folder /nonexistent/dir does not exist" << input;
        QTest::newRow("missing model") << "model=/nonexistent/model" << "/nonexistent/model" << input;
        QTest::newRow("keep dtype") << "keep=i8" << "keep dtype: uncompressed tensors can be kept as f16, bf16 or f32" << usage;
    }
    void badJobsAreRefusedUpFront()
    {
        QFETCH(QString, setting);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        Fixture f;
        auto p = params(model, dir.filePath("a.pllm").toStdString());
        const std::string key = setting.section('=', 0, 0).toStdString(), value = setting.section('=', 1).toStdString();
        if (key == "method") p.methodId = value;
        else if (key == "include") p.selection.include = value;
        else if (key == "blocks") p.selection.blocks = {{std::stoi(value), std::stoi(value)}};
        else if (key == "out") p.outPath = value;
        else if (key == "model") p.modelPath = value;
        else if (key == "keep") p.keepDtype = DType::I8;
        else p.settings = {setting.toStdString()};
        auto result = runCompressJob(p, f.registry);
        QVERIFY(!result.ok());
        QVERIFY2(result.message().find(expected.toStdString()) != std::string::npos, result.message().c_str());
        QFETCH(int, kind);
        QCOMPARE(int(result.kind()), kind);
        QVERIFY2(result.message().find("--") == std::string::npos, result.message().c_str()); // core names no CLI flags
        QCOMPARE(f.fake->compressCalls, 0);
        QVERIFY(!fs::exists(p.outPath));
    }

    void archiveHoldsWhatTheMethodProducedAndAccountsEveryBit()
    {
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        Fixture f;
        const std::string out = dir.filePath("a.pllm").toStdString();
        auto p = params(model, out, {"bits=5"});
        p.selection.skipFirst = 1; // block 0 stays uncompressed
        auto result = runCompressJob(p, f.registry);
        QVERIFY2(result.ok(), result.ok() ? "" : result.message().c_str());
        QCOMPARE(result->groups.size(), std::size_t{14});
        QVERIFY(!fs::exists(out + ".work")); // removed after success

        auto archive = Archive::open(out);
        QVERIFY2(archive.ok(), archive.ok() ? "" : archive.message().c_str());
        const ArchiveManifest& m = (*archive)->manifest();
        QCOMPARE(m.tokenizerKind, std::string("llama2c"));
        QCOMPARE(*(*archive)->tokenizerBytes(), testsupport::readBytes(testsupport::demoTokenizer()));

        // The accounting against the sections really in the file.
        const ArchiveBits bits = accountBits(m);
        std::uint64_t sectionBits = 0;
        for (const ArchiveGroup& g : m.groups) {
            std::uint64_t groupBytes = 0;
            for (const std::string& name : g.sectionNames)
                groupBytes += (*archive)->container().find(name)->size;
            // Each packed section rounds up to whole bytes: fewer than 8 bits per section.
            const std::uint64_t accounted = g.payload.totalBits().total();
            QVERIFY(groupBytes * 8 >= accounted);
            QVERIFY(groupBytes * 8 - accounted < 8 * g.sectionNames.size());
            sectionBits += accounted;
        }
        QCOMPARE(bits.compressed.total(), sectionBits);
        std::uint64_t storedBytes = 0;
        for (const ArchiveTensor& t : m.tensors)
            storedBytes += (*archive)->container().find(t.section)->size;
        QCOMPARE(bits.uncompressedBits, storedBytes * 8);
        QCOMPARE(bits.totalWeights, static_cast<std::uint64_t>(smallConfig().parameterCount()));
        QCOMPARE(bits.bpwCompressed(), static_cast<double>(bits.compressed.total()) / bits.compressedWeights);
        QCOMPARE(bits.ratioFp16(), 16.0 * bits.totalWeights / bits.totalBits());
        QCOMPARE(result->bits.totalBits(), bits.totalBits());

        // Read back as a checkpoint: compressed matrices decode to the fake's quantisation of the
        // original, the rest are the originals rounded to fp16.
        auto original = openCheckpoint(model);
        auto decoded = openArchiveCheckpoint(out, f.registry);
        QVERIFY2(decoded.ok(), decoded.ok() ? "" : decoded.message().c_str());
        QVERIFY(!(*decoded)->tokenizerPath().empty());
        QCOMPARE(testsupport::readBytes((*decoded)->tokenizerPath()), testsupport::readBytes(testsupport::demoTokenizer()));
        std::set<std::string> compressed;
        for (const auto& g : result->groups)
            for (const auto& r : g.matrices)
                compressed.insert(r.ref.name);
        QVERIFY(!compressed.count(matrixTensorName(0, MatrixType::Q)));
        QVERIFY(compressed.count(matrixTensorName(1, MatrixType::Q)));
        for (const TensorInfo& t : (*original)->tensors()) {
            const std::vector<float> w = valuesOf(**original, t.name);
            const std::vector<float> got = valuesOf(**decoded, t.name);
            QCOMPARE(got.size(), w.size());
            if (!compressed.count(t.name)) {
                for (std::size_t i = 0; i < w.size(); ++i)
                    QCOMPARE(got[i], halfToFloat(floatToHalf(w[i])));
                continue;
            }
            // Error of 5-bit symmetric quantisation: at most half a step (plus fp16 rounding).
            float maxAbs = 0;
            for (float v : w)
                maxAbs = std::max(maxAbs, std::fabs(v));
            const float step = maxAbs / 15;
            for (std::size_t i = 0; i < w.size(); ++i)
                QVERIFY2(std::fabs(got[i] - w[i]) <= 0.51f * step + 1e-3f * std::fabs(w[i]), t.name.c_str());
        }
    }

    void decompressWritesExactlyTheDecodedWeights()
    {
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        Fixture f;
        const std::string out = dir.filePath("a.pllm").toStdString();
        QVERIFY(runCompressJob(params(model, out, {"sharing=model"}), f.registry).ok());
        auto decoded = openArchiveCheckpoint(out, f.registry);
        QVERIFY(decoded.ok());
        for (DType dtype : {DType::F16, DType::F32}) {
            const std::string folder = dir.filePath(dtype == DType::F16 ? "hf16" : "hf32").toStdString();
            HfWriteOptions options;
            options.dtype = dtype;
            const Status status = decompressArchive(out, f.registry, folder, options);
            QVERIFY2(status.ok(), status.ok() ? "" : status.message().c_str());
            QVERIFY(fs::exists(folder + "/config.json"));
            QVERIFY(fs::exists(folder + "/tokenizer.bin"));
            auto written = openCheckpoint(folder);
            QVERIFY2(written.ok(), written.ok() ? "" : written.message().c_str());
            QCOMPARE((*written)->tensors().size(), (*decoded)->tensors().size());
            for (const TensorInfo& t : (*written)->tensors())
                QVERIFY2(valuesOf(**written, t.name) == valuesOf(**decoded, t.name), t.name.c_str());
        }
    }

    void cancelledRunResumesToTheSameArchive()
    {
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        const std::string reference = dir.filePath("ref.pllm").toStdString();
        {
            Fixture f;
            QVERIFY(runCompressJob(params(model, reference), f.registry).ok());
        }
        const std::string out = dir.filePath("a.pllm").toStdString();
        Fixture f;
        int calls = 0;
        auto cancelled = runCompressJob(params(model, out), f.registry, nullptr, [&](const JobProgress& p) {
            return p.groupIndex < 5 || ++calls < 1; // stop during the sixth group
        });
        QVERIFY(!cancelled.ok());
        QCOMPARE(cancelled.message(), std::string("cancelled"));
        QCOMPARE(cancelled.kind(), ErrorKind::Cancelled);
        QVERIFY(!fs::exists(out));
        QCOMPARE(countGroupFiles(out + ".work"), 5);

        // Without --resume the leftover work folder is not silently reused or overwritten.
        auto refused = runCompressJob(params(model, out), f.registry);
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("a work folder from an earlier run exists") != std::string::npos, refused.message().c_str());
        QCOMPARE(refused.kind(), ErrorKind::Usage);
        QCOMPARE(refused.error().setting, std::string("resume"));

        // A different job may not take over the work folder.
        auto other = params(model, out, {"bits=3"});
        other.resume = true;
        auto mismatch = runCompressJob(other, f.registry);
        QVERIFY(!mismatch.ok());
        QVERIFY2(mismatch.message().find("belongs to a different job (params differs)") != std::string::npos, mismatch.message().c_str());

        // A damaged group file is compressed again.
        const std::string damaged = out + ".work/group-00002.pllm";
        auto bytes = testsupport::readBytes(damaged);
        bytes[bytes.size() / 2] ^= 0x40;
        testsupport::writeBytes(damaged, bytes);

        auto p = params(model, out);
        p.resume = true;
        const int before = f.fake->compressCalls;
        auto resumed = runCompressJob(p, f.registry);
        QVERIFY2(resumed.ok(), resumed.ok() ? "" : resumed.message().c_str());
        QCOMPARE(resumed->groupsResumed, 4);
        QCOMPARE(f.fake->compressCalls - before, 21 - 4);
        QCOMPARE(testsupport::readBytes(out), testsupport::readBytes(reference));
    }

    // The real thing: the CLI with the PocketLLM plugin, killed with SIGKILL once some groups are
    // on disk, then resumed; the archive must equal an uninterrupted run's byte for byte.
    void killedCliRunResumesToTheSameArchive()
    {
        QTemporaryDir dir;
        const QStringList common{"--json", "-q", "compress", QString::fromStdString(testsupport::demoModel()),
                                 "--set", "K=64", "--set", "epochs=4", "--set", "batch=512", "--threads", "1"};
        const QString reference = dir.filePath("ref.pllm");
        QProcess full;
        full.start(POCKET_CLI_PATH, QStringList(common) << "-o" << reference);
        QVERIFY(full.waitForFinished(300000));
        QCOMPARE(full.exitCode(), 0);
        const auto json = nlohmann::json::parse(full.readAllStandardOutput().toStdString());
        QCOMPARE(json["groups"].get<int>(), 35);
        QVERIFY(json["bpw_compressed"].get<double>() > 0);
        QCOMPARE(json["matrices"].size(), std::size_t{35});

        const QString out = dir.filePath("a.pllm");
        const std::string work = out.toStdString() + ".work";
        QProcess victim;
        victim.start(POCKET_CLI_PATH, QStringList(common) << "-o" << out);
        QVERIFY(victim.waitForStarted());
        QElapsedTimer timer;
        timer.start();
        while (countGroupFiles(work) < 3 && timer.elapsed() < 120000 && victim.state() == QProcess::Running)
            QThread::msleep(20);
        QCOMPARE(victim.state(), QProcess::Running);
        ::kill(static_cast<pid_t>(victim.processId()), SIGKILL);
        QVERIFY(victim.waitForFinished(10000));
        QVERIFY(!fs::exists(out.toStdString()));
        const int done = countGroupFiles(work);
        QVERIFY(done >= 3 && done < 35);

        QProcess resume;
        resume.start(POCKET_CLI_PATH, QStringList(common) << "-o" << out << "--resume");
        QVERIFY(resume.waitForFinished(300000));
        QVERIFY2(resume.exitCode() == 0, resume.readAllStandardError().constData());
        const auto resumed = nlohmann::json::parse(resume.readAllStandardOutput().toStdString());
        QVERIFY(resumed["groups_resumed"].get<int>() >= done - 1); // the last file may have been mid-rename
        QVERIFY(testsupport::readBytes(out.toStdString()) == testsupport::readBytes(reference.toStdString()));

        // The archive evaluates directly, and inspect agrees with compress on the accounting.
        QProcess inspect;
        inspect.start(POCKET_CLI_PATH, {"--json", "inspect", out});
        QVERIFY(inspect.waitForFinished(60000));
        QCOMPARE(inspect.exitCode(), 0);
        const auto info = nlohmann::json::parse(inspect.readAllStandardOutput().toStdString());
        QCOMPARE(info["bpw_all_in"].get<double>(), resumed["bpw_all_in"].get<double>());
        QCOMPARE(info["bits"]["total"].get<std::uint64_t>(), resumed["bits"]["total"].get<std::uint64_t>());
        QCOMPARE(info["tokenizer"].get<std::string>(), std::string("llama2c"));
    }

    void calibrationWindowsAreSeededAndChecked()
    {
        std::vector<std::int32_t> tokens(1000);
        for (std::size_t i = 0; i < tokens.size(); ++i)
            tokens[i] = static_cast<std::int32_t>(i);
        CalibrationParams p{"text.txt", 16, 64, 3};
        auto a = calibrationWindows(tokens, 1, p);
        auto b = calibrationWindows(tokens, 1, p);
        QVERIFY(a.ok() && b.ok());
        QCOMPARE(*a, *b);
        QCOMPARE(a->size(), std::size_t{16});
        for (const auto& w : *a) {
            QCOMPARE(w.size(), std::size_t{64});
            QCOMPARE(w[0], 1);
            for (std::size_t i = 2; i < w.size(); ++i)
                QCOMPARE(w[i], w[i - 1] + 1); // consecutive text
        }
        p.seed = 4;
        QVERIFY(*calibrationWindows(tokens, 1, p) != *a);
        p.length = 2000;
        auto tooShort = calibrationWindows(tokens, 1, p);
        QVERIFY(!tooShort.ok());
        QVERIFY2(tooShort.message().find("text.txt: too short for calibration") == 0, tooShort.message().c_str());
    }

    // Block 0's q/k/v Hessian is 2/n * sum h h^T over calibration tokens, where h is the
    // RMS-normalised embedding: checked against plain loops.
    void calibrationHessianMatchesAPlainComputation()
    {
        QTemporaryDir dir;
        const std::string modelPath = writeSmallModel(dir);
        auto ckpt = openCheckpoint(modelPath);
        auto model = LlamaModel::load(**ckpt);
        QVERIFY(model.ok());
        const std::vector<std::vector<std::int32_t>> windows{{1, 5, 9, 200, 7}, {1, 300, 2, 2, 511}};
        auto run = (*model)->startCalibration(windows);
        QVERIFY(run.ok());
        auto h = (*run)->hessians();
        QVERIFY(h.ok());
        const auto embed = valuesOf(**ckpt, "model.embed_tokens.weight");
        const auto norm = valuesOf(**ckpt, "model.layers.0.input_layernorm.weight");
        const std::size_t dim = 32;
        std::vector<double> ref(dim * dim, 0.0);
        for (const auto& w : windows)
            for (std::int32_t t : w) {
                double ms = 0;
                for (std::size_t j = 0; j < dim; ++j)
                    ms += std::pow(embed[t * dim + j], 2);
                const double inv = 1 / std::sqrt(ms / dim + smallConfig().rmsNormEps);
                std::vector<double> x(dim);
                for (std::size_t j = 0; j < dim; ++j)
                    x[j] = embed[t * dim + j] * inv * norm[j];
                for (std::size_t a = 0; a < dim; ++a)
                    for (std::size_t b = 0; b < dim; ++b)
                        ref[a * dim + b] += x[a] * x[b] * 2.0 / 10.0;
            }
        const auto& got = h->at(MatrixType::Q);
        QCOMPARE(got.size(), dim * dim);
        QCOMPARE(h->at(MatrixType::K), got);
        QCOMPARE(h->at(MatrixType::Down).size(), std::size_t{48 * 48});
        for (std::size_t i = 0; i < got.size(); ++i)
            QVERIFY2(std::fabs(got[i] - ref[i]) <= 1e-4 * std::fabs(ref[i]) + 1e-6, qPrintable(QString::number(i)));
        QCOMPARE((*run)->nextBlock(), 0);
        QVERIFY((*run)->advance().ok());
        QCOMPARE((*run)->nextBlock(), 1);
        // A changed weight in block 1 changes nothing before it, but block 1's outputs feed block 2.
        auto h1 = (*run)->hessians();
        QVERIFY((*model)->setWeight(matrixTensorName(1, MatrixType::Down), std::vector<float>(32 * 48, 0.0f)).ok());
        QVERIFY(!(*model)->setWeight(matrixTensorName(1, MatrixType::Down), std::vector<float>(3)).ok());
        QVERIFY(!(*model)->setWeight("model.embed_tokens.weight", std::vector<float>(3)).ok());
        QCOMPARE((*run)->hessians()->at(MatrixType::Q), h1->at(MatrixType::Q));

        // hessiansThenAdvance: the same Hessians as hessians(), and the same next block as advance().
        auto twoPass = (*model)->startCalibration(windows);
        auto onePass = (*model)->startCalibration(windows);
        QVERIFY(twoPass.ok() && onePass.ok());
        for (int block = 0; block < 2; ++block) {
            auto expected = (*twoPass)->hessians();
            QVERIFY((*twoPass)->advance().ok());
            auto got = (*onePass)->hessiansThenAdvance();
            QVERIFY(expected.ok() && got.ok());
            QCOMPARE((*onePass)->nextBlock(), block + 1);
            for (MatrixType t : kMatrixTypes)
                QVERIFY2(got->at(t) == expected->at(t), matrixTypeName(t));
        }
        QVERIFY((*twoPass)->hessians()->at(MatrixType::Down) == (*onePass)->hessians()->at(MatrixType::Down));
    }

    // The streamed calibration model (weights read from the map for each use) gives exactly the
    // loaded model's Hessians, block after block, with a weight replaced on the way as GPTQ's
    // sequential mode does; a released block cannot be run again.
    void streamedCalibrationModelMatchesTheLoadedOne()
    {
        QTemporaryDir dir;
        const std::string modelPath = writeSmallModel(dir);
        auto ckpt = openCheckpoint(modelPath);
        QVERIFY(ckpt.ok());
        auto loaded = LlamaModel::load(**ckpt);
        auto streamed = LlamaModel::loadStreamed(**ckpt);
        auto bySource = LlamaModel::loadStreamed(**ckpt); // changed weights given as sources, embeddings released
        QVERIFY(loaded.ok() && streamed.ok() && bySource.ok());
        auto logits = (*streamed)->logits({1, 5, 9}); // calibration only: no output head
        QVERIFY(!logits.ok());
        QVERIFY2(logits.message().find("calibration only") != std::string::npos, logits.message().c_str());
        std::vector<std::vector<std::int32_t>> windows{{1, 5, 9, 200, 7}, {1, 300, 2, 2, 511}, {1, 4, 4, 4, 4}};
        for (std::int32_t i = 0; i < 7; ++i) // 10 windows: two chunks, so a pass decodes a source once for both
            windows.push_back({1, 17 * i + 3, 101, 5 * i, 400 - i});
        auto a = (*loaded)->startCalibration(windows);
        auto b = (*streamed)->startCalibration(windows);
        auto c = (*bySource)->startCalibration(windows);
        QVERIFY(a.ok() && b.ok() && c.ok());
        (*bySource)->releaseEmbeddings();
        auto noEmbeddings = (*bySource)->startCalibration(windows);
        QVERIFY(!noEmbeddings.ok());
        QVERIFY2(noEmbeddings.message().find("embeddings were released") != std::string::npos, noEmbeddings.message().c_str());
        std::vector<float> changed(32 * 48);
        for (std::size_t i = 0; i < changed.size(); ++i)
            changed[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;
        for (int block = 0; block < 3; ++block) {
            auto ha = (*a)->hessians();
            auto hb = (*b)->hessians();
            auto hc = (*c)->hessians();
            QVERIFY(ha.ok() && hb.ok() && hc.ok());
            for (MatrixType t : kMatrixTypes) {
                QVERIFY2(ha->at(t) == hb->at(t), qPrintable(QString("block %1 %2").arg(block).arg(matrixTypeName(t))));
                QVERIFY2(ha->at(t) == hc->at(t), qPrintable(QString("source, block %1 %2").arg(block).arg(matrixTypeName(t))));
            }
            const std::string down = matrixTensorName(block, MatrixType::Down);
            QVERIFY((*loaded)->setWeight(down, changed).ok());
            QVERIFY((*streamed)->setWeight(down, changed).ok());
            QVERIFY(!(*streamed)->setWeight(down, std::vector<float>(3)).ok());
            QVERIFY((*bySource)->setWeight(down, std::make_shared<FixedMatrix>(changed), 32, 48).ok());
            auto wrongShape = (*bySource)->setWeight(down, std::make_shared<FixedMatrix>(changed), 48, 32);
            QVERIFY(!wrongShape.ok());
            QVERIFY2(wrongShape.message().find("expected 32x48, got 48x32") != std::string::npos, wrongShape.message().c_str());
            QVERIFY(!(*loaded)->setWeight(down, std::make_shared<FixedMatrix>(changed), 32, 48).ok()); // resident weights: refused
            if (block < 2) {
                QVERIFY((*a)->advance().ok() && (*b)->advance().ok() && (*c)->advance().ok());
                (*streamed)->releaseBlock(block);
                (*bySource)->releaseBlock(block);
            }
        }
        auto again = (*streamed)->startCalibration(windows);
        QVERIFY(again.ok());
        auto refused = (*again)->hessians(); // block 0 was released
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("released") != std::string::npos, refused.message().c_str());
    }

    // A finished group's payload as weights a model decodes at each use (what the calibration
    // model holds for a compressed block): the same values as the method's decode().
    void payloadMatricesDecodeAsTheMethod()
    {
        Fixture f;
        MatrixGroup group;
        group.id = "block 0";
        for (int m = 0; m < 2; ++m) {
            WeightMatrix w;
            const MatrixType type = m == 0 ? MatrixType::Q : MatrixType::Down;
            w.ref = {matrixTensorName(0, type), 0, type, 32, m == 0 ? 32 : 48};
            w.values.resize(static_cast<std::size_t>(w.ref.weights()));
            for (std::size_t i = 0; i < w.values.size(); ++i)
                w.values[i] = std::sin(0.37f * static_cast<float>(i + 11 * m));
            group.matrices.push_back(std::move(w));
        }
        auto params = ParamSet::resolve(f.fake->info().params, {"bits=3"});
        QVERIFY(params.ok());
        auto payload = f.fake->compress(group, *params, CompressContext{});
        QVERIFY2(payload.ok(), payload.ok() ? "" : payload.message().c_str());
        auto want = f.fake->decode(*payload);
        QVERIFY(want.ok());
        auto matrices = payloadMatrices(*f.fake, *payload);
        QVERIFY2(matrices.ok(), matrices.ok() ? "" : matrices.message().c_str());
        QCOMPARE(matrices->size(), std::size_t{2});
        for (std::size_t m = 0; m < 2; ++m) {
            const auto& source = matrices->at(group.matrices[m].ref.name);
            std::vector<float> got((*want)[m].size(), -7.0f);
            QVERIFY(source->decodeInto(got.data(), 1).ok());
            QVERIFY(got == (*want)[m]);
            QVERIFY(source->bytes() > 0);
        }
        GroupPayload broken = *payload; // refused when prepared or when decoded
        broken.sections.pop_back();
        auto refused = payloadMatrices(*f.fake, broken);
        std::vector<float> out(48 * 32);
        QVERIFY(!refused.ok() || !refused->at(group.matrices[1].ref.name)->decodeInto(out.data(), 1).ok());
    }

    // Tensors the archive keeps uncompressed are converted in pieces (an embedding of over a
    // million elements here) or copied as stored when already the kept type.
    void keptTensorsAreConvertedInPiecesOrCopied()
    {
        QTemporaryDir dir;
        ModelConfig config = smallConfig();
        config.vocabSize = 40000; // 1.28M embedding elements: two pieces
        const std::string model = dir.filePath("wide").toStdString();
        HfWriteOptions options;
        options.dtype = DType::F32;
        QVERIFY(writeRandomCheckpoint(config, 3, model, options).ok());
        auto original = openCheckpoint(model);
        QVERIFY(original.ok());
        Fixture f;
        for (DType keep : {DType::F16, DType::BF16, DType::F32}) {
            const std::string out = dir.filePath(QString("k%1.pllm").arg(static_cast<int>(keep))).toStdString();
            auto p = params(model, out, {"bits=4"});
            p.keepDtype = keep;
            auto result = runCompressJob(p, f.registry);
            QVERIFY2(result.ok(), result.ok() ? "" : result.message().c_str());
            auto archive = Archive::open(out);
            QVERIFY(archive.ok());
            for (const std::string name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}) {
                const std::vector<float> w = valuesOf(**original, name);
                std::vector<std::uint8_t> want(w.size() * dtypeSize(keep));
                convertFromFloat(w.data(), w.size(), keep, want.data());
                const auto* section = (*archive)->container().find("tensor/" + name);
                QVERIFY2(section, name.c_str());
                QCOMPARE(section->size, static_cast<std::uint64_t>(want.size()));
                auto bytes = (*archive)->container().section("tensor/" + name);
                QVERIFY(bytes.ok());
                QVERIFY2(std::memcmp(bytes->data, want.data(), want.size()) == 0, name.c_str());
            }
        }
    }

    void calibratedJobsResumeToTheSameArchive()
    {
        QTemporaryDir dir;
        const std::string model = writeSmallModel(dir);
        const std::string text = POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt";
        const auto job = [&](const std::string& out, MethodRegistry& registry, const std::function<bool(const JobProgress&)>& onProgress) {
            CompressJobParams p = params(model, out, {"bits=3"});
            p.methodId = "fakecal";
            p.calibration = {text, 8, 32, 5};
            p.resume = true;
            return runCompressJob(p, registry, nullptr, onProgress);
        };
        MethodRegistry full;
        auto fake = std::make_unique<testsupport::FakeQuantMethod>("fakecal", true);
        auto* fullMethod = fake.get();
        QVERIFY(full.addBuiltin(std::move(fake)).ok());
        const std::string reference = dir.filePath("ref.pllm").toStdString();
        auto r = job(reference, full, {});
        QVERIFY2(r.ok(), r.ok() ? "" : r.message().c_str());
        QCOMPARE(fullMethod->hessianTraces.size(), std::size_t{21});
        // Every matrix got its block's Hessian, positive definite enough to have a positive trace.
        for (double t : fullMethod->hessianTraces)
            QVERIFY(t > 0);

        MethodRegistry partial;
        QVERIFY(partial.addBuiltin(std::make_unique<testsupport::FakeQuantMethod>("fakecal", true)).ok());
        const std::string out = dir.filePath("a.pllm").toStdString();
        auto cancelled = job(out, partial, [](const JobProgress& p) { return p.groupIndex < 10; });
        QVERIFY(!cancelled.ok());
        auto resumed = job(out, partial, {});
        QVERIFY2(resumed.ok(), resumed.ok() ? "" : resumed.message().c_str());
        QCOMPARE(resumed->groupsResumed, 10);
        QCOMPARE(testsupport::readBytes(out), testsupport::readBytes(reference));

        // Without calibration text the job is refused before any work.
        CompressJobParams missing = params(model, dir.filePath("b.pllm").toStdString());
        missing.methodId = "fakecal";
        auto refused = runCompressJob(missing, partial);
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("calibration text is needed by method 'fakecal'") != std::string::npos, refused.message().c_str());
        QCOMPARE(refused.kind(), ErrorKind::Usage);
        QCOMPARE(refused.error().setting, std::string("calibration text"));
        QVERIFY(!fs::exists(missing.outPath + ".work"));

        // A run that fails before finishing any group leaves no work folder behind (no --resume owed).
        CompressJobParams badText = params(model, dir.filePath("c.pllm").toStdString());
        badText.methodId = "fakecal";
        const std::string shortText = dir.filePath("short.txt").toStdString();
        testsupport::writeText(shortText, "Once upon a time.");
        badText.calibration = {shortText, 8, 64, 5};
        auto tooShort = runCompressJob(badText, partial);
        QVERIFY(!tooShort.ok());
        QVERIFY2(tooShort.message().find("too short for calibration") != std::string::npos, tooShort.message().c_str());
        QVERIFY(!fs::exists(badText.outPath + ".work"));
        Fixture plain;
        int calls = 0;
        auto cancelledEarly = runCompressJob(params(model, dir.filePath("d.pllm").toStdString()), plain.registry, nullptr, [&](const JobProgress&) {
            return ++calls < 1;
        });
        QVERIFY(!cancelledEarly.ok());
        QVERIFY(!fs::exists(dir.filePath("d.pllm.work").toStdString()));
    }

    void cliRefusesBadInputWithExitCodes_data()
    {
        QTest::addColumn<QStringList>("args");
        QTest::addColumn<int>("exitCode");
        QTest::addColumn<QString>("expected");
        const QString model = QString::fromStdString(testsupport::demoModel());
        QTest::newRow("parameter out of range") << QStringList{"compress", model, "-o", "x.pllm", "--set", "K=1"} << 2
                                                << "parameter 'K': 1 is out of range";
        QTest::newRow("unknown parameter") << QStringList{"compress", model, "-o", "x.pllm", "--set", "k=4"} << 2 << "unknown parameter 'k'";
        QTest::newRow("unknown method") << QStringList{"compress", model, "-o", "x.pllm", "--method", "awq"} << 2 << "unknown method 'awq'";
        QTest::newRow("bad blocks") << QStringList{"compress", model, "-o", "x.pllm", "--blocks", "3-1"} << 2 << "--blocks";
        QTest::newRow("bad keep dtype") << QStringList{"compress", model, "-o", "x.pllm", "--keep-dtype", "q4"} << 2 << "--keep-dtype";
        QTest::newRow("missing model") << QStringList{"compress", "/nonexistent.bin", "-o", "x.pllm"} << 1 << "/nonexistent.bin";
        // Core names settings in words; the CLI puts its flags back (Error::setting).
        QTest::newRow("block past the end") << QStringList{"compress", model, "-o", "x.pllm", "--blocks", "99"} << 2
                                            << "--blocks: block 99 is past the model's last block 4";
        QTest::newRow("no calibration text") << QStringList{"compress", model, "-o", "x.pllm", "--method", "gptq"} << 2
                                             << "--calib-text is needed by method 'gptq'";
        QTest::newRow("work folder exists") << QStringList{"compress", model, "-o", "x.pllm", "--method", "rtn"} << 2
                                            << "x.pllm.work: a work folder from an earlier run exists; resume it, or delete it (--resume)";
        QTest::newRow("empty selection") << QStringList{"compress", model, "-o", "x.pllm", "--include", "nothing-matches"} << 2
                                         << "the layer selection matches no matrix";
        QTest::newRow("stride past ctx") << QStringList{"eval", model, "--text", POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt", "--ctx",
                                                        "64", "--stride", "64"}
                                         << 2 << "--stride 64 must not exceed ctx - 1 = 63";
        QTest::newRow("inspect a model") << QStringList{"inspect", model} << 1 << model + ": not a .pllm archive";
        QTest::newRow("decompress a model") << QStringList{"decompress", model, "-o", "out"} << 1 << model + ": not a .pllm archive";
        QTest::newRow("eval a text file") << QStringList{"eval", POCKET_RESOURCES_DIR "/README.md", "--text", POCKET_RESOURCES_DIR "/README.md"}
                                          << 1 << "README.md";
    }
    void cliRefusesBadInputWithExitCodes()
    {
        QFETCH(QStringList, args);
        QFETCH(int, exitCode);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const bool leftover = QTest::currentDataTag() == QLatin1String("work folder exists");
        if (leftover) // an interrupted run's folder, which a new run must not take over or delete
            QVERIFY(QDir(dir.path()).mkpath(QStringLiteral("x.pllm.work")));
        QProcess cli;
        cli.setWorkingDirectory(dir.path());
        cli.start(POCKET_CLI_PATH, QStringList{"--json", "-q"} << args);
        QVERIFY(cli.waitForFinished(60000));
        QCOMPARE(cli.exitCode(), exitCode);
        const auto json = nlohmann::json::parse(cli.readAllStandardOutput().toStdString());
        const std::string error = json["error"];
        QVERIFY2(error.find(expected.toStdString()) != std::string::npos, error.c_str());
        QVERIFY(!QFileInfo::exists(dir.filePath("x.pllm")));
        QCOMPARE(QFileInfo(dir.filePath("x.pllm.work")).isDir(), leftover);
    }
};

QTEST_APPLESS_MAIN(TestCompressJob)
#include "test_compress_job.moc"
