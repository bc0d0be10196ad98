// The workbench's state and background jobs, without any widget: the open model, the method
// plugins, and the compress / evaluate / export jobs that run on worker threads. Widgets talk to
// this object only; every public function and every signal lives on the GUI thread.
//
// Threads: each job runs on its own QThread. The job owns an atomic stop flag (cancel() sets
// it, the job's progress callback returns false at its next report). Training metrics go from
// the worker into a mutex-guarded buffer; a 30 Hz timer on the GUI thread drains it and emits
// trainMetrics() once per tick, so widgets never see one signal per optimiser step. The
// destructor cancels a running job and waits for it.
#pragma once

#include "pocket/archive/archive_gguf.h"
#include "pocket/archive/archive_gptq.h"
#include "pocket/io/checkpoint.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/io/dtype.h"
#include "pocket/jobs/eval_job.h"
#include "pocket/jobs/playground.h"
#include "pocket/jobs/recover_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/analysis/allocation.h"
#include "pocket/analysis/sensitivity.h"

#include <QObject>
#include <QString>
#include <QStringList>
#include <QTimer>
#include <QVector>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

class QThread;

namespace pocket::ui {

// One training report of one group, as plotted.
struct TrainPoint {
    int groupIndex = 0;       // 0-based group of the job
    QString groupId;
    int step = 0;             // optimiser steps done in the group
    int totalSteps = 0;
    double loss = 0;
    double reconstruction = 0;
    double codebookTerm = 0;
    double commitmentTerm = 0;
    double snrDb = 0;
    double codebookUsage = 0; // 0..1
    double indexPerplexity = 0;
    int deadCodewords = 0;
    double lr = 0;
};

// What a progress bar shows.
struct JobStatus {
    enum class Kind { None, Compress, Eval, Export, Sensitivity, Playground, ZeroShot, Recover };
    Kind kind = Kind::None;
    QString text;             // "group 3/35: model.layers.2.mlp.up_proj.weight  epoch 4/50"
    double fraction = 0;      // whole job, 0..1
    double etaSeconds = -1;   // whole job (-1 = unknown)
    double groupFraction = 0; // compress: the current group
    double groupEtaSeconds = -1;
};

// The open model, summarised for display.
struct ModelSummary {
    QString path;
    QString name;             // file or folder name
    QString format;           // "Hugging Face safetensors", "llama2.c", ".pllm archive"
    QString architecture;
    QString dtype;            // of the linear matrices as stored ("F32", "F16", "mixed")
    qint64 parameters = 0;
    quint64 bytes = 0;        // on disk (archive: the file's size)
    int layers = 0;
    qint64 hidden = 0;
    qint64 vocab = 0;
    bool isArchive = false;
    QString archiveMethod;    // archive: the method id of its groups
    double archiveBpw = 0;    // archive: bits per weight over compressed matrices
    QString tokenizerPath;
};

// What a finished compression reports.
struct CompressOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;          // the error, or a one-line summary
    QString archivePath;
    quint64 archiveBytes = 0;
    double bpwCompressed = 0;
    double bpwAllIn = 0;
    double seconds = 0;
    int groupsResumed = 0;
    qint64 runId = 0;         // in the experiment store (0 = not recorded)
    std::vector<pocket::MatrixReport> matrices; // per-matrix results
};

struct EvalOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;
    QString modelPath;
    QString textPath;
    double perplexity = 0;
    qint64 tokens = 0;
    int ctx = 0;
    double seconds = 0;
    qint64 runId = 0;
    // With a reference model (EvalJobParams::referencePath): the divergence from it.
    std::optional<pocket::DivergenceResult> divergence;
};

struct ZeroShotOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;
    QString modelPath;
    std::vector<pocket::ZeroShotTaskResult> tasks; // per task (scores included)
    double meanAcc = 0;
    QString averageName;
    qint64 runId = 0;
};

struct RecoverOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;
    pocket::RecoverJobResult result;
};

struct ExportOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;
    QString path;             // the file or folder written
    quint64 bytes = 0;
    QStringList files;        // "name (size)" of what was written
};

struct SensitivityOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;
    double basePerplexity = 0;
    std::vector<pocket::UnitSensitivity> units; // all finished units (also on cancel)
    qint64 runId = 0;
    // Allocation runs only: the plan.
    bool isAllocation = false;
    pocket::AllocationResult allocation;
};

struct PlaygroundOutcome {
    bool ok = false;
    bool cancelled = false;
    pocket::ErrorKind errorKind = pocket::ErrorKind::Input; // when not ok
    QString message;          // the error, or a one-line summary
    pocket::PlaygroundResult result;
};

class Workbench : public QObject {
    Q_OBJECT
public:
    // Loads the method plugins from the default folders (plus `extraPluginFolder` if not empty).
    explicit Workbench(QObject* parent = nullptr, const QString& extraPluginFolder = {});
    ~Workbench() override;

    pocket::MethodRegistry& registry() { return *m_registry; }
    // The experiment store file ($POCKETLLM_STORE, else the default); settable for tests.
    QString storePath() const { return m_storePath; }
    void setStorePath(const QString& path) { m_storePath = path; }

    // Opens a model folder, llama2.c file, .safetensors or .pllm archive (validates the config
    // and tensor list; reads no weights). On failure the previous model stays open and `error`
    // says what is wrong with which file.
    bool openModel(const QString& path, QString* error);
    bool hasModel() const { return m_checkpoint != nullptr; }
    const pocket::Checkpoint* checkpoint() const { return m_checkpoint.get(); }
    const ModelSummary& summary() const { return m_summary; }

    // The bits a compression would cost, without running it (the CLI's --dry-run).
    pocket::Result<pocket::JobPlan> plan(const pocket::CompressJobParams& params) const;
    // The plan's warnings (above 16 bits per weight, larger than the open model) and overhead.
    pocket::PlanCheck checkPlan(const pocket::JobPlan& plan) const;
    // Settings whose codebook and decoder overhead fits the open model (core's suggestSettings).
    pocket::Result<pocket::SettingsSuggestion> suggest(const pocket::CompressJobParams& params) const;

    // Jobs: one at a time. Return false (with `error`) when one is running or the request is bad.
    bool startCompress(const pocket::CompressJobParams& params, QString* error);
    bool startEval(const pocket::EvalJobParams& params, QString* error);
    // Writes the archive's decoded model as a Hugging Face folder.
    bool startExportHf(const QString& archivePath, const QString& outDir, pocket::DType dtype, QString* error);
    // Writes an archive (or a model) as a GGUF that llama.cpp loads (exportGguf: exact Q4_1/Q5_1
    // where rtn/gptq codes fit, the rest decoded into the fallback type).
    bool startExportGguf(const QString& source, const QString& outFile, const pocket::ArchiveGgufOptions& options, QString* error);
    // Writes an archive as a quantised Hugging Face folder: "gptq" (rtn/gptq archives made with
    // zero=int) or "aqlm" (vq archives); what cannot be represented fails with the reason.
    bool startExportQuantisedFolder(const QString& archivePath, const QString& outDir, const QString& format, QString* error);
    // Copies an archive to `destination` (temporary name, then rename), verifying it first.
    bool startExportArchive(const QString& archivePath, const QString& destination, QString* error);
    // Measures the sensitivity of each unit (recorded in the store; units stream via sensitivityUnits()).
    bool startSensitivity(const pocket::SensitivityParams& params, QString* error);
    // One sensitivity analysis per menu entry, then the allocation for the budget.
    bool startAllocation(const pocket::AllocationRequest& request, QString* error);
    // The original and a compressed model generating side by side (tokens stream through
    // playgroundTokens()); one run at a time, like every job.
    bool startPlayground(const pocket::PlaygroundRequest& request, QString* error);
    // Zero-shot multiple-choice accuracy on task files (recorded in the store).
    bool startZeroShot(const pocket::ZeroShotJobParams& params, QString* error);
    // LoRA recovery of an archive: training steps stream through recoverSteps().
    bool startRecover(const pocket::RecoverJobParams& params, QString* error);
    bool busy() const { return m_thread != nullptr; }
    JobStatus::Kind runningKind() const { return m_runningKind; }
    // Asks the running job to stop at its next safe point (finished groups stay for a resume).
    void cancel();
    // Blocks (processing events) until no job runs or `timeoutMs` passes; for tests and shutdown.
    bool waitForIdle(int timeoutMs);

    // The default place for a new archive of the open model and `methodId` (in the data folder).
    QString defaultArchivePath(const QString& methodId) const;
    // True when an interrupted run left a work folder for `archivePath` (a resume is possible).
    static bool hasWorkFolder(const QString& archivePath);
    // Deletes the work folder of `archivePath` (the user chose to discard an interrupted run).
    static bool discardWorkFolder(const QString& archivePath, QString* error);

Q_SIGNALS:
    void modelChanged();
    void jobStarted(pocket::ui::JobStatus::Kind kind);
    // About 10 times a second while a job runs.
    void jobProgress(const pocket::ui::JobStatus& status);
    // Buffered training metrics, at most about 30 times a second.
    void trainMetrics(const QVector<pocket::ui::TrainPoint>& points);
    // A compress job's groups as planned (ids and matrix names), when it starts.
    void compressPlanned(const QStringList& groupIds);
    void compressFinished(const pocket::ui::CompressOutcome& outcome);
    void evalFinished(const pocket::ui::EvalOutcome& outcome);
    void exportFinished(const pocket::ui::ExportOutcome& outcome);
    // Units measured since the last report (buffered like the training metrics).
    void sensitivityUnits(const QVector<pocket::UnitSensitivity>& units);
    void sensitivityFinished(const pocket::ui::SensitivityOutcome& outcome);
    // Playground tokens since the last report (buffered like the training metrics).
    void playgroundTokens(const QVector<pocket::PlaygroundToken>& tokens);
    void playgroundFinished(const pocket::ui::PlaygroundOutcome& outcome);
    void zeroShotFinished(const pocket::ui::ZeroShotOutcome& outcome);
    // Recovery training steps since the last report (step, totalSteps and loss of each; buffered).
    void recoverSteps(const QVector<pocket::ui::TrainPoint>& steps);
    void recoverFinished(const pocket::ui::RecoverOutcome& outcome);
    // A run was written to the experiment store.
    void storeChanged();

private:
    // The method of `params`, once a model is open (plan() and suggest() need both).
    pocket::Result<pocket::CompressionMethod*> methodToPlan(const pocket::CompressJobParams& params) const;
    void launch(JobStatus::Kind kind, std::function<void()> work);
    bool startAnalysis(const pocket::AllocationRequest& request, bool allocate, QString* error);
    void finishJob();
    // Called by the worker as its last act: what finishJob() runs on the GUI thread.
    void setDelivery(std::function<void()> deliver);
    void drainMetrics();
    void postStatus(const JobStatus& status);
    // The export jobs' shared parts: per-tensor progress ("%1/%2" in `text`) that stops when asked,
    // an outcome failed by `error`, the files of a written folder, and the delivery on the GUI thread.
    std::function<bool(int, int)> exportProgress(const QString& text, std::shared_ptr<std::atomic<bool>> stop);
    static void exportFailed(ExportOutcome& outcome, const pocket::Error& error);
    static void listWrittenFiles(ExportOutcome& outcome, const QString& folder);
    void deliverExport(const ExportOutcome& outcome);

    std::unique_ptr<pocket::MethodRegistry> m_registry;
    std::unique_ptr<pocket::Checkpoint> m_checkpoint;
    ModelSummary m_summary;
    QString m_storePath;

    QThread* m_thread = nullptr;
    JobStatus::Kind m_runningKind = JobStatus::Kind::None;
    std::shared_ptr<std::atomic<bool>> m_stop;

    // Filled by the worker, drained on the GUI thread.
    std::mutex m_bufferMutex;
    std::vector<TrainPoint> m_pending;
    std::vector<pocket::UnitSensitivity> m_pendingUnits;
    std::vector<pocket::PlaygroundToken> m_pendingTokens;
    std::optional<JobStatus> m_pendingStatus;
    std::function<void()> m_delivery;
    QTimer m_drainTimer;
};

// "1.2 MiB", "3.4 GiB".
QString formatBytes(quint64 bytes);
// "1:05", "2:03:04", "--:--" when unknown.
QString formatSeconds(double seconds);

} // namespace pocket::ui

Q_DECLARE_METATYPE(pocket::ui::JobStatus)
Q_DECLARE_METATYPE(pocket::ui::CompressOutcome)
Q_DECLARE_METATYPE(pocket::ui::EvalOutcome)
Q_DECLARE_METATYPE(pocket::ui::ExportOutcome)
Q_DECLARE_METATYPE(pocket::ui::TrainPoint)
Q_DECLARE_METATYPE(pocket::ui::SensitivityOutcome)
Q_DECLARE_METATYPE(pocket::UnitSensitivity)
Q_DECLARE_METATYPE(pocket::PlaygroundToken)
Q_DECLARE_METATYPE(pocket::ui::PlaygroundOutcome)
Q_DECLARE_METATYPE(pocket::ui::ZeroShotOutcome)
Q_DECLARE_METATYPE(pocket::ui::RecoverOutcome)
