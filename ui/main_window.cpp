#include "main_window.h"

#include "cluster_dialog.h"
#include "export_dialog.h"
#include "pocket/archive/model_archive.h"

#include "compare_panel.h"
#include "layer_picker.h"
#include "log_bridge.h"
#include "method_form.h"
#include "sensitivity_panel.h"
#include "judge_panel.h"
#include "inspect_panel.h"
#include "job_queue.h"
#include "guided_demo.h"
#include "playground_panel.h"
#include "training_chart.h"

#include "pocket/support/app_paths.h"
#include "pocket/version.h"

#include <QAction>
#include <QDir>
#include <QApplication>
#include <QCloseEvent>
#include <QCheckBox>
#include <QComboBox>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QSpinBox>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableWidget>
#include <QToolBar>
#include <QVBoxLayout>

#include <spdlog/spdlog.h>

namespace pocket::ui {

namespace {

constexpr int kMaxRecent = 10;

QTableWidgetItem* cell(const QString& text, bool number = false)
{
    auto* item = new QTableWidgetItem(text);
    if (number)
        item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
}

QTableWidgetItem* numberCell(double value, int digits)
{
    auto* item = new QTableWidgetItem;
    item->setData(Qt::DisplayRole, QString::number(value, 'f', digits).toDouble());
    item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
}

// Tests and the screenshot script run without anyone to close a modal dialog.
bool dialogsAllowed()
{
    return QApplication::platformName() != QLatin1String("offscreen") && !qEnvironmentVariableIsSet("POCKETLLM_NO_DIALOGS");
}

QWidget* browseRow(QLineEdit* edit, QPushButton* button)
{
    auto* w = new QWidget;
    auto* l = new QHBoxLayout(w);
    l->setContentsMargins(0, 0, 0, 0);
    l->addWidget(edit, 1);
    l->addWidget(button);
    return w;
}

} // namespace

MainWindow::MainWindow(Workbench* workbench, QWidget* parent) : QMainWindow(parent), m_workbench(workbench)
{
    setWindowTitle(tr("PocketLLM Workbench"));
    setAcceptDrops(true);
    buildLayout();
    buildActions();
    m_estimateTimer.setSingleShot(true);
    m_estimateTimer.setInterval(150);
    connect(&m_estimateTimer, &QTimer::timeout, this, &MainWindow::updateEstimate);

    connect(m_workbench, &Workbench::modelChanged, this, [this] {
        m_picker->setModel(m_workbench->summary().isArchive ? nullptr : m_workbench->checkpoint());
        updateSummary();
        if (!m_outPathEdited)
            m_outPath->setText(m_workbench->defaultArchivePath(m_form->methodId()));
        if (m_workbench->summary().isArchive)
            m_lastArchive = m_workbench->summary().path;
        m_compare->setModelFilter(m_workbench->summary().isArchive ? QString() : m_workbench->summary().name);
        m_compare->refresh();
        updateActions();
        suggestSettings(true); // the form's proposal fits the model just opened
        m_estimateTimer.start();
    });
    connect(m_workbench, &Workbench::jobProgress, this, &MainWindow::onProgress);
    connect(m_workbench, &Workbench::trainMetrics, m_chart, &TrainingChart::append);
    connect(m_workbench, &Workbench::compressPlanned, m_chart, &TrainingChart::reset);
    connect(m_workbench, &Workbench::compressFinished, this, &MainWindow::onCompressFinished);
    connect(m_workbench, &Workbench::evalFinished, this, &MainWindow::onEvalFinished);
    connect(m_workbench, &Workbench::exportFinished, this, &MainWindow::onExportFinished);
    connect(m_workbench, &Workbench::sensitivityFinished, this, [this](const SensitivityOutcome& o) {
        m_lastError = o.ok ? QString() : o.message;
        statusBar()->showMessage(o.message, 15000);
        if (o.ok)
            m_overall->setValue(1000);
        else if (!o.cancelled)
            showError(tr("Sensitivity analysis failed"), o.message, o.errorKind);
        updateActions();
    });
    connect(m_workbench, &Workbench::storeChanged, m_compare, &ComparePanel::refresh);
    connect(m_workbench, &Workbench::jobStarted, this, [this] { updateActions(); });
    connect(m_picker, &LayerPicker::selectionChanged, this, [this] { m_estimateTimer.start(); });
    connect(m_form, &MethodForm::changed, this, [this] {
        if (!m_outPathEdited && m_workbench->hasModel() && !m_workbench->busy())
            m_outPath->setText(m_workbench->defaultArchivePath(m_form->methodId()));
        // Another method, at its defaults: its proposal fits the model too.
        if (m_workbench->hasModel() && m_proposedFor != m_workbench->summary().path + QLatin1Char('|') + m_form->methodId() &&
            !m_form->rememberedSettings().contains(m_form->methodId()))
            suggestSettings(true);
        m_estimateTimer.start();
    });
    connect(m_outPath, &QLineEdit::textEdited, this, [this] {
        m_outPathEdited = true;
        updateActions();
    });
    connect(LogBridge::instance(), &LogBridge::message, this, &MainWindow::appendLog);
    m_compare->setStorePath(m_workbench->storePath());
    restoreSettings();
    updateActions();
}

MainWindow::~MainWindow() = default;

void MainWindow::buildLayout()
{
    buildDocks();
    m_tabs = new QTabWidget;
    setCentralWidget(m_tabs);
    m_tabs->addTab(buildCompressTab(), tr("Compress"));
    m_tabs->addTab(buildResultsTab(), tr("Results"));
    buildAnalysisTabs();
    m_jobLabel = new QLabel;
    statusBar()->addPermanentWidget(m_jobLabel);
}

// The model and its layers on the left, the log at the bottom.
void MainWindow::buildDocks()
{
    auto* modelDock = new QDockWidget(tr("Model"), this);
    modelDock->setObjectName(QStringLiteral("modelDock"));
    auto* modelPane = new QWidget;
    auto* modelLayout = new QVBoxLayout(modelPane);
    m_summary = new QLabel(tr("No model open. Use File ▸ Open, or drop a model here."));
    m_summary->setWordWrap(true);
    m_summary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    modelLayout->addWidget(m_summary);
    m_picker = new LayerPicker;
    modelLayout->addWidget(m_picker, 1);
    modelDock->setWidget(modelPane);
    addDockWidget(Qt::LeftDockWidgetArea, modelDock);

    // Bottom: the log.
    auto* logDock = new QDockWidget(tr("Log"), this);
    logDock->setObjectName(QStringLiteral("logDock"));
    m_log = new QPlainTextEdit;
    m_log->setReadOnly(true);
    m_log->setMaximumBlockCount(5000);
    m_log->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
    logDock->setWidget(m_log);
    addDockWidget(Qt::BottomDockWidgetArea, logDock);
    resizeDocks({logDock}, {120}, Qt::Vertical);
    resizeDocks({modelDock}, {380}, Qt::Horizontal);
}

// Settings on the left; paths, estimate, run buttons, progress and the live curves on the right.
QWidget* MainWindow::buildCompressTab()
{
    auto* compress = new QSplitter(Qt::Horizontal);
    auto* settingsBox = new QGroupBox(tr("Method and settings"));
    auto* settingsLayout = new QVBoxLayout(settingsBox);
    m_form = new MethodForm;
    m_form->setRegistry(&m_workbench->registry());
    settingsLayout->addWidget(m_form, 1);
    m_suggest = new QPushButton(tr("Suggest settings for this model"));
    m_suggest->setToolTip(tr("Share codebooks and decoders (and shrink the codebook) until they cost at most a tenth of the codes: "
                             "on a small model one network for the whole model, on a 7B model the paper's one per matrix"));
    settingsLayout->addWidget(m_suggest);
    compress->addWidget(settingsBox);

    auto* runPane = new QWidget;
    auto* runLayout = new QVBoxLayout(runPane);
    auto* paths = new QFormLayout;
    m_outPath = new QLineEdit;
    auto* browseOut = new QPushButton(tr("…"));
    paths->addRow(tr("Archive:"), browseRow(m_outPath, browseOut));
    m_calibText = new QLineEdit(QString::fromStdString(demoTextPath()));
    m_calibText->setToolTip(tr("Text for the layer-input statistics of methods that need calibration (GPTQ, VQ with error feedback)"));
    auto* browseCalib = new QPushButton(tr("…"));
    paths->addRow(tr("Calibration text:"), browseRow(m_calibText, browseCalib));
    m_entropy = new QComboBox;
    m_entropy->addItem(tr("auto: entropy-code a code stream where it saves 2% or more"), QStringLiteral("auto"));
    m_entropy->addItem(tr("on: entropy-code every code stream"), QStringLiteral("on"));
    m_entropy->addItem(tr("none: codes at their fixed width"), QStringLiteral("none"));
    m_entropy->setToolTip(tr("The archive's lossless stage: rANS-coded code and index streams (exact; only the size changes)"));
    paths->addRow(tr("Entropy coding:"), m_entropy);
    runLayout->addLayout(paths);
    m_estimate = new QLabel;
    m_estimate->setWordWrap(true);
    m_estimate->setTextFormat(Qt::RichText);
    runLayout->addWidget(m_estimate);
    auto* buttons = new QHBoxLayout;
    m_start = new QPushButton(tr("Start"));
    m_start->setToolTip(tr("Compress the selected matrices into the archive (Ctrl+R)"));
    m_resume = new QPushButton(tr("Resume"));
    m_resume->setToolTip(tr("Continue the interrupted run of this archive from its finished groups"));
    m_cancel = new QPushButton(tr("Cancel"));
    m_discard = new QPushButton(tr("Discard interrupted run"));
    for (QPushButton* b : {m_start, m_resume, m_cancel, m_discard})
        buttons->addWidget(b);
    buttons->addStretch(1);
    runLayout->addLayout(buttons);
    auto* bars = new QFormLayout;
    m_overall = new QProgressBar;
    m_overall->setRange(0, 1000);
    m_overall->setFormat(tr("%p%"));
    m_group = new QProgressBar;
    m_group->setRange(0, 1000);
    bars->addRow(tr("Overall:"), m_overall);
    bars->addRow(tr("Current group:"), m_group);
    runLayout->addLayout(bars);
    m_progressText = new QLabel;
    m_progressText->setWordWrap(true);
    runLayout->addWidget(m_progressText);
    m_chart = new TrainingChart;
    runLayout->addWidget(m_chart, 1);
    compress->addWidget(runPane);
    compress->setStretchFactor(0, 1);
    compress->setStretchFactor(1, 3);

    connect(m_suggest, &QPushButton::clicked, this, [this] { suggestSettings(false); });
    connect(m_start, &QPushButton::clicked, this, [this] { startCompress(false); });
    connect(m_resume, &QPushButton::clicked, this, [this] { startCompress(true); });
    connect(m_cancel, &QPushButton::clicked, m_workbench, &Workbench::cancel);
    connect(m_discard, &QPushButton::clicked, this, [this] {
        if (QMessageBox::question(this, tr("Discard interrupted run"),
                                  tr("Delete the finished groups of the interrupted run of %1? This cannot be undone.").arg(m_outPath->text())) !=
            QMessageBox::Yes)
            return;
        QString error;
        if (!Workbench::discardWorkFolder(m_outPath->text(), &error))
            showError(tr("Discard interrupted run"), error);
        updateActions();
    });
    connect(browseOut, &QPushButton::clicked, this, [this] {
        const QString path = QFileDialog::getSaveFileName(this, tr("Archive to write"), m_outPath->text(), tr("PocketLLM archives (*.pllm)"));
        if (!path.isEmpty()) {
            m_outPath->setText(path.endsWith(QLatin1String(".pllm")) ? path : path + QStringLiteral(".pllm"));
            m_outPathEdited = true;
            updateActions();
        }
    });
    connectTextBrowser(m_calibText, browseCalib);
    connect(m_calibText, &QLineEdit::editingFinished, this, [this] { m_estimateTimer.start(); });
    connect(m_entropy, &QComboBox::currentIndexChanged, this, [this] { m_estimateTimer.start(); });
    return compress;
}

// Perplexity before and after, and the last run's matrices.
QWidget* MainWindow::buildResultsTab()
{
    auto* results = new QWidget;
    auto* resultsLayout = new QVBoxLayout(results);
    auto* evalForm = new QFormLayout;
    m_textPath = new QLineEdit(QString::fromStdString(demoTextPath()));
    auto* browseText = new QPushButton(tr("…"));
    evalForm->addRow(tr("Evaluation text:"), browseRow(m_textPath, browseText));
    m_ctx = new QSpinBox;
    m_ctx->setRange(2, 1 << 20);
    m_ctx->setValue(256);
    m_ctx->setToolTip(tr("Tokens per window (BOS included); every text token is scored once"));
    evalForm->addRow(tr("Context length:"), m_ctx);
    resultsLayout->addLayout(evalForm);
    auto* evalButtons = new QHBoxLayout;
    m_evalOriginal = new QPushButton(tr("Evaluate original model"));
    m_evalCompressed = new QPushButton(tr("Evaluate compressed archive"));
    evalButtons->addWidget(m_evalOriginal);
    evalButtons->addWidget(m_evalCompressed);
    m_evalReference = new QCheckBox(tr("with its divergence from the original (KL, same top-1)"));
    m_evalReference->setChecked(true);
    m_evalReference->setToolTip(tr("Runs the open original model on the same windows: mean KL(original || archive) per token, its 99th "
                                   "percentile, and the share of tokens whose most likely next token is unchanged"));
    evalButtons->addWidget(m_evalReference);
    evalButtons->addStretch(1);
    resultsLayout->addLayout(evalButtons);
    m_results = new QTableWidget(0, 8);
    m_results->setHorizontalHeaderLabels({tr("Model"), tr("Text"), tr("Context"), tr("Perplexity"), tr("Change"), tr("KL (p99)"), tr("Same top-1"), tr("Run")});
    m_results->horizontalHeader()->setStretchLastSection(true);
    m_results->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_results->verticalHeader()->setVisible(false);
    m_results->setMaximumHeight(160);
    resultsLayout->addWidget(m_results);
    resultsLayout->addWidget(new QLabel(tr("Matrices of the last compression (errors measured on the decoded weights):")));
    m_matrices = new QTableWidget(0, 6);
    m_matrices->setHorizontalHeaderLabels({tr("Matrix"), tr("Group"), tr("Shape"), tr("Bits/weight"), tr("MSE"), tr("SNR (dB)")});
    m_matrices->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_matrices->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_matrices->setSortingEnabled(true);
    m_matrices->verticalHeader()->setVisible(false);
    resultsLayout->addWidget(m_matrices, 1);

    connect(m_evalOriginal, &QPushButton::clicked, this, [this] { startEval(false); });
    connect(m_evalCompressed, &QPushButton::clicked, this, [this] { startEval(true); });
    connectTextBrowser(m_textPath, browseText);
    return results;
}

// Compare (runs next to the published numbers) and Sensitivity (per-layer damage, allocation).
void MainWindow::buildAnalysisTabs()
{
    m_compare = new ComparePanel;
    m_tabs->addTab(m_compare, tr("Compare"));
    auto* footer = new QWidget;
    auto* footerLayout = new QHBoxLayout(footer);
    footerLayout->setContentsMargins(0, 0, 0, 0);
    auto* baselines = new QPushButton(tr("Run baselines"));
    baselines->setObjectName(QStringLiteral("runBaselines"));
    baselines->setToolTip(tr("Compress the open model with RTN, GPTQ (on the calibration text) and k-means VQ at settings whose bits just "
                             "bracket the selected run's (else the last compression's), and evaluate each on the Results tab's text"));
    m_queue = new JobQueue(m_workbench);
    footerLayout->addWidget(baselines, 0, Qt::AlignTop);
    footerLayout->addWidget(m_queue, 1);
    m_compare->addFooter(footer);
    connect(baselines, &QPushButton::clicked, this, [this] { runBaselines(); });
    connect(m_queue, &JobQueue::itemFinished, this, [this] { m_compare->refresh(); });

    m_sensitivity = new SensitivityPanel(m_workbench);
    m_sensitivity->setTextPath(m_textPath->text());
    m_tabs->addTab(m_sensitivity, tr("Sensitivity"));
    connect(m_textPath, &QLineEdit::textChanged, m_sensitivity, &SensitivityPanel::setTextPath);
    connect(m_sensitivity, &SensitivityPanel::matrixActivated, this, [this](const QString& name) {
        m_picker->focusMatrix(name);
        if (auto* dock = findChild<QDockWidget*>(QStringLiteral("modelDock")))
            dock->show();
    });
    connect(m_sensitivity, &SensitivityPanel::runPlanRequested, this, [this] { startPlannedCompress(); });

    m_playground = new PlaygroundPanel(m_workbench);
    m_tabs->addTab(m_playground, tr("Playground"));

    m_inspect = new InspectPanel(&m_workbench->registry());
    m_tabs->addTab(m_inspect, tr("Inspect"));
    connect(m_tabs, &QTabWidget::currentChanged, this, [this] {
        if (m_tabs->currentWidget() == m_inspect)
            m_inspect->ensureInspected();
    });

    m_judge = new JudgePanel(m_workbench);
    m_tabs->addTab(m_judge, tr("Judge && recover"));
    connect(m_judge, &JudgePanel::archiveWritten, this, [this](const QString& path) {
        setLastArchive(path);
        statusBar()->showMessage(tr("Recovered archive %1: Results ▸ Evaluate compressed archive measures it.").arg(path), 15000);
    });
}

void MainWindow::setLastArchive(const QString& path)
{
    m_lastArchive = path;
    m_playground->setCompressedPath(path);
    updateActions();
}

void MainWindow::showTab(QWidget* page)
{
    m_tabs->setCurrentWidget(page);
}

// A "…" button that picks a text file into `edit`.
void MainWindow::connectTextBrowser(QLineEdit* edit, QPushButton* button)
{
    connect(button, &QPushButton::clicked, this, [this, edit] {
        const QString path = QFileDialog::getOpenFileName(this, tr("Text file"), QFileInfo(edit->text()).absolutePath(),
                                                          tr("Text (*.txt *.raw);;All files (*)"));
        if (!path.isEmpty())
            edit->setText(path);
        m_estimateTimer.start();
    });
}

void MainWindow::buildActions()
{
    QMenu* file = menuBar()->addMenu(tr("&File"));
    QAction* openFile = file->addAction(tr("&Open model file…"), this, [this] {
        const QString path = QFileDialog::getOpenFileName(this, tr("Open a model"), m_lastDir,
                                                          tr("Models (*.gguf *.bin *.safetensors *.pllm config.json);;All files (*)"));
        if (!path.isEmpty())
            openPath(QFileInfo(path).fileName() == QLatin1String("config.json") ? QFileInfo(path).absolutePath() : path);
    });
    openFile->setShortcut(QKeySequence::Open);
    file->addAction(tr("Open &Hugging Face folder…"), this, [this] {
        const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a Hugging Face model folder"), m_lastDir);
        if (!dir.isEmpty())
            openPath(dir);
    });
    file->addAction(tr("Open the &demo model (stories260K)"), this, [this] {
        const QString demo = QString::fromStdString(demoModelPath());
        if (demo.isEmpty())
            showError(tr("Demo model"), tr("The bundled demo model was not found (looked in %1).").arg(QString::fromStdString(resourcesDir())));
        else
            openPath(demo);
    });
    m_recentMenu = file->addMenu(tr("Open &recent"));
    file->addSeparator();
    m_exportArchiveAction = file->addAction(tr("Export &archive…"), this, [this] {
        const QString dest = QFileDialog::getSaveFileName(this, tr("Export the archive"),
                                                          m_lastExportDir + QLatin1Char('/') + QFileInfo(m_lastArchive).fileName(),
                                                          tr("PocketLLM archives (*.pllm)"));
        if (!dest.isEmpty())
            exportArchiveTo(dest);
    });
    m_exportHfAction = file->addAction(tr("Export &Hugging Face folder…"), this, [this] {
        const QString dir = QFileDialog::getSaveFileName(this, tr("Folder to create for the decompressed model"),
                                                         m_lastExportDir + QLatin1Char('/') + QFileInfo(m_lastArchive).completeBaseName());
        if (dir.isEmpty())
            return;
        if (QFileInfo::exists(dir) &&
            QMessageBox::question(this, tr("Export"), tr("%1 exists. Replace it once the new folder is complete?").arg(dir)) != QMessageBox::Yes)
            return;
        exportHfTo(dir);
    });
    m_exportGgufAction = file->addAction(tr("Export &GGUF for llama.cpp…"), this, [this] {
        const QString source = ggufExportSource();
        ExportGgufDialog dialog(source, m_lastExportDir + QLatin1Char('/') + QFileInfo(source).completeBaseName() + QStringLiteral(".gguf"),
                                m_workbench->registry(), this);
        if (dialog.exec() != QDialog::Accepted)
            return;
        const QString out = dialog.outputPath();
        if (QFileInfo::exists(out) &&
            QMessageBox::question(this, tr("Export"), tr("%1 exists. Replace it once the new file is complete?").arg(out)) != QMessageBox::Yes)
            return;
        exportGgufTo(out, dialog.options());
    });
    m_exportQuantisedAction = file->addAction(tr("Export GPTQ / AQLM &folder…"), this, [this] {
        // The format follows the archive's method: rtn/gptq -> GPTQ, vq -> AQLM.
        auto archive = Archive::open(m_lastArchive.toStdString(), ContainerReader::Verify::ManifestOnly);
        const bool vq = archive && !(*archive)->manifest().groups.empty() && (*archive)->manifest().groups.front().payload.methodId == "vq";
        const QString format = vq ? QStringLiteral("aqlm") : QStringLiteral("gptq");
        const QString dir = QFileDialog::getSaveFileName(this, tr("Folder to create (%1 format)").arg(format.toUpper()),
                                                         m_lastExportDir + QLatin1Char('/') + QFileInfo(m_lastArchive).completeBaseName() + QLatin1Char('-') + format);
        if (dir.isEmpty())
            return;
        if (QFileInfo::exists(dir) &&
            QMessageBox::question(this, tr("Export"), tr("%1 exists. Replace it once the new folder is complete?").arg(dir)) != QMessageBox::Yes)
            return;
        exportQuantisedFolderTo(dir, format);
    });
    file->addSeparator();
    QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
    quit->setShortcut(QKeySequence::Quit);

    QMenu* run = menuBar()->addMenu(tr("&Run"));
    m_startAction = run->addAction(tr("&Start compression"), this, [this] { startCompress(false); });
    m_startAction->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_R));
    m_resumeAction = run->addAction(tr("&Resume interrupted run"), this, [this] { startCompress(true); });
    run->addAction(tr("Run on c&luster…"), this, [this] { openClusterDialog(); });
    m_cancelAction = run->addAction(tr("&Cancel"), m_workbench, &Workbench::cancel);
    m_cancelAction->setShortcut(QKeySequence(Qt::Key_Escape));
    run->addSeparator();
    run->addAction(tr("Evaluate &original model"), this, [this] { startEval(false); });
    run->addAction(tr("Evaluate &compressed archive"), this, [this] { startEval(true); });

    QMenu* view = menuBar()->addMenu(tr("&View"));
    for (QDockWidget* dock : findChildren<QDockWidget*>())
        view->addAction(dock->toggleViewAction());

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("&Guided demo"), this, [this] { startGuidedDemo(); });
    help->addAction(tr("&About PocketLLM Workbench"), this, &MainWindow::showAbout);

    QToolBar* bar = addToolBar(tr("Main"));
    bar->setObjectName(QStringLiteral("mainToolBar"));
    bar->addAction(openFile);
    bar->addAction(m_startAction);
    bar->addAction(m_cancelAction);
    bar->addAction(m_exportArchiveAction);
}

void MainWindow::showAbout()
{
    QMessageBox::about(this, tr("About PocketLLM Workbench"),
                       tr("<h3>PocketLLM Workbench %1</h3><p>Build revision %2.</p>"
                          "<p>Compress the weights of large language models with PocketLLM (arXiv 2511.17637) and compare them with "
                          "GPTQ, RTN, k-means VQ and published AQLM / GPTQ / VPTQ figures.</p><p>Experiment store: %3</p>")
                           .arg(QStringLiteral(POCKET_VERSION), QStringLiteral(POCKET_GIT_REVISION), m_workbench->storePath()));
}

bool MainWindow::openPath(const QString& path, bool quiet)
{
    QString error;
    if (!m_workbench->openModel(path, &error)) {
        m_lastError = error;
        if (!quiet)
            showError(tr("Cannot open the model"), error);
        statusBar()->showMessage(tr("Could not open %1").arg(path), 8000);
        m_recent.removeAll(path);
        rebuildRecentMenu();
        return false;
    }
    m_lastDir = QFileInfo(path).absolutePath();
    addRecent(QFileInfo(path).absoluteFilePath());
    statusBar()->showMessage(tr("Opened %1").arg(path), 5000);
    return true;
}

void MainWindow::openInitialModel()
{
    for (const QString& recent : m_recent)
        if (QFileInfo::exists(recent) && openPath(recent, true))
            return;
    const QString demo = QString::fromStdString(demoModelPath());
    if (!demo.isEmpty())
        openPath(demo, true);
}

void MainWindow::addRecent(const QString& path)
{
    m_recent.removeAll(path);
    m_recent.prepend(path);
    while (m_recent.size() > kMaxRecent)
        m_recent.removeLast();
    rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu()
{
    m_recentMenu->clear();
    for (const QString& path : m_recent)
        m_recentMenu->addAction(path, this, [this, path] { openPath(path); });
    m_recentMenu->setEnabled(!m_recent.isEmpty());
}

void MainWindow::updateSummary()
{
    const ModelSummary& s = m_workbench->summary();
    QString html = tr("<b>%1</b><br>%2, %3<br>%4 parameters, %5 on disk, %6<br>%7 blocks, hidden %8, vocabulary %9")
                       .arg(s.name.toHtmlEscaped(), s.architecture, s.format)
                       .arg(QLocale().toString(s.parameters))
                       .arg(formatBytes(s.bytes), s.dtype)
                       .arg(s.layers)
                       .arg(s.hidden)
                       .arg(s.vocab);
    if (s.isArchive)
        html += tr("<br>Compressed with <b>%1</b> at %2 bits per weight. Evaluate or export it; open the original model to compress.")
                    .arg(s.archiveMethod)
                    .arg(s.archiveBpw, 0, 'f', 3);
    if (s.tokenizerPath.isEmpty() && !s.isArchive)
        html += tr("<br><span style='color:#b00020'>No tokenizer beside the model: evaluation needs tokenizer.model, tokenizer.json or tokenizer.bin beside it.</span>");
    m_summary->setText(html);
    setWindowTitle(tr("%1 — PocketLLM Workbench").arg(s.name));
}

CompressJobParams MainWindow::jobParams(bool resume) const
{
    CompressJobParams p;
    p.modelPath = m_workbench->summary().path.toStdString();
    p.methodId = m_form->methodId().toStdString();
    p.settings = m_form->settings();
    p.selection = m_picker->selection();
    p.outPath = m_outPath->text().trimmed().toStdString();
    p.resume = resume;
    p.calibration.textPath = m_calibText->text().trimmed().toStdString();
    if (auto mode = parseEntropyMode(m_entropy->currentData().toString().toStdString()))
        p.entropy.mode = *mode;
    return p;
}

void MainWindow::updateEstimate()
{
    if (!m_workbench->hasModel() || m_workbench->summary().isArchive) {
        m_estimate->setText(m_workbench->hasModel() ? tr("An archive is open: open the original model to compress it.") : QString());
        return;
    }
    const QString invalid = m_form->validationError();
    if (!invalid.isEmpty()) {
        m_estimate->setText(QStringLiteral("<span style='color:#b00020'>%1</span>").arg(invalid.toHtmlEscaped()));
        updateActions();
        return;
    }
    auto plan = m_workbench->plan(jobParams(false));
    if (!plan) {
        m_estimate->setText(QStringLiteral("<span style='color:#b00020'>%1</span>").arg(QString::fromStdString(plan.message()).toHtmlEscaped()));
    } else {
        const ArchiveBits& b = plan->estimatedBits;
        m_estimate->setText(tr("Estimate: <b>%1 bits per weight</b> over %2 compressed weights (%3 group(s)); all-in %4 bpw, "
                               "archive about <b>%5</b> (%6× smaller than fp16).")
                                .arg(b.bpwCompressed(), 0, 'f', 3)
                                .arg(QLocale().toString(static_cast<qlonglong>(b.compressedWeights)))
                                .arg(plan->groups.size())
                                .arg(b.bpwAllIn(), 0, 'f', 3)
                                .arg(formatBytes(b.totalBits() / 8))
                                .arg(b.ratioFp16(), 0, 'f', 1) +
                            (m_entropy->currentData().toString() == QLatin1String("none")
                                 ? QString()
                                 : tr(" Codes counted at their fixed width: entropy coding can only lower this.")));
        const PlanCheck check = m_workbench->checkPlan(*plan);
        QString warnings;
        for (const std::string& w : check.warnings)
            warnings += QStringLiteral("<br><span style='color:#b35900'>&#9888; %1</span>").arg(QString::fromStdString(w).toHtmlEscaped());
        if (!warnings.isEmpty())
            m_estimate->setText(m_estimate->text() + warnings + tr("<br>Start will ask before running; <i>Suggest settings</i> proposes ones that fit."));
    }
    updateActions();
}

void MainWindow::updateActions()
{
    const bool busy = m_workbench->busy();
    const bool canCompress = m_workbench->hasModel() && !m_workbench->summary().isArchive && !busy;
    const bool interrupted = Workbench::hasWorkFolder(m_outPath->text().trimmed());
    m_start->setEnabled(canCompress && m_form->validationError().isEmpty());
    m_startAction->setEnabled(m_start->isEnabled());
    m_resume->setEnabled(canCompress && interrupted);
    m_resumeAction->setEnabled(m_resume->isEnabled());
    m_discard->setEnabled(!busy && interrupted);
    m_cancel->setEnabled(busy);
    m_cancelAction->setEnabled(busy);
    m_form->setEnabled(!busy);
    m_picker->setEnabled(!busy);
    const bool haveArchive = !m_lastArchive.isEmpty() && QFileInfo::exists(m_lastArchive);
    m_exportArchiveAction->setEnabled(!busy && haveArchive);
    m_exportHfAction->setEnabled(!busy && haveArchive);
    m_exportGgufAction->setEnabled(!busy && !ggufExportSource().isEmpty());
    m_exportQuantisedAction->setEnabled(!busy && haveArchive);
    m_evalOriginal->setEnabled(!busy && m_workbench->hasModel() && !m_workbench->summary().isArchive);
    m_evalCompressed->setEnabled(!busy && haveArchive);
    m_sensitivity->setEnabled(!busy || m_workbench->runningKind() == JobStatus::Kind::Sensitivity);
    const QString calib = m_calibText->text().trimmed();
    m_judge->setTrainingText(calib.isEmpty() ? m_textPath->text().trimmed() : calib);
    m_judge->setArchive(haveArchive ? m_lastArchive : QString());
    m_inspect->setSources(haveArchive ? m_lastArchive : QString(),
                          m_workbench->hasModel() && !m_workbench->summary().isArchive ? m_workbench->summary().path : QString());
    m_evalReference->setEnabled(m_workbench->hasModel() && !m_workbench->summary().isArchive);
    m_playground->setEnabled(!busy || m_workbench->runningKind() == JobStatus::Kind::Playground);
    if (!busy)
        m_jobLabel->clear();
}

bool MainWindow::startCompress(bool resume)
{
    if (m_outPath->text().trimmed().isEmpty())
        m_outPath->setText(m_workbench->defaultArchivePath(m_form->methodId()));
    if (const QString invalid = m_form->validationError(); !invalid.isEmpty()) {
        m_lastError = invalid;
        statusBar()->showMessage(invalid, 8000);
        return false;
    }
    if (!resume && m_workbench->hasModel()) {
        if (auto plan = m_workbench->plan(jobParams(false))) {
            const PlanCheck check = m_workbench->checkPlan(*plan);
            if (!check.warnings.empty()) {
                QString text = tr("This run's estimate has a problem:\n");
                for (const std::string& w : check.warnings)
                    text += QStringLiteral("\n• %1").arg(QString::fromStdString(w));
                text += tr("\n\nStart it anyway?");
                const bool go = m_confirm ? m_confirm(text)
                                          : dialogsAllowed() && QMessageBox::question(this, tr("Start this compression?"), text) == QMessageBox::Yes;
                if (!go) {
                    m_lastError = tr("Not started: %1").arg(QString::fromStdString(check.warnings.front()));
                    statusBar()->showMessage(m_lastError, 10000);
                    return false;
                }
            }
        }
    }
    if (resume && !m_lastJob.outPath.empty() && m_lastJob.outPath == m_outPath->text().trimmed().toStdString()) {
        CompressJobParams again = m_lastJob; // the interrupted job as it was started (a plan's overrides included)
        again.resume = true;
        return launchCompress(again, true);
    }
    return launchCompress(jobParams(resume), resume);
}

ClusterDialog* MainWindow::openClusterDialog()
{
    if (!m_workbench->hasModel() || m_workbench->summary().isArchive) {
        m_lastError = tr("Open a model to compress first (an archive is already compressed).");
        statusBar()->showMessage(m_lastError, 8000);
        return nullptr;
    }
    if (m_outPath->text().trimmed().isEmpty())
        m_outPath->setText(m_workbench->defaultArchivePath(m_form->methodId()));
    if (const QString invalid = m_form->validationError(); !invalid.isEmpty()) {
        m_lastError = invalid;
        statusBar()->showMessage(invalid, 8000);
        return nullptr;
    }
    auto* dialog = new ClusterDialog(jobParams(false), this);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    connect(dialog, &ClusterDialog::finished, this, [this](bool ok, const QString& archive, const QString& message) {
        statusBar()->showMessage(message, 10000);
        spdlog::info("run on cluster: {}", message.toStdString());
        if (ok)
            setLastArchive(archive);
    });
    if (dialogsAllowed())
        dialog->show();
    return dialog;
}

bool MainWindow::suggestSettings(bool onlyIfNeeded)
{
    if (!m_workbench->hasModel() || m_workbench->summary().isArchive || m_workbench->busy() || !m_form->validationError().isEmpty())
        return false;
    m_proposedFor = m_workbench->summary().path + QLatin1Char('|') + m_form->methodId();
    auto suggestion = m_workbench->suggest(jobParams(false));
    if (!suggestion) {
        if (!onlyIfNeeded)
            statusBar()->showMessage(tr("No suggestion: %1").arg(QString::fromStdString(suggestion.message())), 10000);
        return false;
    }
    const QString reason = QString::fromStdString(suggestion->reason);
    if (!suggestion->changed) {
        if (!onlyIfNeeded)
            statusBar()->showMessage(tr("Suggest: %1").arg(reason), 10000);
        return false;
    }
    QStringList changes;
    for (const std::string& c : suggestion->changes)
        changes << QString::fromStdString(c);
    m_form->applySettings(changes);
    const QString message = tr("%1 for %2: %3").arg(onlyIfNeeded ? tr("Proposed") : tr("Suggested"), m_workbench->summary().name, reason);
    spdlog::info("{}", message.toStdString());
    statusBar()->showMessage(message, 15000);
    m_estimateTimer.start();
    return true;
}

JobQueue::Item MainWindow::queueItem(const QString& label, const std::string& methodId, std::vector<std::string> settings, const QString& folder,
                                     const QString& name) const
{
    JobQueue::Item item;
    item.label = label;
    item.compress = jobParams(false); // the selection, keep dtype, calibration and entropy of the Compress tab
    item.compress.methodId = methodId;
    item.compress.settings = std::move(settings);
    item.compress.matrixSettings.clear();
    item.compress.matrixMethods.clear();
    const QString dir = QString::fromStdString(userDataDir()) + QStringLiteral("/archives/") + folder;
    QDir().mkpath(dir);
    item.compress.outPath =
        QStringLiteral("%1/%2-%3.pllm").arg(dir, QFileInfo(m_workbench->summary().path).completeBaseName(), name).toStdString();
    item.compress.workDir.clear();
    item.eval.textPath = m_textPath->text().trimmed().toStdString();
    item.eval.eval.ctx = m_ctx->value();
    return item;
}

int MainWindow::queueThreeSizes()
{
    if (!m_workbench->hasModel() || m_workbench->summary().isArchive || !QFileInfo(m_textPath->text().trimmed()).isFile())
        return 0;
    QVector<JobQueue::Item> items;
    // One network for the whole model (what fits a small model), codebooks of three sizes.
    for (int k : {16, 64, 256}) {
        JobQueue::Item item = queueItem(tr("PocketLLM K=%1 (one network for the model)").arg(k), "pocketllm",
                                        {"sharing=model", "d=4", "K=" + std::to_string(k), "epochs=40"}, QStringLiteral("demo"),
                                        QStringLiteral("pocketllm-K%1").arg(k));
        item.compress.selection = LayerSelection{}; // the whole model, whatever the picker holds
        item.becomesLastArchive = true;            // Inspect and the playground show the last size
        if (!m_queue->isPending(item.compress.outPath)) // already queued (the demo's step visited twice)
            items.push_back(item);
    }
    m_queue->enqueue(items);
    return items.size();
}

// Long: the demo's steps are data, one block each (title, two sentences, what it shows).
GuidedDemo* MainWindow::startGuidedDemo()
{
    QVector<GuidedDemo::Step> steps;
    steps.push_back({tr("1. Open a model"),
                     tr("This is stories260K, a 260-thousand-parameter Llama trained on children's stories, opened from the bundled demo. "
                        "The left pane lists its 35 linear matrices: they hold most of the weights, and they are what compression replaces."),
                     [this] {
                         if (!m_workbench->hasModel() || m_workbench->summary().path != QString::fromStdString(demoModelPath()))
                             openPath(QString::fromStdString(demoModelPath()), true);
                         showTab(m_tabs->widget(0));
                     }});
    steps.push_back({tr("2. Compress at three sizes"),
                     tr("Three PocketLLM runs are queued, with codebooks of 16, 64 and 256 latent codewords shared by the whole model; each "
                        "is then scored on the evaluation text. The curve shows the reconstruction loss falling as the codebook and its "
                        "small decoder learn the weights' sub-vectors."),
                     [this] {
                         queueThreeSizes();
                         showTab(m_tabs->widget(0));
                     }});
    steps.push_back({tr("3. Compare"),
                     tr("Each finished run is a point: bits per weight across, perplexity up (lower is better), beside the papers' numbers. "
                        "Run baselines adds RTN, GPTQ and plain k-means VQ at the same bits, so the comparison is fair."),
                     [this] {
                         m_compare->refresh();
                         showTab(m_compare);
                     }});
    steps.push_back({tr("4. Which layers are sensitive"),
                     tr("Measure sensitivity compresses one matrix at a time and measures how far the model's predictions move. "
                        "Dark cells are the matrices to spend bits on; Plan turns that into per-matrix settings under a budget."),
                     [this] { showTab(m_sensitivity); }});
    steps.push_back({tr("5. Inspect a matrix"),
                     tr("Here is what compression did to one matrix: the weights before and after, where the error lies, and the codebook "
                        "drawn over the sub-vectors it stands for. Dead codewords are bits spent on nothing; the decoder's lines show how "
                        "it moves each codeword to where the weights are."),
                     [this] { showTab(m_inspect); }});
    steps.push_back({tr("6. Run the compressed model"),
                     tr("The playground generates from the original and the compressed model side by side from one prompt. "
                        "Tokens where the two disagree are marked, so you can see what the bits bought."),
                     [this] { showTab(m_playground); }});
    if (m_demo) {
        m_demo->close();
        m_demo->deleteLater();
    }
    m_demo = new GuidedDemo(steps, this);
    m_demo->show();
    return m_demo;
}

int MainWindow::runBaselines(double targetBpw)
{
    auto refuse = [this](const QString& why) {
        m_lastError = why;
        statusBar()->showMessage(why, 10000);
        return 0;
    };
    if (!m_workbench->hasModel() || m_workbench->summary().isArchive)
        return refuse(tr("Open the original model first: the baselines compress it."));
    if (targetBpw <= 0)
        targetBpw = m_compare->selectedRunBpw();
    if (targetBpw <= 0)
        targetBpw = m_lastBpw;
    if (targetBpw <= 0)
        if (auto plan = m_workbench->plan(jobParams(false)))
            targetBpw = plan->estimatedBits.bpwCompressed();
    if (targetBpw <= 0)
        return refuse(tr("No run to compare with: select one in the table, or compress first."));
    const QString text = m_textPath->text().trimmed();
    if (!QFileInfo(text).isFile())
        return refuse(tr("Choose the text to evaluate on (Results tab): %1 is not a file.").arg(text));
    QVector<JobQueue::Item> items;
    for (const char* id : {"rtn", "gptq", "vq"}) {
        auto method = m_workbench->registry().find(id);
        if (!method)
            continue;
        // The job the items will run, with no settings yet: what the candidates are planned on.
        const CompressJobParams base = queueItem({}, id, {}, QStringLiteral("baselines"), QString::fromLatin1(id)).compress;
        auto choices = bracketingSettings(base, *m_workbench->checkpoint(), **method, targetBpw, &m_workbench->registry());
        if (!choices)
            continue;
        for (const BracketChoice& c : *choices) {
            QStringList settings;
            for (const std::string& s : c.settings)
                settings << QString::fromStdString(s);
            items.push_back(queueItem(QStringLiteral("%1 %2 (%3 bpw)")
                                          .arg(QString::fromLatin1(id).toUpper(), settings.join(QLatin1Char(' ')))
                                          .arg(c.bpwCompressed, 0, 'f', 3),
                                      id, c.settings, QStringLiteral("baselines"),
                                      QStringLiteral("%1-%2").arg(QString::fromLatin1(id), settings.join(QLatin1Char('-')).replace(QLatin1Char('='), QString()))));
        }
    }
    if (items.isEmpty())
        return refuse(tr("No baseline method could be planned for this model."));
    m_queue->enqueue(items);
    showTab(m_compare);
    statusBar()->showMessage(tr("Queued %1 baseline runs around %2 bits per weight.").arg(items.size()).arg(targetBpw, 0, 'f', 2), 10000);
    spdlog::info("queued {} baseline runs around {:.3f} bits per weight", items.size(), targetBpw);
    return items.size();
}

bool MainWindow::startPlannedCompress()
{
    if (m_sensitivity->planMatrixSettings().empty()) {
        m_lastError = tr("Make a plan first (Sensitivity ▸ Plan).");
        statusBar()->showMessage(m_lastError, 8000);
        return false;
    }
    CompressJobParams p = jobParams(false);
    p.methodId = m_sensitivity->planMethod().toStdString();
    p.settings = m_sensitivity->planBaseSettings();
    p.matrixSettings = m_sensitivity->planMatrixSettings();
    p.matrixMethods = m_sensitivity->planMatrixMethods();
    p.calibration = m_sensitivity->planCalibration(); // what the analysis measured with, not the Compress pane's text
    p.selection = LayerSelection{}; // the plan names every matrix it covers
    for (const auto& [name, settings] : p.matrixSettings)
        p.selection.names.push_back(name);
    if (!m_outPathEdited)
        p.outPath = m_workbench->defaultArchivePath(m_sensitivity->planMethod() + QStringLiteral("-allocated")).toStdString();
    m_outPath->setText(QString::fromStdString(p.outPath));
    return launchCompress(p, false);
}

bool MainWindow::launchCompress(const CompressJobParams& params, bool resume)
{
    m_lastJob = params;
    QString error;
    if (!m_workbench->startCompress(params, &error)) {
        m_lastError = error;
        showError(tr("Cannot start the compression"), error);
        return false;
    }
    m_overall->setValue(0);
    m_group->setValue(0);
    m_progressText->setText(resume ? tr("Resuming…") : tr("Starting…"));
    m_jobLabel->setText(tr("Compressing"));
    m_tabs->setCurrentIndex(0);
    updateActions();
    return true;
}

bool MainWindow::startEval(bool compressed)
{
    EvalJobParams p;
    p.modelPath = (compressed ? m_lastArchive : m_workbench->summary().path).toStdString();
    p.textPath = m_textPath->text().trimmed().toStdString();
    p.eval.ctx = m_ctx->value();
    if (compressed && m_evalReference->isChecked() && m_workbench->hasModel() && !m_workbench->summary().isArchive)
        p.referencePath = m_workbench->summary().path.toStdString();
    QString error;
    if (p.modelPath.empty() || !m_workbench->startEval(p, &error)) {
        m_lastError = p.modelPath.empty() ? tr("Nothing to evaluate: open a model or compress one first.") : error;
        showError(tr("Cannot evaluate"), m_lastError);
        return false;
    }
    m_overall->setValue(0);
    m_jobLabel->setText(tr("Evaluating"));
    updateActions();
    return true;
}

bool MainWindow::exportStarted(bool started, const QString& error, const QString& target)
{
    if (!started) {
        m_lastError = error;
        showError(tr("Cannot export"), error);
        return false;
    }
    m_lastExportDir = QFileInfo(target).absolutePath();
    m_jobLabel->setText(tr("Exporting"));
    updateActions();
    return true;
}

bool MainWindow::exportArchiveTo(const QString& destination)
{
    QString error;
    return exportStarted(m_workbench->startExportArchive(m_lastArchive, destination, &error), error, destination);
}

bool MainWindow::exportHfTo(const QString& folder)
{
    QString error;
    return exportStarted(m_workbench->startExportHf(m_lastArchive, folder, DType::F16, &error), error, folder);
}

bool MainWindow::exportQuantisedFolderTo(const QString& folder, const QString& format)
{
    QString error;
    return exportStarted(m_workbench->startExportQuantisedFolder(m_lastArchive, folder, format, &error), error, folder);
}

QString MainWindow::ggufExportSource() const
{
    if (!m_lastArchive.isEmpty() && QFileInfo::exists(m_lastArchive))
        return m_lastArchive;
    return m_workbench->hasModel() ? m_workbench->summary().path : QString();
}

bool MainWindow::exportGgufTo(const QString& file, const ArchiveGgufOptions& options)
{
    QString error;
    return exportStarted(m_workbench->startExportGguf(ggufExportSource(), file, options, &error), error, file);
}

void MainWindow::onProgress(const JobStatus& status)
{
    m_overall->setValue(static_cast<int>(1000 * status.fraction));
    if (status.kind == JobStatus::Kind::Compress) {
        m_group->setValue(static_cast<int>(1000 * status.groupFraction));
        m_group->setFormat(tr("%p%  (ETA %1)").arg(formatSeconds(status.groupEtaSeconds)));
    }
    m_overall->setFormat(tr("%p%  (ETA %1)").arg(formatSeconds(status.etaSeconds)));
    m_progressText->setText(status.text);
    statusBar()->showMessage(status.text);
}

void MainWindow::onCompressFinished(const CompressOutcome& o)
{
    m_lastError = o.ok ? QString() : o.message;
    statusBar()->showMessage(o.message, 15000);
    m_progressText->setText(o.message);
    if (o.ok && m_queue->owns(o.archivePath)) { // a queued baseline: the user's last archive stays
        m_overall->setValue(1000);
        updateActions();
        return;
    }
    if (o.ok) {
        m_overall->setValue(1000);
        m_lastBpw = o.bpwCompressed;
        m_lastArchive = o.archivePath;
        m_playground->setCompressedPath(o.archivePath);
        m_inspect->setSources(o.archivePath, m_workbench->summary().path, true); // the file may be new at the same path
        m_matrices->setSortingEnabled(false);
        m_matrices->setRowCount(0);
        for (const MatrixReport& m : o.matrices) {
            const int row = m_matrices->rowCount();
            m_matrices->insertRow(row);
            m_matrices->setItem(row, 0, cell(QString::fromStdString(m.name)));
            m_matrices->setItem(row, 1, cell(QString::fromStdString(m.groupId)));
            m_matrices->setItem(row, 2, cell(QStringLiteral("%1 × %2").arg(m.rows).arg(m.cols)));
            m_matrices->setItem(row, 3, numberCell(m.bpw, 3));
            m_matrices->setItem(row, 4, numberCell(m.mse, 8));
            m_matrices->setItem(row, 5, numberCell(m.snrDb, 2));
        }
        m_matrices->setSortingEnabled(true);
        // The next run gets a fresh name unless the user chose one.
        if (!m_outPathEdited)
            m_outPath->setText(m_workbench->defaultArchivePath(m_form->methodId()));
    } else if (!o.cancelled) {
        showError(tr("Compression failed"), o.message, o.errorKind);
    }
    updateActions();
}

void MainWindow::onEvalFinished(const EvalOutcome& o)
{
    m_lastError = o.ok ? QString() : o.message;
    statusBar()->showMessage(o.message, 15000);
    if (!o.ok) {
        if (!o.cancelled)
            showError(tr("Evaluation failed"), o.message, o.errorKind);
        updateActions();
        return;
    }
    m_overall->setValue(1000);
    // The change is relative to the newest evaluation of the original on the same text and ctx.
    double reference = 0;
    for (int r = m_results->rowCount() - 1; r >= 0 && reference == 0; --r)
        if (m_results->item(r, 0)->data(Qt::UserRole).toBool() && m_results->item(r, 1)->text() == QFileInfo(o.textPath).fileName() &&
            m_results->item(r, 2)->text().toInt() == o.ctx)
            reference = m_results->item(r, 3)->data(Qt::UserRole).toDouble();
    const bool original = o.modelPath == m_workbench->summary().path && !m_workbench->summary().isArchive;
    const int row = m_results->rowCount();
    m_results->insertRow(row);
    auto* name = cell(QFileInfo(o.modelPath).fileName());
    name->setToolTip(o.modelPath);
    name->setData(Qt::UserRole, original);
    m_results->setItem(row, 0, name);
    m_results->setItem(row, 1, cell(QFileInfo(o.textPath).fileName()));
    m_results->setItem(row, 2, cell(QString::number(o.ctx), true));
    auto* ppl = cell(QString::number(o.perplexity, 'f', 4), true);
    ppl->setData(Qt::UserRole, o.perplexity);
    m_results->setItem(row, 3, ppl);
    m_results->setItem(row, 4, cell(reference > 0 && !original ? QStringLiteral("%1%2 %").arg(o.perplexity >= reference ? "+" : "").arg(100 * (o.perplexity / reference - 1), 0, 'f', 2) : QStringLiteral("-"), true));
    m_results->setItem(row, 5, cell(o.divergence ? QStringLiteral("%1 (%2)").arg(o.divergence->meanKl, 0, 'f', 4).arg(o.divergence->klP99, 0, 'f', 3)
                                                 : QStringLiteral("-"),
                                    true));
    m_results->setItem(row, 6, cell(o.divergence ? QStringLiteral("%1 %").arg(100 * o.divergence->top1Agreement, 0, 'f', 1) : QStringLiteral("-"), true));
    m_results->setItem(row, 7, cell(o.runId > 0 ? tr("#%1").arg(o.runId) : tr("not recorded")));
    m_results->resizeColumnsToContents();
    updateActions();
}

void MainWindow::onExportFinished(const ExportOutcome& o)
{
    m_lastError = o.ok ? QString() : o.message;
    statusBar()->showMessage(o.message, 15000);
    if (o.ok && dialogsAllowed())
        QMessageBox::information(this, tr("Export finished"), o.message + QStringLiteral("\n\n") + o.files.join(QLatin1Char('\n')));
    else if (!o.cancelled)
        showError(tr("Export failed"), o.message, o.errorKind);
    updateActions();
}

void MainWindow::appendLog(int level, const QString& text)
{
    static const char* colors[] = {"#777777", "#777777", "#000000", "#a15c00", "#b00020", "#b00020", "#000000"};
    m_log->appendHtml(QStringLiteral("<span style='color:%1'>%2</span>").arg(QLatin1String(colors[std::clamp(level, 0, 6)]), text.toHtmlEscaped()));
}

void MainWindow::showError(const QString& title, const QString& text, ErrorKind kind)
{
    spdlog::error("{}: {} ({})", title.toStdString(), text.toStdString(), errorKindName(kind));
    if (!dialogsAllowed())
        return;
    switch (kind) {
    case ErrorKind::Usage:
        QMessageBox::warning(this, title, tr("%1\n\nCheck the settings and try again.").arg(text));
        break;
    case ErrorKind::Unsupported:
        QMessageBox::warning(this, title, tr("%1\n\nThis is not supported yet.").arg(text));
        break;
    case ErrorKind::Internal:
        QMessageBox::critical(this, title,
                              tr("%1\n\nThis is a bug in PocketLLM Workbench or one of its method plugins; the log (View ▸ Log) has the "
                                 "details.").arg(text));
        break;
    case ErrorKind::Io:
    case ErrorKind::Input:
    case ErrorKind::Cancelled:
        QMessageBox::critical(this, title, text);
        break;
    }
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event)
{
    if (event->mimeData()->hasUrls() && event->mimeData()->urls().size() == 1 && event->mimeData()->urls().first().isLocalFile())
        event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event)
{
    const QList<QUrl> urls = event->mimeData()->urls();
    if (urls.isEmpty())
        return;
    QString path = urls.first().toLocalFile();
    if (QFileInfo(path).fileName() == QLatin1String("config.json"))
        path = QFileInfo(path).absolutePath();
    openPath(path);
    event->acceptProposedAction();
}

void MainWindow::restoreSettings()
{
    QSettings s;
    restoreGeometry(s.value(QStringLiteral("window/geometry")).toByteArray());
    restoreState(s.value(QStringLiteral("window/state")).toByteArray());
    m_recent = s.value(QStringLiteral("files/recent")).toStringList();
    m_lastDir = s.value(QStringLiteral("files/lastDir")).toString();
    m_lastExportDir = s.value(QStringLiteral("files/lastExportDir"), QDir::homePath()).toString();
    if (const QString text = s.value(QStringLiteral("eval/text")).toString(); !text.isEmpty() && QFileInfo::exists(text))
        m_textPath->setText(text);
    if (const QString text = s.value(QStringLiteral("compress/calibText")).toString(); !text.isEmpty() && QFileInfo::exists(text))
        m_calibText->setText(text);
    m_ctx->setValue(s.value(QStringLiteral("eval/ctx"), 256).toInt());
    QMap<QString, QStringList> remembered;
    s.beginGroup(QStringLiteral("methods"));
    for (const QString& id : s.childKeys())
        remembered[id] = s.value(id).toStringList();
    s.endGroup();
    m_form->setRememberedSettings(remembered);
    m_form->setMethodId(s.value(QStringLiteral("compress/method"), QStringLiteral("pocketllm")).toString());
    rebuildRecentMenu();
}

void MainWindow::saveSettings()
{
    QSettings s;
    s.setValue(QStringLiteral("window/geometry"), saveGeometry());
    s.setValue(QStringLiteral("window/state"), saveState());
    s.setValue(QStringLiteral("files/recent"), m_recent);
    s.setValue(QStringLiteral("files/lastDir"), m_lastDir);
    s.setValue(QStringLiteral("files/lastExportDir"), m_lastExportDir);
    s.setValue(QStringLiteral("eval/text"), m_textPath->text());
    s.setValue(QStringLiteral("eval/ctx"), m_ctx->value());
    s.setValue(QStringLiteral("compress/calibText"), m_calibText->text());
    s.setValue(QStringLiteral("compress/method"), m_form->methodId());
    s.remove(QStringLiteral("methods"));
    s.beginGroup(QStringLiteral("methods"));
    const auto remembered = m_form->rememberedSettings();
    for (auto it = remembered.begin(); it != remembered.end(); ++it)
        s.setValue(it.key(), it.value());
    s.endGroup();
}

void MainWindow::closeEvent(QCloseEvent* event)
{
    if (m_workbench->busy()) {
        if (dialogsAllowed() &&
            QMessageBox::question(this, tr("Quit"), tr("A job is running. Cancel it and quit? Finished groups are kept for a resume.")) !=
                QMessageBox::Yes) {
            event->ignore();
            return;
        }
        m_workbench->cancel();
        m_workbench->waitForIdle(60000);
    }
    saveSettings();
    event->accept();
}

} // namespace pocket::ui
