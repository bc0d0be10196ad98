#include "pocket/store/experiment_store.h"

#include "pocket/io/fingerprint.h"
#include "pocket/support/app_paths.h"
#include "pocket/published_seed.h"
#include "pocket/version.h"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <tuple>

namespace pocket {

namespace fs = std::filesystem;

namespace {

// 'PLLM' in the database header: tells our files apart from any other SQLite file.
constexpr std::int32_t kApplicationId = 0x504C4C4D;
constexpr int kBusyTimeoutMs = 10000;

const char* const kKindNames[] = {"compress", "eval", "sensitivity"};
const char* const kStatusNames[] = {"running", "done", "failed", "cancelled"};

// A prepared statement; finalised on destruction.
class Stmt {
public:
    Stmt(sqlite3* db, const char* sql) { m_rc = sqlite3_prepare_v2(db, sql, -1, &m_stmt, nullptr); }
    ~Stmt() { sqlite3_finalize(m_stmt); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    bool prepared() const { return m_rc == SQLITE_OK; }
    void bind(int i, std::int64_t v) { sqlite3_bind_int64(m_stmt, i, v); }
    void bind(int i, int v) { sqlite3_bind_int64(m_stmt, i, v); }
    void bind(int i, double v) { sqlite3_bind_double(m_stmt, i, v); }
    void bind(int i, const std::string& v) { sqlite3_bind_text(m_stmt, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
    void bindNull(int i) { sqlite3_bind_null(m_stmt, i); }
    template <class T>
    void bind(int i, const std::optional<T>& v)
    {
        if (v)
            bind(i, *v);
        else
            bindNull(i);
    }
    void bind(int i, std::uint64_t v) { bind(i, static_cast<std::int64_t>(v)); }
    // An id of 0 means "none": stored as NULL so foreign keys hold.
    void bindId(int i, std::int64_t id)
    {
        if (id > 0)
            bind(i, id);
        else
            bindNull(i);
    }

    int step() { return sqlite3_step(m_stmt); }
    void reset()
    {
        sqlite3_reset(m_stmt);
        sqlite3_clear_bindings(m_stmt);
    }

    bool isNull(int c) const { return sqlite3_column_type(m_stmt, c) == SQLITE_NULL; }
    std::int64_t int64(int c) const { return sqlite3_column_int64(m_stmt, c); }
    // NULL reads as NaN: SQLite stores a NaN as NULL, so a diverged value comes back as NaN.
    double real(int c) const { return isNull(c) ? std::numeric_limits<double>::quiet_NaN() : sqlite3_column_double(m_stmt, c); }
    std::string text(int c) const
    {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_stmt, c));
        return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(m_stmt, c))) : std::string();
    }
    std::optional<double> optReal(int c) const { return isNull(c) ? std::nullopt : std::optional<double>(sqlite3_column_double(m_stmt, c)); }
    std::optional<int> optInt(int c) const { return isNull(c) ? std::nullopt : std::optional<int>(static_cast<int>(int64(c))); }
    std::optional<std::int64_t> optInt64(int c) const { return isNull(c) ? std::nullopt : std::optional<std::int64_t>(int64(c)); }

private:
    sqlite3_stmt* m_stmt = nullptr;
    int m_rc = SQLITE_OK;
};

std::string lower(std::string s)
{
    for (char& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// ----------------------------------------------------------------------------- schema
// Migration N takes a store at version N-1 to version N, inside the caller's transaction.
// Append new ones; never edit one that has shipped.
const char* const kMigration1 = R"sql(
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  architecture TEXT NOT NULL DEFAULT '',
  parameter_count INTEGER NOT NULL DEFAULT 0,
  content_hash TEXT NOT NULL UNIQUE,
  path TEXT NOT NULL DEFAULT '',
  first_seen TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));
CREATE TABLE datasets (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  split TEXT NOT NULL DEFAULT '',
  file_hash TEXT NOT NULL DEFAULT '',
  path TEXT NOT NULL DEFAULT '',
  UNIQUE (name, split, file_hash));
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('compress', 'eval')),
  method TEXT NOT NULL DEFAULT '',
  params_json TEXT NOT NULL DEFAULT '{}',
  model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
  selection_json TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
  wall_seconds REAL,
  peak_rss_mb REAL,
  program_version TEXT NOT NULL DEFAULT '',
  archive_path TEXT NOT NULL DEFAULT '',
  archive_bytes INTEGER,
  bpw_compressed REAL,
  bpw_all_in REAL,
  parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
  notes TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '');
CREATE INDEX runs_by_model ON runs(model_id);
CREATE INDEX runs_by_archive ON runs(archive_path) WHERE archive_path <> '';
CREATE INDEX runs_by_parent ON runs(parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE TABLE results (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  metric TEXT NOT NULL,
  dataset_id INTEGER REFERENCES datasets(id),
  ctx INTEGER,
  stride INTEGER,
  value REAL,
  tokens INTEGER);
CREATE INDEX results_by_run ON results(run_id);
CREATE INDEX results_by_metric ON results(metric);
CREATE TABLE matrix_metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  group_id TEXT NOT NULL DEFAULT '',
  n_rows INTEGER NOT NULL DEFAULT 0,
  n_cols INTEGER NOT NULL DEFAULT 0,
  mse REAL,
  snr_db REAL,
  bpw REAL,
  sensitivity REAL,
  PRIMARY KEY (run_id, name));
CREATE TABLE published (
  id INTEGER PRIMARY KEY,
  method TEXT NOT NULL,
  model TEXT NOT NULL,
  bpw REAL,
  dataset TEXT NOT NULL DEFAULT '',
  split TEXT NOT NULL DEFAULT '',
  ctx INTEGER,
  metric TEXT NOT NULL,
  value REAL NOT NULL,
  source TEXT NOT NULL,
  setting TEXT NOT NULL DEFAULT '',
  note TEXT NOT NULL DEFAULT '');
CREATE INDEX published_by_metric ON published(metric);
)sql";

// Version 2: sensitivity runs (a third run kind) and their per-matrix measures. SQLite cannot
// change a CHECK constraint in place, so runs is rebuilt (foreign keys are off during migrations,
// so the rows that reference runs survive; the new table takes the old name and its references).
const char* const kMigration2 = R"sql(
CREATE TABLE runs_v2 (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('compress', 'eval', 'sensitivity')),
  method TEXT NOT NULL DEFAULT '',
  params_json TEXT NOT NULL DEFAULT '{}',
  model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
  selection_json TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
  wall_seconds REAL,
  peak_rss_mb REAL,
  program_version TEXT NOT NULL DEFAULT '',
  archive_path TEXT NOT NULL DEFAULT '',
  archive_bytes INTEGER,
  bpw_compressed REAL,
  bpw_all_in REAL,
  parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
  notes TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '');
INSERT INTO runs_v2 SELECT * FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
CREATE INDEX runs_by_model ON runs(model_id);
CREATE INDEX runs_by_archive ON runs(archive_path) WHERE archive_path <> '';
CREATE INDEX runs_by_parent ON runs(parent_run_id) WHERE parent_run_id IS NOT NULL;
ALTER TABLE matrix_metrics ADD COLUMN delta_perplexity REAL;
ALTER TABLE matrix_metrics ADD COLUMN top1_agreement REAL;
)sql";

struct Migration {
    int version;
    const char* sql;
};
const Migration kMigrations[] = {
    {1, kMigration1},
    {2, kMigration2},
};
static_assert(sizeof kMigrations / sizeof kMigrations[0] == ExperimentStore::kSchemaVersion,
              "one migration per schema version, in order");

constexpr const char* kSelectRun =
    "SELECT r.id, r.kind, r.method, r.params_json, COALESCE(r.model_id, 0), COALESCE(m.name, ''), r.selection_json, r.started_at,"
    " COALESCE(r.finished_at, ''), r.status, r.wall_seconds, r.peak_rss_mb, r.program_version, r.archive_path, r.archive_bytes,"
    " r.bpw_compressed, r.bpw_all_in, COALESCE(r.parent_run_id, 0), r.notes, r.error"
    " FROM runs r LEFT JOIN models m ON m.id = r.model_id";

RunRecord readRun(const Stmt& s)
{
    RunRecord r;
    r.id = s.int64(0);
    r.kind = parseRunKind(s.text(1)).value_or(RunKind::Eval);
    r.method = s.text(2);
    r.paramsJson = s.text(3);
    r.modelId = s.int64(4);
    r.modelName = s.text(5);
    r.selectionJson = s.text(6);
    r.startedAt = s.text(7);
    r.finishedAt = s.text(8);
    r.status = parseRunStatus(s.text(9)).value_or(RunStatus::Failed);
    r.wallSeconds = s.optReal(10);
    r.peakRssMb = s.optReal(11);
    r.programVersion = s.text(12);
    r.archivePath = s.text(13);
    if (auto bytes = s.optInt64(14))
        r.archiveBytes = static_cast<std::uint64_t>(*bytes);
    r.bpwCompressed = s.optReal(15);
    r.bpwAllIn = s.optReal(16);
    r.parentRunId = s.int64(17);
    r.notes = s.text(18);
    r.error = s.text(19);
    return r;
}

// Sort key for compare(). Not grouped by model or dataset name: a user's "Llama-2-7b-hf" on
// "wiki.test.raw" must interleave with the papers' "Llama-2-7B" on "wikitext2" (the filter says
// what is comparable). Unknown ctx and bpw sort after every known one.
auto compareKey(const CompareRow& r)
{
    return std::make_tuple(r.metric, !r.ctx.has_value(), r.ctx.value_or(0), !r.bpw.has_value(), r.bpw.value_or(0.0), !r.published,
                           std::isnan(r.value) ? std::numeric_limits<double>::infinity() : r.value, lower(r.model), lower(r.dataset), r.runId);
}

} // namespace

const char* experimentStoreMigrationSql(int version)
{
    for (const Migration& m : kMigrations)
        if (m.version == version)
            return m.sql;
    return nullptr;
}

const char* runKindName(RunKind kind) { return kKindNames[static_cast<int>(kind)]; }
const char* runStatusName(RunStatus status) { return kStatusNames[static_cast<int>(status)]; }

std::optional<RunKind> parseRunKind(const std::string& name)
{
    for (int i = 0; i < 3; ++i)
        if (name == kKindNames[i])
            return static_cast<RunKind>(i);
    return std::nullopt;
}

std::optional<RunStatus> parseRunStatus(const std::string& name)
{
    for (int i = 0; i < 4; ++i)
        if (name == kStatusNames[i])
            return static_cast<RunStatus>(i);
    return std::nullopt;
}

// ----------------------------------------------------------------------------- connection
struct ExperimentStore::Impl {
    std::string path;
    sqlite3* db = nullptr;

    ~Impl()
    {
        if (db)
            sqlite3_close_v2(db);
    }

    // "<path>: <SQLite's message> (<what>)"; a file that is not a database says so plainly.
    Error error(const std::string& what) const
    {
        const int code = db ? sqlite3_errcode(db) : SQLITE_CANTOPEN;
        if (code == SQLITE_NOTADB)
            return fileError(path, "not a PocketLLM store (not an SQLite database)");
        const std::string message = db ? sqlite3_errmsg(db) : "cannot open the database";
        return fileError(path, message + " (" + what + ")");
    }

    Status exec(const char* sql, const std::string& what)
    {
        char* message = nullptr;
        if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
            sqlite3_free(message);
            return error(what);
        }
        return {};
    }

    Result<std::int64_t> pragmaInt(const char* sql, const std::string& what)
    {
        Stmt s(db, sql);
        if (!s.prepared() || s.step() != SQLITE_ROW)
            return error(what);
        return s.int64(0);
    }

    // Runs `body` inside BEGIN IMMEDIATE ... COMMIT: the write lock is taken up front (waiting up
    // to the busy timeout), so a transaction never fails half-way because another writer
    // upgraded first. Rolled back if `body` fails.
    Status write(const std::string& what, const std::function<Status()>& body)
    {
        if (auto s = exec("BEGIN IMMEDIATE", what); !s)
            return s;
        Status result = body();
        if (result)
            result = exec("COMMIT", what);
        if (!result)
            sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        return result;
    }

    // Classifies the file before anything is written to it: a foreign SQLite file must stay untouched.
    Status checkIdentity(bool& needsMigration)
    {
        auto appId = pragmaInt("PRAGMA application_id", "reading the header");
        if (!appId)
            return appId.error();
        auto version = pragmaInt("PRAGMA user_version", "reading the schema version");
        if (!version)
            return version.error();
        auto tables = pragmaInt("SELECT count(*) FROM sqlite_master", "reading the schema");
        if (!tables)
            return tables.error();
        const bool empty = *appId == 0 && *version == 0 && *tables == 0;
        if (!empty && *appId != kApplicationId)
            return fileError(path, "not a PocketLLM store (an SQLite database of another program)");
        if (*version > ExperimentStore::kSchemaVersion)
            return fileError(path, "schema version " + std::to_string(*version) + " is newer than this program's " +
                                       std::to_string(ExperimentStore::kSchemaVersion) + " (update PocketLLM Workbench)", ErrorKind::Unsupported);
        needsMigration = *version < ExperimentStore::kSchemaVersion;
        return {};
    }

    Status migrate()
    {
        return write("migrating the schema", [&]() -> Status {
            // Another process may have migrated while we waited for the lock: look again.
            bool needed = false;
            if (auto s = checkIdentity(needed); !s)
                return s;
            if (!needed)
                return {};
            auto from = pragmaInt("PRAGMA user_version", "reading the schema version");
            if (!from)
                return from.error();
            for (const Migration& m : kMigrations) {
                if (m.version <= *from)
                    continue;
                if (auto s = exec(m.sql, "migration " + std::to_string(m.version)); !s)
                    return s;
                const std::string setVersion = "PRAGMA user_version = " + std::to_string(m.version);
                if (auto s = exec(setVersion.c_str(), "migration " + std::to_string(m.version)); !s)
                    return s;
            }
            const std::string setId = "PRAGMA application_id = " + std::to_string(kApplicationId);
            return exec(setId.c_str(), "writing the header");
        });
    }

    Result<std::string> metaValue(const std::string& key)
    {
        Stmt s(db, "SELECT value FROM meta WHERE key = ?");
        if (!s.prepared())
            return error("reading meta");
        s.bind(1, key);
        const int rc = s.step();
        if (rc == SQLITE_ROW)
            return s.text(0);
        if (rc == SQLITE_DONE)
            return std::string();
        return error("reading meta");
    }

    // The published table is reference data owned by the program: it is replaced whenever the
    // embedded seed differs from the one the file was last seeded with (keyed by its hash).
    Status seedPublished()
    {
        const std::string seed = kPublishedSeedJson;
        const std::string hash = textFingerprint(seed);
        auto current = metaValue("published_seed");
        if (!current)
            return current.error();
        if (*current == hash)
            return {};
        nlohmann::json rows = nlohmann::json::parse(seed, nullptr, false);
        if (!rows.is_array())
            return fileError(path, "the embedded published-baselines seed is not a JSON array (a build problem)");
        return write("seeding the published baselines", [&]() -> Status {
            auto again = metaValue("published_seed");
            if (!again)
                return again.error();
            if (*again == hash)
                return {};
            if (auto s = exec("DELETE FROM published", "seeding the published baselines"); !s)
                return s;
            Stmt ins(db, "INSERT INTO published (method, model, bpw, dataset, split, ctx, metric, value, source, setting, note)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
            if (!ins.prepared())
                return error("seeding the published baselines");
            for (const auto& row : rows) {
                if (!row.is_object() || !row.contains("value") || !row["value"].is_number() || !row.contains("source"))
                    return fileError(path, "the embedded published-baselines seed has a row without value or source: " + row.dump());
                auto str = [&](const char* key) { return row.contains(key) && row[key].is_string() ? row[key].get<std::string>() : std::string(); };
                ins.reset();
                ins.bind(1, str("method"));
                ins.bind(2, str("model"));
                if (row.contains("bpw") && row["bpw"].is_number())
                    ins.bind(3, row["bpw"].get<double>());
                ins.bind(4, str("dataset"));
                ins.bind(5, str("split"));
                if (row.contains("ctx") && row["ctx"].is_number_integer())
                    ins.bind(6, row["ctx"].get<std::int64_t>());
                ins.bind(7, str("metric"));
                ins.bind(8, row["value"].get<double>());
                ins.bind(9, str("source"));
                ins.bind(10, str("setting"));
                ins.bind(11, str("note"));
                if (ins.step() != SQLITE_DONE)
                    return error("seeding the published baselines");
            }
            Stmt meta(db, "INSERT INTO meta (key, value) VALUES ('published_seed', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
            if (!meta.prepared())
                return error("seeding the published baselines");
            meta.bind(1, hash);
            if (meta.step() != SQLITE_DONE)
                return error("seeding the published baselines");
            return {};
        });
    }

    Status readResults(RunRecord& run)
    {
        Stmt s(db, "SELECT res.metric, COALESCE(res.dataset_id, 0), COALESCE(d.name, ''), res.ctx, res.stride, res.value, res.tokens"
                   " FROM results res LEFT JOIN datasets d ON d.id = res.dataset_id WHERE res.run_id = ? ORDER BY res.id");
        if (!s.prepared())
            return error("reading results");
        s.bind(1, run.id);
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) {
            RunResult r;
            r.metric = s.text(0);
            r.datasetId = s.int64(1);
            r.datasetName = s.text(2);
            r.ctx = s.optInt(3);
            r.stride = s.optInt(4);
            r.value = s.real(5);
            r.tokens = s.optInt64(6);
            run.results.push_back(std::move(r));
        }
        return rc == SQLITE_DONE ? Status() : Status(error("reading results"));
    }
};

ExperimentStore::ExperimentStore(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
ExperimentStore::~ExperimentStore() = default;

const std::string& ExperimentStore::path() const { return m_impl->path; }

std::string ExperimentStore::defaultPath() { return (fs::path(userDataDir()) / "experiments.sqlite").string(); }

Result<std::unique_ptr<ExperimentStore>> ExperimentStore::open(const std::string& path)
{
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    std::error_code ec;
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::exists(parent, ec)) {
        fs::create_directories(parent, ec);
        if (ec)
            return fileError(parent.string(), "cannot create the folder: " + ec.message(), ErrorKind::Io);
    }
    if (fs::is_directory(path, ec))
        return fileError(path, "is a folder, not a PocketLLM store");
    // One connection per object and per thread: SQLite's own per-connection mutex is not needed.
    const int rc = sqlite3_open_v2(path.c_str(), &impl->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK)
        return impl->error("opening");
    sqlite3_busy_timeout(impl->db, kBusyTimeoutMs);

    bool needsMigration = false;
    if (auto s = impl->checkIdentity(needsMigration); !s)
        return s.error();
    // WAL: readers never block the writer and writers do not block readers; NORMAL
    // synchronisation is durable against application crashes and cheap per transaction.
    {
        Stmt wal(impl->db, "PRAGMA journal_mode = WAL");
        if (!wal.prepared() || wal.step() != SQLITE_ROW)
            return impl->error("switching to WAL mode");
    }
    // Migrations run with foreign keys off (a rebuilt table must not cascade deletes); the pragma
    // is a no-op inside a transaction, so it is set around the migration's transaction.
    if (auto s = impl->exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF", "configuring the connection"); !s)
        return s.error();
    if (needsMigration)
        if (auto s = impl->migrate(); !s)
            return s.error();
    if (auto s = impl->exec("PRAGMA foreign_keys = ON", "configuring the connection"); !s)
        return s.error();
    if (auto s = impl->seedPublished(); !s)
        return s.error();
    return std::unique_ptr<ExperimentStore>(new ExperimentStore(std::move(impl)));
}

Result<std::int64_t> ExperimentStore::upsertModel(const ModelInfo& model)
{
    if (model.contentHash.empty())
        return fileError(m_impl->path, "a model needs a content hash");
    std::int64_t id = 0;
    auto s = m_impl->write("saving a model", [&]() -> Status {
        Stmt st(m_impl->db, "INSERT INTO models (name, architecture, parameter_count, content_hash, path) VALUES (?1, ?2, ?3, ?4, ?5)"
                            " ON CONFLICT(content_hash) DO UPDATE SET name = excluded.name, architecture = excluded.architecture,"
                            " parameter_count = excluded.parameter_count, path = excluded.path RETURNING id");
        if (!st.prepared())
            return m_impl->error("saving a model");
        st.bind(1, model.name);
        st.bind(2, model.architecture);
        st.bind(3, model.parameterCount);
        st.bind(4, model.contentHash);
        st.bind(5, model.path);
        if (st.step() != SQLITE_ROW)
            return m_impl->error("saving a model");
        id = st.int64(0);
        if (st.step() != SQLITE_DONE)
            return m_impl->error("saving a model");
        return {};
    });
    if (!s)
        return s.error();
    return id;
}

Result<std::int64_t> ExperimentStore::upsertDataset(const DatasetInfo& dataset)
{
    std::int64_t id = 0;
    auto s = m_impl->write("saving a dataset", [&]() -> Status {
        Stmt st(m_impl->db, "INSERT INTO datasets (name, split, file_hash, path) VALUES (?1, ?2, ?3, ?4)"
                            " ON CONFLICT(name, split, file_hash) DO UPDATE SET path = excluded.path RETURNING id");
        if (!st.prepared())
            return m_impl->error("saving a dataset");
        st.bind(1, dataset.name);
        st.bind(2, dataset.split);
        st.bind(3, dataset.fileHash);
        st.bind(4, dataset.path);
        if (st.step() != SQLITE_ROW)
            return m_impl->error("saving a dataset");
        id = st.int64(0);
        if (st.step() != SQLITE_DONE)
            return m_impl->error("saving a dataset");
        return {};
    });
    if (!s)
        return s.error();
    return id;
}

Result<std::int64_t> ExperimentStore::beginRun(const RunStart& run)
{
    std::int64_t id = 0;
    auto s = m_impl->write("beginning a run", [&]() -> Status {
        Stmt st(m_impl->db, "INSERT INTO runs (kind, method, params_json, model_id, selection_json, started_at, status, program_version,"
                            " archive_path, parent_run_id, notes)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), 'running', ?6, ?7, ?8, ?9)");
        if (!st.prepared())
            return m_impl->error("beginning a run");
        st.bind(1, std::string(runKindName(run.kind)));
        st.bind(2, run.method);
        st.bind(3, run.paramsJson.empty() ? std::string("{}") : run.paramsJson);
        st.bindId(4, run.modelId);
        st.bind(5, run.selectionJson);
        st.bind(6, run.programVersion.empty() ? std::string(POCKET_VERSION " (" POCKET_GIT_REVISION ")") : run.programVersion);
        st.bind(7, run.archivePath);
        st.bindId(8, run.parentRunId);
        st.bind(9, run.notes);
        if (st.step() != SQLITE_DONE)
            return m_impl->error("beginning a run");
        id = sqlite3_last_insert_rowid(m_impl->db);
        return {};
    });
    if (!s)
        return s.error();
    return id;
}

Status ExperimentStore::finishRun(std::int64_t runId, const RunFinish& f)
{
    return m_impl->write("finishing run #" + std::to_string(runId), [&]() -> Status {
        Stmt st(m_impl->db, "UPDATE runs SET status = ?2, finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),"
                            " wall_seconds = COALESCE(?3, wall_seconds), peak_rss_mb = COALESCE(?4, peak_rss_mb),"
                            " archive_bytes = COALESCE(?5, archive_bytes), bpw_compressed = COALESCE(?6, bpw_compressed),"
                            " bpw_all_in = COALESCE(?7, bpw_all_in), params_json = COALESCE(NULLIF(?8, ''), params_json),"
                            " selection_json = COALESCE(NULLIF(?9, ''), selection_json), error = ?10 WHERE id = ?1");
        if (!st.prepared())
            return m_impl->error("finishing a run");
        st.bind(1, runId);
        st.bind(2, std::string(runStatusName(f.status)));
        st.bind(3, f.wallSeconds);
        st.bind(4, f.peakRssMb);
        st.bind(5, f.archiveBytes);
        st.bind(6, f.bpwCompressed);
        st.bind(7, f.bpwAllIn);
        st.bind(8, f.paramsJson);
        st.bind(9, f.selectionJson);
        st.bind(10, f.error);
        if (st.step() != SQLITE_DONE)
            return m_impl->error("finishing a run");
        if (sqlite3_changes(m_impl->db) != 1)
            return fileError(m_impl->path, "no run #" + std::to_string(runId));
        return {};
    });
}

Status ExperimentStore::addResult(std::int64_t runId, const RunResult& r)
{
    return m_impl->write("saving a result of run #" + std::to_string(runId), [&]() -> Status {
        Stmt st(m_impl->db, "INSERT INTO results (run_id, metric, dataset_id, ctx, stride, value, tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        if (!st.prepared())
            return m_impl->error("saving a result");
        st.bind(1, runId);
        st.bind(2, r.metric);
        st.bindId(3, r.datasetId);
        st.bind(4, r.ctx);
        st.bind(5, r.stride);
        st.bind(6, r.value);
        st.bind(7, r.tokens);
        if (st.step() != SQLITE_DONE)
            return m_impl->error("saving a result of run #" + std::to_string(runId));
        return {};
    });
}

Status ExperimentStore::addMatrixMetrics(std::int64_t runId, const std::vector<MatrixMetric>& matrices)
{
    return m_impl->write("saving the matrix metrics of run #" + std::to_string(runId), [&]() -> Status {
        Stmt st(m_impl->db, "INSERT OR REPLACE INTO matrix_metrics (run_id, name, group_id, n_rows, n_cols, mse, snr_db, bpw, sensitivity,"
                            " delta_perplexity, top1_agreement) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
        if (!st.prepared())
            return m_impl->error("saving matrix metrics");
        for (const MatrixMetric& m : matrices) {
            st.reset();
            st.bind(1, runId);
            st.bind(2, m.name);
            st.bind(3, m.groupId);
            st.bind(4, m.rows);
            st.bind(5, m.cols);
            st.bind(6, m.mse);
            st.bind(7, m.snrDb);
            st.bind(8, m.bpw);
            st.bind(9, m.sensitivity);
            st.bind(10, m.deltaPerplexity);
            st.bind(11, m.top1Agreement);
            if (st.step() != SQLITE_DONE)
                return m_impl->error("saving the matrix metrics of run #" + std::to_string(runId));
        }
        return {};
    });
}

Status ExperimentStore::deleteRun(std::int64_t runId)
{
    return m_impl->write("deleting run #" + std::to_string(runId), [&]() -> Status {
        Stmt st(m_impl->db, "DELETE FROM runs WHERE id = ?");
        if (!st.prepared())
            return m_impl->error("deleting a run");
        st.bind(1, runId);
        if (st.step() != SQLITE_DONE)
            return m_impl->error("deleting run #" + std::to_string(runId));
        if (sqlite3_changes(m_impl->db) != 1)
            return fileError(m_impl->path, "no run #" + std::to_string(runId));
        return {};
    });
}

Result<std::vector<RunRecord>> ExperimentStore::listRuns(const RunFilter& filter)
{
    const std::string sql = std::string(kSelectRun) +
                            " WHERE (?1 IS NULL OR r.kind = ?1) AND (?2 IS NULL OR r.status = ?2)"
                            " AND (?3 = '' OR instr(lower(COALESCE(m.name, '')), lower(?3)) > 0) AND (?4 = '' OR r.method = ?4)"
                            " ORDER BY r.id DESC LIMIT ?5";
    Stmt s(m_impl->db, sql.c_str());
    if (!s.prepared())
        return m_impl->error("listing runs");
    if (filter.kind)
        s.bind(1, std::string(runKindName(*filter.kind)));
    if (filter.status)
        s.bind(2, std::string(runStatusName(*filter.status)));
    s.bind(3, filter.model);
    s.bind(4, filter.method);
    s.bind(5, filter.limit > 0 ? std::int64_t{filter.limit} : std::int64_t{-1});
    std::vector<RunRecord> runs;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW)
        runs.push_back(readRun(s));
    if (rc != SQLITE_DONE)
        return m_impl->error("listing runs");
    for (RunRecord& r : runs)
        if (auto st = m_impl->readResults(r); !st)
            return st.error();
    return runs;
}

Result<RunRecord> ExperimentStore::run(std::int64_t runId)
{
    const std::string sql = std::string(kSelectRun) + " WHERE r.id = ?";
    Stmt s(m_impl->db, sql.c_str());
    if (!s.prepared())
        return m_impl->error("reading a run");
    s.bind(1, runId);
    const int rc = s.step();
    if (rc == SQLITE_DONE)
        return fileError(m_impl->path, "no run #" + std::to_string(runId));
    if (rc != SQLITE_ROW)
        return m_impl->error("reading run #" + std::to_string(runId));
    RunRecord r = readRun(s);
    if (auto st = m_impl->readResults(r); !st)
        return st.error();
    Stmt m(m_impl->db, "SELECT name, group_id, n_rows, n_cols, mse, snr_db, bpw, sensitivity, delta_perplexity, top1_agreement"
                       " FROM matrix_metrics WHERE run_id = ? ORDER BY rowid");
    if (!m.prepared())
        return m_impl->error("reading matrix metrics");
    m.bind(1, runId);
    int mrc;
    while ((mrc = m.step()) == SQLITE_ROW) {
        MatrixMetric x;
        x.name = m.text(0);
        x.groupId = m.text(1);
        x.rows = m.int64(2);
        x.cols = m.int64(3);
        x.mse = m.real(4);
        x.snrDb = m.real(5);
        x.bpw = m.real(6);
        x.sensitivity = m.optReal(7);
        x.deltaPerplexity = m.optReal(8);
        x.top1Agreement = m.optReal(9);
        r.matrices.push_back(std::move(x));
    }
    if (mrc != SQLITE_DONE)
        return m_impl->error("reading the matrix metrics of run #" + std::to_string(runId));
    return r;
}

Result<std::int64_t> ExperimentStore::findCompressRun(const std::string& archivePath, std::optional<std::uint64_t> archiveBytes)
{
    Stmt s(m_impl->db, "SELECT id FROM runs WHERE kind = 'compress' AND status = 'done' AND archive_path = ?1"
                       " AND (?2 IS NULL OR archive_bytes = ?2) ORDER BY id DESC LIMIT 1");
    if (!s.prepared())
        return m_impl->error("finding a compress run");
    s.bind(1, archivePath);
    s.bind(2, archiveBytes);
    const int rc = s.step();
    if (rc == SQLITE_ROW)
        return s.int64(0);
    if (rc == SQLITE_DONE)
        return std::int64_t{0};
    return m_impl->error("finding a compress run");
}

Result<std::vector<PublishedRow>> ExperimentStore::published(const CompareFilter& filter)
{
    Stmt s(m_impl->db, "SELECT id, method, model, bpw, dataset, split, ctx, metric, value, source, setting, note FROM published"
                       " WHERE (?1 = '' OR metric = ?1) AND (?2 = '' OR instr(lower(model), lower(?2)) > 0)"
                       " AND (?3 = '' OR instr(lower(dataset), lower(?3)) > 0) AND (?4 IS NULL OR ctx = ?4) ORDER BY id");
    if (!s.prepared())
        return m_impl->error("reading the published baselines");
    s.bind(1, filter.metric);
    s.bind(2, filter.model);
    s.bind(3, filter.dataset);
    s.bind(4, filter.ctx);
    std::vector<PublishedRow> rows;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) {
        PublishedRow p;
        p.id = s.int64(0);
        p.method = s.text(1);
        p.model = s.text(2);
        p.bpw = s.optReal(3);
        p.dataset = s.text(4);
        p.split = s.text(5);
        p.ctx = s.optInt(6);
        p.metric = s.text(7);
        p.value = s.real(8);
        p.source = s.text(9);
        p.setting = s.text(10);
        p.note = s.text(11);
        rows.push_back(std::move(p));
    }
    if (rc != SQLITE_DONE)
        return m_impl->error("reading the published baselines");
    return rows;
}

Result<std::vector<CompareRow>> ExperimentStore::compare(const CompareFilter& filter)
{
    std::vector<CompareRow> rows;
    if (filter.includePublished) {
        auto pub = published(filter);
        if (!pub)
            return pub.error();
        for (const PublishedRow& p : *pub) {
            CompareRow r;
            r.method = p.method;
            r.model = p.model;
            r.bpw = p.bpw;
            r.dataset = p.dataset;
            r.ctx = p.ctx;
            r.metric = p.metric;
            r.value = p.value;
            r.source = p.source;
            r.published = true;
            r.note = p.note;
            rows.push_back(std::move(r));
        }
    }
    if (filter.includeRuns) {
        Stmt s(m_impl->db,
               "SELECT r.id, r.method, COALESCE(r.bpw_compressed, r.bpw_all_in), COALESCE(m.name, ''), COALESCE(d.name, ''), res.ctx,"
               " res.metric, res.value, r.wall_seconds, p.wall_seconds"
               " FROM results res JOIN runs r ON r.id = res.run_id LEFT JOIN models m ON m.id = r.model_id"
               " LEFT JOIN datasets d ON d.id = res.dataset_id LEFT JOIN runs p ON p.id = r.parent_run_id"
               " WHERE r.status = 'done' AND r.kind IN ('compress', 'eval') AND (?1 = '' OR res.metric = ?1)"
               " AND (?2 = '' OR instr(lower(COALESCE(m.name, '')), lower(?2)) > 0)"
               " AND (?3 = '' OR instr(lower(COALESCE(d.name, '')), lower(?3)) > 0) AND (?4 IS NULL OR res.ctx = ?4)");
        if (!s.prepared())
            return m_impl->error("comparing runs");
        s.bind(1, filter.metric);
        s.bind(2, filter.model);
        s.bind(3, filter.dataset);
        s.bind(4, filter.ctx);
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) {
            CompareRow r;
            r.runId = s.int64(0);
            r.method = s.text(1);
            r.bpw = s.optReal(2);
            r.model = s.text(3);
            r.dataset = s.text(4);
            r.ctx = s.optInt(5);
            r.metric = s.text(6);
            r.value = s.real(7);
            r.wallSeconds = s.optReal(8);
            r.compressSeconds = s.optReal(9);
            r.source = "run #" + std::to_string(r.runId);
            rows.push_back(std::move(r));
        }
        if (rc != SQLITE_DONE)
            return m_impl->error("comparing runs");
    }
    std::stable_sort(rows.begin(), rows.end(), [](const CompareRow& a, const CompareRow& b) { return compareKey(a) < compareKey(b); });
    return rows;
}

// ----------------------------------------------------------------------------- fingerprints
} // namespace pocket
