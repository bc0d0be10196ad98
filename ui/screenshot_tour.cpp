#include "screenshot_tour.h"

#include "layer_picker.h"
#include "main_window.h"
#include "method_form.h"
#include "sensitivity_panel.h"
#include "workbench.h"

#include "pocket/support/app_paths.h"

#include <QApplication>
#include <QDir>
#include <QDoubleSpinBox>
#include <QElapsedTimer>
#include <QFile>
#include <QLineEdit>
#include <QSpinBox>
#include <QTabWidget>

#include <cstdio>

namespace pocket::ui {

namespace {

constexpr int kJobTimeoutMs = 600000;

// Lets the window paint for `ms` milliseconds.
void settle(int ms)
{
    QElapsedTimer t;
    t.start();
    while (t.elapsed() < ms)
        QApplication::processEvents(QEventLoop::AllEvents, 20);
}

} // namespace

int renderScreenshots(Workbench& wb, MainWindow& window, const QString& dir)
{
    QDir().mkpath(dir);
    window.resize(1400, 900);
    window.show();
    const QString demo = QString::fromStdString(demoModelPath());
    if (demo.isEmpty() || !window.openPath(demo, true)) {
        std::fprintf(stderr, "screenshots: the demo model was not found\n");
        return 1;
    }
    auto* form = window.methodForm();
    form->setMethodId(QStringLiteral("pocketllm"));
    form->applySettings({QStringLiteral("sharing=model"), QStringLiteral("d=4"), QStringLiteral("K=1024")});
    window.layerPicker()->applySelection(*LayerSelection::preset("all"), nullptr);
    window.outputPathEdit()->setText(QDir(dir).absoluteFilePath(QStringLiteral("screenshot-run.pllm")));
    settle(400);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-setup.png")));
    if (!window.startCompress(false))
        return 1;
    settle(2500); // mid-run: curves drawing
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-training.png")));
    if (!wb.waitForIdle(kJobTimeoutMs))
        return 1;
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-trained.png")));
    window.startEval(false);
    wb.waitForIdle(kJobTimeoutMs);
    window.startEval(true);
    wb.waitForIdle(kJobTimeoutMs);
    window.tabs()->setCurrentIndex(1);
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-results.png")));
    window.tabs()->setCurrentIndex(2);
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-compare.png")));
    // Sensitivity: RTN 3 bits on each matrix alone, then a plan for 3.5 bits per weight.
    auto* sensitivity = window.sensitivityPanel();
    sensitivity->windowsSpin()->setValue(4);
    window.tabs()->setCurrentIndex(3);
    QString error;
    if (sensitivity->startAnalysis(&error))
        wb.waitForIdle(kJobTimeoutMs);
    sensitivity->menuEdit()->setText(QStringLiteral("bits=2;bits=3;bits=4"));
    sensitivity->budgetSpin()->setValue(3.5);
    if (sensitivity->startPlan(&error))
        wb.waitForIdle(kJobTimeoutMs);
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-sensitivity.png")));
    QFile::remove(QDir(dir).filePath(QStringLiteral("screenshot-run.pllm")));
    std::printf("screenshots written to %s\n", qPrintable(dir));
    return 0;
}

} // namespace pocket::ui
