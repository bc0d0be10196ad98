// Benchmark (prints figures; not a test): how long the workbench's GUI thread stalls while a
// compression and an evaluation run in the background. A 10 ms timer on the GUI thread records
// how late each tick fires; the worst lateness is the longest the window could not repaint or
// react. Target: under 50 ms. Runs the real main window (offscreen unless a display is set).
// Usage: bench_gui_stall [name=value ...]   (PocketLLM settings; default a model-shared run)
//        bench_gui_stall --inspect MODEL ARCHIVE MATRIX   (the Inspect tab drawing MATRIX of ARCHIVE,
//        MODEL being its original: decoding, heat map and PCA on a worker, drawing on the GUI thread)
#include "inspect_panel.h"
#include "layer_picker.h"
#include "main_window.h"
#include "method_form.h"
#include "training_chart.h"
#include "workbench.h"

#include "pocket/support/app_paths.h"

#include <QApplication>
#include <QComboBox>
#include <QElapsedTimer>
#include <QLineEdit>
#include <QSpinBox>
#include <QTemporaryDir>
#include <QTimer>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace {

struct StallProbe {
    QTimer timer;
    QElapsedTimer clock;
    qint64 last = 0;
    std::vector<double> lateMs;
    explicit StallProbe(int intervalMs)
    {
        timer.setInterval(intervalMs);
        timer.setTimerType(Qt::PreciseTimer);
        QObject::connect(&timer, &QTimer::timeout, [this, intervalMs] {
            const qint64 now = clock.nsecsElapsed();
            if (last > 0)
                lateMs.push_back(std::max(0.0, (now - last) / 1e6 - intervalMs));
            last = now;
        });
    }
    void start()
    {
        lateMs.clear();
        last = 0;
        clock.start();
        timer.start();
    }
    void report(const char* what) const
    {
        std::vector<double> v = lateMs;
        std::sort(v.begin(), v.end());
        const double worst = v.empty() ? 0 : v.back();
        const double p99 = v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<std::size_t>(0.99 * v.size()))];
        std::printf("%-12s %6zu ticks   worst lateness %7.1f ms   p99 %6.1f ms   %s\n", what, v.size(), worst, p99,
                    worst < 50 ? "(target < 50 ms: met)" : "(target < 50 ms: MISSED)");
    }
};

void runUntilIdle(pocket::ui::Workbench& wb)
{
    while (wb.busy())
        QApplication::processEvents(QEventLoop::WaitForMoreEvents, 50);
}

// The Inspect tab on a big matrix: the stall while it is inspected and drawn, twice (the second
// with the error map switched to RMS, which redraws on the GUI thread).
int inspectStall(pocket::ui::MainWindow& window, const char* model, const char* archive, const char* matrix)
{
    if (!window.openPath(QString::fromLocal8Bit(model), true)) {
        std::fprintf(stderr, "cannot open %s: %s\n", model, qPrintable(window.lastError()));
        return 1;
    }
    window.setLastArchive(QString::fromLocal8Bit(archive));
    pocket::ui::InspectPanel* inspect = window.inspectPanel();
    bool done = false, ok = false;
    QObject::connect(inspect, &pocket::ui::InspectPanel::inspected, [&](bool success) {
        done = true;
        ok = success;
    });
    StallProbe probe(10);
    QElapsedTimer wall;
    probe.start();
    wall.start();
    window.showTab(inspect);
    if (!inspect->inspect(QString::fromLocal8Bit(matrix))) {
        std::fprintf(stderr, "%s is not a matrix of %s\n", matrix, archive);
        return 1;
    }
    while (!done)
        QApplication::processEvents(QEventLoop::WaitForMoreEvents, 50);
    const double seconds = wall.elapsed() / 1000.0;
    QElapsedTimer settle;
    settle.start();
    while (settle.elapsed() < 500) // the queued replots
        QApplication::processEvents(QEventLoop::AllEvents, 20);
    if (!ok) {
        std::fprintf(stderr, "inspection failed: %s\n", qPrintable(inspect->lastError()));
        return 1;
    }
    probe.report("inspect");
    const auto& m = *inspect->current();
    std::printf("             %s [%lld x %lld] (%s): inspected and drawn in %.1f s; heat map %d x %d cells of %lld x %lld weights%s\n",
                m.name.c_str(), static_cast<long long>(m.rows), static_cast<long long>(m.cols), m.methodId.c_str(), seconds, m.error.cols,
                m.error.rows, static_cast<long long>(m.error.rowsPerCell), static_cast<long long>(m.error.colsPerCell),
                m.codebook ? qPrintable(QStringLiteral("; %1 codewords, %2 dead").arg(m.codebook->codewords).arg(m.codebook->dead)) : "");
    probe.start(); // the redraw runs inside the event loop, between the probe's ticks
    QTimer::singleShot(100, [inspect] { inspect->errorModeCombo()->setCurrentIndex(1); });
    settle.restart();
    while (settle.elapsed() < 500)
        QApplication::processEvents(QEventLoop::AllEvents, 20);
    probe.report("rms redraw");
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM") && qEnvironmentVariableIsEmpty("DISPLAY"))
        qputenv("QT_QPA_PLATFORM", "offscreen");
    QTemporaryDir tmp;
    qputenv("POCKETLLM_DATA_DIR", tmp.filePath("data").toUtf8());
    qputenv("XDG_CONFIG_HOME", tmp.filePath("config").toUtf8());
    qputenv("POCKETLLM_NO_DIALOGS", "1");
    QApplication app(argc, argv);
    pocket::ui::Workbench wb;
    wb.setStorePath(tmp.filePath("store.sqlite"));
    pocket::ui::MainWindow window(&wb);
    window.resize(1400, 900);
    window.show();
    if (argc == 5 && QString::fromLocal8Bit(argv[1]) == QLatin1String("--inspect"))
        return inspectStall(window, argv[2], argv[3], argv[4]);
    if (!window.openPath(QString::fromStdString(pocket::demoModelPath()), true)) {
        std::fprintf(stderr, "the demo model was not found\n");
        return 1;
    }
    QStringList settings{"sharing=model", "d=4", "K=1024", "batch=1024", "epochs=50"};
    for (int i = 1; i < argc; ++i)
        settings << QString::fromLocal8Bit(argv[i]);
    window.methodForm()->setMethodId("pocketllm");
    window.methodForm()->applySettings(settings);
    window.outputPathEdit()->setText(tmp.filePath("stall.pllm"));
    std::printf("PocketLLM settings: %s\n", qPrintable(settings.join(' ')));

    StallProbe probe(10);
    QElapsedTimer wall;
    probe.start();
    wall.start();
    if (!window.startCompress(false)) {
        std::fprintf(stderr, "cannot start: %s\n", qPrintable(window.lastError()));
        return 1;
    }
    runUntilIdle(wb);
    const double compressSeconds = wall.elapsed() / 1000.0;
    probe.report("compress");
    std::printf("             %.1f s of training; %d curve points drawn with %d queued replots\n", compressSeconds,
                window.trainingChart()->pointCount(), window.trainingChart()->replotRequests());

    window.ctxSpin()->setValue(256);
    probe.start();
    if (!window.startEval(true))
        return 1;
    runUntilIdle(wb);
    probe.report("eval");
    return 0;
}
