#include "compare_panel.h"

#include "pocket/store/experiment_store.h"

#include "palette.h"

#include <qcustomplot.h>

#include <QCheckBox>
#include <QComboBox>
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

#include <algorithm>
#include <map>

namespace pocket::ui {

namespace {


QTableWidgetItem* numberItem(double v, int digits)
{
    auto* item = new QTableWidgetItem;
    item->setData(Qt::DisplayRole, QString::number(v, 'f', digits).toDouble());
    item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
}

} // namespace

ComparePanel::ComparePanel(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    auto* filters = new QHBoxLayout;
    m_model = new QLineEdit;
    m_model->setPlaceholderText(tr("any model"));
    m_dataset = new QLineEdit;
    m_dataset->setPlaceholderText(tr("any dataset"));
    m_ctx = new QSpinBox;
    m_ctx->setRange(0, 1 << 20);
    m_ctx->setSpecialValueText(tr("any"));
    m_metric = new QComboBox;
    for (const char* m : {"perplexity", "accuracy", "accuracy_avg", "nll"})
        m_metric->addItem(QString::fromLatin1(m));
    m_published = new QCheckBox(tr("Published"));
    m_published->setChecked(true);
    m_published->setToolTip(tr("Show the literature's numbers (AQLM, GPTQ, VPTQ, PocketLLM papers) beside local runs"));
    auto* refreshButton = new QPushButton(tr("Refresh"));
    filters->addWidget(new QLabel(tr("Model:")));
    filters->addWidget(m_model, 2);
    filters->addWidget(new QLabel(tr("Dataset:")));
    filters->addWidget(m_dataset, 2);
    filters->addWidget(new QLabel(tr("Context:")));
    filters->addWidget(m_ctx);
    filters->addWidget(new QLabel(tr("Metric:")));
    filters->addWidget(m_metric);
    filters->addWidget(m_published);
    filters->addWidget(refreshButton);
    layout->addLayout(filters);
    m_status = new QLabel;
    layout->addWidget(m_status);

    auto* split = new QSplitter(Qt::Vertical);
    m_chart = new QCustomPlot;
    m_chart->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom | QCP::iSelectPlottables);
    m_chart->xAxis->setLabel(tr("bits per weight (compressed matrices)"));
    m_chart->yAxis->setLabel(tr("perplexity"));
    m_chart->legend->setVisible(true);
    m_chart->legend->setFont(QFont(font().family(), 8));
    m_chart->setMinimumHeight(260);
    split->addWidget(m_chart);
    m_table = new QTableWidget;
    m_table->setColumnCount(8);
    m_table->setHorizontalHeaderLabels({tr("Method"), tr("Model"), tr("Bits/weight"), tr("Dataset"), tr("Context"), tr("Metric"),
                                        tr("Value"), tr("Source")});
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::SingleSelection);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSortingEnabled(true);
    m_table->verticalHeader()->setVisible(false);
    split->addWidget(m_table);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    layout->addWidget(split, 1);

    connect(refreshButton, &QPushButton::clicked, this, &ComparePanel::refresh);
    for (QLineEdit* e : {m_model, m_dataset})
        connect(e, &QLineEdit::returnPressed, this, &ComparePanel::refresh);
    connect(m_ctx, &QSpinBox::editingFinished, this, &ComparePanel::refresh);
    connect(m_metric, &QComboBox::currentIndexChanged, this, &ComparePanel::refresh);
    connect(m_published, &QCheckBox::toggled, this, &ComparePanel::refresh);
    connect(m_chart, &QCustomPlot::plottableClick, this,
            [this](QCPAbstractPlottable* plottable, int dataIndex, QMouseEvent*) { selectPoint(plottable, dataIndex); });
    connect(m_table, &QTableWidget::itemSelectionChanged, this, [this] {
        const auto rows = m_table->selectionModel()->selectedRows();
        if (rows.isEmpty())
            return;
        const qint64 runId = m_table->item(rows.first().row(), 0)->data(Qt::UserRole).toLongLong();
        if (runId > 0)
            Q_EMIT runSelected(runId);
    });
}

ComparePanel::~ComparePanel() = default;

double ComparePanel::selectedRunBpw() const
{
    const auto rows = m_table->selectionModel()->selectedRows();
    if (rows.isEmpty() || m_table->item(rows.first().row(), 0)->data(Qt::UserRole).toLongLong() <= 0)
        return 0;
    bool ok = false;
    const double bpw = m_table->item(rows.first().row(), 2)->data(Qt::DisplayRole).toDouble(&ok);
    return ok ? bpw : 0;
}

void ComparePanel::addFooter(QWidget* widget) { layout()->addWidget(widget); }

void ComparePanel::setStorePath(const QString& path)
{
    if (path != m_storePath)
        m_store.reset();
    m_storePath = path;
}
void ComparePanel::setModelFilter(const QString& model) { m_model->setText(model); }
void ComparePanel::setDatasetFilter(const QString& dataset) { m_dataset->setText(dataset); }
void ComparePanel::setCtxFilter(int ctx) { m_ctx->setValue(ctx); }
int ComparePanel::rowCount() const { return m_table->rowCount(); }

int ComparePanel::pointCount() const
{
    int n = 0;
    for (int i = 0; i < m_chart->plottableCount(); ++i)
        if (auto* curve = qobject_cast<QCPCurve*>(m_chart->plottable(i)))
            n += curve->dataCount();
    return n;
}

// What refresh() draws: one series per (method, published or not), and the uncompressed models as
// reference lines.
struct ComparePanel::Plot {
    struct Series {
        QVector<double> x, y;
        QVector<int> rows;
    };
    std::map<std::string, int> methodIndex;           // colour of each method
    std::map<std::pair<std::string, bool>, Series> series;
    QVector<QPair<double, QString>> references;       // uncompressed models: horizontal lines
    int published = 0, local = 0;
};

bool ComparePanel::refresh()
{
    m_chart->clearPlottables();
    m_pointRows.clear();
    m_table->setSortingEnabled(false);
    m_table->setRowCount(0);
    auto rows = queryRows();
    if (!rows) {
        m_status->setText(QString::fromStdString(rows.message()));
        m_chart->replot(QCustomPlot::rpQueuedReplot);
        return false;
    }
    const Plot plot = fillTable(*rows);
    const bool logY = plotSeries(plot);
    drawReferences(plot, logY);
    m_chart->replot(QCustomPlot::rpQueuedReplot);
    m_table->setSortingEnabled(true);
    m_table->resizeColumnsToContents();
    m_status->setText(tr("%1 local results and %2 published figures (%3).").arg(plot.local).arg(plot.published).arg(m_storePath));
    return true;
}

Result<std::vector<CompareRow>> ComparePanel::queryRows()
{
    if (!m_store) {
        auto store = ExperimentStore::open(m_storePath.toStdString());
        if (!store)
            return Error{tr("Cannot read the experiment store: %1").arg(QString::fromStdString(store.message())).toStdString()};
        m_store = std::move(*store);
    }
    CompareFilter filter;
    filter.model = m_model->text().trimmed().toStdString();
    filter.dataset = m_dataset->text().trimmed().toStdString();
    if (m_ctx->value() > 0)
        filter.ctx = m_ctx->value();
    filter.metric = m_metric->currentText().toStdString();
    filter.includePublished = m_published->isChecked();
    auto rows = m_store->compare(filter);
    if (!rows)
        m_store.reset(); // reopen next time (the file may have been replaced)
    return rows;
}

ComparePanel::Plot ComparePanel::fillTable(const std::vector<CompareRow>& rows)
{
    Plot plot;
    m_table->setRowCount(static_cast<int>(rows.size()));
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const CompareRow& r = rows[i];
        const int row = static_cast<int>(i);
        auto* method = new QTableWidgetItem(QString::fromStdString(r.method));
        method->setData(Qt::UserRole, static_cast<qlonglong>(r.runId));
        method->setData(Qt::UserRole + 1, row); // the row's identity, kept when the user sorts
        m_table->setItem(row, 0, method);
        m_table->setItem(row, 1, new QTableWidgetItem(QString::fromStdString(r.model)));
        m_table->setItem(row, 2, r.bpw ? numberItem(*r.bpw, 3) : new QTableWidgetItem(QStringLiteral("-")));
        m_table->setItem(row, 3, new QTableWidgetItem(QString::fromStdString(r.dataset)));
        m_table->setItem(row, 4, r.ctx ? numberItem(*r.ctx, 0) : new QTableWidgetItem(QStringLiteral("-")));
        m_table->setItem(row, 5, new QTableWidgetItem(QString::fromStdString(r.metric)));
        m_table->setItem(row, 6, numberItem(r.value, 4));
        auto* source = new QTableWidgetItem(r.published ? tr("published: %1").arg(QString::fromStdString(r.source)) : QString::fromStdString(r.source));
        source->setToolTip(QString::fromStdString(r.note));
        m_table->setItem(row, 7, source);
        (r.published ? plot.published : plot.local)++;
        if (!r.bpw)
            continue;
        if (r.method == "none") {
            plot.references.push_back({r.value, tr("%1, uncompressed (%2 bpw)").arg(QString::fromStdString(r.model)).arg(*r.bpw, 0, 'f', 0)});
            continue;
        }
        plot.methodIndex.emplace(r.method, static_cast<int>(plot.methodIndex.size()));
        Plot::Series& s = plot.series[{r.method, r.published}];
        s.x << *r.bpw;
        s.y << r.value;
        s.rows << row;
    }
    return plot;
}

bool ComparePanel::plotSeries(const Plot& plot)
{
    bool logY = m_metric->currentText() == QLatin1String("perplexity");
    for (const auto& [key, s] : plot.series) {
        const QColor color = seriesColor(plot.methodIndex.at(key.first));
        auto* curve = new QCPCurve(m_chart->xAxis, m_chart->yAxis);
        QVector<double> t(s.x.size());
        for (int i = 0; i < t.size(); ++i)
            t[i] = i; // keep our order, so a data index is the row list's index
        curve->setData(t, s.x, s.y, true);
        curve->setLineStyle(QCPCurve::lsNone);
        curve->setPen(QPen(color));
        curve->setScatterStyle(key.second ? QCPScatterStyle(QCPScatterStyle::ssDiamond, QPen(color, 1.5), Qt::NoBrush, 9)
                                          : QCPScatterStyle(QCPScatterStyle::ssDisc, QPen(color), QBrush(color), 7));
        curve->setName(QString::fromStdString(key.first) + (key.second ? tr(" (published)") : QString()));
        curve->setSelectable(QCP::stSingleData);
        for (double v : s.y)
            logY = logY && v > 0;
        m_pointRows.push_back({curve, s.rows});
    }
    m_chart->yAxis->setScaleType(logY ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
    if (logY)
        m_chart->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    else
        m_chart->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    m_chart->yAxis->setLabel(m_metric->currentText());
    return logY;
}

void ComparePanel::drawReferences(const Plot& plot, bool logY)
{
    m_chart->clearItems();
    m_chart->rescaleAxes();
    for (const auto& [value, label] : plot.references) {
        auto* line = new QCPItemStraightLine(m_chart);
        line->point1->setCoords(0, value);
        line->point2->setCoords(1, value);
        line->setPen(QPen(Qt::darkGray, 1, Qt::DashLine));
        auto* text = new QCPItemText(m_chart);
        text->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
        text->position->setTypeX(QCPItemPosition::ptAxisRectRatio);
        text->position->setTypeY(QCPItemPosition::ptPlotCoords);
        text->position->setCoords(0.01, value);
        text->setText(label);
        text->setColor(Qt::darkGray);
        text->setFont(QFont(font().family(), 8));
        // Keep the reference line in view.
        const QCPRange r = m_chart->yAxis->range();
        if (m_chart->plottableCount() == 0)
            m_chart->yAxis->setRange(value / 2, value * 2);
        else
            m_chart->yAxis->setRange(std::min(r.lower, value), std::max(r.upper, value));
    }
    if (m_chart->plottableCount() > 0) {
        m_chart->xAxis->scaleRange(1.1, m_chart->xAxis->range().center());
        const QCPRange r = m_chart->yAxis->range();
        if (logY)
            m_chart->yAxis->setRange(r.lower / 1.2, r.upper * 1.2);
        else
            m_chart->yAxis->scaleRange(1.1, r.center());
    }
}

void ComparePanel::selectPoint(QCPAbstractPlottable* plottable, int dataIndex)
{
    for (const auto& [p, rows] : m_pointRows) {
        if (p != plottable || dataIndex < 0 || dataIndex >= rows.size())
            continue;
        // The rows were filled in store order; sorting may have moved them: find by identity.
        const int storeRow = rows[dataIndex];
        for (int r = 0; r < m_table->rowCount(); ++r)
            if (m_table->item(r, 0)->data(Qt::UserRole + 1).toInt() == storeRow) {
                m_table->selectRow(r);
                m_table->scrollToItem(m_table->item(r, 0));
                return;
            }
    }
}

} // namespace pocket::ui
