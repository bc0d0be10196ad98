#include "screenshot_tour.h"

#include "layer_picker.h"
#include "main_window.h"
#include "method_form.h"
#include "judge_panel.h"
#include "compare_panel.h"
#include "guided_demo.h"
#include "inspect_panel.h"
#include "job_queue.h"
#include "playground_panel.h"
#include "sensitivity_panel.h"
#include "workbench.h"

#include "pocket/jobs/compress_job.h"
#include "pocket/support/app_paths.h"

#include <QComboBox>
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

int renderPlayground(Workbench& wb, MainWindow& window, const QString& dir);
int renderJudge(Workbench& wb, MainWindow& window, const QString& dir, const QString& archive);

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
    // Compare, with the baselines that bracket the run's bits queued and evaluated.
    if (window.runBaselines() > 0) {
        QElapsedTimer queueClock;
        queueClock.start();
        while ((window.jobQueue()->running() || window.jobQueue()->waiting() > 0) && queueClock.elapsed() < kJobTimeoutMs)
            QApplication::processEvents(QEventLoop::AllEvents, 50);
    }
    window.comparePanel()->refresh();
    window.showTab(window.comparePanel());
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-compare.png")));
    // Inspect: the run's up_proj of block 2, its codebook over the sub-vectors and the decoder's map.
    auto* inspect = window.inspectPanel();
    window.showTab(inspect);
    inspect->inspect(QStringLiteral("model.layers.2.mlp.up_proj.weight"));
    QElapsedTimer inspectClock;
    inspectClock.start();
    while ((inspect->busy() || !inspect->current() || inspect->current()->name != "model.layers.2.mlp.up_proj.weight") &&
           inspectClock.elapsed() < 60000)
        QApplication::processEvents(QEventLoop::AllEvents, 20);
    settle(500);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-inspect.png")));
    // The guided demo's window, at its inspect step.
    if (GuidedDemo* demo = window.startGuidedDemo()) {
        demo->goTo(4);
        settle(300);
        demo->grab().save(QDir(dir).filePath(QStringLiteral("workbench-demo.png")));
        demo->close();
    }
    // Sensitivity: RTN 3 bits on each matrix alone, then a plan across methods for 3.5 bits per
    // weight, the heatmap showing each matrix's menu entry and method.
    auto* sensitivity = window.sensitivityPanel();
    sensitivity->windowsSpin()->setValue(4);
    window.tabs()->setCurrentIndex(3);
    QString error;
    if (sensitivity->startAnalysis(&error))
        wb.waitForIdle(kJobTimeoutMs);
    sensitivity->menuEdit()->setText(QStringLiteral("bits=2;bits=4;gptq:bits=3,group=64"));
    sensitivity->budgetSpin()->setValue(3.5);
    if (sensitivity->startPlan(&error))
        wb.waitForIdle(kJobTimeoutMs);
    sensitivity->metricCombo()->setCurrentIndex(SensitivityPanel::kPlanMetric);
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-sensitivity.png")));
    QFile::remove(QDir(dir).filePath(QStringLiteral("screenshot-run.pllm")));
    return renderPlayground(wb, window, dir);
}

// The playground: the demo model against RTN 2-bit and 4-bit archives of it, greedy, side by side.
int renderPlayground(Workbench& wb, MainWindow& window, const QString& dir)
{
    auto* playground = window.playgroundPanel();
    window.showTab(playground);
    for (const int bits : {2, 4}) {
        CompressJobParams p;
        p.modelPath = demoModelPath();
        p.methodId = "rtn";
        p.settings = {"bits=" + std::to_string(bits), "group=32"};
        p.outPath = QDir(dir).absoluteFilePath(QStringLiteral("playground-%1bit.pllm").arg(bits)).toStdString();
        if (auto r = runCompressJob(p, wb.registry()); !r) {
            std::fprintf(stderr, "screenshots: %s\n", r.message().c_str());
            return 1;
        }
        playground->setCompressedPath(QString::fromStdString(p.outPath));
        playground->promptEdit()->setText(QStringLiteral("Once upon a time, there was a little dog"));
        playground->maxTokensSpin()->setValue(60);
        QString error;
        if (!playground->start(&error)) {
            std::fprintf(stderr, "screenshots: %s\n", qPrintable(error));
            return 1;
        }
        wb.waitForIdle(kJobTimeoutMs);
        settle(300);
        window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-playground-%1bit.png").arg(bits)));
        if (bits == 2 && renderJudge(wb, window, dir, QString::fromStdString(p.outPath)) != 0)
            return 1;
        QFile::remove(QString::fromStdString(p.outPath));
    }
    std::printf("screenshots written to %s\n", qPrintable(dir));
    return 0;
}

// Judge & recover: zero-shot accuracy of the demo model and its RTN 2-bit archive (100 items per
// task), then a rank-1 LoRA recovery of the MLP matrices with its loss curve.
int renderJudge(Workbench& wb, MainWindow& window, const QString& dir, const QString& archive)
{
    auto* judge = window.judgePanel();
    window.setLastArchive(archive);
    window.showTab(judge);
    judge->limitSpin()->setValue(100);
    QString error;
    for (const bool compressed : {false, true}) {
        if (!judge->startZeroShot(compressed, &error)) {
            std::fprintf(stderr, "screenshots: %s\n", qPrintable(error));
            return 1;
        }
        wb.waitForIdle(kJobTimeoutMs);
    }
    judge->rankSpin()->setValue(1);
    judge->typesCombo()->setCurrentIndex(1);
    judge->samplesSpin()->setValue(64);
    judge->outputEdit()->setText(QDir(dir).absoluteFilePath(QStringLiteral("judge-lora.pllm")));
    if (!judge->startRecover(&error)) {
        std::fprintf(stderr, "screenshots: %s\n", qPrintable(error));
        return 1;
    }
    wb.waitForIdle(kJobTimeoutMs);
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-judge.png")));
    QFile::remove(QDir(dir).filePath(QStringLiteral("judge-lora.pllm")));
    return 0;
}

} // namespace pocket::ui
