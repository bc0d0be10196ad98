// Shared pieces of pocketllm-cli's commands: exit codes, global flags, progress line, output.
#pragma once

#include "pocket/app_paths.h"

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
constexpr int kExitBadInput = 1;
constexpr int kExitUsage = 2;

struct Globals {
    bool json = false;
    bool quiet = false;
    std::string logLevel = "info";
    std::string store;       // --store: the experiment store file ("" = $POCKETLLM_STORE or the default)
    bool noStore = false;    // --no-store: do not record this run
    std::string commandLine; // the program's arguments, recorded with each run
};

using pocket::peakRssMb;

inline double secondsSince(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline std::string formatDuration(double seconds)
{
    if (!(seconds >= 0) || seconds > 1e7)
        return "--:--";
    const long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

// A one-line progress display on stderr, only when stderr is a terminal.
class ProgressLine {
public:
    explicit ProgressLine(bool enabled) : m_enabled(enabled && ::isatty(STDERR_FILENO)) {}
    ~ProgressLine() { finish(); }
    void show(const std::string& text)
    {
        if (!m_enabled)
            return;
        std::fprintf(stderr, "\r%-78s", text.c_str());
        std::fflush(stderr);
        m_shown = true;
    }
    void finish()
    {
        if (m_shown)
            std::fprintf(stderr, "\r%-78s\r", "");
        m_shown = false;
    }

private:
    bool m_enabled;
    bool m_shown = false;
};

// Reports an error: one line on stderr, and {"error": ...} on stdout under --json.
inline int fail(const Globals& g, const std::string& message, int code = kExitBadInput)
{
    spdlog::error("{}", message);
    if (g.json)
        std::cout << ordered_json{{"error", message}}.dump() << std::endl;
    return code;
}

inline void emit(const Globals& g, const ordered_json& object, const std::string& text)
{
    if (g.json)
        std::cout << object.dump(2) << std::endl;
    else
        std::cout << text;
}

} // namespace cli
