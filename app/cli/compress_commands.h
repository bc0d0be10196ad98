// pocketllm-cli's compression commands: compress, inspect, decompress, export, methods.
#pragma once

#include "cli_common.h"

#include "pocket/archive/lossless.h"
#include "pocket/io/checkpoint.h"
#include "pocket/jobs/calibration.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

namespace cli {

struct CompressOptions {
    std::string model;
    std::string method = "pocketllm";
    std::vector<std::string> settings;
    std::string out;
    std::string preset = "all";
    std::string blocks;
    std::string types;
    std::string include;
    std::string exclude;
    int skipFirst = -1;
    int skipLast = -1;
    std::string keepDtype = "f16";
    std::string tokenizer;
    std::string workDir;
    bool resume = false;
    bool keepWork = false;
    bool dryRun = false;
    bool mpi = false; // spread the groups over the processes mpirun started (also on when mpirun started more than one)
    int threads = 0;
    pocket::CalibrationParams calibration; // --calib-text, --calib-samples, --calib-len, --calib-seed
    std::string entropy = "auto";
    std::string coder = "fastest";
    double minSaving = 2;
};

struct ArchiveOptions {
    std::string archive;
    std::string out;
    std::string dtype = "f16";
    double shardMb = 0;
    bool force = false;
    bool matrices = false;
    bool streams = false;
    std::string matrix;   // inspect --matrix: what compression did to it (the workbench's Inspect tab)
    std::string original; // inspect --original: the model it was compressed from
    std::string entropy = "auto";
    std::string coder = "fastest";
    double minSaving = 2;
};

struct ExportOptions {
    std::string source;
    std::string format = "gguf";
    std::string out;
    std::string fallback = "f16";
    std::string embedding = "f16";
    bool noExact = false;
    bool force = false;
    bool tensors = false;
};

struct CompressCommands {
    CLI::App* compress = nullptr;
    CLI::App* inspect = nullptr;
    CLI::App* decompress = nullptr;
    CLI::App* repack = nullptr;
    CLI::App* exportCommand = nullptr;
    CLI::App* methods = nullptr;
    CompressOptions compressOptions;
    ArchiveOptions archiveOptions;
    ExportOptions exportOptions;
};

// Registers the subcommands on `app`; `commands` must outlive the parse.
void addCompressCommands(CLI::App& app, CompressCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runCompressCommands(const Globals& g, const CompressCommands& commands);

// The method plugins, loaded from the default folders on first use; lives as long as the process.
pocket::MethodRegistry& registry();

// Opens a checkpoint, or a .pllm archive through the method plugins (which stay loaded for the
// life of the process).
pocket::Result<std::unique_ptr<pocket::Checkpoint>> openModelOrArchive(const std::string& path);

// The lossless stage's options from --entropy, --coder and --min-saving (percent).
pocket::Result<pocket::EntropyOptions> entropyOptions(const std::string& mode, const std::string& coder, double minSavingPercent);
// --entropy, --coder and --min-saving, the same on compress, repack, sensitivity and allocate.
void addEntropyOptions(CLI::App* command, std::string& mode, std::string& coder, double& minSaving);

// --calib-text (with `textHelp`), --calib-samples, --calib-len and --calib-seed into `params`.
void addCalibrationOptions(CLI::App* command, pocket::CalibrationParams& params, const std::string& textHelp);

} // namespace cli
