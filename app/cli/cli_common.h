// Shared pieces of pocketllm-cli's commands: exit codes, global flags, progress line, output, and
// how core's errors are shown (exit code from the error's kind, core's setting names as flags).
#pragma once

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/support/app_paths.h"
#include "pocket/support/result.h"
#include "pocket/support/timing.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

namespace cli {

using nlohmann::ordered_json;

constexpr int kExitOk = 0;
constexpr int kExitBadInput = 1; // a file, model or data is wrong, unsupported, or cannot be written; or cancelled
constexpr int kExitUsage = 2;    // an option is wrong
constexpr int kExitInternal = 3; // a bug: an exception escaped core or a plugin

struct Globals {
    bool json = false;
    bool quiet = false;
    std::string logLevel = "info";
    std::string store;       // --store: the experiment store file ("" = $POCKETLLM_STORE or the default)
    bool noStore = false;    // --no-store: do not record this run
    std::string commandLine; // the program's arguments, recorded with each run
};

using pocket::formatDuration;
using pocket::peakRssMb;
using pocket::secondsSince;

// A one-line progress display on stderr, only when stderr is a terminal.
// --progress-lines (set once by main): progress as whole lines on stderr, "progress: <text>", at
// most twice a second, for programs that read it (the workbench's Run on cluster dialog).
inline bool& progressLinesMode()
{
    static bool on = false;
    return on;
}

class ProgressLine {
public:
    explicit ProgressLine(bool enabled)
        : m_lines(enabled && progressLinesMode()), m_enabled(enabled && (m_lines || ::isatty(STDERR_FILENO)))
    {
    }
    ~ProgressLine() { finish(); }
    void show(const std::string& text)
    {
        if (!m_enabled)
            return;
        if (m_lines) {
            if (m_shown && m_sinceLine.seconds() < 0.5)
                return;
            m_sinceLine = pocket::Stopwatch();
            std::fprintf(stderr, "progress: %s\n", text.c_str());
        } else {
            std::fprintf(stderr, "\r%-78s", text.c_str());
        }
        std::fflush(stderr);
        m_shown = true;
    }
    void finish()
    {
        if (m_shown && !m_lines)
            std::fprintf(stderr, "\r%-78s\r", "");
        m_shown = false;
    }

private:
    bool m_lines;
    bool m_enabled;
    bool m_shown = false;
    pocket::Stopwatch m_sinceLine;
};

// Reports an error: one line on stderr, and {"error": ...} on stdout under --json.
inline int fail(const Globals& g, const std::string& message, int code = kExitBadInput)
{
    spdlog::error("{}", message);
    if (g.json)
        std::cout << ordered_json{{"error", message}}.dump() << std::endl;
    return code;
}

// The exit code of a core error: usage errors 2, internal errors 3, everything else 1.
int exitCodeOf(const pocket::Error& error);

// A core error as the CLI words it: the setting it is about becomes the option's flag ("ctx must be
// at least 2" -> "--ctx must be at least 2"; otherwise the flag is added in parentheses).
std::string cliMessage(const pocket::Error& error);

// Reports a core error with cliMessage() and returns exitCodeOf().
int fail(const Globals& g, const pocket::Error& error);

// --precision and --memory-budget, shared by eval and generate.
void addRunOptions(CLI::App* command, std::string& precision, std::string& memoryBudget);
pocket::Result<pocket::RunOptions> runOptions(const std::string& precision, const std::string& memoryBudget);
// Where the weight memory went, as JSON (pocket::describeMemory gives the line of text).
ordered_json memoryJson(const pocket::WeightMemory& memory);

inline void emit(const Globals& g, const ordered_json& object, const std::string& text)
{
    if (g.json)
        std::cout << object.dump(2) << std::endl;
    else
        std::cout << text;
}

} // namespace cli
