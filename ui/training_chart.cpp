#include "training_chart.h"

#include "palette.h"

#include <qcustomplot.h>

#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QVBoxLayout>

#include <cmath>

namespace pocket::ui {


TrainingChart::TrainingChart(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Curve:")));
    m_term = new QComboBox;
    m_term->addItem(tr("Total loss"), int(Term::Loss));
    m_term->addItem(tr("Reconstruction (MSE)"), int(Term::Reconstruction));
    m_term->addItem(tr("Codebook term"), int(Term::Codebook));
    m_term->addItem(tr("Commitment term"), int(Term::Commitment));
    m_term->addItem(tr("SNR (dB)"), int(Term::SnrDb));
    m_term->addItem(tr("Index perplexity"), int(Term::IndexPerplexity));
    m_term->addItem(tr("Learning rate"), int(Term::LearningRate));
    controls->addWidget(m_term);
    m_log = new QCheckBox(tr("Log scale"));
    m_log->setChecked(true);
    controls->addWidget(m_log);
    m_follow = new QCheckBox(tr("Follow"));
    m_follow->setChecked(true);
    m_follow->setToolTip(tr("Rescale the axes as points arrive; zooming or panning turns this off"));
    controls->addWidget(m_follow);
    controls->addStretch(1);
    layout->addLayout(controls);

    m_loss = new QCustomPlot;
    m_loss->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    m_loss->xAxis->setLabel(tr("optimiser step (within its group)"));
    m_loss->yAxis->setLabel(tr("total loss"));
    m_loss->setMinimumHeight(220);
    m_loss->legend->setFont(QFont(font().family(), 8));
    m_loss->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    m_loss->setNoAntialiasingOnDrag(true);
    layout->addWidget(m_loss, 3);

    m_usage = new QCustomPlot;
    m_usage->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    m_usage->xAxis->setLabel(tr("optimiser step"));
    m_usage->yAxis->setLabel(tr("usage %"));
    m_usage->yAxis->setTickLabelFont(QFont(font().family(), 8));
    m_usage->yAxis->setRange(0, 105);
    m_usage->setMinimumHeight(120);
    layout->addWidget(m_usage, 1);

    connect(m_term, &QComboBox::currentIndexChanged, this, [this] { setTerm(static_cast<Term>(m_term->currentData().toInt())); });
    connect(m_log, &QCheckBox::toggled, this, &TrainingChart::setLogScale);
    connect(m_follow, &QCheckBox::toggled, this, [this](bool on) {
        if (on)
            requestReplot();
    });
    for (QCustomPlot* plot : {m_loss, m_usage}) {
        connect(plot, &QCustomPlot::mouseWheel, this, [this] { m_follow->setChecked(false); });
        connect(plot, &QCustomPlot::mousePress, this, [this] { m_follow->setChecked(false); });
    }
    setLogScale(true);
}

double TrainingChart::valueOf(const TrainPoint& p, Term term)
{
    switch (term) {
    case Term::Loss: return p.loss;
    case Term::Reconstruction: return p.reconstruction;
    case Term::Codebook: return p.codebookTerm;
    case Term::Commitment: return p.commitmentTerm;
    case Term::SnrDb: return p.snrDb;
    case Term::IndexPerplexity: return p.indexPerplexity;
    case Term::LearningRate: return p.lr;
    }
    return 0;
}

void TrainingChart::reset(const QStringList& groupIds)
{
    m_groupIds = groupIds;
    m_points.clear();
    m_lossGraphs.clear();
    m_usageGraphs.clear();
    m_loss->clearGraphs();
    m_usage->clearGraphs();
    m_current = -1;
    m_loss->legend->setVisible(groupIds.size() > 1 && groupIds.size() <= 8);
    m_follow->setChecked(true);
    requestReplot();
}

QCPGraph* TrainingChart::graphFor(int groupIndex, QCustomPlot* plot, QVector<QCPGraph*>& graphs)
{
    while (graphs.size() <= groupIndex) {
        const int index = static_cast<int>(graphs.size());
        QCPGraph* g = plot->addGraph();
        g->setName(index < m_groupIds.size() ? m_groupIds[index] : tr("group %1").arg(index + 1));
        g->setPen(QPen(seriesColor(index), 1));
        g->setAdaptiveSampling(true);
        graphs.push_back(g);
    }
    return graphs[groupIndex];
}

void TrainingChart::append(const QVector<TrainPoint>& points)
{
    for (const TrainPoint& p : points) {
        if (p.groupIndex < 0)
            continue;
        while (m_points.size() <= p.groupIndex)
            m_points.push_back({});
        m_points[p.groupIndex].push_back(p);
        const double v = valueOf(p, m_termValue);
        if (std::isfinite(v) && (m_log->isChecked() ? v > 0 : true))
            graphFor(p.groupIndex, m_loss, m_lossGraphs)->addData(p.step, v);
        graphFor(p.groupIndex, m_usage, m_usageGraphs)->addData(p.step, 100.0 * p.codebookUsage);
        if (p.groupIndex != m_current)
            highlight(p.groupIndex);
    }
    if (!points.isEmpty())
        requestReplot();
}

void TrainingChart::highlight(int groupIndex)
{
    m_current = groupIndex;
    for (QVector<QCPGraph*>* graphs : {&m_lossGraphs, &m_usageGraphs})
        for (int i = 0; i < graphs->size(); ++i) {
            QColor c = seriesColor(i);
            if (i != groupIndex)
                c.setAlpha(90);
            (*graphs)[i]->setPen(QPen(c, i == groupIndex ? 2.5 : 1));
        }
}

void TrainingChart::refill()
{
    for (int i = 0; i < m_lossGraphs.size(); ++i) {
        QVector<double> keys, values;
        for (const TrainPoint& p : m_points.value(i)) {
            const double v = valueOf(p, m_termValue);
            if (std::isfinite(v) && (m_log->isChecked() ? v > 0 : true)) {
                keys << p.step;
                values << v;
            }
        }
        m_lossGraphs[i]->setData(keys, values, true);
    }
    static const char* labels[] = {"total loss", "reconstruction (MSE)", "codebook term", "commitment term", "SNR (dB)", "index perplexity",
                                   "learning rate"};
    m_loss->yAxis->setLabel(tr(labels[int(m_termValue)]));
    m_follow->setChecked(true);
    requestReplot();
}

void TrainingChart::setTerm(Term term)
{
    m_termValue = term;
    const int index = m_term->findData(int(term));
    if (index >= 0 && index != m_term->currentIndex())
        m_term->setCurrentIndex(index);
    refill();
}

void TrainingChart::setLogScale(bool on)
{
    if (m_log->isChecked() != on)
        m_log->setChecked(on);
    m_loss->yAxis->setScaleType(on ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
    if (on) {
        QSharedPointer<QCPAxisTickerLog> ticker(new QCPAxisTickerLog);
        m_loss->yAxis->setTicker(ticker);
        m_loss->yAxis->setNumberFormat(QStringLiteral("g"));
        m_loss->yAxis->setNumberPrecision(3);
    } else {
        m_loss->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
        m_loss->yAxis->setNumberFormat(QStringLiteral("gb"));
        m_loss->yAxis->setNumberPrecision(4);
    }
    refill();
}

void TrainingChart::requestReplot()
{
    if (m_follow->isChecked()) {
        m_loss->rescaleAxes();
        m_usage->xAxis->setRange(m_loss->xAxis->range());
        m_usage->yAxis->setRange(0, 105);
        if (m_loss->graphCount() > 0) {
            // A little room above and below the curves.
            QCPRange r = m_loss->yAxis->range();
            if (m_log->isChecked() && r.lower > 0)
                m_loss->yAxis->setRange(r.lower / 1.3, r.upper * 1.3);
            else
                m_loss->yAxis->scaleRange(1.1, r.center());
        }
    }
    ++m_replotRequests;
    m_loss->replot(QCustomPlot::rpQueuedReplot);
    m_usage->replot(QCustomPlot::rpQueuedReplot);
}

int TrainingChart::pointCount() const
{
    int n = 0;
    for (const auto& g : m_points)
        n += static_cast<int>(g.size());
    return n;
}

int TrainingChart::plottedPointCount() const
{
    int n = 0;
    for (const QCPGraph* g : m_lossGraphs)
        n += g->dataCount();
    return n;
}

} // namespace pocket::ui
