// Benchmark (prints figures; not a test): how long the workbench's GUI thread stalls while a
// compression and an evaluation run in the background. A 10 ms timer on the GUI thread records
// how late each tick fires; the worst lateness is the longest the window could not repaint or
// react. Target: under 50 ms. Runs the real main window (offscreen unless a display is set).
// Usage: bench_gui_stall [name=value ...]   (PocketLLM settings; default a model-shared run)
#include "layer_picker.h"
#include "main_window.h"
#include "method_form.h"
#include "training_chart.h"
#include "workbench.h"

#include "pocket/support/app_paths.h"

#include <QApplication>
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
