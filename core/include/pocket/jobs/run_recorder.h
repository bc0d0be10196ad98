// Recording runs in the experiment store. Every job (compress, eval, sensitivity) records itself
// through a RunRecorder subclass of its own, whichever front end ran it; front ends only pass
// RecorderOptions. A store problem never fails the run being recorded: the recorder logs a
// warning once and stops recording. A recorder belongs to one thread (it owns its own store
// connection): the thread that runs the job.
#pragma once

#include "pocket/archive/bit_accounting.h"
#include "pocket/store/experiment_store.h"
#include "pocket/support/result.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace pocket {

class Checkpoint;

// Inserts (or finds) `checkpoint`'s model in `store`, identified by modelFingerprint(); its id.
Result<std::int64_t> upsertModelOf(ExperimentStore& store, const Checkpoint& checkpoint);

// The store's row for one matrix report (no sensitivity measures).
MatrixMetric matrixMetricOf(const MatrixReport& report);

// Finishes a run as cancelled when `error` is a cancellation, else as failed.
RunStatus endStatusOf(const Error& error);

// The store file a front end uses when none is given: $POCKETLLM_STORE when set, else
// ExperimentStore::defaultPath().
std::string defaultStorePath();

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
    // Finishes the run as failed (or cancelled), if it was begun.
    void failed(const Error& error) { markEnded(endStatusOf(error), error.message); }

protected:
    explicit RunRecorder(RecorderOptions options);
    // Inserts the model and whatever else the run refers to, then the run itself; returns its id.
    virtual Result<std::int64_t> insertRun(ExperimentStore& store) = 0;
    // Finishes the run with `status` (failed or cancelled) and `error`, if it was begun.
    void markEnded(RunStatus status, const std::string& error);
    // Logs a store problem once and stops recording; returns 0 (no run id).
    std::int64_t disable(const std::string& message);
    // The start of every subclass's done(): begins the run if needed and marks it finished; false
    // when nothing is being recorded.
    bool startFinishing();
    // Inserts (or finds) a text file as a dataset, identified by its fingerprint.
    Result<std::int64_t> upsertTextDataset(const std::string& textPath);
    // Finishes the run as done with `finish` (peak RSS filled in); returns the run id, 0 on a store problem.
    std::int64_t finishDone(RunFinish finish);
    double secondsSinceStart() const;

    RecorderOptions m_options;
    std::unique_ptr<ExperimentStore> m_store;
    std::int64_t m_runId = 0;
    bool m_begun = false;
    bool m_finished = false;
    std::chrono::steady_clock::time_point m_start;
};

} // namespace pocket
