// pocketllm-cli: the command-line face of the PocketLLM Workbench core. Parses arguments, calls
// core, prints results (text or one JSON object with --json). Exit codes (from core's error kinds,
// cli_common.h): 0 success, 1 bad input (file, model, data), 2 bad usage (options), 3 internal error.
#include "pocket/support/app_paths.h"
#include "pocket/version.h"

#include "analysis_commands.h"
#include "eval_commands.h"
#include "cli_common.h"
#include "compress_commands.h"
#include "model_commands.h"
#include "generate_commands.h"
#include "store_commands.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <unistd.h>

using nlohmann::ordered_json;
using namespace cli;

int main(int argc, char** argv)
{
    Globals g;
    CLI::App app{"PocketLLM Workbench command-line tool: inspect, convert, evaluate and compress Llama-family checkpoints."};
    app.name("pocketllm-cli");
    app.set_version_flag("--version", std::string("pocketllm-cli ") + POCKET_VERSION + " (git " + POCKET_GIT_REVISION + ")");
    app.require_subcommand(1);
    app.fallthrough();
    app.add_flag("--json", g.json, "Print one JSON object on stdout");
    app.add_flag("-q,--quiet", g.quiet, "No progress line; only warnings and errors on stderr");
    app.add_flag("--progress-lines", progressLinesMode(),
                 "Progress as whole lines on stderr (\"progress: ...\", at most twice a second), also when stderr is not a terminal");
    app.add_option("--log-level", g.logLevel, "Console log level")->check(CLI::IsMember({"debug", "info", "warn", "error", "off"}));
    app.add_option("--store", g.store, "Experiment store file (default: $POCKETLLM_STORE, else <data dir>/experiments.sqlite)");
    app.add_flag("--no-store", g.noStore, "Do not record this compress / eval / sensitivity run in the experiment store");
    for (int i = 0; i < argc; ++i)
        g.commandLine += (i ? " " : "") + std::string(i ? argv[i] : "pocketllm-cli");

    ModelCommands modelCommands;
    addModelCommands(app, modelCommands);
    GenerateCommands generateCommands;
    addGenerateCommands(app, generateCommands);
    CompressCommands compressCommands;
    addCompressCommands(app, compressCommands);
    StoreCommands storeCommands;
    addStoreCommands(app, storeCommands);
    AnalysisCommands analysisCommands;
    addAnalysisCommands(app, analysisCommands);
    EvalCommands evalCommands;
    addEvalCommands(app, evalCommands);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        if (g.json)
            std::cout << ordered_json{{"error", e.what()}}.dump() << std::endl;
        return kExitUsage;
    }

    const pocket::LogLevel level = g.quiet ? pocket::LogLevel::Warn
                                   : g.logLevel == "debug" ? pocket::LogLevel::Debug
                                   : g.logLevel == "warn"  ? pocket::LogLevel::Warn
                                   : g.logLevel == "error" ? pocket::LogLevel::Error
                                   : g.logLevel == "off"   ? pocket::LogLevel::Off
                                                           : pocket::LogLevel::Info;
    pocket::initLogging("pocketllm-cli", level);
    // On a terminal, a log line first clears the progress line it may land on (ProgressLine).
    if (::isatty(STDERR_FILENO))
        for (const auto& sink : spdlog::default_logger()->sinks())
            if (auto* console = dynamic_cast<spdlog::sinks::stderr_color_sink_mt*>(sink.get()))
                console->set_pattern("\r\x1b[K%^%l%$: %v");
    spdlog::debug("pocketllm-cli {} ({}) started", POCKET_VERSION, POCKET_GIT_REVISION);
    try {
        if (const int code = runModelCommands(g, modelCommands); code >= 0) return code;
        if (const int code = runGenerateCommands(g, generateCommands); code >= 0) return code;
        if (const int code = runCompressCommands(g, compressCommands); code >= 0) return code;
        if (const int code = runStoreCommands(g, storeCommands); code >= 0) return code;
        if (const int code = runAnalysisCommands(g, analysisCommands); code >= 0) return code;
        if (const int code = runEvalCommands(g, evalCommands); code >= 0) return code;
    } catch (const std::exception& e) {
        return fail(g, std::string("internal error: ") + e.what(), kExitInternal);
    }
    return kExitUsage;
}
