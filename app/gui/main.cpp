// pocketllm: the PocketLLM Workbench desktop application. Sets up logging and the window; the
// widgets are in ui/, the work in core/. `pocketllm [MODEL]` opens MODEL (else the most recent
// model, else the bundled demo model). `--screenshots DIR` renders the main views to PNG files
// (run under QT_QPA_PLATFORM=offscreen by scripts/screenshots.sh) and exits.
#include "layer_picker.h"
#include "log_bridge.h"
#include "main_window.h"
#include "method_form.h"
#include "sensitivity_panel.h"
#include "workbench.h"

#include "pocket/support/app_paths.h"
#include "pocket/version.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QDoubleSpinBox>
#include <QLineEdit>
#include <QSpinBox>
#include <QTabWidget>
#include <QTimer>

#include <spdlog/spdlog.h>

#include <cstdio>

namespace {

bool waitIdle(pocket::ui::Workbench& wb)
{
    QElapsedTimer t;
    t.start();
    while (wb.busy() && t.elapsed() < 600000)
        QApplication::processEvents(QEventLoop::AllEvents, 50);
    return !wb.busy();
}

void settle(int ms)
{
    QElapsedTimer t;
    t.start();
    while (t.elapsed() < ms)
        QApplication::processEvents(QEventLoop::AllEvents, 20);
}

// Runs a short compression and evaluation of the demo model, then saves each tab as a PNG.
int renderScreenshots(pocket::ui::Workbench& wb, pocket::ui::MainWindow& window, const QString& dir)
{
    QDir().mkpath(dir);
    window.resize(1400, 900);
    window.show();
    const QString demo = QString::fromStdString(pocket::demoModelPath());
    if (demo.isEmpty() || !window.openPath(demo, true)) {
        std::fprintf(stderr, "screenshots: the demo model was not found\n");
        return 1;
    }
    auto* form = window.methodForm();
    form->setMethodId(QStringLiteral("pocketllm"));
    form->applySettings({QStringLiteral("sharing=model"), QStringLiteral("d=4"), QStringLiteral("K=1024")});
    window.layerPicker()->applySelection(*pocket::LayerSelection::preset("all"), nullptr);
    window.outputPathEdit()->setText(QDir(dir).absoluteFilePath(QStringLiteral("screenshot-run.pllm")));
    settle(400);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-setup.png")));
    if (!window.startCompress(false))
        return 1;
    settle(2500); // mid-run: curves drawing
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-training.png")));
    if (!waitIdle(wb))
        return 1;
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-trained.png")));
    window.startEval(false);
    waitIdle(wb);
    window.startEval(true);
    waitIdle(wb);
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
        waitIdle(wb);
    sensitivity->menuEdit()->setText(QStringLiteral("bits=2;bits=3;bits=4"));
    sensitivity->budgetSpin()->setValue(3.5);
    if (sensitivity->startPlan(&error))
        waitIdle(wb);
    settle(300);
    window.grab().save(QDir(dir).filePath(QStringLiteral("workbench-sensitivity.png")));
    QFile::remove(QDir(dir).filePath(QStringLiteral("screenshot-run.pllm")));
    std::printf("screenshots written to %s\n", qPrintable(dir));
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    QApplication app(argc, argv);
    QApplication::setOrganizationName(QStringLiteral("PocketLLM"));
    QApplication::setApplicationName(QStringLiteral("PocketLLM Workbench"));
    QApplication::setApplicationVersion(QStringLiteral(POCKET_VERSION " (" POCKET_GIT_REVISION ")"));

    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral("PocketLLM Workbench: compress LLM weights and compare methods"));
    parser.addHelpOption();
    parser.addVersionOption();
    parser.addPositionalArgument(QStringLiteral("model"), QStringLiteral("Model folder, llama2.c file or .pllm archive to open"));
    QCommandLineOption screenshots(QStringLiteral("screenshots"), QStringLiteral("Render the main views to PNG files in DIR and exit"),
                                   QStringLiteral("DIR"));
    QCommandLineOption store(QStringLiteral("store"), QStringLiteral("Experiment store file (default: $POCKETLLM_STORE or the data folder)"),
                             QStringLiteral("FILE"));
    parser.addOption(screenshots);
    parser.addOption(store);
    parser.process(app);

    pocket::initLogging("pocketllm", pocket::LogLevel::Warn);
    pocket::ui::LogBridge::instance()->install();
    spdlog::info("PocketLLM Workbench {} ({})", POCKET_VERSION, POCKET_GIT_REVISION);

    pocket::ui::Workbench workbench;
    if (parser.isSet(store))
        workbench.setStorePath(parser.value(store));
    pocket::ui::MainWindow window(&workbench);
    if (parser.isSet(screenshots))
        return renderScreenshots(workbench, window, parser.value(screenshots));

    window.show();
    const QStringList args = parser.positionalArguments();
    QTimer::singleShot(0, &window, [&window, args] {
        if (!args.isEmpty())
            window.openPath(args.first());
        else
            window.openInitialModel();
    });
    return app.exec();
}
