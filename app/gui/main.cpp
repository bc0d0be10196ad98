// pocketllm: the PocketLLM Workbench desktop application. Sets up logging and the window; the
// widgets are in ui/, the work in core/. `pocketllm [MODEL]` opens MODEL (else the most recent
// model, else the bundled demo model). `--screenshots DIR` runs ui/'s screenshot tour (under
// QT_QPA_PLATFORM=offscreen, scripts/screenshots.sh) and exits. Set-up only: nothing else lives here.
#include "log_bridge.h"
#include "main_window.h"
#include "screenshot_tour.h"
#include "workbench.h"

#include "pocket/support/app_paths.h"
#include "pocket/version.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>

#include <spdlog/spdlog.h>

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
        return pocket::ui::renderScreenshots(workbench, window, parser.value(screenshots));

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
