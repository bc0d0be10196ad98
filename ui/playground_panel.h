// The Playground tab: one prompt, the open (original) model and a compressed one (an archive, a
// GGUF, or the last run) answering side by side as they stream. Each token of the compressed model
// is tinted by how likely the original found it (or by the KL divergence of the two next-token
// distributions), its tooltip lists the original's top choices, and in greedy mode the first token
// where the texts part is underlined. Runs go through Workbench (one job at a time); GUI thread only.
#pragma once

#include "workbench.h"

#include <QWidget>

#include <vector>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QTextBrowser;

namespace pocket::ui {

class PlaygroundPanel : public QWidget {
    Q_OBJECT
public:
    explicit PlaygroundPanel(Workbench* workbench, QWidget* parent = nullptr);

    // The compressed model to run (e.g. the archive a compression just wrote).
    void setCompressedPath(const QString& path);
    // Starts a run with the panel's settings; false with `error` if refused.
    bool start(QString* error);

    // For tests and screenshots.
    QLineEdit* promptEdit() const { return m_prompt; }
    QLineEdit* compressedEdit() const { return m_compressed; }
    QSpinBox* maxTokensSpin() const { return m_maxTokens; }
    QCheckBox* greedyCheck() const { return m_greedy; }
    QComboBox* tintCombo() const { return m_tint; }
    QTextBrowser* originalView() const { return m_originalView; }
    QTextBrowser* compressedView() const { return m_compressedView; }
    QLabel* statusLabel() const { return m_status; }
    // The compressed model's tokens of the last run, as they were shown.
    const std::vector<pocket::PlaygroundToken>& compressedTokens() const { return m_tokens; }
    // The tooltip of compressed token `index`.
    QString tooltipFor(int index) const;

protected:
    bool eventFilter(QObject* watched, QEvent* event) override;

private:
    void addTokens(const QVector<pocket::PlaygroundToken>& tokens);
    void onFinished(const PlaygroundOutcome& outcome);
    void retint();
    QColor tintOf(const pocket::PlaygroundToken& token) const;
    void appendCompressed(int index);

    Workbench* m_workbench;
    QLineEdit* m_compressed = nullptr;
    QLineEdit* m_prompt = nullptr;
    QSpinBox* m_maxTokens = nullptr;
    QCheckBox* m_greedy = nullptr;
    QDoubleSpinBox* m_temperature = nullptr;
    QSpinBox* m_seed = nullptr;
    QComboBox* m_tint = nullptr;
    QLineEdit* m_budget = nullptr;
    QPushButton* m_run = nullptr;
    QPushButton* m_stop = nullptr;
    QTextBrowser* m_originalView = nullptr;
    QTextBrowser* m_compressedView = nullptr;
    QLabel* m_status = nullptr;
    std::vector<pocket::PlaygroundToken> m_tokens;
};

} // namespace pocket::ui
