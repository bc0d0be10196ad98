#include "sensitivity_panel.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>

#include <cmath>

namespace pocket::ui {

namespace {

std::vector<std::string> splitList(const QString& text, QChar separator)
{
    std::vector<std::string> out;
    for (const QString& part : text.split(separator, Qt::SkipEmptyParts))
        if (!part.trimmed().isEmpty())
            out.push_back(part.trimmed().toStdString());
    return out;
}

QTableWidgetItem* number(double v, int digits)
{
    auto* item = new QTableWidgetItem;
    item->setData(Qt::DisplayRole, QString::number(v, 'f', digits).toDouble());
    item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
}

} // namespace

SensitivityPanel::SensitivityPanel(Workbench* workbench, QWidget* parent) : QWidget(parent), m_workbench(workbench)
{
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(buildAnalysisForm());
    layout->addWidget(buildResultsView(), 3);
    buildAllocation(layout);
    connectSignals();
}

// Method, settings, unit, context, windows, the metric shown, and the Measure button.
QHBoxLayout* SensitivityPanel::buildAnalysisForm()
{
    auto* form = new QHBoxLayout;
    m_method = new QLineEdit(QStringLiteral("rtn"));
    m_method->setToolTip(tr("Method applied to each unit; methods that need calibration (gptq, feedback, aqlm) get Hessians measured "
                            "once on the original model from windows of the analysis text"));
    m_method->setMaximumWidth(110);
    m_settings = new QLineEdit(QStringLiteral("bits=3,group=32"));
    m_settings->setToolTip(tr("Its settings, name=value separated by commas"));
    m_unit = new QComboBox;
    m_unit->addItems({QStringLiteral("matrix"), QStringLiteral("block"), QStringLiteral("type")});
    m_ctx = new QSpinBox;
    m_ctx->setRange(2, 1 << 16);
    m_ctx->setValue(256);
    m_windows = new QSpinBox;
    m_windows->setRange(1, 4096);
    m_windows->setValue(8);
    m_metric = new QComboBox;
    m_metric->addItem(tr("KL divergence"));
    m_metric->addItem(tr("Perplexity change"));
    m_metric->addItem(tr("Top-1 changed (%)"));
    m_metric->addItem(tr("Plan: menu entry")); // kPlanMetric
    m_run = new QPushButton(tr("Measure sensitivity"));
    form->addWidget(new QLabel(tr("Method:")));
    form->addWidget(m_method);
    form->addWidget(new QLabel(tr("Settings:")));
    form->addWidget(m_settings, 1);
    form->addWidget(new QLabel(tr("Unit:")));
    form->addWidget(m_unit);
    form->addWidget(new QLabel(tr("Context:")));
    form->addWidget(m_ctx);
    form->addWidget(new QLabel(tr("Windows:")));
    form->addWidget(m_windows);
    form->addWidget(new QLabel(tr("Show:")));
    form->addWidget(m_metric);
    form->addWidget(m_run);
    return form;
}

// The heatmap (blocks x matrix types) beside the table of units.
QSplitter* SensitivityPanel::buildResultsView()
{
    auto* split = new QSplitter(Qt::Horizontal);
    m_plot = new QCustomPlot;
    m_plot->setMinimumSize(360, 260);
    m_plot->xAxis->setLabel(tr("block"));
    m_plot->yAxis->setLabel(tr("matrix type"));
    QSharedPointer<QCPAxisTickerText> typeTicks(new QCPAxisTickerText);
    for (int t = 0; t < 7; ++t)
        typeTicks->addTick(t, QString::fromLatin1(matrixTypeName(kMatrixTypes[t])));
    m_plot->yAxis->setTicker(typeTicks);
    m_plot->yAxis->setRangeReversed(true);
    m_map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
    auto* scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(0, 1, scale);
    m_map->setColorScale(scale);
    QCPColorGradient gradient(QCPColorGradient::gpHot);
    gradient = gradient.inverted();
    gradient.setNanHandling(QCPColorGradient::nhTransparent);
    m_map->setGradient(gradient);
    m_map->setInterpolate(false);
    split->addWidget(m_plot);
    m_table = new QTableWidget(0, 7);
    m_table->setHorizontalHeaderLabels({tr("Unit"), tr("Bits/weight"), tr("Perplexity"), tr("Change"), tr("KL"), tr("Top-1 same"), tr("SNR (dB)")});
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents); // full names; scrolls sideways
    m_table->setTextElideMode(Qt::ElideMiddle); // if ever narrowed: the block and the type stay visible
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSortingEnabled(true);
    m_table->verticalHeader()->setVisible(false);
    split->addWidget(m_table);
    split->setStretchFactor(0, 2);
    split->setStretchFactor(1, 3);
    return split;
}

// The allocation menu and budget, Plan and Run plan, and the plan's table.
void SensitivityPanel::buildAllocation(QVBoxLayout* layout)
{
    auto* alloc = new QHBoxLayout;
    m_menu = new QLineEdit(QStringLiteral("bits=2;bits=3;bits=4;bits=5"));
    m_menu->setToolTip(tr("Settings to choose from for each matrix, separated by ';' (each on top of the settings above), "
                          "e.g. bits=2;bits=3;bits=4 or K=16,d=4;K=256,d=4; an entry may name another method, whose "
                          "settings it gives alone: bits=2;gptq:bits=3,group=32"));
    m_budget = new QDoubleSpinBox;
    m_budget->setRange(0.1, 64);
    m_budget->setDecimals(3);
    m_budget->setSingleStep(0.25);
    m_budget->setValue(4.0);
    m_budget->setSuffix(tr(" bpw"));
    m_plan = new QPushButton(tr("Plan"));
    m_runPlan = new QPushButton(tr("Run plan"));
    m_runPlan->setEnabled(false);
    alloc->addWidget(new QLabel(tr("Allocation menu:")));
    alloc->addWidget(m_menu, 1);
    alloc->addWidget(new QLabel(tr("Budget:")));
    alloc->addWidget(m_budget);
    alloc->addWidget(m_plan);
    alloc->addWidget(m_runPlan);
    layout->addLayout(alloc);
    m_planSummary = new QLabel;
    m_planSummary->setWordWrap(true);
    layout->addWidget(m_planSummary);
    m_planTable = new QTableWidget(0, 4);
    m_planTable->setHorizontalHeaderLabels({tr("Matrix"), tr("Setting"), tr("Bits/weight"), tr("Predicted KL")});
    // Full matrix names and settings (no "..."): columns fit their contents, the table scrolls sideways.
    m_planTable->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_planTable->horizontalHeader()->setStretchLastSection(true);
    m_planTable->setTextElideMode(Qt::ElideMiddle);
    m_planTable->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_planTable->setSortingEnabled(true);
    m_planTable->verticalHeader()->setVisible(false);
    layout->addWidget(m_planTable, 2);
}

void SensitivityPanel::connectSignals()
{
    connect(m_run, &QPushButton::clicked, this, [this] {
        QString error;
        if (!startAnalysis(&error))
            m_planSummary->setText(QStringLiteral("<span style='color:#b00020'>%1</span>").arg(error.toHtmlEscaped()));
    });
    connect(m_plan, &QPushButton::clicked, this, [this] {
        QString error;
        if (!startPlan(&error))
            m_planSummary->setText(QStringLiteral("<span style='color:#b00020'>%1</span>").arg(error.toHtmlEscaped()));
    });
    connect(m_runPlan, &QPushButton::clicked, this, &SensitivityPanel::runPlanRequested);
    connect(m_metric, &QComboBox::currentIndexChanged, this, &SensitivityPanel::redrawMap);
    connect(m_workbench, &Workbench::sensitivityUnits, this, &SensitivityPanel::addUnits);
    connect(m_workbench, &Workbench::sensitivityFinished, this, &SensitivityPanel::onFinished);
    connect(m_workbench, &Workbench::jobStarted, this, [this] {
        m_run->setEnabled(false);
        m_plan->setEnabled(false);
    });
    connect(m_workbench, &Workbench::modelChanged, this, [this] {
        m_planSettings.clear();
    m_planMethods.clear();
        m_runPlan->setEnabled(false);
        reset();
    });
    connect(m_plot, &QCustomPlot::mousePress, this, [this](QMouseEvent* event) {
        const double x = m_plot->xAxis->pixelToCoord(event->position().x());
        const double y = m_plot->yAxis->pixelToCoord(event->position().y());
        activateCell(static_cast<int>(std::lround(x)), static_cast<int>(std::lround(y)));
    });
    connect(m_table, &QTableWidget::itemSelectionChanged, this, [this] {
        const auto rows = m_table->selectionModel()->selectedRows();
        if (!rows.isEmpty()) {
            const QString unit = m_table->item(rows.first().row(), 0)->text();
            if (unit.endsWith(QLatin1String(".weight")))
                Q_EMIT matrixActivated(unit);
        }
    });
}

pocket::SensitivityParams SensitivityPanel::params(QString* error) const
{
    SensitivityParams p;
    p.modelPath = m_workbench->summary().path.toStdString();
    p.textPath = m_textPath.toStdString();
    p.methodId = m_method->text().trimmed().toStdString();
    p.settings = splitList(m_settings->text(), QLatin1Char(','));
    p.unit = *parseSensitivityUnit(m_unit->currentText().toStdString());
    p.ctx = m_ctx->value();
    p.windows = m_windows->value();
    if (p.methodId.empty())
        *error = tr("Name a method (e.g. rtn).");
    return p;
}

bool SensitivityPanel::startAnalysis(QString* error)
{
    const SensitivityParams p = params(error);
    if (!error->isEmpty())
        return false;
    reset();
    return m_workbench->startSensitivity(p, error);
}

bool SensitivityPanel::startPlan(QString* error)
{
    AllocationRequest request;
    request.base = params(error);
    if (!error->isEmpty())
        return false;
    for (const std::string& entry : splitList(m_menu->text(), QLatin1Char(';'))) {
        auto [method, settings] = parseMenuEntry(entry);
        request.menuMethods.push_back(method);
        request.menu.push_back(settings);
    }
    request.budgetBpw = m_budget->value();
    m_planCalibration = calibrationOf(request.base); // Run plan compresses with the Hessians the analysis used
    reset();
    m_planTable->setRowCount(0);
    m_planSettings.clear();
    m_planMethods.clear();
    m_runPlan->setEnabled(false);
    m_planSummary->setText(tr("Measuring every menu entry, then allocating…"));
    return m_workbench->startAllocation(request, error);
}

void SensitivityPanel::reset()
{
    m_units.clear();
    m_planEntry.clear();
    m_table->setRowCount(0);
    m_layers = m_workbench->checkpoint() ? static_cast<int>(m_workbench->checkpoint()->config().numLayers) : 0;
    m_map->data()->setSize(std::max(1, m_layers), 7);
    m_map->data()->setRange(QCPRange(0, std::max(0, m_layers - 1)), QCPRange(0, 6));
    m_map->data()->fill(std::nan(""));
    m_plot->xAxis->setRange(-0.5, std::max(0, m_layers - 1) + 0.5);
    m_plot->yAxis->setRange(-0.5, 6.5);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

double SensitivityPanel::metricOf(const UnitSensitivity& u) const
{
    switch (m_metric->currentIndex()) {
    case 1: return u.deltaPerplexity;
    case 2: return 100 * (1 - u.top1Agreement);
    default: return u.klMean;
    }
}

void SensitivityPanel::addUnits(const QVector<UnitSensitivity>& units)
{
    m_table->setSortingEnabled(false);
    for (const UnitSensitivity& u : units) {
        m_units.push_back(u);
        const int row = m_table->rowCount();
        m_table->insertRow(row);
        auto* unit = new QTableWidgetItem(QString::fromStdString(u.unit));
        unit->setToolTip(unit->text());
        m_table->setItem(row, 0, unit);
        m_table->setItem(row, 1, number(u.bpw, 3));
        m_table->setItem(row, 2, number(u.perplexity, 4));
        m_table->setItem(row, 3, number(u.deltaPerplexity, 4));
        m_table->setItem(row, 4, number(u.klMean, 5));
        m_table->setItem(row, 5, number(100 * u.top1Agreement, 2));
        m_table->setItem(row, 6, number(u.snrDb, 2));
    }
    m_table->setSortingEnabled(true);
    redrawMap();
}

namespace {

// Block and type index of "model.layers.<b>.<...>.<type>.weight"; false for other names.
bool cellOfMatrix(const std::string& name, int& block, int& type)
{
    const QStringList parts = QString::fromStdString(name).split(QLatin1Char('.'));
    if (parts.size() < 5)
        return false;
    block = parts[2].toInt();
    MatrixType t{};
    if (!parseMatrixTypeName(parts[parts.size() - 2].toStdString(), t))
        return false;
    type = static_cast<int>(t);
    return true;
}

} // namespace

void SensitivityPanel::redrawMap()
{
    m_map->data()->fill(std::nan(""));
    for (QCPItemText* label : m_cellLabels)
        m_plot->removeItem(label);
    m_cellLabels.clear();
    m_cellText.clear();
    double lo = INFINITY, hi = -INFINITY;
    const bool planView = m_metric->currentIndex() == kPlanMetric;
    std::vector<std::pair<std::string, double>> cells;
    if (planView) { // the plan's menu entry per matrix, labelled with its method
        for (const auto& [name, entry] : m_planEntry)
            cells.emplace_back(name, entry + 1);
    } else {
        for (const UnitSensitivity& u : m_units)
            for (const std::string& name : u.matrices)
                cells.emplace_back(name, metricOf(u));
    }
    for (const auto& [name, v] : cells) {
        int block = 0, type = 0;
        if (!cellOfMatrix(name, block, type))
            continue;
        m_map->data()->setCell(block, type, v);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        if (planView) {
            const int entry = static_cast<int>(v) - 1;
            const QString text = entry < m_planEntryLabels.size() ? m_planEntryLabels[entry] : QString::number(entry + 1);
            m_cellText[{block, type}] = text;
            if (m_layers <= 16) { // readable labels only
                auto* label = new QCPItemText(m_plot);
                label->position->setCoords(block, type);
                label->setText(text);
                label->setFont(QFont(font().family(), 7));
                label->setBrush(QBrush(QColor(255, 255, 255, 210))); // readable on dark cells too
                label->setPadding(QMargins(2, 0, 2, 0));
                m_cellLabels.push_back(label);
            }
        }
    }
    if (std::isfinite(lo))
        m_map->setDataRange(QCPRange(lo, hi > lo ? hi : lo + 1e-12));
    m_map->colorScale()->axis()->setLabel(m_metric->currentText());
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QString SensitivityPanel::cellText(int block, int typeIndex) const
{
    auto it = m_cellText.find({block, typeIndex});
    return it == m_cellText.end() ? QString() : it->second;
}

int SensitivityPanel::filledCells() const
{
    int n = 0;
    for (int b = 0; b < m_layers; ++b)
        for (int t = 0; t < 7; ++t)
            n += std::isfinite(m_map->data()->cell(b, t)) ? 1 : 0;
    return n;
}

void SensitivityPanel::activateCell(int block, int typeIndex)
{
    if (block < 0 || block >= m_layers || typeIndex < 0 || typeIndex > 6)
        return;
    const QString name = QString::fromStdString(matrixTensorName(block, kMatrixTypes[typeIndex]));
    {
        const QSignalBlocker quiet(m_table); // one matrixActivated, not a second from the selection
        for (int r = 0; r < m_table->rowCount(); ++r)
            if (m_table->item(r, 0)->text() == name) {
                m_table->selectRow(r);
                m_table->scrollToItem(m_table->item(r, 0));
            }
    }
    Q_EMIT matrixActivated(name);
}

void SensitivityPanel::onFinished(const SensitivityOutcome& o)
{
    m_run->setEnabled(true);
    m_plan->setEnabled(true);
    if (!o.ok) {
        m_planSummary->setText(o.cancelled ? o.message : QStringLiteral("<span style='color:#b00020'>%1</span>").arg(o.message.toHtmlEscaped()));
        return;
    }
    if (!o.isAllocation) {
        m_planSummary->setText(o.message);
        return;
    }
    const AllocationResult& a = o.allocation;
    m_planMethod = m_method->text().trimmed();
    QString error;
    m_planBase = params(&error).settings;
    m_planSettings = a.matrixSettings;
    m_planMethods = a.matrixMethods;
    m_planTable->setSortingEnabled(false);
    m_planTable->setRowCount(0);
    const auto menu = splitList(m_menu->text(), QLatin1Char(';'));
    m_planEntry.clear();
    m_planEntryLabels.clear();
    for (std::size_t k = 0; k < menu.size(); ++k) { // "1 gptq", "2 rtn", ...
        const std::string method = parseMenuEntry(menu[k]).first;
        m_planEntryLabels << QStringLiteral("%1 %2").arg(k + 1).arg(method.empty() ? m_planMethod : QString::fromStdString(method));
    }
    for (const PlannedUnit& item : a.planned) {
        const UnitSensitivity& u = item.measured;
        for (const std::string& m : u.matrices)
            m_planEntry[m] = static_cast<int>(item.entry);
        QString setting = item.entry < menu.size() ? QString::fromStdString(menu[item.entry]) : QString();
        if (parseMenuEntry(setting.toStdString()).first.empty() && a.matrixMethods.count(u.matrices.front())) // a plan across methods
            setting.prepend(QString::fromStdString(a.matrixMethods.at(u.matrices.front())) + QLatin1Char(':'));
        const QString name = u.matrices.size() > 1
                                 ? tr("%1 (%2 matrices, shared codebook)").arg(QString::fromStdString(u.unit)).arg(u.matrices.size())
                                 : QString::fromStdString(u.unit);
        const int row = m_planTable->rowCount();
        m_planTable->insertRow(row);
        for (int column : {0, 1}) {
            auto* item = new QTableWidgetItem(column == 0 ? name : setting);
            item->setToolTip(item->text());
            m_planTable->setItem(row, column, item);
        }
        m_planTable->setItem(row, 2, number(u.bpw, 3));
        m_planTable->setItem(row, 3, number(u.klMean, 5));
    }
    m_planTable->setSortingEnabled(true);
    QStringList uniform;
    for (std::size_t k = 0; k < a.uniformBpw.size() && k < menu.size(); ++k)
        uniform << QStringLiteral("%1: %2").arg(QString::fromStdString(menu[k])).arg(a.uniformBpw[k], 0, 'f', 3);
    m_planSummary->setText(tr("<b>%1</b> Uniform settings cost %2 bpw. Run plan compresses with these per-matrix settings.")
                               .arg(o.message.toHtmlEscaped(), uniform.join(QStringLiteral(", "))));
    m_runPlan->setEnabled(true);
    // The last menu entry's measurements fill the heatmap (the most precise setting's damage).
    m_units.clear();
    m_table->setRowCount(0);
    addUnits(QVector<UnitSensitivity>(a.perOption.back().begin(), a.perOption.back().end()));
}

} // namespace pocket::ui
