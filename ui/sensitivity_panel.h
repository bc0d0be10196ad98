// Per-layer sensitivity and bit allocation: run an analysis (a method and settings applied to one
// unit at a time), watch a heatmap of blocks x matrix types (QCustomPlot colour map) fill in as
// units finish, with a sortable table beside it; clicking a cell or a row names the matrix
// (matrixActivated) so the layer picker can select it. Below: a menu of settings and a budget in
// bits per weight; "Plan" measures each entry and allocates, "Run plan" asks for one compression
// with the per-matrix settings. Requests go through Workbench; GUI thread only.
#pragma once

#include "workbench.h"

#include <QStringList>
#include <QVector>
#include <QWidget>

#include <map>
#include <string>
#include <vector>

class QComboBox;
class QCustomPlot;
class QCPColorMap;
class QCPItemText;
class QDoubleSpinBox;
class QHBoxLayout;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QSplitter;
class QTableWidget;
class QVBoxLayout;

namespace pocket::ui {

class SensitivityPanel : public QWidget {
    Q_OBJECT
public:
    explicit SensitivityPanel(Workbench* workbench, QWidget* parent = nullptr);

    // The text the analyses score (shared with the Results tab's evaluation text).
    void setTextPath(const QString& path) { m_textPath = path; }
    // Starts an analysis / an allocation with the panel's settings; false with `error` if refused.
    bool startAnalysis(QString* error);
    bool startPlan(QString* error);
    // The last plan as a compression request's pieces (empty until a plan exists).
    QString planMethod() const { return m_planMethod; }
    std::vector<std::string> planBaseSettings() const { return m_planBase; }
    const std::map<std::string, std::vector<std::string>>& planMatrixSettings() const { return m_planSettings; }
    // Matrices whose plan entry names another method than planMethod() (a plan across methods).
    const std::map<std::string, std::string>& planMatrixMethods() const { return m_planMethods; }
    // The calibration the plan's analysis used (its text: the scored text unless one was named).
    const pocket::CalibrationParams& planCalibration() const { return m_planCalibration; }

    // For tests and screenshots.
    QLineEdit* methodEdit() const { return m_method; }
    QLineEdit* settingsEdit() const { return m_settings; }
    QComboBox* unitCombo() const { return m_unit; }
    QSpinBox* windowsSpin() const { return m_windows; }
    QSpinBox* ctxSpin() const { return m_ctx; }
    QLineEdit* menuEdit() const { return m_menu; }
    QDoubleSpinBox* budgetSpin() const { return m_budget; }
    QTableWidget* table() const { return m_table; }
    QTableWidget* planTable() const { return m_planTable; }
    // Cells of the heatmap that hold a measurement.
    int filledCells() const;
    // The heatmap's label at (block, type index) in the plan view ("2 gptq": menu entry and method), "" elsewhere.
    QString cellText(int block, int typeIndex) const;
    // The metric combo's index of the plan view.
    static constexpr int kPlanMetric = 3;
    QComboBox* metricCombo() const { return m_metric; }
    // What clicking the heatmap at (block, type index) does.
    void activateCell(int block, int typeIndex);

Q_SIGNALS:
    void matrixActivated(const QString& tensorName);
    // "Run plan" was pressed: compress with the plan's per-matrix settings.
    void runPlanRequested();

private:
    QHBoxLayout* buildAnalysisForm();
    QSplitter* buildResultsView();
    void buildAllocation(QVBoxLayout* layout);
    void connectSignals();
    void reset();
    void addUnits(const QVector<pocket::UnitSensitivity>& units);
    void redrawMap();
    void onFinished(const SensitivityOutcome& outcome);
    double metricOf(const pocket::UnitSensitivity& u) const;
    pocket::SensitivityParams params(QString* error) const;

    Workbench* m_workbench;
    QString m_textPath;
    QLineEdit* m_method;
    QLineEdit* m_settings;
    QComboBox* m_unit;
    QSpinBox* m_ctx;
    QSpinBox* m_windows;
    QComboBox* m_metric;
    QPushButton* m_run;
    QCustomPlot* m_plot;
    QCPColorMap* m_map = nullptr;
    QTableWidget* m_table;
    QLineEdit* m_menu;
    QDoubleSpinBox* m_budget;
    QPushButton* m_plan;
    QPushButton* m_runPlan;
    QLabel* m_planSummary;
    QTableWidget* m_planTable;
    std::vector<pocket::UnitSensitivity> m_units;
    int m_layers = 0;
    QString m_planMethod;
    std::vector<std::string> m_planBase;
    std::map<std::string, std::vector<std::string>> m_planSettings;
    std::map<std::string, std::string> m_planMethods;
    pocket::CalibrationParams m_planCalibration;
    std::map<std::string, int> m_planEntry; // matrix -> menu index of the last plan
    QStringList m_planEntryLabels;           // per menu entry: "<n> <method>"
    QVector<QCPItemText*> m_cellLabels;
    std::map<std::pair<int, int>, QString> m_cellText;
};

} // namespace pocket::ui
