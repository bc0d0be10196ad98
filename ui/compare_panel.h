// Runs next to published numbers: a table of the experiment store's comparison rows (published
// figures with their citation, results of finished local runs) and a Pareto chart of the metric
// against bits per weight, one colour per method, published points hollow diamonds, local runs
// filled discs. Filters: model, dataset, context length, metric. Clicking a point selects its
// row. Reads the store on the GUI thread (one short query per refresh). GUI thread only.
#pragma once

#include "pocket/store/experiment_store.h"
#include "pocket/support/result.h"

#include <QString>
#include <QVector>
#include <QWidget>

#include <memory>
#include <vector>

class QCheckBox;
class QComboBox;
class QCustomPlot;
class QCPAbstractPlottable;
class QLabel;
class QLineEdit;
class QSpinBox;
class QTableWidget;

namespace pocket::ui {

class ComparePanel : public QWidget {
    Q_OBJECT
public:
    explicit ComparePanel(QWidget* parent = nullptr);
    ~ComparePanel() override;

    void setStorePath(const QString& path);
    // Sets the model filter (case-insensitive substring of the model name) without refreshing.
    void setModelFilter(const QString& model);
    void setDatasetFilter(const QString& dataset);
    void setCtxFilter(int ctx);
    // Re-reads the store. Returns false (and shows the reason) when it cannot be read.
    bool refresh();

    int rowCount() const;
    // Points on the chart (all series).
    int pointCount() const;
    QCustomPlot* chart() const { return m_chart; }
    QTableWidget* table() const { return m_table; }
    // Selects the table row behind a point of the chart (what a click does).
    void selectPoint(QCPAbstractPlottable* plottable, int dataIndex);
    // The bits per weight of the selected row's local run, or 0 when no local run with bits is selected.
    double selectedRunBpw() const;
    // Adds a widget under the table (the main window's baseline queue).
    void addFooter(QWidget* widget);

Q_SIGNALS:
    // A row or point of a local run was selected.
    void runSelected(qint64 runId);

private:
    struct Plot;
    // The steps of refresh(): the store's rows under the filters, the table (and what to plot),
    // the series (returns whether the metric axis is logarithmic), the reference lines and ranges.
    pocket::Result<std::vector<pocket::CompareRow>> queryRows();
    Plot fillTable(const std::vector<pocket::CompareRow>& rows);
    bool plotSeries(const Plot& plot);
    void drawReferences(const Plot& plot, bool logY);

    QString m_storePath;
    // One connection, opened on first refresh and kept (opening checks the schema and the seed).
    std::unique_ptr<pocket::ExperimentStore> m_store;
    QLineEdit* m_model;
    QLineEdit* m_dataset;
    QSpinBox* m_ctx;
    QComboBox* m_metric;
    QCheckBox* m_published;
    QLabel* m_status;
    QTableWidget* m_table;
    QCustomPlot* m_chart;
    // For every plottable: the table row of each of its points.
    QVector<QPair<QCPAbstractPlottable*, QVector<int>>> m_pointRows;
    QVector<qint64> m_rowRunIds;
};

} // namespace pocket::ui
