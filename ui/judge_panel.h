// The "Judge & recover" tab: zero-shot multiple-choice accuracy of the original model or the last
// archive on the bundled tasks (scored as lm-evaluation-harness scores them), and LoRA recovery of
// the last archive with a live loss curve. Jobs go through Workbench (one at a time); GUI thread only.
#pragma once

#include "workbench.h"

#include <QWidget>

class QComboBox;
class QCustomPlot;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QTableWidget;

namespace pocket::ui {

class JudgePanel : public QWidget {
    Q_OBJECT
public:
    explicit JudgePanel(Workbench* workbench, QWidget* parent = nullptr);

    // The archive both sections work on (the last one written or opened).
    void setArchive(const QString& path);
    // The text recovery trains on (the Compress tab's calibration text, else the demo text).
    void setTrainingText(const QString& path);
    // Runs zero-shot on the open original model (compressed = false) or the archive.
    bool startZeroShot(bool compressed, QString* error);
    bool startRecover(QString* error);
    // Enables what can run now (the main window calls it when jobs start and end).
    void updateActions();

    // For tests and screenshots.
    QSpinBox* limitSpin() const { return m_limit; }
    QTableWidget* zeroShotTable() const { return m_zeroShot; }
    QSpinBox* rankSpin() const { return m_rank; }
    QDoubleSpinBox* alphaSpin() const { return m_alpha; }
    QSpinBox* epochsSpin() const { return m_epochs; }
    QSpinBox* samplesSpin() const { return m_samples; }
    QSpinBox* lengthSpin() const { return m_length; }
    QDoubleSpinBox* learningRateSpin() const { return m_lr; }
    QComboBox* typesCombo() const { return m_types; }
    QComboBox* objectiveCombo() const { return m_objective; }
    QLineEdit* outputEdit() const { return m_out; }
    QCustomPlot* lossPlot() const { return m_plot; }
    QLabel* recoverLabel() const { return m_recoverLabel; }
    QString lastRecovered() const { return m_lastRecovered; }

Q_SIGNALS:
    // Recovery wrote an archive (the main window makes it the last archive).
    void archiveWritten(const QString& path);

private:
    void onZeroShotFinished(const ZeroShotOutcome& outcome);
    void onRecoverSteps(const QVector<TrainPoint>& steps);
    void onRecoverFinished(const RecoverOutcome& outcome);

    Workbench* m_workbench;
    QString m_archive;
    QString m_trainingText;
    QString m_lastRecovered;
    QLabel* m_archiveLabel = nullptr;
    QSpinBox* m_limit = nullptr;
    QPushButton* m_zeroOriginal = nullptr;
    QPushButton* m_zeroCompressed = nullptr;
    QTableWidget* m_zeroShot = nullptr;
    QSpinBox* m_rank = nullptr;
    QDoubleSpinBox* m_alpha = nullptr;
    QSpinBox* m_epochs = nullptr;
    QSpinBox* m_samples = nullptr;
    QSpinBox* m_length = nullptr;
    QDoubleSpinBox* m_lr = nullptr;
    QComboBox* m_types = nullptr;
    QComboBox* m_objective = nullptr;
    QLineEdit* m_out = nullptr;
    QPushButton* m_recover = nullptr;
    QCustomPlot* m_plot = nullptr;
    QLabel* m_recoverLabel = nullptr;
};

} // namespace pocket::ui
