// The Inspect tab: what compression did to one matrix of an archive (the last run's, or one
// opened), for teaching and for debugging a method. Figures: the histograms of the original and
// decoded weights, the error W - W_hat as a heat map, the codebook drawn over the sub-vectors
// (PCA for d > 2), the index usage with the dead codewords, and for PocketLLM the decoder's map
// (codeword -> mean decoded sub-vector) and the RLN tile statistics. The inspection (decoding,
// downsampling, PCA) runs on a worker thread; the GUI thread only draws the reduced data. Every
// figure exports as PNG, SVG or PDF. GUI thread only.
#pragma once

#include "pocket/analysis/inspect.h"
#include "pocket/methods/method_registry.h"

#include <QString>
#include <QWidget>

#include <atomic>
#include <memory>
#include <optional>

class QCheckBox;
class QComboBox;
class QCustomPlot;
class QLabel;
class QPushButton;
class QThread;

namespace pocket::ui {

class InspectPanel : public QWidget {
    Q_OBJECT
public:
    enum Figure { Histogram, ErrorMap, Codebook, Usage, Tiles, FigureCount };

    // `registry` must outlive the panel.
    explicit InspectPanel(const pocket::MethodRegistry* registry, QWidget* parent = nullptr);
    ~InspectPanel() override;

    // The archive to inspect and the original model to compare with ("" = none). Lists the
    // archive's matrices; the first is inspected.
    // `reload`: the archive file was rewritten (same path, new contents).
    void setSources(const QString& archivePath, const QString& originalPath, bool reload = false);
    // Inspects the chosen matrix unless it is already shown or being inspected (the tab was opened).
    void ensureInspected();
    QString archivePath() const { return m_archive; }
    // Starts inspecting `matrix` (any running inspection is abandoned). False if it is not in the archive.
    bool inspect(const QString& matrix);
    bool busy() const { return m_thread != nullptr; }
    // The last finished inspection.
    const std::optional<pocket::MatrixInspection>& current() const { return m_current; }
    QString lastError() const { return m_lastError; }
    // Writes one figure; the format follows the suffix (.png, .svg, .pdf). False with lastError() on failure.
    bool exportFigure(Figure figure, const QString& path);
    QCustomPlot* plot(Figure figure) const { return m_plots[figure]; }
    QComboBox* matrixCombo() const { return m_matrix; }
    QComboBox* errorModeCombo() const { return m_errorMode; }
    QLabel* summaryLabel() const { return m_summary; }
    static QString figureName(Figure figure);

Q_SIGNALS:
    // An inspection finished (ok) or failed (lastError()).
    void inspected(bool ok);

private:
    void deliver(int generation, const std::shared_ptr<pocket::Result<pocket::MatrixInspection>>& result);
    void drawAll();
    void drawHistogram();
    void drawErrorMap();
    void drawCodebook();
    void drawUsage();
    void drawTiles();
    void exportMenu(Figure figure);

    const pocket::MethodRegistry* m_registry;
    QString m_archive, m_original;
    QComboBox* m_matrix = nullptr;
    QComboBox* m_errorMode = nullptr;
    QLabel* m_summary = nullptr;
    QLabel* m_codebookNote = nullptr;
    QCustomPlot* m_plots[FigureCount] = {};
    QThread* m_thread = nullptr;
    std::shared_ptr<std::atomic<bool>> m_cancel;
    int m_generation = 0;
    QString m_pending; // a matrix asked for while another inspection ran
    std::optional<pocket::MatrixInspection> m_current;
    QString m_lastError;
};

} // namespace pocket::ui
