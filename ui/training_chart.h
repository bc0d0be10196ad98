// Live training curves (QCustomPlot): one curve per group of the running job, the selected loss
// term against the group's optimiser step, the group in training drawn bold; and the codebook
// usage below. Points arrive in batches (Workbench::trainMetrics, ~30 Hz); each batch is
// appended and one queued replot requested, never a replot per step. Log scale, zoom (wheel),
// pan (drag), and "Follow" (keep rescaling until the user zooms). GUI thread only.
#pragma once

#include "workbench.h"

#include <QHash>
#include <QStringList>
#include <QVector>
#include <QWidget>

class QCheckBox;
class QComboBox;
class QCustomPlot;
class QCPGraph;

namespace pocket::ui {

class TrainingChart : public QWidget {
    Q_OBJECT
public:
    enum class Term { Loss, Reconstruction, Codebook, Commitment, SnrDb, IndexPerplexity, LearningRate };

    explicit TrainingChart(QWidget* parent = nullptr);

    // Starts a new job: forgets old curves; `groupIds` name the curves (in job order).
    void reset(const QStringList& groupIds);
    // Appends a batch of points and schedules one replot.
    void append(const QVector<pocket::ui::TrainPoint>& points);
    void setTerm(Term term);
    void setLogScale(bool on);
    // Points held (all groups), and points currently drawn on the loss chart.
    int pointCount() const;
    int plottedPointCount() const;
    int replotRequests() const { return m_replotRequests; }
    QCustomPlot* lossPlot() const { return m_loss; }

private:
    QCPGraph* graphFor(int groupIndex, QCustomPlot* plot, QVector<QCPGraph*>& graphs);
    void refill();
    void highlight(int groupIndex);
    void requestReplot();
    static double valueOf(const TrainPoint& p, Term term);

    QCustomPlot* m_loss;
    QCustomPlot* m_usage;
    QComboBox* m_term;
    QCheckBox* m_log;
    QCheckBox* m_follow;
    QStringList m_groupIds;
    QVector<QVector<TrainPoint>> m_points; // per group
    QVector<QCPGraph*> m_lossGraphs;
    QVector<QCPGraph*> m_usageGraphs;
    int m_current = -1;
    int m_replotRequests = 0;
    Term m_termValue = Term::Loss;
};

} // namespace pocket::ui
