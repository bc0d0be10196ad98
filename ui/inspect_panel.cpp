#include "inspect_panel.h"

#include "palette.h"

#include "pocket/io/checkpoint.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QPushButton>
#include <QSvgGenerator>
#include <QThread>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace pocket::ui {

namespace {

QCustomPlot* newPlot(const QString& title)
{
    auto* plot = new QCustomPlot;
    plot->legend->setFont(QFont(plot->font().family(), 7));
    plot->legend->setBrush(QColor(255, 255, 255, 200));
    plot->setMinimumSize(260, 200);
    plot->plotLayout()->insertRow(0);
    auto* text = new QCPTextElement(plot, title, QFont(plot->font().family(), 10, QFont::Bold));
    text->setObjectName(QStringLiteral("title"));
    plot->plotLayout()->addElement(0, 0, text);
    plot->setNoAntialiasingOnDrag(true);
    return plot;
}

void setTitle(QCustomPlot* plot, const QString& title)
{
    if (auto* t = qobject_cast<QCPTextElement*>(plot->plotLayout()->element(0, 0)))
        t->setText(title);
}

// Removes what a previous inspection drew (graphs, curves, colour maps, scales).
void clearPlot(QCustomPlot* plot)
{
    plot->clearPlottables();
    plot->clearItems();
    for (int i = plot->plotLayout()->elementCount() - 1; i >= 0; --i)
        if (auto* scale = qobject_cast<QCPColorScale*>(plot->plotLayout()->elementAt(i)))
            plot->plotLayout()->remove(scale);
    plot->plotLayout()->simplify();
    plot->legend->setVisible(false);
}

QVector<double> toVector(const std::vector<double>& v) { return QVector<double>(v.begin(), v.end()); }

// A white-centred blue-red gradient for signed values.
QCPColorGradient signedGradient()
{
    QCPColorGradient g;
    g.clearColorStops();
    g.setColorStopAt(0, QColor(33, 102, 172));
    g.setColorStopAt(0.5, QColor(247, 247, 247));
    g.setColorStopAt(1, QColor(178, 24, 43));
    g.setNanHandling(QCPColorGradient::nhTransparent);
    return g;
}

} // namespace

QString InspectPanel::figureName(Figure figure)
{
    switch (figure) {
    case Histogram: return QStringLiteral("histogram");
    case ErrorMap: return QStringLiteral("error-map");
    case Codebook: return QStringLiteral("codebook");
    case Usage: return QStringLiteral("index-usage");
    case Tiles: return QStringLiteral("rln-tiles");
    default: return QStringLiteral("figure");
    }
}

InspectPanel::InspectPanel(const MethodRegistry* registry, QWidget* parent) : QWidget(parent), m_registry(registry)
{
    auto* layout = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    m_matrix = new QComboBox;
    m_matrix->setMinimumContentsLength(40);
    m_matrix->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    m_matrix->setToolTip(tr("The compressed matrix to inspect"));
    m_errorMode = new QComboBox;
    m_errorMode->addItem(tr("Error W − Ŵ: signed mean per cell"));
    m_errorMode->addItem(tr("Error W − Ŵ: RMS per cell"));
    auto* exportAll = new QPushButton(tr("Export figures…"));
    exportAll->setToolTip(tr("Write every figure into a folder as PNG, SVG or PDF (right-click a figure for one)"));
    top->addWidget(new QLabel(tr("Matrix:")));
    top->addWidget(m_matrix, 1);
    top->addWidget(m_errorMode);
    top->addWidget(exportAll);
    layout->addLayout(top);
    m_summary = new QLabel(tr("Compress a model, or open an archive, to see what compression did to its matrices."));
    m_summary->setWordWrap(true);
    m_summary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    layout->addWidget(m_summary);
    auto* grid = new QGridLayout;
    const QString titles[FigureCount] = {tr("Weights: original and decoded"), tr("Error W − Ŵ"), tr("Codebook over the sub-vectors"),
                                         tr("Index usage"), tr("PocketLLM decoder: RLN tile statistics")};
    for (int f = 0; f < FigureCount; ++f) {
        m_plots[f] = newPlot(titles[f]);
        m_plots[f]->setObjectName(QStringLiteral("inspect_") + figureName(Figure(f)));
        m_plots[f]->setContextMenuPolicy(Qt::CustomContextMenu);
        connect(m_plots[f], &QWidget::customContextMenuRequested, this, [this, f] { exportMenu(Figure(f)); });
    }
    grid->addWidget(m_plots[Histogram], 0, 0);
    grid->addWidget(m_plots[ErrorMap], 0, 1);
    grid->addWidget(m_plots[Codebook], 0, 2);
    grid->addWidget(m_plots[Usage], 1, 0);
    grid->addWidget(m_plots[Tiles], 1, 1);
    m_codebookNote = new QLabel;
    m_codebookNote->setWordWrap(true);
    m_codebookNote->setAlignment(Qt::AlignTop | Qt::AlignLeft);
    grid->addWidget(m_codebookNote, 1, 2);
    layout->addLayout(grid, 1);

    connect(m_matrix, &QComboBox::currentTextChanged, this, [this](const QString& name) {
        if (!name.isEmpty())
            inspect(name);
    });
    connect(m_errorMode, &QComboBox::currentIndexChanged, this, [this] { drawErrorMap(); });
    connect(exportAll, &QPushButton::clicked, this, [this] {
        if (!m_current)
            return;
        const QString folder = QFileDialog::getExistingDirectory(this, tr("Export the figures into"));
        if (folder.isEmpty())
            return;
        QString format = QStringLiteral("png");
        QMenu menu;
        for (const char* f : {"png", "svg", "pdf"})
            menu.addAction(QString::fromLatin1(f).toUpper())->setData(QString::fromLatin1(f));
        if (QAction* chosen = menu.exec(QCursor::pos()))
            format = chosen->data().toString();
        for (int f = 0; f < FigureCount; ++f)
            exportFigure(Figure(f), QStringLiteral("%1/%2-%3.%4").arg(folder, QString::fromStdString(m_current->name), figureName(Figure(f)), format));
    });
}

InspectPanel::~InspectPanel()
{
    if (m_thread) {
        m_cancel->store(true);
        m_thread->wait();
        delete m_thread;
    }
}

void InspectPanel::ensureInspected()
{
    if (!m_thread && m_matrix->count() > 0 && (!m_current || QString::fromStdString(m_current->name) != m_matrix->currentText()))
        inspect(m_matrix->currentText());
}

void InspectPanel::setSources(const QString& archivePath, const QString& originalPath, bool reload)
{
    const bool originalChanged = originalPath != m_original;
    const bool sameArchive = archivePath == m_archive && m_matrix->count() > 0 && !reload;
    m_original = originalPath;
    if (sameArchive && !originalChanged)
        return;
    // What is running or shown belongs to the old sources: drop it.
    ++m_generation;
    m_pending.clear();
    if (m_thread)
        m_cancel->store(true);
    m_current.reset();
    if (sameArchive) { // only the original changed
        if (isVisible())
            inspect(m_matrix->currentText());
        return;
    }
    m_archive = archivePath;
    QStringList names;
    if (!archivePath.isEmpty()) {
        auto listed = archiveMatrixNames(archivePath.toStdString());
        if (!listed)
            m_lastError = QString::fromStdString(listed.message());
        else
            for (const std::string& n : *listed)
                names << QString::fromStdString(n);
    }
    {
        const QSignalBlocker block(m_matrix);
        m_matrix->clear();
        m_matrix->addItems(names);
    }
    for (QCustomPlot* p : m_plots) {
        clearPlot(p);
        p->replot();
    }
    m_summary->setText(names.isEmpty() ? tr("Compress a model, or open an archive, to see what compression did to its matrices.")
                                       : tr("%1: %2 compressed matrices. Choose one.").arg(QFileInfo(archivePath).fileName()).arg(names.size()));
    if (!names.isEmpty() && isVisible())
        inspect(m_matrix->currentText());
}

bool InspectPanel::inspect(const QString& matrix)
{
    if (m_archive.isEmpty() || m_matrix->findText(matrix) < 0)
        return false;
    if (m_matrix->currentText() != matrix) {
        const QSignalBlocker block(m_matrix);
        m_matrix->setCurrentText(matrix);
    }
    if (m_thread) { // one at a time: the running one is abandoned, this one follows
        m_cancel->store(true);
        m_pending = matrix;
        return true;
    }
    m_summary->setText(tr("Inspecting %1…").arg(matrix));
    const int generation = ++m_generation;
    m_cancel = std::make_shared<std::atomic<bool>>(false);
    const std::string archive = m_archive.toStdString(), original = m_original.toStdString(), name = matrix.toStdString();
    const MethodRegistry* registry = m_registry;
    std::shared_ptr<std::atomic<bool>> cancel = m_cancel;
    m_thread = QThread::create([this, archive, original, name, registry, cancel, generation] {
        auto result = std::make_shared<Result<MatrixInspection>>(Error::cancelled());
        std::unique_ptr<Checkpoint> model;
        if (!original.empty())
            if (auto opened = openCheckpoint(original))
                model = std::move(*opened);
        InspectOptions options;
        options.threads = std::max(1, QThread::idealThreadCount() - 1); // leave the GUI a core
        options.cancelled = [cancel] { return cancel->load(); };
        *result = inspectMatrix(archive, name, model.get(), *registry, options);
        QMetaObject::invokeMethod(this, [this, generation, result] { deliver(generation, result); }, Qt::QueuedConnection);
    });
    m_thread->start(QThread::LowPriority);
    return true;
}

void InspectPanel::deliver(int generation, const std::shared_ptr<Result<MatrixInspection>>& result)
{
    if (m_thread) {
        m_thread->wait();
        delete m_thread;
        m_thread = nullptr;
    }
    if (!m_pending.isEmpty()) {
        const QString next = m_pending;
        m_pending.clear();
        if (!inspect(next)) { // gone with its archive: say so, waiting callers wake up
            m_lastError = tr("%1 is not a compressed matrix of %2").arg(next, m_archive);
            Q_EMIT inspected(false);
        }
        return;
    }
    if (generation != m_generation)
        return;
    if (!*result) {
        m_lastError = QString::fromStdString(result->message());
        m_summary->setText(tr("Cannot inspect: %1").arg(m_lastError));
        Q_EMIT inspected(false);
        return;
    }
    m_current = std::move(**result);
    const MatrixInspection& m = *m_current;
    QString text = tr("<b>%1</b> [%2 × %3], %4, group %5")
                       .arg(QString::fromStdString(m.name))
                       .arg(m.rows)
                       .arg(m.cols)
                       .arg(QString::fromStdString(m.methodId), QString::fromStdString(m.groupId));
    if (m.hasOriginal)
        text += tr(": MSE %1, SNR %2 dB").arg(m.mse, 0, 'g', 4).arg(m.snrDb, 0, 'f', 2);
    if (!m.note.empty())
        text += QStringLiteral("<br><i>%1</i>").arg(QString::fromStdString(m.note).toHtmlEscaped());
    m_summary->setText(text);
    drawAll();
    Q_EMIT inspected(true);
}

void InspectPanel::drawAll()
{
    drawHistogram();
    drawErrorMap();
    drawCodebook();
    drawUsage();
    drawTiles();
}

void InspectPanel::drawHistogram()
{
    QCustomPlot* plot = m_plots[Histogram];
    clearPlot(plot);
    const WeightHistogram& h = m_current->histogram;
    const int bins = static_cast<int>(h.decoded.size());
    QVector<double> x(bins);
    for (int i = 0; i < bins; ++i)
        x[i] = h.lo + (i + 0.5) * (h.hi - h.lo) / bins;
    auto add = [&](const std::vector<double>& counts, const QString& name, int color) {
        QCPGraph* g = plot->addGraph();
        g->setName(name);
        g->setLineStyle(QCPGraph::lsStepCenter);
        QColor c = seriesColor(color);
        g->setPen(QPen(c, 1.5));
        c.setAlpha(50);
        g->setBrush(c);
        g->setData(x, toVector(counts), true);
    };
    if (!h.original.empty())
        add(h.original, tr("original"), 0);
    add(h.decoded, tr("decoded"), 1);
    plot->xAxis->setLabel(tr("weight value"));
    plot->yAxis->setLabel(tr("weights per bin"));
    plot->legend->setVisible(true);
    plot->rescaleAxes();
    plot->replot(QCustomPlot::rpQueuedReplot);
}

void InspectPanel::drawErrorMap()
{
    QCustomPlot* plot = m_plots[ErrorMap];
    clearPlot(plot);
    if (!m_current || m_current->error.mean.empty()) {
        setTitle(plot, tr("Error W − Ŵ (needs the original model)"));
        plot->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const pocket::ErrorMap& e = m_current->error;
    const bool rms = m_errorMode->currentIndex() == 1;
    const std::vector<float>& values = rms ? e.rms : e.mean;
    auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
    map->data()->setSize(e.cols, e.rows);
    map->data()->setRange(QCPRange(0, static_cast<double>(m_current->cols)), QCPRange(0, static_cast<double>(m_current->rows)));
    float extreme = 0;
    for (int r = 0; r < e.rows; ++r)
        for (int c = 0; c < e.cols; ++c) {
            const float v = values[static_cast<std::size_t>(r) * e.cols + c];
            map->data()->setCell(c, r, v);
            extreme = std::max(extreme, std::abs(v));
        }
    if (extreme == 0)
        extreme = 1e-12f;
    auto* scale = new QCPColorScale(plot);
    plot->plotLayout()->addElement(1, 1, scale);
    map->setColorScale(scale);
    if (rms) {
        QCPColorGradient g(QCPColorGradient::gpHot);
        map->setGradient(g.inverted());
        map->setDataRange(QCPRange(0, extreme));
    } else {
        map->setGradient(signedGradient());
        map->setDataRange(QCPRange(-extreme, extreme));
    }
    map->setInterpolate(false);
    setTitle(plot, e.rowsPerCell * e.colsPerCell > 1 ? tr("Error W − Ŵ (cells of %1 × %2 weights)").arg(e.rowsPerCell).arg(e.colsPerCell)
                                                     : tr("Error W − Ŵ"));
    plot->xAxis->setLabel(tr("column (input)"));
    plot->yAxis->setLabel(tr("row (output)"));
    plot->yAxis->setRangeReversed(true);
    plot->rescaleAxes();
    plot->replot(QCustomPlot::rpQueuedReplot);
}

// Long: three layers of one scatter (sub-vectors, codewords, the decoder's map with its arrows).
void InspectPanel::drawCodebook()
{
    QCustomPlot* plot = m_plots[Codebook];
    clearPlot(plot);
    if (!m_current->codebook) {
        setTitle(plot, tr("Codebook (%1 has none)").arg(QString::fromStdString(m_current->methodId)));
        m_codebookNote->setText(tr("RTN and GPTQ round each weight to a grid; AQLM's codebooks are drawn by none of these views yet."));
        plot->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const CodebookView& v = *m_current->codebook;
    auto scatter = [&](const std::vector<float>& xy, const QString& name, const QColor& color, QCPScatterStyle::ScatterShape shape, double size) {
        QVector<double> x, y;
        for (std::size_t i = 0; i + 1 < xy.size(); i += 2)
            if (std::isfinite(xy[i]) && std::isfinite(xy[i + 1])) {
                x << xy[i];
                y << xy[i + 1];
            }
        auto* curve = new QCPCurve(plot->xAxis, plot->yAxis);
        curve->setName(name);
        curve->setLineStyle(QCPCurve::lsNone);
        curve->setScatterStyle(QCPScatterStyle(shape, color, size));
        curve->setData(x, y);
        return curve;
    };
    // The decoder's map first (under the points): a line from each codeword to where it decodes.
    if (!v.decodedCodewords.empty() && v.dim == v.d) {
        std::vector<std::int64_t> order(static_cast<std::size_t>(v.codewords));
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return v.usage[a] > v.usage[b]; });
        order.resize(std::min<std::size_t>(order.size(), 400));
        QVector<double> t, x, y;
        for (std::int64_t k : order) {
            const float dx = v.decodedCodewords[2 * k], dy = v.decodedCodewords[2 * k + 1];
            if (!std::isfinite(dx))
                continue;
            const double base = t.size(); // one key per point, in order (QCPCurve sorts by key)
            t << base << base + 1 << base + 2;
            x << v.codebook[2 * k] << dx << qQNaN();
            y << v.codebook[2 * k + 1] << dy << qQNaN();
        }
        auto* arrows = new QCPCurve(plot->xAxis, plot->yAxis);
        arrows->setName(tr("decoder map"));
        arrows->setPen(QPen(QColor(44, 160, 44, 160), 1));
        arrows->setData(t, x, y);
    }
    scatter(v.points, m_current->hasOriginal ? tr("sub-vectors") : tr("decoded sub-vectors"), QColor(110, 110, 110, 110),
            QCPScatterStyle::ssDisc, 3);
    scatter(v.codebook, v.dim == v.d ? tr("codewords") : tr("codewords (own axes)"), seriesColor(3), QCPScatterStyle::ssCross, 5);
    if (!v.decodedCodewords.empty() && v.dim == v.d)
        scatter(v.decodedCodewords, tr("decoded"), seriesColor(0), QCPScatterStyle::ssCircle, 4);
    const QString axis = v.pca ? tr("principal axis %1 (%2% of the variance)") : tr("coordinate %1");
    plot->xAxis->setLabel(v.pca ? axis.arg(1).arg(100 * v.explained[0], 0, 'f', 0) : axis.arg(1));
    plot->yAxis->setLabel(v.pca ? axis.arg(2).arg(100 * v.explained[1], 0, 'f', 0) : axis.arg(2));
    setTitle(plot, tr("Codebook (d %1, K %2)").arg(v.d).arg(v.codewords));
    // The legend under the axes, two entries a row, so it hides no point.
    if (plot->plotLayout()->elementCount() < 3 || plot->plotLayout()->element(2, 0) != plot->legend) {
        plot->axisRect()->insetLayout()->take(plot->legend);
        plot->plotLayout()->addElement(2, 0, plot->legend);
        plot->plotLayout()->setRowStretchFactor(2, 0.001);
        plot->legend->setFillOrder(QCPLegend::foColumnsFirst);
        plot->legend->setWrap(4);
        plot->legend->setBorderPen(Qt::NoPen);
        plot->legend->setIconSize(14, 8);
        plot->legend->setIconTextPadding(3);
        plot->legend->setColumnSpacing(6);
    }
    plot->legend->setVisible(true);
    plot->legend->setFont(QFont(plot->font().family(), 7));
    plot->rescaleAxes();
    plot->replot(QCustomPlot::rpQueuedReplot);
    m_codebookNote->setText(tr("Index perplexity %1 of %2 codewords (%3 never used by this matrix). Sub-vectors of %4 weights in the "
                               "codebook's units (row scales%5 divided out), %6. %7")
                                .arg(v.indexPerplexity, 0, 'f', 1)
                                .arg(v.codewords)
                                .arg(v.dead)
                                .arg(v.d)
                                .arg(m_current->methodId == "pocketllm" ? tr(" and the group scale") : QString())
                                .arg(v.pca ? tr("projected on their two principal axes") : tr("drawn directly"))
                                .arg(QString::fromStdString(v.note)));
}

void InspectPanel::drawUsage()
{
    QCustomPlot* plot = m_plots[Usage];
    clearPlot(plot);
    if (!m_current->codebook) {
        setTitle(plot, tr("Index usage (no codebook)"));
        plot->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const CodebookView& v = *m_current->codebook;
    QVector<double> x(static_cast<int>(v.codewords)), y(static_cast<int>(v.codewords)), deadX, deadY;
    for (std::int64_t k = 0; k < v.codewords; ++k) {
        x[k] = static_cast<double>(k);
        y[k] = static_cast<double>(v.usage[k]);
        if (v.usage[k] == 0) {
            deadX << static_cast<double>(k);
            deadY << 0;
        }
    }
    QCPGraph* g = plot->addGraph();
    g->setName(tr("sub-vectors per codeword"));
    g->setLineStyle(QCPGraph::lsImpulse);
    g->setPen(QPen(seriesColor(0), 1));
    g->setData(x, y, true);
    QCPGraph* dead = plot->addGraph();
    dead->setName(tr("dead codewords"));
    dead->setLineStyle(QCPGraph::lsNone);
    dead->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssTriangle, seriesColor(3), 6));
    dead->setData(deadX, deadY, true);
    setTitle(plot, tr("Index usage: %1 of %2 dead").arg(v.dead).arg(v.codewords));
    plot->xAxis->setLabel(tr("codeword"));
    plot->yAxis->setLabel(tr("sub-vectors"));
    plot->legend->setVisible(v.dead > 0);
    plot->rescaleAxes();
    plot->xAxis->setRange(-0.5, static_cast<double>(v.codewords) - 0.5);
    plot->yAxis->setRangeLower(-0.05 * plot->yAxis->range().upper);
    plot->replot(QCustomPlot::rpQueuedReplot);
}

void InspectPanel::drawTiles()
{
    QCustomPlot* plot = m_plots[Tiles];
    clearPlot(plot);
    if (!m_current->codebook || m_current->codebook->tileMean.empty()) {
        setTitle(plot, tr("Decoder view (PocketLLM only)"));
        plot->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const CodebookView& v = *m_current->codebook;
    const int n = static_cast<int>(v.tileMean.size());
    QVector<double> x(n), mean(n), stdev(n);
    for (int i = 0; i < n; ++i) {
        x[i] = i;
        mean[i] = v.tileMean[static_cast<std::size_t>(i)];
        stdev[i] = v.tileStd[static_cast<std::size_t>(i)];
    }
    QCPGraph* m = plot->addGraph();
    m->setName(tr("mean"));
    m->setPen(QPen(seriesColor(0), 1));
    m->setData(x, mean, true);
    QCPGraph* s = plot->addGraph();
    s->setName(tr("standard deviation"));
    s->setPen(QPen(seriesColor(1), 1));
    s->setData(x, stdev, true);
    setTitle(plot, tr("RLN3 input per tile (G = %1)").arg(v.rlnGroup));
    plot->xAxis->setLabel(tr("tile"));
    plot->yAxis->setLabel(tr("latent value"));
    plot->legend->setVisible(true);
    plot->rescaleAxes();
    plot->replot(QCustomPlot::rpQueuedReplot);
}

bool InspectPanel::exportFigure(Figure figure, const QString& path)
{
    QCustomPlot* plot = m_plots[figure];
    const int w = std::max(640, plot->width()), h = std::max(480, plot->height());
    const QString suffix = QFileInfo(path).suffix().toLower();
    bool ok = false;
    if (suffix == QLatin1String("png")) {
        ok = plot->savePng(path, w, h);
    } else if (suffix == QLatin1String("pdf")) {
        ok = plot->savePdf(path, w, h);
    } else if (suffix == QLatin1String("svg")) {
        QSvgGenerator svg;
        svg.setFileName(path);
        svg.setSize(QSize(w, h));
        svg.setViewBox(QRect(0, 0, w, h));
        svg.setTitle(figureName(figure));
        QCPPainter painter;
        ok = painter.begin(&svg);
        if (ok) {
            plot->toPainter(&painter, w, h);
            ok = painter.end();
        }
        ok = ok && QFileInfo(path).size() > 0;
    } else {
        m_lastError = tr("%1: the figure's format follows the file's suffix: .png, .svg or .pdf").arg(path);
        return false;
    }
    if (!ok)
        m_lastError = tr("Could not write %1 (is the folder writable?)").arg(path);
    return ok;
}

void InspectPanel::exportMenu(Figure figure)
{
    if (!m_current)
        return;
    const QString suggested = QStringLiteral("%1-%2.png").arg(QString::fromStdString(m_current->name), figureName(figure));
    const QString path =
        QFileDialog::getSaveFileName(this, tr("Export figure"), suggested, tr("PNG image (*.png);;SVG drawing (*.svg);;PDF document (*.pdf)"));
    if (!path.isEmpty() && !exportFigure(figure, path))
        QMessageBox::warning(this, tr("Export figure"), m_lastError);
}

} // namespace pocket::ui
