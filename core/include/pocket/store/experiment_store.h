// The experiment store: one SQLite file (default <userDataDir()>/experiments.sqlite) that records
// every compression and evaluation run (parameters, timings, bits, results, per-matrix metrics)
// next to the published numbers of the literature, so both can be compared in one table.
//
// Concurrency: the file is in WAL mode with a 10 s busy timeout and every write is one
// BEGIN IMMEDIATE transaction, so several processes (CLI runs, the GUI) can write at once.
// Threads: an ExperimentStore owns one SQLite connection and must be used by one thread at a time;
// open one ExperimentStore per thread. Errors never throw; they name the database file.
#pragma once

#include "pocket/support/result.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

// What a run did: compress a model into an archive, evaluate a model or an archive, or measure
// the sensitivity of a model's matrices (compressing one unit at a time).
enum class RunKind { Compress, Eval, Sensitivity };
// Where a run stands. A run whose process died stays Running.
enum class RunStatus { Running, Done, Failed, Cancelled };

// "compress" / "eval" / "sensitivity"; "running" / "done" / "failed" / "cancelled" (the strings stored in the file).
const char* runKindName(RunKind kind);
const char* runStatusName(RunStatus status);
// The inverse of runKindName / runStatusName; nullopt for anything else.
std::optional<RunKind> parseRunKind(const std::string& name);
std::optional<RunStatus> parseRunStatus(const std::string& name);

// A model as the store knows it. Models are keyed by contentHash (see modelFingerprint()).
struct ModelInfo {
    std::int64_t id = 0;           // set by the store
    std::string name;              // file or folder name, e.g. "stories260K.bin", "Llama-2-7b-hf"
    std::string architecture;      // "LlamaForCausalLM", ...
    std::int64_t parameterCount = 0;
    std::string contentHash;       // "xxh64:<16 hex digits>" (any non-empty string is accepted)
    std::string path;              // where it was last seen (informational)
};

// An evaluation dataset. Keyed by (name, split, fileHash).
struct DatasetInfo {
    std::int64_t id = 0;           // set by the store
    std::string name;              // the text file's name, or a conventional name ("wikitext2")
    std::string split;             // "test", "validation" or "" (unknown)
    std::string fileHash;          // "xxh64:<hex>" of the whole file (see fileFingerprint()), or ""
    std::string path;              // where it was last seen (informational)
};

// What is known when a run starts.
struct RunStart {
    RunKind kind = RunKind::Eval;
    std::string method;            // plugin id ("pocketllm"), or "none" for an uncompressed model
    std::string paramsJson;        // JSON object ("" = {})
    std::int64_t modelId = 0;      // 0 = unknown
    std::string selectionJson;     // layer selection, JSON object ("" = none)
    std::string programVersion;    // "" = this program's "<version> (<git revision>)"
    std::string archivePath;       // compress: the archive written; eval: the archive evaluated
    std::int64_t parentRunId = 0;  // eval of an archive: the compress run that wrote it (0 = none)
    std::string notes;
};

// What is known when a run ends. Empty / unset fields leave what beginRun stored.
struct RunFinish {
    RunStatus status = RunStatus::Done;
    std::optional<double> wallSeconds;
    std::optional<double> peakRssMb;
    std::optional<std::uint64_t> archiveBytes;
    std::optional<double> bpwCompressed;   // bits per weight over the compressed matrices
    std::optional<double> bpwAllIn;        // bits per weight over every tensor of the model
    std::string paramsJson;                // replaces the stored parameters when not empty
    std::string selectionJson;             // replaces the stored selection when not empty
    std::string error;                     // failed / cancelled: the reason
};

// One measured number of a run ("perplexity" on a dataset at a context length, ...).
struct RunResult {
    std::string metric;                    // "perplexity", "nll", "kl", "accuracy", ...
    std::int64_t datasetId = 0;            // 0 = none
    std::optional<int> ctx;
    std::optional<int> stride;
    double value = 0;
    std::optional<std::int64_t> tokens;    // tokens scored
    std::string datasetName;               // filled when read back
};

// Per-matrix outcome of a compress run.
struct MatrixMetric {
    std::string name;                      // tensor name
    std::string groupId;
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    double mse = 0;
    double snrDb = 0;
    double bpw = 0;                        // own bits plus its share of the group's (matrixBitsPerWeight)
    std::optional<double> sensitivity;     // sensitivity runs: mean KL(original || compressed) per token, nats
    std::optional<double> deltaPerplexity; // sensitivity runs: perplexity change when only this unit is compressed
    std::optional<double> top1Agreement;   // sensitivity runs: share of tokens whose top-1 prediction is unchanged
};

// A run as read back. Times are UTC, ISO 8601 ("2025-01-31T12:00:00Z").
struct RunRecord {
    std::int64_t id = 0;
    RunKind kind = RunKind::Eval;
    std::string method;
    std::string paramsJson;
    std::int64_t modelId = 0;
    std::string modelName;
    std::string selectionJson;
    std::string startedAt;
    std::string finishedAt;                // "" while running
    RunStatus status = RunStatus::Running;
    std::optional<double> wallSeconds;
    std::optional<double> peakRssMb;
    std::string programVersion;
    std::string archivePath;
    std::optional<std::uint64_t> archiveBytes;
    std::optional<double> bpwCompressed;
    std::optional<double> bpwAllIn;
    std::int64_t parentRunId = 0;
    std::string notes;
    std::string error;
    std::vector<RunResult> results;        // listRuns() and run() fill these
    std::vector<MatrixMetric> matrices;    // only run() fills these
};

// listRuns() selection; empty fields match everything. Newest first.
struct RunFilter {
    std::optional<RunKind> kind;
    std::optional<RunStatus> status;
    std::string model;                     // case-insensitive substring of the model name
    std::string method;                    // exact method id
    int limit = 0;                         // 0 = all
};

// A published figure with its provenance (seeded from resources/baselines/published.json).
struct PublishedRow {
    std::int64_t id = 0;
    std::string method;
    std::string model;
    std::optional<double> bpw;             // unset where the source gives only a setting ("~8x")
    std::string dataset;                   // "wikitext2", "c4", "zero-shot-5", a task name, ...
    std::string split;
    std::optional<int> ctx;
    std::string metric;                    // "perplexity", "accuracy", "accuracy_avg", "nominal_bpw"
    double value = 0;
    std::string source;                    // citation, e.g. "AQLM paper (arXiv 2401.06118) Table 1"
    std::string setting;                   // the source's compression setting ("~8x"), or ""
    std::string note;
};

// published() and compare() selection; empty fields match everything. Model and dataset match
// as case-insensitive substrings ("llama-2-7b" finds "Llama-2-7B"; "wiki" finds "wikitext2").
struct CompareFilter {
    std::string model;
    std::string dataset;
    std::optional<int> ctx;
    std::string metric = "perplexity";     // exact; "" = every metric
    bool includePublished = true;
    bool includeRuns = true;
};

// One line of a comparison: a published figure, or a result of a finished run of this store.
struct CompareRow {
    std::string method;
    std::string model;
    std::optional<double> bpw;             // runs: bpw_compressed, else bpw_all_in (uncompressed)
    std::string dataset;
    std::optional<int> ctx;
    std::string metric;
    double value = 0;
    std::optional<double> wallSeconds;     // runs: the measuring run's wall time
    std::optional<double> compressSeconds; // runs: the wall time of the compress run behind it
    std::string source;                    // published: the citation; runs: "run #<id>"
    bool published = false;
    std::int64_t runId = 0;                // runs only
    std::string note;                      // published: the row's note
};

// One connection to a store file (see the top of this header). Owns its SQLite connection; not
// thread-safe: one object per thread.
class ExperimentStore {
public:
    // The schema version this program writes (PRAGMA user_version). Older files are migrated on open.
    static constexpr int kSchemaVersion = 2;

    // <userDataDir()>/experiments.sqlite.
    static std::string defaultPath();

    // Opens (creating the file and its folder if needed) and migrates a store; (re)seeds the
    // published rows when the embedded seed data changed. Refuses a file that is not an SQLite
    // database or not a PocketLLM store, and a store whose schema is newer than this program's.
    // The returned object owns the connection; use it from one thread at a time.
    static Result<std::unique_ptr<ExperimentStore>> open(const std::string& path);

    ~ExperimentStore();
    ExperimentStore(const ExperimentStore&) = delete;
    ExperimentStore& operator=(const ExperimentStore&) = delete;

    // The database file.
    const std::string& path() const;

    // Inserts a model, or updates name/path/architecture/parameters of the one with the same
    // contentHash. Returns its id.
    Result<std::int64_t> upsertModel(const ModelInfo& model);
    // Inserts a dataset, or updates the path of the one with the same (name, split, fileHash).
    Result<std::int64_t> upsertDataset(const DatasetInfo& dataset);

    // Records a run as "running", started now. Returns its id.
    Result<std::int64_t> beginRun(const RunStart& run);
    // Sets a run's final status, finish time and outcome.
    Status finishRun(std::int64_t runId, const RunFinish& finish);
    // Adds one result to a run.
    Status addResult(std::int64_t runId, const RunResult& result);
    // Adds (or replaces, by matrix name) a run's per-matrix metrics, all in one transaction.
    Status addMatrixMetrics(std::int64_t runId, const std::vector<MatrixMetric>& matrices);
    // Deletes a run with its results and metrics (runs that name it as parent keep no parent).
    Status deleteRun(std::int64_t runId);

    // Runs matching `filter`, newest first, with their results (no matrix metrics).
    Result<std::vector<RunRecord>> listRuns(const RunFilter& filter = {});
    // One run with its results and matrix metrics; an error when there is no such run.
    Result<RunRecord> run(std::int64_t runId);
    // The newest finished compress run that wrote `archivePath` (compared as stored, so pass an
    // absolute path) and, when `archiveBytes` is set, whose archive had that size. 0 if none.
    Result<std::int64_t> findCompressRun(const std::string& archivePath, std::optional<std::uint64_t> archiveBytes = {});

    // Published rows matching `filter` (includePublished/includeRuns ignored), in seed order.
    Result<std::vector<PublishedRow>> published(const CompareFilter& filter = {});
    // Published rows and results of finished runs matching `filter`, ordered by metric, ctx, then
    // bpw ascending (unknown ctx / bpw last), published before runs, then value ascending; not by
    // model or dataset name, so runs interleave with the papers' rows (filter to compare like with like).
    Result<std::vector<CompareRow>> compare(const CompareFilter& filter);

private:
    struct Impl;
    explicit ExperimentStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

// The SQL of schema migration `version` (1 .. ExperimentStore::kSchemaVersion), nullptr for any
// other number. Tests build stores as older versions wrote them with it.
const char* experimentStoreMigrationSql(int version);

} // namespace pocket
