// Recording runs in the experiment store, the same way whichever front end (pocketllm-cli or the
// workbench) ran them. A store problem never fails the run being recorded: the recorder logs a
// warning once and stops recording. A recorder belongs to one thread (it owns its own store
// connection); the workbench creates it on the worker thread that runs the job.
#pragma once

#include "pocket/compress_job.h"
#include "pocket/experiment_store.h"
#include "pocket/perplexity.h"
#include "pocket/result.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace pocket {

class Checkpoint;

// Inserts (or finds) `checkpoint`'s model in `store`, identified by modelFingerprint(); its id.
Result<std::int64_t> upsertModelOf(ExperimentStore& store, const Checkpoint& checkpoint);

// Finishes a run as cancelled when `error` is "cancelled", else as failed.
RunStatus endStatusOf(const std::string& error);

// Where and whether to record.
struct RecorderOptions {
    std::string storePath;   // the store file (see ExperimentStore::defaultPath())
    bool enabled = true;     // false: record nothing
    std::string notes;       // kept with the run (the CLI stores its command line)
};

// Records one run. The run is begun lazily (begin(), typically from the first progress report, so
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
    // The store file in use ("" when not recording).
    std::string storePath() const;

protected:
    explicit RunRecorder(RecorderOptions options);
    // Inserts the model and whatever else the run refers to, then the run itself; returns its id.
    virtual Result<std::int64_t> insertRun(ExperimentStore& store) = 0;
    // Finishes the run with `status` (failed or cancelled) and `error`, if it was begun.
    void markEnded(RunStatus status, const std::string& error);
    // Logs a store problem once and stops recording; returns 0 (no run id).
    std::int64_t disable(const std::string& message);
    double secondsSinceStart() const;

    RecorderOptions m_options;
    std::unique_ptr<ExperimentStore> m_store;
    std::int64_t m_runId = 0;
    bool m_begun = false;
    bool m_finished = false;
    std::chrono::steady_clock::time_point m_start;
};

// Records an evaluation: the model (for a .pllm archive, the compress run that wrote it when the
// store knows it, else the archive's source model), the text file as dataset, perplexity and NLL.
class EvalRecorder : public RunRecorder {
public:
    // Everything is copied; `checkpoint` is only read here.
    EvalRecorder(RecorderOptions options, const Checkpoint& checkpoint, const std::string& textPath, const std::string& tokenizerPath,
                 const EvalParams& params);
    // Records the results and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const EvalResult& result);
    // Finishes the run as failed (or cancelled when `error` is "cancelled"), if it was begun.
    void failed(const std::string& error);

protected:
    Result<std::int64_t> insertRun(ExperimentStore& store) override;

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

// Records a compression: the source model, the settings, and at the end the archive, bits and
// the per-matrix MSE / SNR / bits per weight.
class CompressRecorder : public RunRecorder {
public:
    // `requestedSelectionJson`: the selection as the user gave it (replaced by the archive's
    // resolved selection when the run succeeds).
    CompressRecorder(RecorderOptions options, CompressJobParams params, std::string requestedSelectionJson);
    // Records the matrix metrics and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const CompressJobResult& result);
    // Finishes the run as failed (or cancelled when `error` is "cancelled"), if it was begun.
    void failed(const std::string& error);

protected:
    Result<std::int64_t> insertRun(ExperimentStore& store) override;

private:
    CompressJobParams m_params;
    std::string m_requestedSelectionJson;
};

} // namespace pocket
