#include "pocket/support/app_paths.h"
#include "pocket/support/phases.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sys/resource.h>

namespace pocket {

std::string executableDir()
{
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string() : exe.parent_path().string();
}

std::string resourcesDir()
{
    namespace fs = std::filesystem;
    std::error_code ec;
    if (const char* env = std::getenv("POCKETLLM_RESOURCES"); env && *env)
        return env;
    if (const std::string exe = executableDir(); !exe.empty()) {
        const fs::path installed = fs::path(exe) / ".." / "share" / "pocketllm-workbench" / "resources";
        if (fs::is_directory(installed, ec))
            return fs::weakly_canonical(installed, ec).string();
    }
#ifdef POCKET_SOURCE_RESOURCES_DIR
    if (fs::is_directory(POCKET_SOURCE_RESOURCES_DIR, ec))
        return POCKET_SOURCE_RESOURCES_DIR;
#endif
    return {};
}

namespace {
std::string resourceFile(const char* relative)
{
    const std::string dir = resourcesDir();
    if (dir.empty())
        return {};
    std::error_code ec;
    const std::filesystem::path p = std::filesystem::path(dir) / relative;
    return std::filesystem::is_regular_file(p, ec) ? p.string() : std::string();
}
} // namespace

std::string demoModelPath() { return resourceFile("models/stories260K/stories260K.bin"); }
std::string demoTextPath() { return resourceFile("text/tinystories_valid_30k.txt"); }

std::string absolutePath(const std::string& path)
{
    std::error_code ec;
    const std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
    return ec ? path : p.string();
}

std::string displayName(const std::string& path)
{
    std::filesystem::path p = std::filesystem::path(path).lexically_normal();
    if (p.filename().empty())
        p = p.parent_path();
    return p.filename().string();
}

double peakRssMb()
{
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    // ru_maxrss is in KiB on Linux; phases.cpp resets the kernel's mark per phase and keeps the peak
    return std::max(static_cast<double>(usage.ru_maxrss) / 1024.0, processPeakRssMb());
}

std::string userDataDir()
{
    if (const char* dir = std::getenv("POCKETLLM_DATA_DIR"); dir && *dir)
        return dir;
    if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
        return std::string(xdg) + "/pocketllm-workbench";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : "/tmp") + "/.local/share/pocketllm-workbench";
}

std::string initLogging(const std::string& appName, LogLevel consoleLevel)
{
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    static const spdlog::level::level_enum kLevels[] = {spdlog::level::debug, spdlog::level::info, spdlog::level::warn,
                                                        spdlog::level::err, spdlog::level::off};
    console->set_level(kLevels[static_cast<int>(consoleLevel)]);
    console->set_pattern("%^%l%$: %v");
    std::vector<spdlog::sink_ptr> sinks{console};
    std::string logPath;
    std::string failure;
    try {
        const std::filesystem::path dir = std::filesystem::path(userDataDir()) / "logs";
        std::filesystem::create_directories(dir);
        logPath = (dir / "pocketllm.log").string();
        auto file = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(logPath, 5 * 1024 * 1024, 3);
        file->set_level(spdlog::level::debug);
        file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] [pid %P] %v");
        sinks.push_back(file);
    } catch (const std::exception& e) {
        failure = e.what();
        logPath.clear();
    }
    auto logger = std::make_shared<spdlog::logger>(appName, sinks.begin(), sinks.end());
    logger->set_level(spdlog::level::debug);
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
    if (!failure.empty())
        spdlog::warn("cannot write the log file ({}); logging to the console only", failure);
    return logPath;
}

} // namespace pocket
