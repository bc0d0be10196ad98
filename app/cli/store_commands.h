// pocketllm-cli and the experiment store: the `runs` and `compare` commands, and the recorders
// that write every `compress` and `eval` run into the store (global --no-store opts out). A store
// problem never fails a command: the recorders warn and the command carries on. Main thread only.
#pragma once

#include "cli_common.h"
#include "compress_commands.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace pocket {
class Checkpoint;
class ExperimentStore;
struct CompressJobResult;
struct EvalParams;
struct EvalResult;
} // namespace pocket

namespace cli {

struct StoreOptions {
    int limit = 20;           // runs list: newest N (0 = all)
    std::string kind;         // runs list: compress | eval | "" (both)
    std::string model;        // runs list, compare: model name contains this
    std::int64_t runId = 0;   // runs show
    std::string dataset;      // compare
    int ctx = 0;              // compare (0 = any)
    std::string metric = "perplexity"; // compare ("all" = every metric)
    bool csv = false;         // runs list, compare: CSV on stdout
};

struct StoreCommands {
    CLI::App* runs = nullptr;
    CLI::App* runsList = nullptr;
    CLI::App* runsShow = nullptr;
    CLI::App* compare = nullptr;
    StoreOptions options;
};

// Registers `runs list`, `runs show` and `compare` on `app`; `commands` must outlive the parse.
void addStoreCommands(CLI::App& app, StoreCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runStoreCommands(const Globals& g, const StoreCommands& commands);

// The store the CLI uses: --store, else $POCKETLLM_STORE, else <data dir>/experiments.sqlite.
std::string storePath(const Globals& g);

// Records one run. The run is begun lazily (begin(), called from the first progress report, so
// that runs refused up front by option checks are not recorded) and finished by the subclass.
// A recorder begun but destroyed unfinished marks its run failed ("interrupted").
class RunRecorder {
public:
    virtual ~RunRecorder();
    RunRecorder(const RunRecorder&) = delete;
    RunRecorder& operator=(const RunRecorder&) = delete;

    // Opens the store and inserts the run as "running"; later calls do nothing.
    void begin();
    // The run's id in the store, 0 when not recorded.
    std::int64_t runId() const { return m_runId; }

protected:
    explicit RunRecorder(const Globals& g);
    // Inserts the model and whatever else the run refers to, then the run itself; returns its id.
    virtual pocket::Result<std::int64_t> insertRun(pocket::ExperimentStore& store) = 0;
    // Marks the run failed with `error`, if it was begun.
    void markFailed(const std::string& error);
    // Logs a store problem once and stops recording; returns 0 (no run id).
    std::int64_t disable(const std::string& message);

    const Globals& m_globals;
    std::unique_ptr<pocket::ExperimentStore> m_store;
    std::int64_t m_runId = 0;
    bool m_enabled = true;
    bool m_begun = false;
    bool m_finished = false;
    std::chrono::steady_clock::time_point m_start;
};

// Records an `eval`: the model (for a .pllm archive, the compress run that wrote it when the store
// knows it, else the archive's source model), the text file as dataset, perplexity and NLL.
class EvalRecorder : public RunRecorder {
public:
    // Everything is copied; `checkpoint` is only read here.
    EvalRecorder(const Globals& g, const pocket::Checkpoint& checkpoint, const std::string& textPath, const std::string& tokenizerPath,
                 const pocket::EvalParams& params);
    // Records the results and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const pocket::EvalResult& result);
    // Finishes the run as failed, if it was begun.
    void failed(const std::string& error);

protected:
    pocket::Result<std::int64_t> insertRun(pocket::ExperimentStore& store) override;

private:
    std::string m_modelPath;
    std::string m_modelName;
    std::string m_architecture;
    std::int64_t m_parameters = 0;
    std::uint64_t m_storedBytes = 0;
    std::string m_textPath;
    std::string m_paramsJson;
    std::optional<double> m_bpwCompressed; // from the archive, or the stored dtype's bits
    std::optional<double> m_bpwAllIn;
};

// Records a `compress`: the source model, the options, and at the end the archive, bits and the
// per-matrix mse / SNR / bits per weight.
class CompressRecorder : public RunRecorder {
public:
    CompressRecorder(const Globals& g, const CompressOptions& options);
    // Records the matrix metrics and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const pocket::CompressJobResult& result);
    // Finishes the run as failed, if it was begun.
    void failed(const std::string& error);

protected:
    pocket::Result<std::int64_t> insertRun(pocket::ExperimentStore& store) override;

private:
    CompressOptions m_options;
};

} // namespace cli
