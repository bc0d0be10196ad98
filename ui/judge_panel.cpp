#include "judge_panel.h"

#include "palette.h"

#include "pocket/archive/model_archive.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QStandardItemModel>
#include <QTableWidget>
#include <QVBoxLayout>

namespace pocket::ui {

namespace {
QTableWidgetItem* item(const QString& text, bool number = false)
{
    auto* i = new QTableWidgetItem(text);
    if (number)
        i->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return i;
}
} // namespace

// Long: two sections of form rows, a table and a chart, and their connections.
JudgePanel::JudgePanel(Workbench* workbench, QWidget* parent) : QWidget(parent), m_workbench(workbench)
{
    auto* layout = new QVBoxLayout(this);
    m_archiveLabel = new QLabel(tr("No archive yet: compress the model (or open a .pllm) first."));
    m_archiveLabel->setWordWrap(true);
    layout->addWidget(m_archiveLabel);

    auto* zero = new QGroupBox(tr("Zero-shot accuracy (PIQA, ARC-Easy, BoolQ, OpenBookQA, WinoGrande; lm-evaluation-harness scoring)"));
    auto* zeroLayout = new QVBoxLayout(zero);
    auto* zeroRow = new QHBoxLayout;
    zeroRow->addWidget(new QLabel(tr("Items per task:")));
    m_limit = new QSpinBox;
    m_limit->setRange(0, 1 << 20);
    m_limit->setValue(200);
    m_limit->setSpecialValueText(tr("all"));
    m_limit->setToolTip(tr("From the start of each task file; 0 = every item (about 9,000 in all)"));
    zeroRow->addWidget(m_limit);
    m_zeroOriginal = new QPushButton(tr("Run on the original"));
    m_zeroCompressed = new QPushButton(tr("Run on the archive"));
    zeroRow->addWidget(m_zeroOriginal);
    zeroRow->addWidget(m_zeroCompressed);
    zeroRow->addStretch(1);
    zeroLayout->addLayout(zeroRow);
    m_zeroShot = new QTableWidget(0, 6);
    m_zeroShot->setHorizontalHeaderLabels({tr("Model"), tr("Task"), tr("Items"), tr("acc %"), tr("acc_norm %"), tr("Run")});
    m_zeroShot->horizontalHeader()->setStretchLastSection(true);
    m_zeroShot->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_zeroShot->verticalHeader()->setVisible(false);
    zeroLayout->addWidget(m_zeroShot);
    layout->addWidget(zero, 2);

    auto* recover = new QGroupBox(tr("LoRA recovery: low-rank adapters trained on the archive's matrices, weights frozen"));
    auto* recoverLayout = new QHBoxLayout(recover);
    auto* form = new QFormLayout;
    m_rank = new QSpinBox;
    m_rank->setRange(1, 4096);
    m_rank->setValue(1);
    m_rank->setToolTip(tr("Each adapter costs 16 x rank x (rows + cols) bits; the paper uses 32 on 7B models (about 0.25 bits per weight "
                          "there), on a small model a rank of 1-4 already costs 0.25-1.6"));
    form->addRow(tr("Rank:"), m_rank);
    m_alpha = new QDoubleSpinBox;
    m_alpha->setRange(0.01, 1e6);
    m_alpha->setValue(64);
    m_alpha->setToolTip(tr("The update is scaled by alpha / rank (the paper: 64 with rank 32)"));
    form->addRow(tr("Alpha:"), m_alpha);
    m_types = new QComboBox;
    m_types->addItem(tr("Every compressed matrix"), QString());
    m_types->addItem(tr("MLP matrices (gate, up, down)"), QStringLiteral("gate_proj,up_proj,down_proj"));
    m_types->addItem(tr("Attention matrices (q, k, v, o)"), QStringLiteral("q_proj,k_proj,v_proj,o_proj"));
    form->addRow(tr("Adapt:"), m_types);
    m_objective = new QComboBox;
    m_objective->addItem(tr("Next-token loss on the text"), int(AdapterObjective::Nll));
    m_objective->addItem(tr("KL from the original model"), int(AdapterObjective::Kl));
    form->addRow(tr("Objective:"), m_objective);
    m_epochs = new QSpinBox;
    m_epochs->setRange(1, 1000);
    m_epochs->setValue(4);
    form->addRow(tr("Epochs:"), m_epochs);
    m_lr = new QDoubleSpinBox;
    m_lr->setDecimals(5);
    m_lr->setRange(1e-5, 1.0);
    m_lr->setSingleStep(1e-4);
    m_lr->setValue(1e-3);
    form->addRow(tr("Learning rate:"), m_lr);
    m_samples = new QSpinBox;
    m_samples->setRange(1, 1 << 20);
    m_samples->setValue(128);
    form->addRow(tr("Training windows:"), m_samples);
    m_length = new QSpinBox;
    m_length->setRange(2, 1 << 20);
    m_length->setValue(256);
    form->addRow(tr("Window length:"), m_length);
    m_out = new QLineEdit;
    m_out->setPlaceholderText(tr("<archive>-lora.pllm"));
    form->addRow(tr("Write to:"), m_out);
    m_recover = new QPushButton(tr("Recover"));
    form->addRow(m_recover);
    m_recoverLabel = new QLabel;
    m_recoverLabel->setWordWrap(true);
    form->addRow(m_recoverLabel);
    recoverLayout->addLayout(form, 1);
    m_plot = new QCustomPlot;
    m_plot->xAxis->setLabel(tr("training step"));
    m_plot->yAxis->setLabel(tr("loss (batch)"));
    m_plot->setMinimumHeight(200);
    m_plot->addGraph();
    m_plot->graph(0)->setPen(QPen(seriesColor(0), 1.5));
    m_plot->graph(0)->setName(tr("training loss"));
    recoverLayout->addWidget(m_plot, 2);
    layout->addWidget(recover, 3);

    connect(m_zeroOriginal, &QPushButton::clicked, this, [this] {
        QString error;
        if (!startZeroShot(false, &error))
            m_recoverLabel->setText(error);
    });
    connect(m_zeroCompressed, &QPushButton::clicked, this, [this] {
        QString error;
        if (!startZeroShot(true, &error))
            m_recoverLabel->setText(error);
    });
    connect(m_recover, &QPushButton::clicked, this, [this] {
        QString error;
        if (!startRecover(&error))
            m_recoverLabel->setText(error);
    });
    connect(m_workbench, &Workbench::zeroShotFinished, this, &JudgePanel::onZeroShotFinished);
    connect(m_workbench, &Workbench::recoverSteps, this, &JudgePanel::onRecoverSteps);
    connect(m_workbench, &Workbench::recoverFinished, this, &JudgePanel::onRecoverFinished);
    connect(m_workbench, &Workbench::modelChanged, this, &JudgePanel::updateActions);
    updateActions();
}

void JudgePanel::setArchive(const QString& path)
{
    m_archive = path;
    m_archiveLabel->setText(path.isEmpty() ? tr("No archive yet: compress the model (or open a .pllm) first.")
                                           : tr("Archive: <b>%1</b> (%2)").arg(QFileInfo(path).fileName().toHtmlEscaped(), path.toHtmlEscaped()));
    updateActions();
}

void JudgePanel::setTrainingText(const QString& path) { m_trainingText = path; }

void JudgePanel::updateActions()
{
    const bool busy = m_workbench->busy();
    const bool haveArchive = !m_archive.isEmpty() && QFileInfo::exists(m_archive);
    const bool haveOriginal = m_workbench->hasModel() && !m_workbench->summary().isArchive;
    m_zeroOriginal->setEnabled(!busy && haveOriginal);
    m_zeroCompressed->setEnabled(!busy && haveArchive);
    m_recover->setEnabled(!busy && haveArchive);
    if (auto* model = qobject_cast<QStandardItemModel*>(m_objective->model())) // KL needs the original open
        model->item(1)->setEnabled(haveOriginal);
    if (!haveOriginal && m_objective->currentIndex() == 1)
        m_objective->setCurrentIndex(0);
}

bool JudgePanel::startZeroShot(bool compressed, QString* error)
{
    ZeroShotJobParams p;
    p.modelPath = (compressed ? m_archive : m_workbench->summary().path).toStdString();
    p.tasks = bundledZeroShotTasks();
    p.limit = m_limit->value();
    if (p.modelPath.empty()) {
        *error = tr("Nothing to evaluate: open a model or compress one first.");
        return false;
    }
    if (!m_workbench->startZeroShot(p, error))
        return false;
    updateActions();
    return true;
}

bool JudgePanel::startRecover(QString* error)
{
    RecoverJobParams p;
    p.archivePath = m_archive.toStdString();
    p.outPath = m_out->text().trimmed().toStdString();
    p.overwrite = true; // the user named (or accepted) the output here
    p.calibration.textPath = m_trainingText.toStdString();
    p.calibration.samples = m_samples->value();
    p.calibration.length = m_length->value();
    p.training.rank = m_rank->value();
    p.training.alpha = static_cast<float>(m_alpha->value());
    p.training.epochs = m_epochs->value();
    p.training.learningRate = m_lr->value();
    p.training.objective = static_cast<AdapterObjective>(m_objective->currentData().toInt());
    p.types = m_types->currentData().toString().toStdString();
    if (p.training.objective == AdapterObjective::Kl && m_workbench->hasModel() && !m_workbench->summary().isArchive)
        p.originalPath = m_workbench->summary().path.toStdString();
    if (m_archive.isEmpty()) {
        *error = tr("No archive to recover: compress the model first.");
        return false;
    }
    if (m_trainingText.isEmpty()) {
        *error = tr("No text to train on: set a calibration text in the Compress tab.");
        return false;
    }
    if (!m_workbench->startRecover(p, error))
        return false;
    m_plot->graph(0)->data()->clear();
    m_plot->replot();
    m_recoverLabel->setText(tr("Training…"));
    updateActions();
    return true;
}

void JudgePanel::onZeroShotFinished(const ZeroShotOutcome& o)
{
    updateActions();
    if (!o.ok) {
        m_recoverLabel->setText(o.message);
        return;
    }
    const QString model = QFileInfo(o.modelPath).fileName();
    for (const ZeroShotTaskResult& r : o.tasks) {
        const int row = m_zeroShot->rowCount();
        m_zeroShot->insertRow(row);
        m_zeroShot->setItem(row, 0, item(model));
        m_zeroShot->setItem(row, 1, item(QString::fromLatin1(zeroShotTaskName(r.task))));
        m_zeroShot->setItem(row, 2, item(QString::number(r.items), true));
        m_zeroShot->setItem(row, 3, item(QStringLiteral("%1 ± %2").arg(100 * r.acc, 0, 'f', 2).arg(100 * r.accStderr, 0, 'f', 2), true));
        m_zeroShot->setItem(row, 4, item(zeroShotHasAccNorm(r.task) ? QStringLiteral("%1 ± %2").arg(100 * r.accNorm, 0, 'f', 2).arg(100 * r.accNormStderr, 0, 'f', 2)
                                                                     : QStringLiteral("-"),
                                         true));
        m_zeroShot->setItem(row, 5, item(o.runId > 0 ? tr("#%1").arg(o.runId) : tr("not recorded")));
    }
    m_zeroShot->resizeColumnsToContents();
    m_zeroShot->scrollToBottom();
}

void JudgePanel::onRecoverSteps(const QVector<TrainPoint>& steps)
{
    for (const TrainPoint& p : steps) m_plot->graph(0)->addData(p.step, p.loss);
    m_plot->rescaleAxes();
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void JudgePanel::onRecoverFinished(const RecoverOutcome& o)
{
    m_recoverLabel->setText(o.message);
    if (o.ok) {
        m_lastRecovered = QString::fromStdString(o.result.outPath);
        Q_EMIT archiveWritten(m_lastRecovered);
    }
    updateActions();
}

} // namespace pocket::ui
