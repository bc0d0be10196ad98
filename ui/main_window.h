// The workbench's main window: the model and layer picker (left), tabs for compressing (method
// form, run controls, live curves), results (perplexity before/after, per-matrix errors) and
// comparison (runs beside published numbers), and the log (bottom). It builds requests from the
// widgets and hands them to Workbench; it holds no compression logic. GUI thread only.
#pragma once

#include "job_queue.h"
#include "workbench.h"

#include <QMainWindow>
#include <QStringList>
#include <QTimer>

#include <functional>

class QAction;
class QCheckBox;
class QLabel;
class QComboBox;
class QLineEdit;
class QMenu;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTabWidget;
class QTableWidget;

namespace pocket::ui {

class ClusterDialog;

class ComparePanel;
class SensitivityPanel;
class PlaygroundPanel;
class JudgePanel;
class GuidedDemo;
class InspectPanel;
class LayerPicker;
class MethodForm;
class TrainingChart;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    // `workbench` must outlive the window. Restores the layout and settings from QSettings.
    explicit MainWindow(Workbench* workbench, QWidget* parent = nullptr);
    ~MainWindow() override;

    // Opens a model or archive; on failure shows a message box (unless `quiet`) and returns false.
    bool openPath(const QString& path, bool quiet = false);
    // Opens the most recent file, else the bundled demo model.
    void openInitialModel();

    // Starts a compression with the current settings (resume: continue the interrupted run of
    // the output path). Returns false and says why in the status bar when it cannot start.
    bool startCompress(bool resume);
    // Starts a compression with the sensitivity panel's allocation plan (per-matrix settings).
    bool startPlannedCompress();
    // Run ▸ Run on cluster: the current compression as an mpirun command line (ClusterDialog),
    // shown without blocking; nullptr (and the reason in the status bar) without an open model.
    // A run that ends well becomes the last archive.
    ClusterDialog* openClusterDialog();
    // Applies settings that fit the open model (the Suggest button). `onlyIfNeeded`: only when the
    // current settings' codebook and decoder overhead is above a tenth of the codes. Returns
    // whether the form changed.
    bool suggestSettings(bool onlyIfNeeded = false);
    // Queues RTN, GPTQ (with the calibration text) and VQ at the settings whose estimated bits
    // bracket `targetBpw` (0: the run selected in Compare, else the last compression, else the
    // form's estimate), each compressed and then evaluated on the Results tab's text. Returns the
    // number of jobs queued (0 with the reason in the status bar).
    int runBaselines(double targetBpw = 0);
    JobQueue* jobQueue() const { return m_queue; }
    // Help ▸ Guided demo: a step-by-step walk on the bundled model (non-modal).
    GuidedDemo* startGuidedDemo();
    // Queues PocketLLM compressions of the open model at three sizes (the guided demo's step).
    int queueThreeSizes();
    // Asked before a run whose plan has warnings; returns true to run. Default: a question box
    // (refused when dialogs are off: tests set their own).
    void setConfirmHandler(std::function<bool(const QString& text)> handler) { m_confirm = std::move(handler); }
    QPushButton* suggestButton() const { return m_suggest; }
    QPushButton* startButton() const { return m_start; }
    // Evaluates the open model (compressed = false) or the last archive (true).
    bool startEval(bool compressed);
    bool exportArchiveTo(const QString& destination);
    bool exportHfTo(const QString& folder);
    // Writes the last archive (else the open model) as a GGUF for llama.cpp.
    bool exportGgufTo(const QString& file, const pocket::ArchiveGgufOptions& options);
    // Writes the last archive as a GPTQ ("gptq") or AQLM ("aqlm") folder.
    bool exportQuantisedFolderTo(const QString& folder, const QString& format);
    // What File ▸ Export GGUF exports: the last archive, else the open model ("" when neither).
    QString ggufExportSource() const;
    QString lastArchive() const { return m_lastArchive; }
    // Makes `path` the archive the Results, Judge & recover and Playground tabs work on.
    void setLastArchive(const QString& path);

    // Widgets, for tests and the screenshot script.
    LayerPicker* layerPicker() const { return m_picker; }
    MethodForm* methodForm() const { return m_form; }
    TrainingChart* trainingChart() const { return m_chart; }
    ComparePanel* comparePanel() const { return m_compare; }
    SensitivityPanel* sensitivityPanel() const { return m_sensitivity; }
    PlaygroundPanel* playgroundPanel() const { return m_playground; }
    JudgePanel* judgePanel() const { return m_judge; }
    InspectPanel* inspectPanel() const { return m_inspect; }
    QCheckBox* evalReferenceCheck() const { return m_evalReference; }
    // Shows the tab holding `page`.
    void showTab(QWidget* page);
    QTabWidget* tabs() const { return m_tabs; }
    QLineEdit* outputPathEdit() const { return m_outPath; }
    QLineEdit* textPathEdit() const { return m_textPath; }
    QSpinBox* ctxSpin() const { return m_ctx; }
    QLabel* estimateLabel() const { return m_estimate; }
    QTableWidget* resultsTable() const { return m_results; }
    QTableWidget* matricesTable() const { return m_matrices; }
    QString lastError() const { return m_lastError; }

protected:
    void closeEvent(QCloseEvent* event) override;
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;

private:
    // After an export was asked to start: the error shown, or the job shown as running.
    bool exportStarted(bool started, const QString& error, const QString& target);
    void buildActions();
    void buildLayout();
    void buildDocks();
    QWidget* buildCompressTab();
    QWidget* buildResultsTab();
    void buildAnalysisTabs();
    void connectTextBrowser(QLineEdit* edit, QPushButton* button);
    void restoreSettings();
    void saveSettings();
    void updateSummary();
    void updateEstimate();
    void updateActions();
    void addRecent(const QString& path);
    void rebuildRecentMenu();
    // Logs and (outside tests) shows an error, the dialog chosen by the error's kind.
    void showError(const QString& title, const QString& text, pocket::ErrorKind kind = pocket::ErrorKind::Input);
    void onCompressFinished(const CompressOutcome& outcome);
    void onEvalFinished(const EvalOutcome& outcome);
    void onExportFinished(const ExportOutcome& outcome);
    void onProgress(const JobStatus& status);
    void appendLog(int level, const QString& text);
    void showAbout();
    pocket::CompressJobParams jobParams(bool resume) const;
    // A queued compress-then-evaluate job of the open model: the Compress tab's job with `methodId`
    // and `settings` alone, writing archives/<folder>/<model>-<name>.pllm in the data folder, then
    // evaluated on the Results tab's text and context length.
    JobQueue::Item queueItem(const QString& label, const std::string& methodId, std::vector<std::string> settings, const QString& folder,
                             const QString& name) const;
    bool launchCompress(const pocket::CompressJobParams& params, bool resume);

    Workbench* m_workbench;
    LayerPicker* m_picker = nullptr;
    MethodForm* m_form = nullptr;
    TrainingChart* m_chart = nullptr;
    ComparePanel* m_compare = nullptr;
    SensitivityPanel* m_sensitivity = nullptr;
    PlaygroundPanel* m_playground = nullptr;
    JudgePanel* m_judge = nullptr;
    InspectPanel* m_inspect = nullptr;
    QCheckBox* m_evalReference = nullptr;
    QTabWidget* m_tabs = nullptr;
    QLabel* m_summary = nullptr;
    QLabel* m_estimate = nullptr;
    QLineEdit* m_outPath = nullptr;
    QLineEdit* m_calibText = nullptr;
    QComboBox* m_entropy = nullptr; // the archive's lossless stage: auto, on, none
    QLineEdit* m_textPath = nullptr;
    QSpinBox* m_ctx = nullptr;
    QPushButton* m_start = nullptr;
    QPushButton* m_suggest = nullptr;
    JobQueue* m_queue = nullptr;
    GuidedDemo* m_demo = nullptr;
    double m_lastBpw = 0; // of the last compression this window started
    std::function<bool(const QString&)> m_confirm;
    QString m_proposedFor; // the model and method the settings were last proposed for
    QPushButton* m_resume = nullptr;
    QPushButton* m_cancel = nullptr;
    QPushButton* m_discard = nullptr;
    QPushButton* m_evalOriginal = nullptr;
    QPushButton* m_evalCompressed = nullptr;
    QProgressBar* m_overall = nullptr;
    QProgressBar* m_group = nullptr;
    QLabel* m_progressText = nullptr;
    QLabel* m_jobLabel = nullptr;
    QTableWidget* m_results = nullptr;
    QTableWidget* m_matrices = nullptr;
    QPlainTextEdit* m_log = nullptr;
    QMenu* m_recentMenu = nullptr;
    QAction* m_startAction = nullptr;
    QAction* m_resumeAction = nullptr;
    QAction* m_cancelAction = nullptr;
    QAction* m_exportArchiveAction = nullptr;
    QAction* m_exportHfAction = nullptr;
    QAction* m_exportGgufAction = nullptr;
    QAction* m_exportQuantisedAction = nullptr;
    QTimer m_estimateTimer;
    pocket::CompressJobParams m_lastJob; // what Resume continues when the archive path is unchanged
    QStringList m_recent;
    QString m_lastArchive;
    QString m_lastError;
    QString m_lastDir;
    QString m_lastExportDir;
    bool m_outPathEdited = false;
};

} // namespace pocket::ui
