// LoRA recovery: the gradient through our forward pass against central finite differences (NLL and
// KL objectives), training lowers its objective, adapters in an archive (format 3) reopen and
// evaluate identically under any memory budget, are counted in its bits, survive a repack, merge
// into decompressed and GGUF-exported weights, and are refused by name where they do not fit.
#include "pocket/archive/archive_checkpoint.h"
#include "pocket/archive/archive_gguf.h"
#include "pocket/archive/archive_gptq.h"
#include "pocket/archive/lossless.h"
#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/jobs/recover_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/llama_model.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <random>

using namespace pocket;

namespace {

ModelConfig tinyConfig()
{
    ModelConfig c;
    c.architecture = "LlamaForCausalLM";
    c.modelType = "llama";
    c.hiddenSize = 32;
    c.intermediateSize = 48;
    c.numLayers = 2;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 8;
    c.vocabSize = 512;
    c.maxPositions = 64;
    return c;
}

std::vector<std::vector<std::int32_t>> randomSequences(int count, int length, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(count));
    for (auto& s : out) {
        s.push_back(1);
        for (int i = 1; i < length; ++i) s.push_back(static_cast<std::int32_t>(3 + rng() % 500));
    }
    return out;
}

// Random adapters (B not zero, so that every value has a gradient) on some matrices.
std::vector<LoraAdapter> randomAdapters(const ModelConfig& c, int rank, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.3f);
    std::vector<LoraAdapter> out;
    for (const auto& [layer, type] : std::vector<std::pair<int, MatrixType>>{{0, MatrixType::Q}, {0, MatrixType::Down}, {1, MatrixType::V}, {1, MatrixType::Up}}) {
        LoraAdapter a;
        a.name = matrixTensorName(layer, type);
        const bool mlp = type == MatrixType::Up || type == MatrixType::Gate;
        a.rows = type == MatrixType::Down ? c.hiddenSize : mlp ? c.intermediateSize : type == MatrixType::V ? c.numKvHeads * c.headDim : c.hiddenSize;
        a.cols = type == MatrixType::Down ? c.intermediateSize : c.hiddenSize;
        a.rank = rank;
        a.alpha = 2.0f * static_cast<float>(rank);
        a.a.resize(static_cast<std::size_t>(a.rank * a.cols));
        a.b.resize(static_cast<std::size_t>(a.rows * a.rank));
        for (float& v : a.a) v = normal(rng);
        for (float& v : a.b) v = normal(rng);
        out.push_back(std::move(a));
    }
    return out;
}

std::vector<float> logitsOf(const LlamaModel& model, const std::vector<std::int32_t>& tokens)
{
    auto l = model.logits(tokens);
    if (!l)
        qFatal("%s", l.message().c_str());
    return *l;
}

float maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b)
{
    float m = a.size() == b.size() ? 0.0f : INFINITY;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

} // namespace

class TestRecover : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    MethodRegistry m_registry;
    std::string m_model, m_archive, m_text;

private Q_SLOTS:
    void initTestCase()
    {
        setComputeThreads(2);
        QVERIFY(m_tmp.isValid());
        m_registry.loadDefaultFolders();
        m_registry.loadFolder(POCKET_PLUGIN_DIR);
        m_model = m_tmp.filePath("model").toStdString();
        HfWriteOptions o;
        o.tokenizerPath = testsupport::demoTokenizer();
        QVERIFY(writeRandomCheckpoint(tinyConfig(), 5, m_model, o).ok());
        CompressJobParams p;
        p.modelPath = m_model;
        p.methodId = "rtn";
        p.settings = {"bits=2", "group=16"};
        p.outPath = m_tmp.filePath("rtn2.pllm").toStdString();
        auto r = runCompressJob(p, m_registry);
        QVERIFY2(r, r ? "" : r.message().c_str());
        m_archive = p.outPath;
        m_text = m_tmp.filePath("text.txt").toStdString();
        std::string text;
        for (int i = 0; i < 60; ++i) text += "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog. ";
        testsupport::writeText(m_text, text);
    }

    // d loss / d value from autograd against (loss(v + h) - loss(v - h)) / 2h for values of A and
    // B of every adapter, for both objectives.
    void gradientMatchesFiniteDifferences()
    {
        auto ckpt = openCheckpoint(m_model);
        QVERIFY(ckpt);
        LoadOptions trainable;
        trainable.trainable = true;
        auto model = LlamaModel::load(**ckpt, {}, trainable);
        QVERIFY2(model, model ? "" : model.message().c_str());
        auto teacherCkpt = openCheckpoint(m_model);
        QVERIFY(teacherCkpt);
        auto teacher = LlamaModel::load(**teacherCkpt);
        QVERIFY(teacher);
        const auto adapters = randomAdapters(tinyConfig(), 3, 7);
        QVERIFY((*model)->setAdapters(adapters));
        const auto sequences = randomSequences(2, 12, 3);
        for (AdapterObjective objective : {AdapterObjective::Nll, AdapterObjective::Kl}) {
            auto exact = (*model)->adapterLoss(sequences, objective, teacher->get(), true);
            QVERIFY2(exact, exact ? "" : exact.message().c_str());
            QCOMPARE(exact->gradients.size(), adapters.size());
            std::mt19937 rng(11);
            int checked = 0;
            for (std::size_t i = 0; i < adapters.size(); ++i)
                for (bool inA : {true, false}) {
                    const std::size_t n = inA ? adapters[i].a.size() : adapters[i].b.size();
                    for (int trial = 0; trial < 3; ++trial) {
                        const std::size_t k = rng() % n;
                        const double h = 1e-2;
                        double loss[2];
                        for (int side = 0; side < 2; ++side) {
                            auto perturbed = adapters;
                            (inA ? perturbed[i].a : perturbed[i].b)[k] += static_cast<float>(side == 0 ? h : -h);
                            QVERIFY((*model)->setAdapters(perturbed));
                            loss[side] = (*model)->adapterLoss(sequences, objective, teacher->get()).value().loss;
                        }
                        QVERIFY((*model)->setAdapters(adapters));
                        const double fd = (loss[0] - loss[1]) / (2 * h);
                        const double ad = (inA ? exact->gradients[i].a : exact->gradients[i].b)[k];
                        QVERIFY2(std::fabs(fd - ad) <= 2e-3 + 0.03 * std::fabs(ad),
                                 qPrintable(QString("%1 %2 %3[%4]: autograd %5, finite differences %6")
                                                .arg(adapterObjectiveName(objective), QString::fromStdString(adapters[i].name), inA ? "A" : "B")
                                                .arg(k).arg(ad).arg(fd)));
                        ++checked;
                    }
                }
            QCOMPARE(checked, 24);
        }
        // The frozen weights get no gradient: training changes only the adapters.
        auto again = (*model)->adapterLoss(sequences, AdapterObjective::Nll, nullptr, true);
        QVERIFY(again);
        // A model loaded for inference refuses gradients.
        auto plain = LlamaModel::load(**ckpt);
        QVERIFY(plain);
        QVERIFY((*plain)->setAdapters(adapters));
        QVERIFY(!(*plain)->adapterLoss(sequences, AdapterObjective::Nll, nullptr, true));
        QVERIFY(!(*plain)->trainAdapters({}, sequences));
    }

    // The job: the objective on the training windows goes down, adapters cover every compressed
    // matrix, and their bits are 16 per value, added to the archive's bits per weight.
    void recoveryLowersTheObjective()
    {
        RecoverJobParams p;
        p.archivePath = m_archive;
        p.calibration.textPath = m_text;
        p.calibration.samples = 16;
        p.calibration.length = 32;
        p.training.rank = 2;
        p.training.alpha = 4;
        p.training.learningRate = 1e-2;
        p.training.epochs = 3;
        p.training.batch = 4;
        int steps = 0;
        auto r = runRecoverJob(p, m_registry, [&](const RecoverJobProgress& pr) {
            steps += pr.phase == RecoverJobProgress::Phase::Training;
            return true;
        });
        QVERIFY2(r, r ? "" : r.message().c_str());
        QCOMPARE(r->outPath, defaultRecoverPath(m_archive));
        QCOMPARE(steps, 12);
        QCOMPARE(r->losses.size(), std::size_t{12});
        QVERIFY2(r->objectiveAfter < r->objectiveBefore - 0.05, qPrintable(QString("%1 -> %2").arg(r->objectiveBefore).arg(r->objectiveAfter)));
        QCOMPARE(r->adapters, 14);
        const ModelConfig c = tinyConfig();
        const std::int64_t h = c.hiddenSize, kv = c.numKvHeads * c.headDim, f = c.intermediateSize;
        const std::uint64_t perLayer = 16u * 2u * static_cast<std::uint64_t>((h + h) * 2 + (kv + h) * 2 + (f + h) * 3);
        QCOMPARE(r->adapterBits, 2 * perLayer);
        auto archive = Archive::open(r->outPath);
        QVERIFY2(archive, archive ? "" : archive.message().c_str());
        QCOMPARE((*archive)->container().formatVersion(), 3u);
        const ArchiveBits bits = accountBits((*archive)->manifest());
        QCOMPARE(bits.adapterBits, r->adapterBits);
        QVERIFY(std::fabs(bits.bpwCompressed() - r->bpwAfter) < 1e-12);
        QVERIFY(std::fabs(r->bpwAfter - r->bpwBefore - static_cast<double>(r->adapterBits) / static_cast<double>(bits.compressedWeights)) < 1e-9);
        // Existing output: refused unless overwriting; the input itself: always refused.
        QVERIFY(!runRecoverJob(p, m_registry));
        p.outPath = m_archive;
        p.overwrite = true;
        QVERIFY(!runRecoverJob(p, m_registry));
        // The KL objective needs the original.
        p.outPath = m_tmp.filePath("kl.pllm").toStdString();
        p.training.objective = AdapterObjective::Kl;
        auto noTeacher = runRecoverJob(p, m_registry);
        QVERIFY(!noTeacher && noTeacher.error().setting == "original model");
        p.originalPath = m_model;
        p.types = "down_proj";
        auto kl = runRecoverJob(p, m_registry);
        QVERIFY2(kl, kl ? "" : kl.message().c_str());
        QCOMPARE(kl->adapters, 2);
        QVERIFY(kl->objectiveAfter < kl->objectiveBefore);
    }

    // Reopened, the archive's model equals the trained one applied by hand, under any memory
    // budget; decompressed (merged) it is within float rounding; a repack keeps the adapters.
    void adaptersReopenAndEvaluateIdentically()
    {
        const std::string withAdapters = defaultRecoverPath(m_archive);
        auto stored = Archive::open(withAdapters);
        QVERIFY(stored);
        auto values = (*stored)->adapters();
        QVERIFY(values && values->size() == 14);
        const std::vector<std::int32_t> tokens = randomSequences(1, 40, 9).front();

        auto base = loadRunnableModel(m_archive, m_registry, RunOptions{});
        QVERIFY(base);
        const std::vector<float> without = logitsOf(*base->model, tokens);
        QVERIFY(base->model->setAdapters(*values));
        const std::vector<float> byHand = logitsOf(*base->model, tokens);
        QVERIFY(maxAbsDiff(without, byHand) > 1e-3); // the adapters change the model

        auto reopened = loadRunnableModel(withAdapters, m_registry, RunOptions{});
        QVERIFY(reopened);
        QCOMPARE(reopened->model->adapters().size(), std::size_t{14});
        QCOMPARE(maxAbsDiff(logitsOf(*reopened->model, tokens), byHand), 0.0f);
        RunOptions compressed;
        compressed.memoryBudget = 1; // below the minimum: refused, naming it
        QVERIFY(!loadRunnableModel(withAdapters, m_registry, compressed));
        RunOptions automatic;
        automatic.memoryBudget = LoadOptions::kAuto;
        auto probe = loadRunnableModel(withAdapters, m_registry, automatic);
        QVERIFY(probe);
        compressed.memoryBudget = static_cast<std::int64_t>(probe->model->memory().minimumBytes);
        auto minimal = loadRunnableModel(withAdapters, m_registry, compressed);
        QVERIFY2(minimal, minimal ? "" : minimal.message().c_str());
        QVERIFY(minimal->model->memory().matricesCompressed > 0);
        QCOMPARE(maxAbsDiff(logitsOf(*minimal->model, tokens), byHand), 0.0f);

        // Decompressed: the adapters merged into fp32 weights.
        const std::string folder = m_tmp.filePath("merged").toStdString();
        QVERIFY(decompressArchive(withAdapters, m_registry, folder, HfWriteOptions{}));
        auto merged = loadRunnableModel(folder, m_registry, RunOptions{});
        QVERIFY(merged);
        QVERIFY2(maxAbsDiff(logitsOf(*merged->model, tokens), byHand) < 1e-3, qPrintable(QString::number(maxAbsDiff(logitsOf(*merged->model, tokens), byHand))));

        // A repack (the lossless stage again) keeps them.
        const std::string repacked = m_tmp.filePath("repacked.pllm").toStdString();
        QVERIFY(repackArchive(withAdapters, repacked, EntropyOptions{}));
        auto again = loadRunnableModel(repacked, m_registry, RunOptions{});
        QVERIFY(again);
        QCOMPARE(maxAbsDiff(logitsOf(*again->model, tokens), byHand), 0.0f);
        // Written without adapters: back to format 1 or 2 and to the plain model.
        const std::string stripped = m_tmp.filePath("stripped.pllm").toStdString();
        QVERIFY(writeArchiveWithAdapters(withAdapters, stripped, {}));
        auto plain = loadRunnableModel(stripped, m_registry, RunOptions{});
        QVERIFY(plain);
        QCOMPARE(maxAbsDiff(logitsOf(*plain->model, tokens), without), 0.0f);
        QVERIFY(Archive::open(stripped).value()->container().formatVersion() < 3u);
    }

    void adaptersThatDoNotFitAreRefused()
    {
        const std::string out = m_tmp.filePath("bad.pllm").toStdString();
        auto adapters = randomAdapters(tinyConfig(), 2, 3);
        auto wrongName = adapters;
        wrongName[0].name = "model.embed_tokens.weight";
        auto r = writeArchiveWithAdapters(m_archive, out, wrongName);
        QVERIFY(!r);
        QVERIFY2(r.message().find("model.embed_tokens.weight") != std::string::npos, r.message().c_str());
        auto wrongShape = adapters;
        wrongShape[1].cols += 1;
        wrongShape[1].a.resize(static_cast<std::size_t>(wrongShape[1].rank * wrongShape[1].cols));
        QVERIFY(!writeArchiveWithAdapters(m_archive, out, wrongShape));
        QVERIFY(!QFile::exists(QString::fromStdString(out)));
        // GPTQ and AQLM exports cannot hold them and say so; GGUF merges them (decoded, with the reason).
        QVERIFY(writeArchiveWithAdapters(m_archive, out, adapters));
        auto gptq = exportGptq(out, m_tmp.filePath("gptq").toStdString(), m_registry, GptqExportOptions{});
        QVERIFY(!gptq);
        QVERIFY2(gptq.message().find("LoRA") != std::string::npos, gptq.message().c_str());
        ArchiveGgufOptions g;
        auto gguf = exportGguf(out, m_tmp.filePath("m.gguf").toStdString(), m_registry, g);
        QVERIFY2(gguf, gguf ? "" : gguf.message().c_str());
        int mergedNotes = 0;
        for (const auto& t : gguf->tensors)
            mergedNotes += t.reason.find("LoRA") != std::string::npos;
        QCOMPARE(mergedNotes, 4);
    }
};

QTEST_GUILESS_MAIN(TestRecover)
#include "test_recover.moc"
