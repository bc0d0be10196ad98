// Where the application keeps its own files, and its logging set-up. Call from the main thread.
#pragma once

#include <string>

namespace pocket {

// The user's data folder: $POCKETLLM_DATA_DIR if set, else $XDG_DATA_HOME/pocketllm-workbench,
// else ~/.local/share/pocketllm-workbench. Not created by this call.
std::string userDataDir();

// The folder of the running executable ("" if unknown).
std::string executableDir();

// The folder with the bundled resources (demo model, texts, baselines seed): $POCKETLLM_RESOURCES
// if set, else <exe>/../share/pocketllm-workbench/resources (the installed layout) when it exists,
// else the source tree's resources/ (a build-tree run). "" when none exists.
std::string resourcesDir();
// The bundled demo model (stories260K, llama2.c format) and demo text; "" when not found.
std::string demoModelPath();
std::string demoTextPath();

// Absolute, normalised, symlinks resolved where the path exists (the key that links an eval of an
// archive to the compress run that wrote it). Returns `path` unchanged when it cannot be resolved.
std::string absolutePath(const std::string& path);

// "stories260K.bin" for a file, "Llama-2-7b-hf" for a folder (trailing slash or not).
std::string displayName(const std::string& path);

// The process's peak resident set size so far, in MiB.
double peakRssMb();

enum class LogLevel { Debug, Info, Warn, Error, Off };

// Sets up spdlog's default logger: the console (stderr) at `consoleLevel` and a rotating file
// (<data dir>/logs/pocketllm.log, 5 MB x 3) at debug level. If the file cannot be opened, logs to
// the console only and says so. Returns the log file path ("" when none).
std::string initLogging(const std::string& appName, LogLevel consoleLevel);

} // namespace pocket
