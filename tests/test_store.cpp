// The experiment store: migrations, refusing foreign files, the published seed, compare(), two
// processes writing at once, and the CLI recording its runs.
#include "pocket/io/fingerprint.h"
#include "pocket/store/experiment_store.h"
#include "test_support.h"

#include <QCoreApplication>
#include <QProcess>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <cmath>
#include <map>
#include <set>

using nlohmann::json;
using namespace pocket;

namespace {

// The child side of the two-writers test: `<binary> --store-writer PATH WRITER COUNT` records
// COUNT eval runs, each with one result, each write in its own transaction.
int storeWriter(const std::string& path, int writer, int count)
{
    auto store = ExperimentStore::open(path);
    if (!store) {
        std::fprintf(stderr, "%s\n", store.message().c_str());
        return 1;
    }
    for (int i = 0; i < count; ++i) {
        // Both writers upsert the same model: contention on one row too.
        auto model = (*store)->upsertModel({0, "shared-model", "LlamaForCausalLM", 1000, "xxh64:0000000000000001", "/models/shared"});
        if (!model) {
            std::fprintf(stderr, "%s\n", model.message().c_str());
            return 1;
        }
        RunStart start;
        start.method = "writer" + std::to_string(writer);
        start.modelId = *model;
        start.notes = std::to_string(writer) + ":" + std::to_string(i);
        auto id = (*store)->beginRun(start);
        if (!id) {
            std::fprintf(stderr, "%s\n", id.message().c_str());
            return 1;
        }
        RunResult result;
        result.metric = "perplexity";
        result.ctx = 64;
        result.value = writer * 1000 + i;
        if (auto s = (*store)->addResult(*id, result); !s) {
            std::fprintf(stderr, "%s\n", s.message().c_str());
            return 1;
        }
        RunFinish finish;
        finish.wallSeconds = 0.001 * i;
        if (auto s = (*store)->finishRun(*id, finish); !s) {
            std::fprintf(stderr, "%s\n", s.message().c_str());
            return 1;
        }
    }
    return 0;
}

// A raw SQLite connection for checking (and tampering with) files behind the store's back.
class RawDb {
public:
    explicit RawDb(const QString& path) { sqlite3_open(path.toUtf8().constData(), &m_db); }
    ~RawDb() { sqlite3_close(m_db); }
    bool exec(const char* sql) { return sqlite3_exec(m_db, sql, nullptr, nullptr, nullptr) == SQLITE_OK; }
    // The first column of the first row as text ("" when none or on error).
    std::string scalar(const char* sql)
    {
        sqlite3_stmt* st = nullptr;
        std::string out;
        if (sqlite3_prepare_v2(m_db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return out;
    }

private:
    sqlite3* m_db = nullptr;
};

struct Run {
    int code = -1;
    QByteArray out;
    QByteArray err;
    QString describe() const
    {
        return QString("exit %1\nstdout: %2\nstderr: %3").arg(code).arg(QString::fromUtf8(out.left(3000)), QString::fromUtf8(err.left(3000)));
    }
};

std::vector<json> seedRows()
{
    return json::parse(testsupport::readText(POCKET_RESOURCES_DIR "/baselines/published.json")).get<std::vector<json>>();
}

} // namespace

class TestStore : public QObject {
    Q_OBJECT
private:
    QTemporaryDir m_tmp;

    QString path(const QString& name) const { return m_tmp.filePath(name); }
    static std::string str(const QString& s) { return s.toStdString(); }

    std::unique_ptr<ExperimentStore> openStore(const QString& file)
    {
        auto store = ExperimentStore::open(str(file));
        if (!store)
            qWarning("%s", store.message().c_str());
        return store ? std::move(*store) : nullptr;
    }

    // An eval run with one result, finished with `status`.
    std::int64_t addEval(ExperimentStore& s, std::int64_t modelId, std::int64_t datasetId, std::optional<double> bpwCompressed,
                         std::optional<double> bpwAllIn, int ctx, double ppl, RunStatus status = RunStatus::Done)
    {
        RunStart start;
        start.method = bpwCompressed ? "pocketllm" : "none";
        start.modelId = modelId;
        auto id = s.beginRun(start);
        if (!id)
            return 0;
        RunResult r;
        r.metric = "perplexity";
        r.datasetId = datasetId;
        r.ctx = ctx;
        r.value = ppl;
        r.tokens = 1000;
        if (!s.addResult(*id, r))
            return 0;
        RunFinish f;
        f.status = status;
        f.bpwCompressed = bpwCompressed;
        f.bpwAllIn = bpwAllIn;
        f.wallSeconds = 1.5;
        if (!s.finishRun(*id, f))
            return 0;
        return *id;
    }

    Run cli(const QStringList& args, const QProcessEnvironment& env)
    {
        QProcess p;
        p.setProcessEnvironment(env);
        p.setWorkingDirectory(m_tmp.path());
        p.start(QStringLiteral(POCKET_CLI_PATH), args);
        Run r;
        if (!p.waitForStarted(30000) || !p.waitForFinished(300000)) {
            p.kill();
            p.waitForFinished();
            r.err = "did not run or finish";
            return r;
        }
        r.code = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
        r.out = p.readAllStandardOutput();
        r.err = p.readAllStandardError();
        return r;
    }

    // The environment of every CLI run here: data folder and store inside the temporary folder.
    QProcessEnvironment cliEnv(const QString& dataDir) const
    {
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        env.insert("POCKETLLM_DATA_DIR", dataDir);
        env.remove("POCKETLLM_STORE");
        return env;
    }

private Q_SLOTS:
    void initTestCase() { QVERIFY(m_tmp.isValid()); }

    void migratesAnEmptyFile()
    {
        const QString file = path("fresh/sub/experiments.sqlite"); // folders are created
        {
            auto store = openStore(file);
            QVERIFY(store);
            QCOMPARE(store->path(), str(file));
        }
        RawDb raw(file);
        QCOMPARE(raw.scalar("PRAGMA user_version"), std::to_string(ExperimentStore::kSchemaVersion));
        QCOMPARE(raw.scalar("PRAGMA journal_mode"), std::string("wal"));
        QCOMPARE(raw.scalar("PRAGMA application_id"), std::to_string(0x504C4C4D));
        for (const char* table : {"models", "datasets", "runs", "results", "matrix_metrics", "published"}) {
            const std::string sql = std::string("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '") + table + "'";
            QVERIFY2(raw.scalar(sql.c_str()) == "1", table);
        }
        QCOMPARE(raw.scalar("PRAGMA integrity_check"), std::string("ok"));

        // A zero-byte file is an empty database, not a foreign one.
        const QString empty = path("empty.sqlite");
        testsupport::writeText(str(empty), "");
        QVERIFY(openStore(empty));
    }

    void migratesAVersion1Store()
    {
        const QString file = path("v1.sqlite");
        {
            RawDb raw(file);
            QVERIFY(raw.exec(experimentStoreMigrationSql(1))); // a store as version 1 wrote it
            QVERIFY(raw.exec("PRAGMA user_version = 1; PRAGMA application_id = 1347177549;"));
            QVERIFY(raw.exec("INSERT INTO models (id, name, content_hash) VALUES (1, 'm.bin', 'xxh64:01');"
                             "INSERT INTO runs (id, kind, method, model_id, started_at, status) VALUES (1, 'compress', 'rtn', 1, '2025-01-01T00:00:00Z', 'done');"
                             "INSERT INTO runs (id, kind, method, model_id, started_at, status, parent_run_id) VALUES (2, 'eval', 'rtn', 1, '2025-01-01T00:00:00Z', 'done', 1);"
                             "INSERT INTO results (run_id, metric, value) VALUES (2, 'perplexity', 5.5);"
                             "INSERT INTO matrix_metrics (run_id, name, mse, snr_db, bpw) VALUES (1, 'w', 0.1, 20, 4);"));
        }
        auto store = openStore(file);
        QVERIFY(store);
        {
            RawDb raw(file);
            QCOMPARE(raw.scalar("PRAGMA user_version"), std::to_string(ExperimentStore::kSchemaVersion));
            QCOMPARE(raw.scalar("PRAGMA integrity_check"), std::string("ok"));
            QCOMPARE(raw.scalar("PRAGMA foreign_key_check"), std::string()); // no dangling reference
        }
        // Nothing lost: runs, their results (no cascade), metrics, the parent link.
        auto eval = store->run(2);
        QVERIFY(eval);
        QCOMPARE(eval->results.size(), std::size_t(1));
        QCOMPARE(eval->results[0].value, 5.5);
        QCOMPARE(eval->parentRunId, std::int64_t(1));
        auto compress = store->run(1);
        QVERIFY(compress);
        QCOMPARE(compress->matrices.size(), std::size_t(1));
        QVERIFY(!compress->matrices[0].deltaPerplexity);
        // The new kind and measures work on the migrated file.
        RunStart start;
        start.kind = RunKind::Sensitivity;
        start.method = "rtn";
        start.modelId = 1;
        auto id = store->beginRun(start);
        QVERIFY(id);
        MatrixMetric m{"w", "w", 2, 2, 0.1, 20, 4, 0.01, 0.2, 0.97};
        QVERIFY(store->addMatrixMetrics(*id, {m}));
        auto back = store->run(*id);
        QVERIFY(back);
        QCOMPARE(back->kind, RunKind::Sensitivity);
        QCOMPARE(*back->matrices[0].sensitivity, 0.01);
        QCOMPARE(*back->matrices[0].deltaPerplexity, 0.2);
        QCOMPARE(*back->matrices[0].top1Agreement, 0.97);
        // Deleting a run still cascades once foreign keys are back on.
        QVERIFY(store->deleteRun(2));
        RawDb raw(file);
        QCOMPARE(raw.scalar("SELECT count(*) FROM results WHERE run_id = 2"), std::string("0"));
    }

    void reopeningKeepsTheData()
    {
        const QString file = path("reopen.sqlite");
        std::int64_t runId = 0;
        {
            auto store = openStore(file);
            QVERIFY(store);
            auto model = store->upsertModel({0, "stories260K.bin", "LlamaForCausalLM", 260032, "xxh64:00000000000000aa", "/m/stories260K.bin"});
            QVERIFY(model);
            auto again = store->upsertModel({0, "renamed.bin", "LlamaForCausalLM", 260032, "xxh64:00000000000000aa", "/m/renamed.bin"});
            QVERIFY(again);
            QCOMPARE(*again, *model); // same content hash, same model
            auto dataset = store->upsertDataset({0, "text.txt", "", "xxh64:00000000000000bb", "/d/text.txt"});
            QVERIFY(dataset);
            QCOMPARE(*store->upsertDataset({0, "text.txt", "", "xxh64:00000000000000bb", "/elsewhere/text.txt"}), *dataset);

            RunStart start;
            start.kind = RunKind::Compress;
            start.method = "pocketllm";
            start.paramsJson = R"({"set":["K=64"]})";
            start.modelId = *model;
            start.archivePath = "/tmp/a.pllm";
            auto id = store->beginRun(start);
            QVERIFY(id);
            runId = *id;
            QVERIFY(store->addMatrixMetrics(runId, {{"model.layers.0.self_attn.q_proj.weight", "g0", 64, 64, 0.01, 12.5, 3.25, std::nullopt},
                                                    {"model.layers.0.self_attn.k_proj.weight", "g0", 32, 64, 0.02, 9.5, 3.5, 0.7}}));
            RunFinish f;
            f.wallSeconds = 12.0;
            f.peakRssMb = 210;
            f.archiveBytes = 123456;
            f.bpwCompressed = 3.3;
            f.bpwAllIn = 5.1;
            f.paramsJson = R"({"K":64,"d":4})";
            QVERIFY(store->finishRun(runId, f));
            QVERIFY(!store->finishRun(9999, f)); // no such run
            auto found = store->findCompressRun("/tmp/a.pllm", std::uint64_t{123456});
            QVERIFY(found);
            QCOMPARE(*found, runId);
            QCOMPARE(*store->findCompressRun("/tmp/a.pllm", std::uint64_t{1}), std::int64_t{0}); // overwritten since
        }
        auto store = openStore(file);
        QVERIFY(store);
        auto run = store->run(runId);
        QVERIFY2(run, run ? "" : run.message().c_str());
        QCOMPARE(run->kind, RunKind::Compress);
        QCOMPARE(run->status, RunStatus::Done);
        QCOMPARE(run->modelName, std::string("renamed.bin"));
        QCOMPARE(run->paramsJson, std::string(R"({"K":64,"d":4})"));
        QCOMPARE(*run->archiveBytes, std::uint64_t{123456});
        QCOMPARE(*run->bpwCompressed, 3.3);
        QCOMPARE(*run->wallSeconds, 12.0);
        QVERIFY(!run->startedAt.empty() && !run->finishedAt.empty());
        QVERIFY(run->programVersion.find('.') != std::string::npos);
        QCOMPARE(run->matrices.size(), std::size_t{2});
        QCOMPARE(run->matrices[0].snrDb, 12.5);
        QVERIFY(!run->matrices[0].sensitivity);
        QCOMPARE(*run->matrices[1].sensitivity, 0.7);
        auto missing = store->run(runId + 100);
        QVERIFY(!missing);
        QVERIFY(missing.message().find(str(file)) == 0);

        QVERIFY(store->deleteRun(runId));
        QCOMPARE(store->listRuns()->size(), std::size_t{0});
        RawDb raw(file);
        QCOMPARE(raw.scalar("SELECT count(*) FROM matrix_metrics"), std::string("0")); // cascaded
    }

    void refusesWhatIsNotAStore()
    {
        // Another program's SQLite database: refused and left exactly as it was.
        const QString foreign = path("foreign.sqlite");
        {
            RawDb raw(foreign);
            QVERIFY(raw.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('keep me')"));
        }
        const auto before = testsupport::readBytes(str(foreign));
        auto a = ExperimentStore::open(str(foreign));
        QVERIFY(!a);
        QCOMPARE(a.message(), str(foreign) + ": not a PocketLLM store (an SQLite database of another program)");
        QVERIFY(testsupport::readBytes(str(foreign)) == before);
        QVERIFY(!QFileInfo::exists(foreign + "-wal"));

        // Not a database at all.
        const QString garbage = path("garbage.sqlite");
        std::vector<std::uint8_t> bytes(8192);
        for (std::size_t i = 0; i < bytes.size(); ++i)
            bytes[i] = static_cast<std::uint8_t>(i * 131 + 7);
        testsupport::writeBytes(str(garbage), bytes);
        auto b = ExperimentStore::open(str(garbage));
        QVERIFY(!b);
        QCOMPARE(b.message(), str(garbage) + ": not a PocketLLM store (not an SQLite database)");
        QVERIFY(testsupport::readBytes(str(garbage)) == bytes);

        // A store written by a newer program.
        const QString newer = path("newer.sqlite");
        QVERIFY(openStore(newer));
        {
            RawDb raw(newer);
            QVERIFY(raw.exec("PRAGMA user_version = 7"));
        }
        auto c = ExperimentStore::open(str(newer));
        QVERIFY(!c);
        QVERIFY2(c.message().rfind(str(newer) + ": schema version 7 is newer than this program's " +
                                       std::to_string(ExperimentStore::kSchemaVersion), 0) == 0,
                 c.message().c_str());

        // A folder.
        auto d = ExperimentStore::open(str(m_tmp.path()));
        QVERIFY(!d);
        QVERIFY(d.message().find(str(m_tmp.path())) == 0);
    }

    void publishedSeedRowsKeepTheirProvenance()
    {
        const QString file = path("seed.sqlite");
        auto store = openStore(file);
        QVERIFY(store);
        const std::vector<json> seed = seedRows();
        CompareFilter all;
        all.metric.clear();
        auto rows = store->published(all);
        QVERIFY(rows);
        QCOMPARE(rows->size(), seed.size());
        for (std::size_t i = 0; i < seed.size(); ++i) {
            const PublishedRow& r = (*rows)[i];
            QCOMPARE(r.method, seed[i]["method"].get<std::string>());
            QCOMPARE(r.source, seed[i]["source"].get<std::string>());
            QCOMPARE(r.value, seed[i]["value"].get<double>());
            QCOMPARE(r.bpw.has_value(), seed[i]["bpw"].is_number());
            QCOMPARE(r.ctx.has_value(), seed[i]["ctx"].is_number());
            QVERIFY2(!r.source.empty() && !r.model.empty() && !r.metric.empty(), r.method.c_str());
        }

        auto find = [&](const std::string& method, double bpw, const std::string& dataset, const std::string& metric, const std::string& source) {
            std::vector<PublishedRow> hits;
            for (const PublishedRow& r : *rows)
                if (r.method == method && r.bpw && std::fabs(*r.bpw - bpw) < 1e-9 && r.dataset == dataset && r.metric == metric &&
                    r.source == source)
                    hits.push_back(r);
            return hits;
        };
        const std::string aqlm1 = "AQLM paper (arXiv 2401.06118) Table 1";
        auto wiki = find("AQLM 1x16", 2.02, "wikitext2", "perplexity", aqlm1);
        QCOMPARE(wiki.size(), std::size_t{1});
        QCOMPARE(wiki[0].value, 6.64);
        QCOMPARE(*wiki[0].ctx, 4096);
        QCOMPARE(wiki[0].model, std::string("Llama-2-7B"));
        QCOMPARE(wiki[0].split, std::string("test"));
        QCOMPARE(find("AQLM 1x16", 2.02, "c4", "perplexity", aqlm1).at(0).value, 8.56);
        QCOMPARE(find("AQLM 1x16", 2.02, "zero-shot-5", "accuracy_avg", aqlm1).at(0).value, 56.47);
        QCOMPARE(find("FP16", 16, "wikitext2", "perplexity", "AWQ paper (arXiv 2306.00978) Table 4").at(0).ctx.value(), 2048);
        QCOMPARE(find("llama.cpp IQ3_XXS", 3.06, "wikitext2", "perplexity", "llama.cpp PR 5196").at(0).ctx.value(), 512);
        QCOMPARE(find("SpQR", 3.98, "zero-shot-5", "accuracy_avg", "AQLM paper (arXiv 2401.06118) Table 10").size(), std::size_t{0}); // "-"

        // The PocketLLM paper's AQLM 2.02 row sits beside the AQLM paper's, each with its source.
        const std::string pocket = "PocketLLM paper (arXiv 2511.17637), zero-shot table";
        QCOMPARE(find("AQLM", 2.02, "zero-shot-5", "accuracy_avg", pocket).at(0).value, 57.28);
        QCOMPARE(find("PocketLLM", 2.02, "zero-shot-5", "accuracy_avg", pocket).at(0).value, 60.61);
        QCOMPARE(find("PocketLLM", 3.98, "hellaswag", "accuracy", pocket).at(0).value, 57.45);
        QCOMPARE(find("PocketLLM", 3.98, "zero-shot-5", "accuracy_avg", pocket).at(0).setting, std::string("~8x"));
        CompareFilter qwen;
        qwen.model = "qwen3";
        qwen.metric = "accuracy_avg";
        QCOMPARE(store->published(qwen)->size(), std::size_t{5});

        // Reopening does not seed twice; a changed seed (here: a tampered hash) is re-applied whole.
        store.reset();
        store = openStore(file);
        QCOMPARE(store->published(all)->size(), seed.size());
        store.reset();
        {
            RawDb raw(file);
            QVERIFY(raw.exec("DELETE FROM published WHERE id < 10; UPDATE meta SET value = 'old' WHERE key = 'published_seed'"));
        }
        store = openStore(file);
        QCOMPARE(store->published(all)->size(), seed.size());
    }

    void compareOrdersAndFilters()
    {
        auto store = openStore(path("compare.sqlite"));
        QVERIFY(store);
        const std::int64_t tiny = *store->upsertModel({0, "tiny-llama.bin", "LlamaForCausalLM", 1000, "xxh64:0000000000000010", ""});
        const std::int64_t llama = *store->upsertModel({0, "Llama-2-7b-hf", "LlamaForCausalLM", 6738415616, "xxh64:0000000000000011", ""});
        const std::int64_t text = *store->upsertDataset({0, "text.txt", "", "xxh64:1", ""});
        const std::int64_t wiki = *store->upsertDataset({0, "wikitext2-test.txt", "test", "xxh64:2", ""});

        const std::int64_t fp = addEval(*store, tiny, text, std::nullopt, 32.0, 64, 10.0);
        const std::int64_t compressed = addEval(*store, tiny, text, 2.5, 4.1, 64, 12.0);
        addEval(*store, tiny, text, 2.0, 3.9, 64, 99.0, RunStatus::Failed);
        addEval(*store, tiny, text, 2.0, 3.9, 64, 98.0, RunStatus::Running);
        addEval(*store, tiny, text, 2.5, 4.1, 128, 11.0);
        const std::int64_t ours = addEval(*store, llama, wiki, 2.02, 2.3, 4096, 7.0);
        QVERIFY(fp && compressed && ours);

        CompareFilter f;
        f.model = "TINY";
        f.ctx = 64;
        auto rows = store->compare(f);
        QVERIFY(rows);
        QCOMPARE(rows->size(), std::size_t{2}); // failed, running and ctx-128 runs left out
        QCOMPARE((*rows)[0].runId, compressed); // bpw ascending: 2.5 (compressed) before 32 (all-in of fp32)
        QCOMPARE(*(*rows)[0].bpw, 2.5);
        QCOMPARE((*rows)[0].source, "run #" + std::to_string(compressed));
        QVERIFY(!(*rows)[0].published);
        QCOMPARE((*rows)[1].runId, fp);
        QCOMPARE(*(*rows)[1].bpw, 32.0);
        QCOMPARE(*(*rows)[1].wallSeconds, 1.5);
        QCOMPARE((*rows)[1].dataset, std::string("text.txt"));

        f = CompareFilter{};
        f.model = "llama-2-7b";
        f.dataset = "wikitext2";
        f.ctx = 4096;
        rows = store->compare(f);
        QVERIFY(rows);
        // 12 method rows and the FP16 reference at ctx 4096, plus our run.
        QCOMPARE(rows->size(), std::size_t{14});
        for (std::size_t i = 1; i < rows->size(); ++i)
            QVERIFY2(*(*rows)[i - 1].bpw <= *(*rows)[i].bpw, (*rows)[i].method.c_str());
        // At 2.02 bpw: VPTQ 6.13, AQLM 1x16 6.64, QuIP# 8.22 (value ascending), then our run (runs
        // after published rows at the same bpw, whatever the model's spelling).
        QCOMPARE((*rows)[0].method, std::string("VPTQ"));
        QCOMPARE((*rows)[1].method, std::string("AQLM 1x16"));
        QCOMPARE((*rows)[2].method, std::string("QuIP#"));
        QCOMPARE((*rows)[3].runId, ours);
        QCOMPARE((*rows)[3].model, std::string("Llama-2-7b-hf"));
        QVERIFY((*rows)[0].published);
        QCOMPARE((*rows)[0].source, std::string("microsoft/VPTQ README"));
        QCOMPARE(rows->back().method, std::string("FP16"));

        const std::int64_t twin = *store->upsertModel({0, "Llama-2-7B", "LlamaForCausalLM", 6738415616, "xxh64:0000000000000012", ""});
        const std::int64_t better = addEval(*store, twin, wiki, 2.02, 2.3, 4096, 6.0);
        rows = store->compare(f);
        QCOMPARE(rows->size(), std::size_t{15});
        QCOMPARE((*rows)[3].runId, better);
        QCOMPARE((*rows)[4].runId, ours);

        // Metric first, then ctx: every metric at once groups them.
        f = CompareFilter{};
        f.metric.clear();
        f.model = "llama-2-7b";
        rows = store->compare(f);
        for (std::size_t i = 1; i < rows->size(); ++i) {
            const CompareRow& x = (*rows)[i - 1];
            const CompareRow& y = (*rows)[i];
            QVERIFY(x.metric <= y.metric);
            if (x.metric == y.metric && x.ctx && y.ctx)
                QVERIFY(*x.ctx <= *y.ctx);
        }
        f.metric = "perplexity";
        f.model = "llama-2-7b";
        f.dataset = "wikitext2";
        f.ctx = 4096;

        // Only published, or only runs.
        f.includeRuns = false;
        QCOMPARE(store->compare(f)->size(), std::size_t{13});
        f.includeRuns = true;
        f.includePublished = false;
        QCOMPARE(store->compare(f)->size(), std::size_t{2});

        RunFilter onlyTiny;
        onlyTiny.model = "tiny";
        onlyTiny.limit = 3;
        auto listed = store->listRuns(onlyTiny);
        QVERIFY(listed);
        QCOMPARE(listed->size(), std::size_t{3});
        QVERIFY((*listed)[0].id > (*listed)[1].id); // newest first
        QCOMPARE((*listed)[0].results.size(), std::size_t{1});
        RunFilter running;
        running.status = RunStatus::Running;
        QCOMPARE(store->listRuns(running)->size(), std::size_t{1});
    }

    void twoProcessesWriteAtOnce()
    {
        // Both children create the store from nothing at the same moment, then each records 200
        // runs with results, every write its own transaction.
        const QString file = path("concurrent/experiments.sqlite");
        constexpr int kPerWriter = 200;
        QProcess a, b;
        const QString self = QCoreApplication::applicationFilePath();
        a.start(self, {"--store-writer", file, "1", QString::number(kPerWriter)});
        b.start(self, {"--store-writer", file, "2", QString::number(kPerWriter)});
        QVERIFY(a.waitForStarted() && b.waitForStarted());
        QVERIFY(a.waitForFinished(300000));
        QVERIFY(b.waitForFinished(300000));
        QVERIFY2(a.exitStatus() == QProcess::NormalExit && a.exitCode() == 0, a.readAllStandardError().constData());
        QVERIFY2(b.exitStatus() == QProcess::NormalExit && b.exitCode() == 0, b.readAllStandardError().constData());

        auto store = openStore(file);
        QVERIFY(store);
        auto runs = store->listRuns();
        QVERIFY(runs);
        QCOMPARE(runs->size(), std::size_t{2 * kPerWriter});
        std::set<double> values;
        std::set<std::int64_t> models;
        for (const RunRecord& r : *runs) {
            QCOMPARE(r.status, RunStatus::Done);
            QCOMPARE(r.results.size(), std::size_t{1});
            const int writer = r.method == "writer1" ? 1 : 2;
            const int i = std::stoi(r.notes.substr(r.notes.find(':') + 1));
            QCOMPARE(r.results[0].value, double(writer * 1000 + i)); // each result belongs to its own run
            values.insert(r.results[0].value);
            models.insert(r.modelId);
        }
        QCOMPARE(values.size(), std::size_t{2 * kPerWriter});
        QCOMPARE(models.size(), std::size_t{1});
        store.reset();
        RawDb raw(file);
        QCOMPARE(raw.scalar("PRAGMA integrity_check"), std::string("ok"));
        QCOMPARE(raw.scalar("SELECT count(*) FROM results"), std::to_string(2 * kPerWriter));
        QCOMPARE(raw.scalar("SELECT count(*) FROM models"), std::string("1"));
        QCOMPARE(raw.scalar("SELECT count(*) FROM published"), std::to_string(seedRows().size())); // seeded once
    }

    void aHeldWriteLockTimesOutWithTheFileNamed()
    {
        const QString file = path("locked.sqlite");
        auto store = openStore(file);
        QVERIFY(store);
        RawDb holder(file);
        QVERIFY(holder.exec("BEGIN IMMEDIATE"));
        QElapsedTimer timer;
        timer.start();
        auto id = store->beginRun(RunStart{});
        QVERIFY(!id);
        QVERIFY2(id.message().rfind(str(file) + ": database is locked", 0) == 0, id.message().c_str());
        QVERIFY(timer.elapsed() >= 9000); // waited for the busy timeout, ~10 s
        QVERIFY(holder.exec("ROLLBACK"));
        QVERIFY(store->beginRun(RunStart{})); // and works once the lock is gone
    }

    void fingerprints()
    {
        const QString dir = path("fp");
        QVERIFY(QDir().mkpath(dir + "/model"));
        testsupport::writeText(str(dir + "/model/config.json"), R"({"hidden_size": 64})");
        std::vector<std::uint8_t> weights(3 << 20, 1);
        testsupport::writeBytes(str(dir + "/model/model.safetensors"), weights);
        const auto first = modelFingerprint(str(dir + "/model"));
        QVERIFY(first);
        QVERIFY(first->rfind("xxh64:", 0) == 0 && first->size() == 6 + 16);
        weights[1 << 20] = 2; // the middle MiB is not read: by design the same fingerprint
        testsupport::writeBytes(str(dir + "/model/model.safetensors"), weights);
        QCOMPARE(*modelFingerprint(str(dir + "/model")), *first);
        weights.back() = 3; // the last MiB is
        testsupport::writeBytes(str(dir + "/model/model.safetensors"), weights);
        QVERIFY(*modelFingerprint(str(dir + "/model")) != *first);
        testsupport::writeText(str(dir + "/model/config.json"), R"({"hidden_size": 65})");
        QVERIFY(*modelFingerprint(str(dir + "/model")) != *first);
        QVERIFY(modelFingerprint(testsupport::demoModel()));
        QVERIFY(!modelFingerprint(str(dir + "/missing.bin")));
        QVERIFY(!modelFingerprint(str(dir)).ok()); // a folder without config.json

        testsupport::writeText(str(dir + "/a.txt"), "hello");
        testsupport::writeText(str(dir + "/b.txt"), "hello");
        QCOMPARE(*fileFingerprint(str(dir + "/a.txt")), *fileFingerprint(str(dir + "/b.txt")));
        QCOMPARE(*fileFingerprint(str(dir + "/a.txt")), textFingerprint("hello"));
    }

    // The CLI records eval and compress runs, links an archive's eval to its compress run, and
    // lists and compares them; a broken store only warns.
    void cliRecordsAndReports()
    {
        const QString dataDir = path("cli-data");
        const QString store = path("cli/store.sqlite");
        const QProcessEnvironment env = cliEnv(dataDir);
        const QString model = QString::fromStdString(testsupport::demoModel());
        const QString text = POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt";
        const QStringList evalArgs{"eval", model, "--text", text, "--ctx", "64", "--max-tokens", "200"};

        Run r = cli(QStringList{"--json", "-q", "--store", store} + evalArgs, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const json eval = json::parse(r.out.constData());
        QVERIFY(eval.contains("run_id"));
        const std::int64_t evalId = eval["run_id"];

        r = cli({"--json", "--store", store, "runs", "list"}, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        json list = json::parse(r.out.constData());
        QCOMPARE(list["runs"].size(), std::size_t{1});
        json run = list["runs"][0];
        QCOMPARE(run["id"].get<std::int64_t>(), evalId);
        QCOMPARE(run["kind"].get<std::string>(), std::string("eval"));
        QCOMPARE(run["status"].get<std::string>(), std::string("done"));
        QCOMPARE(run["method"].get<std::string>(), std::string("none"));
        QCOMPARE(run["model"].get<std::string>(), std::string("stories260K.bin"));
        QCOMPARE(run["bpw_all_in"].get<double>(), 32.0); // an fp32 llama2.c file
        QCOMPARE(run["results"][0]["metric"].get<std::string>(), std::string("perplexity"));
        QCOMPARE(run["results"][0]["value"].get<double>(), eval["perplexity"].get<double>());
        QCOMPARE(run["results"][0]["ctx"].get<int>(), 64);
        QCOMPARE(run["results"][0]["tokens"].get<std::int64_t>(), eval["tokens"].get<std::int64_t>());
        QCOMPARE(run["results"][0]["dataset"].get<std::string>(), std::string("tinystories_valid_30k.txt"));

        // compare --csv: a header, the published rows, and ours.
        r = cli({"--store", store, "compare", "--csv"}, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const QStringList lines = QString::fromUtf8(r.out).split('\n', Qt::SkipEmptyParts);
        QCOMPARE(lines.value(0), QString("model,dataset,ctx,metric,method,bpw,value,wall_s,compress_s,source,published,run_id,note"));
        int published = 0, runs = 0;
        for (const QString& line : lines.mid(1)) {
            if (line.contains(",true,"))
                ++published;
            if (line.contains(",false," + QString::number(evalId) + ","))
                ++runs;
        }
        int seedPerplexities = 0;
        for (const json& row : seedRows())
            seedPerplexities += row["metric"] == "perplexity";
        QCOMPARE(published, seedPerplexities);
        QCOMPARE(runs, 1);
        QVERIFY(r.out.contains("\"AQLM paper (arXiv 2401.06118) Table 1\"") || r.out.contains(",AQLM paper (arXiv 2401.06118) Table 1,"));
        r = cli({"--store", store, "compare", "--model", "stories", "--ctx", "64"}, env);
        QVERIFY2(r.code == 0 && r.out.contains("run #" + QByteArray::number(static_cast<qint64>(evalId))), qPrintable(r.describe()));
        r = cli({"--store", store, "compare", "--model", "llama-2-7b", "--dataset", "wikitext2", "--ctx", "4096"}, env);
        QVERIFY2(r.code == 0 && r.out.contains("published: AQLM paper (arXiv 2401.06118) Table 1") && !r.out.contains("run #"),
                 qPrintable(r.describe()));

        // compress one matrix, then evaluate the archive: linked to the compress run and its model.
        const QString archive = path("cli/q0.pllm");
        r = cli({"--json", "-q", "--store", store, "compress", model, "-o", archive, "--blocks", "0", "--types", "q", "--set", "K=16", "--set",
                 "epochs=1", "--set", "batch=512", "--threads", "1"},
                env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const json compressed = json::parse(r.out.constData());
        const std::int64_t compressId = compressed["run_id"];
        r = cli({"--json", "--store", store, "runs", "show", QString::number(compressId)}, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        run = json::parse(r.out.constData());
        QCOMPARE(run["kind"].get<std::string>(), std::string("compress"));
        QCOMPARE(run["status"].get<std::string>(), std::string("done"));
        QCOMPARE(run["params"]["K"].get<std::int64_t>(), std::int64_t{16});
        QCOMPARE(run["matrices"].size(), std::size_t{1});
        QCOMPARE(run["matrices"][0]["name"].get<std::string>(), compressed["matrices"][0]["name"].get<std::string>());
        QCOMPARE(run["matrices"][0]["bpw"].get<double>(), compressed["matrices"][0]["bpw"].get<double>());
        QCOMPARE(run["matrices"][0]["snr_db"].get<double>(), compressed["matrices"][0]["snr_db"].get<double>());
        QCOMPARE(run["bpw_compressed"].get<double>(), compressed["bpw_compressed"].get<double>());
        QCOMPARE(run["archive_bytes"].get<std::uint64_t>(), compressed["archive_bytes"].get<std::uint64_t>());

        r = cli(QStringList{"--json", "-q", "--store", store, "eval", archive, "--text", text, "--ctx", "64", "--max-tokens", "200"}, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const std::int64_t archiveEvalId = json::parse(r.out.constData())["run_id"];
        r = cli({"--json", "--store", store, "runs", "show", QString::number(archiveEvalId)}, env);
        run = json::parse(r.out.constData());
        QCOMPARE(run["parent_run"].get<std::int64_t>(), compressId);
        QCOMPARE(run["method"].get<std::string>(), std::string("pocketllm"));
        QCOMPARE(run["model"].get<std::string>(), std::string("stories260K.bin"));
        QCOMPARE(run["bpw_compressed"].get<double>(), compressed["bpw_compressed"].get<double>());
        r = cli({"--json", "--store", store, "compare", "--model", "stories"}, env);
        const json rows = json::parse(r.out.constData())["rows"];
        QCOMPARE(rows.size(), std::size_t{2});
        QCOMPARE(rows[1]["run_id"].get<std::int64_t>(), evalId); // 32 bpw after the compressed one
        QVERIFY(rows[0]["compress_s"].is_number());

        // --no-store records nothing; $POCKETLLM_STORE and the default path are honoured.
        r = cli(QStringList{"-q", "--no-store", "--store", store} + evalArgs, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        r = cli({"--json", "--store", store, "runs", "list", "--limit", "0"}, env);
        QCOMPARE(json::parse(r.out.constData())["runs"].size(), std::size_t{3});
        QProcessEnvironment withStore = env;
        withStore.insert("POCKETLLM_STORE", path("cli/from-env.sqlite"));
        QVERIFY(cli(QStringList{"-q"} + evalArgs, withStore).code == 0);
        QVERIFY(QFileInfo::exists(path("cli/from-env.sqlite")));
        QVERIFY(cli(QStringList{"-q"} + evalArgs, env).code == 0);
        QVERIFY(QFileInfo::exists(dataDir + "/experiments.sqlite"));
        QCOMPARE(ExperimentStore::open(str(dataDir + "/experiments.sqlite")).value()->listRuns()->size(), std::size_t{1});

        // A store that cannot be used: the result still comes, with a warning.
        const QString garbage = path("cli/garbage.sqlite");
        testsupport::writeText(str(garbage), std::string(4096, 'x'));
        r = cli(QStringList{"--json", "-q", "--store", garbage} + evalArgs, env);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QCOMPARE(json::parse(r.out.constData())["perplexity"].get<double>(), eval["perplexity"].get<double>());
        QVERIFY2(r.err.contains("experiment store: " + garbage.toUtf8() + ": not a PocketLLM store"), qPrintable(r.describe()));
        r = cli({"--json", "--store", garbage, "runs", "list"}, env);
        QCOMPARE(r.code, 1);
        QVERIFY(json::parse(r.out.constData())["error"].get<std::string>().find("not a PocketLLM store") != std::string::npos);
        r = cli({"--store", store, "runs", "show", "999"}, env);
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("no run #999"));
    }
};

int main(int argc, char** argv)
{
    if (argc == 5 && std::string(argv[1]) == "--store-writer")
        return storeWriter(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    QCoreApplication app(argc, argv);
    TestStore test;
    return QTest::qExec(&test, argc, argv);
}

#include "test_store.moc"
