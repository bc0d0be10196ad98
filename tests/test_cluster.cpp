// A compression run spread over several ranks (pocket/jobs/cluster.h), with the ranks as threads
// of this process talking through an in-memory ClusterChannel (the MPI module is checked under
// mpirun by tests/mpi_check.sh): the archive equals a single-process run's byte for byte, for
// methods without calibration, with calibration block by block (GPTQ) and with k-means; the
// workers really compress groups; a rank that cannot read the model is named; a cancelled
// distributed run resumes with another number of ranks; the phase times are reported. Sensitivity
// units across ranks give the single-process results exactly.
#include "pocket/analysis/sensitivity.h"
#include "pocket/io/hf_writer.h"
#include "pocket/jobs/cluster.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/llama_model.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QtTest>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

using namespace pocket;
namespace fs = std::filesystem;

namespace {

// Mailboxes of N ranks in one process.
class LocalCluster {
public:
    explicit LocalCluster(int size) : m_boxes(static_cast<std::size_t>(size)) {}
    int size() const { return static_cast<int>(m_boxes.size()); }
    void post(int to, int from, const std::string& text)
    {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_boxes[static_cast<std::size_t>(to)].push_back({from, text});
            if (from != 0 && text.find("\"kind\":\"done\"") != std::string::npos)
                ++m_doneByWorkers;
        }
        m_wake.notify_all();
    }
    std::optional<std::string> take(int rank, double wait, int& from)
    {
        std::unique_lock<std::mutex> lock(m_mutex);
        auto& box = m_boxes[static_cast<std::size_t>(rank)];
        m_wake.wait_for(lock, std::chrono::duration<double>(wait), [&] { return !box.empty(); });
        if (box.empty())
            return std::nullopt;
        auto [sender, text] = box.front();
        box.pop_front();
        from = sender;
        return text;
    }
    int doneByWorkers()
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        return m_doneByWorkers;
    }

private:
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::vector<std::deque<std::pair<int, std::string>>> m_boxes;
    int m_doneByWorkers = 0;
};

class LocalChannel final : public ClusterChannel {
public:
    LocalChannel(LocalCluster& cluster, int rank) : m_cluster(cluster), m_rank(rank) {}
    int rank() const override { return m_rank; }
    int size() const override { return m_cluster.size(); }
    std::string host() const override { return "thread" + std::to_string(m_rank); }
    Status send(int to, const std::string& message) override
    {
        m_cluster.post(to, m_rank, message);
        return {};
    }
    std::optional<std::string> receive(double waitSeconds, int& from) override { return m_cluster.take(m_rank, waitSeconds, from); }

private:
    LocalCluster& m_cluster;
    int m_rank;
};

std::string writeModel(const QTemporaryDir& dir)
{
    ModelConfig c;
    c.hiddenSize = 32;
    c.intermediateSize = 48;
    c.numLayers = 3;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 8;
    c.vocabSize = 512; // the demo tokenizer's
    c.maxPositions = 64;
    const std::string path = dir.filePath("model").toStdString();
    HfWriteOptions options;
    options.dtype = DType::BF16;
    options.tokenizerPath = testsupport::demoTokenizer();
    if (Status s = writeRandomCheckpoint(c, 11, path, options); !s)
        qFatal("%s", s.message().c_str());
    return path;
}

CompressJobParams jobParams(const std::string& model, const std::string& out, const std::string& method, std::vector<std::string> settings)
{
    CompressJobParams p;
    p.modelPath = model;
    p.methodId = method;
    p.settings = std::move(settings);
    p.outPath = out;
    p.calibration.textPath = POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt";
    p.calibration.samples = 8;
    p.calibration.length = 32;
    return p;
}

MethodRegistry& loadedRegistry(MethodRegistry& registry)
{
    registry.loadFolder(POCKET_PLUGIN_DIR);
    return registry;
}

struct ClusterRun {
    Result<CompressJobResult> result = Error::internal("not run");
    std::vector<Status> workers;
    int doneByWorkers = 0;
};

// Rank 0 runs the job on this thread; ranks 1.. run runCompressWorker on threads of their own,
// each with its own registry (as separate processes would). `workerParams` may change a rank's job.
ClusterRun runCluster(int size, const CompressJobParams& params, const std::function<bool(const JobProgress&)>& onProgress = {},
                      const std::function<void(int, CompressJobParams&)>& workerParams = {})
{
    LocalCluster cluster(size);
    ClusterRun run;
    run.workers.assign(static_cast<std::size_t>(size), Status());
    std::vector<std::thread> threads;
    for (int r = 1; r < size; ++r)
        threads.emplace_back([&, r] {
            setComputeThreads(1);
            CompressJobParams p = params;
            if (workerParams)
                workerParams(r, p);
            LocalChannel channel(cluster, r);
            MethodRegistry registry;
            run.workers[static_cast<std::size_t>(r)] = runCompressWorker(p, loadedRegistry(registry), channel);
        });
    LocalChannel channel(cluster, 0);
    CompressJobParams p = params;
    p.cluster = &channel;
    MethodRegistry registry;
    run.result = runCompressJob(p, loadedRegistry(registry), nullptr, onProgress);
    for (std::thread& t : threads)
        t.join();
    run.doneByWorkers = cluster.doneByWorkers();
    return run;
}

std::vector<std::uint8_t> compressAlone(const CompressJobParams& params, CompressJobResult* result = nullptr)
{
    MethodRegistry registry;
    auto r = runCompressJob(params, loadedRegistry(registry));
    if (!r)
        qFatal("single-process run: %s", r.message().c_str());
    if (result)
        *result = *r;
    return testsupport::readBytes(params.outPath);
}

} // namespace

class TestCluster : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase() { setComputeThreads(1); }

    void sameArchiveAsOneProcess_data()
    {
        QTest::addColumn<QString>("method");
        QTest::addColumn<QStringList>("settings");
        QTest::newRow("rtn") << "rtn" << QStringList{"bits=4", "group=16"};
        QTest::newRow("vq k-means, per type") << "vq" << QStringList{"d=2", "K=32", "sharing=type", "iters=8"};
        QTest::newRow("gptq, block by block") << "gptq" << QStringList{"bits=3", "group=16"};
        QTest::newRow("pocketllm") << "pocketllm" << QStringList{"d=4", "K=16", "epochs=3", "latent=4"};
    }
    void sameArchiveAsOneProcess()
    {
        QFETCH(QString, method);
        QFETCH(QStringList, settings);
        QTemporaryDir dir;
        const std::string model = writeModel(dir);
        std::vector<std::string> s;
        for (const QString& x : settings)
            s.push_back(x.toStdString());
        CompressJobResult aloneResult;
        const auto alone = compressAlone(jobParams(model, dir.filePath("alone.pllm").toStdString(), method.toStdString(), s), &aloneResult);

        const CompressJobParams p = jobParams(model, dir.filePath("three.pllm").toStdString(), method.toStdString(), s);
        int remoteReports = 0;
        ClusterRun run = runCluster(3, p, [&](const JobProgress& progress) {
            remoteReports += progress.rank != 0 ? 1 : 0;
            return progress.ranks == 3;
        });
        QVERIFY2(run.result.ok(), run.result.ok() ? "" : run.result.message().c_str());
        for (const Status& w : run.workers)
            QVERIFY2(w.ok(), w.ok() ? "" : w.message().c_str());
        QCOMPARE(run.result->ranks, 3);
        QVERIFY2(run.doneByWorkers > 0, "the workers compressed no group");
        QVERIFY(testsupport::readBytes(p.outPath) == alone);
        QVERIFY(!fs::exists(defaultWorkFolder(p.outPath)));

        // Phases: the job's own, and the methods' (counted in the host's log from the plugin). The
        // single-process run's: here the ranks are threads of one process, whose phases add up.
        std::map<std::string, PhaseTime> phases;
        for (const PhaseTime& t : aloneResult.phases)
            phases[t.name] = t;
        for (const char* name : {"open", "compress", "writing"}) {
            QVERIFY2(phases.count(name), name);
            QVERIFY(phases[name].seconds > 0 && phases[name].count > 0 && phases[name].peakRssMb > 0);
        }
        if (method == "vq")
            QVERIFY(phases.count("k-means") && phases.count("assignment"));
        if (method == "gptq")
            QVERIFY(phases.count("calibration") && phases.count("hessians"));
        QVERIFY(phases["compress"].seconds <= aloneResult.seconds);
        QCOMPARE(phases["compress"].count, static_cast<int>(aloneResult.groups.size()));
        QCOMPARE(static_cast<int>(aloneResult.groupSeconds.size()), static_cast<int>(aloneResult.groups.size()));
        for (double g : aloneResult.groupSeconds)
            QVERIFY(g > 0);
        for (const PhaseTime& t : run.result->phases) // rank 0 of the distributed run reports its phases too
            QVERIFY(t.seconds >= 0 && t.count > 0);
    }

    void rankThatCannotReadTheModelIsNamed()
    {
        QTemporaryDir dir;
        const std::string model = writeModel(dir);
        const CompressJobParams p = jobParams(model, dir.filePath("a.pllm").toStdString(), "rtn", {"bits=4"});
        const std::string missing = dir.filePath("not-here").toStdString();
        ClusterRun run = runCluster(3, p, {}, [&](int rank, CompressJobParams& q) {
            if (rank == 2)
                q.modelPath = missing;
        });
        QVERIFY(!run.result.ok());
        const std::string& message = run.result.message();
        QVERIFY2(message.find("rank 2 (thread2)") != std::string::npos && message.find(missing) != std::string::npos, message.c_str());
        QVERIFY(!fs::exists(p.outPath));
        QVERIFY(!run.workers[2].ok());
        QVERIFY2(run.workers[2].message().find(missing) != std::string::npos, run.workers[2].message().c_str());
    }

    void cancelledRunResumesWithOtherRanks()
    {
        QTemporaryDir dir;
        const std::string model = writeModel(dir);
        const std::vector<std::string> s{"d=2", "K=16", "iters=6"};
        const auto alone = compressAlone(jobParams(model, dir.filePath("alone.pllm").toStdString(), "vq", s));

        CompressJobParams p = jobParams(model, dir.filePath("b.pllm").toStdString(), "vq", s);
        ClusterRun first = runCluster(3, p, [](const JobProgress& progress) { return progress.groupsDone < 4; });
        QVERIFY(first.result.cancelled());
        QVERIFY(!fs::exists(p.outPath));
        const std::string work = defaultWorkFolder(p.outPath);
        int saved = 0;
        for (const auto& item : fs::directory_iterator(work))
            saved += item.path().filename().string().rfind("group-", 0) == 0 ? 1 : 0;
        QVERIFY2(saved >= 4, std::to_string(saved).c_str());

        p.resume = true;
        ClusterRun second = runCluster(2, p);
        QVERIFY2(second.result.ok(), second.result.ok() ? "" : second.result.message().c_str());
        QVERIFY(second.result->groupsResumed >= 4);
        QVERIFY(testsupport::readBytes(p.outPath) == alone);
    }

    void sensitivityAcrossRanks_data()
    {
        QTest::addColumn<QString>("method");
        QTest::addColumn<QStringList>("settings");
        QTest::newRow("rtn") << "rtn" << QStringList{"bits=3", "group=16"};
        QTest::newRow("gptq (calibrated)") << "gptq" << QStringList{"bits=3", "group=16"};
    }
    void sensitivityAcrossRanks()
    {
        QFETCH(QString, method);
        QFETCH(QStringList, settings);
        QTemporaryDir dir;
        SensitivityParams p;
        p.modelPath = writeModel(dir);
        p.textPath = POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt";
        p.methodId = method.toStdString();
        p.settings.clear();
        for (const QString& x : settings)
            p.settings.push_back(x.toStdString());
        p.ctx = 32;
        p.windows = 4;
        p.calibration.samples = 8;
        p.calibration.length = 32;
        MethodRegistry registry;
        auto alone = runSensitivity(p, loadedRegistry(registry));
        QVERIFY2(alone.ok(), alone.ok() ? "" : alone.message().c_str());

        LocalCluster cluster(3);
        std::vector<Status> workers(3);
        std::vector<std::thread> threads;
        for (int r = 1; r < 3; ++r)
            threads.emplace_back([&, r] {
                setComputeThreads(1);
                LocalChannel channel(cluster, r);
                MethodRegistry own;
                workers[static_cast<std::size_t>(r)] = runSensitivityWorker(p, loadedRegistry(own), channel);
            });
        LocalChannel channel(cluster, 0);
        SensitivityParams q = p;
        q.cluster = &channel;
        int reports = 0;
        auto spread = runSensitivity(q, registry, nullptr, [&](const SensitivityProgress& s) {
            reports += s.latest ? 1 : 0;
            return true;
        });
        for (std::thread& t : threads)
            t.join();
        QVERIFY2(spread.ok(), spread.ok() ? "" : spread.message().c_str());
        for (const Status& w : workers)
            QVERIFY2(w.ok(), w.ok() ? "" : w.message().c_str());
        QVERIFY2(cluster.doneByWorkers() > 0, "the workers measured no unit");
        QCOMPARE(reports, static_cast<int>(alone->units.size()));
        QCOMPARE(spread->basePerplexity, alone->basePerplexity);
        QCOMPARE(spread->units.size(), alone->units.size());
        for (std::size_t i = 0; i < alone->units.size(); ++i) {
            const UnitSensitivity& a = alone->units[i];
            const UnitSensitivity& b = spread->units[i];
            QCOMPARE(b.unit, a.unit);
            QCOMPARE(b.matrices, a.matrices);
            QCOMPARE(b.weights, a.weights);
            // Exactly: every rank measures a unit on the same exact model with the same threads.
            QCOMPARE(b.perplexity, a.perplexity);
            QCOMPARE(b.klMean, a.klMean);
            QCOMPARE(b.top1Agreement, a.top1Agreement);
            QCOMPARE(b.bpw, a.bpw);
            QCOMPARE(b.mse, a.mse);
        }
    }

    void workerThatPlansOtherwiseIsRefused()
    {
        QTemporaryDir dir;
        const std::string model = writeModel(dir);
        const CompressJobParams p = jobParams(model, dir.filePath("c.pllm").toStdString(), "rtn", {"bits=4"});
        ClusterRun run = runCluster(2, p, {}, [](int, CompressJobParams& q) { q.selection.types = {MatrixType::Q}; });
        QVERIFY(!run.result.ok());
        QVERIFY2(run.result.message().find("rank 1") != std::string::npos &&
                     run.result.message().find("plans other groups") != std::string::npos,
                 run.result.message().c_str());
    }
};

QTEST_GUILESS_MAIN(TestCluster)
#include "test_cluster.moc"
