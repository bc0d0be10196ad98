// pocketllm-cli's analysis commands: `sensitivity` (per-unit damage of compressing one unit).
#pragma once

#include "cli_common.h"

#include "pocket/jobs/calibration.h"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace cli {

struct SensitivityOptions {
    std::string model;
    std::string text;
    std::string tokenizer;
    std::string method = "rtn";
    std::vector<std::string> settings;
    std::string unit = "matrix";
    std::string blocks;
    std::string types;
    int ctx = 256;
    int windows = 16;
    int threads = 0;
    bool remeasure = false;            // measure every unit even when the store has it
    bool mpi = false;                  // sensitivity: units across the processes mpirun started
    std::string entropy = "auto";      // the lossless stage the units' bits are counted with
    std::string coder = "fastest";
    double minSaving = 2;
    pocket::CalibrationParams calibration; // methods that need calibration; no text = the scored text
};

struct AllocateOptions {
    SensitivityOptions base;           // model, text, method, --set, selection, ctx, windows
    std::vector<std::string> menu;     // each "name=value[,name=value...]"
    double budget = 0;
    int refine = 0;                    // alternative plans measured as a whole (AllocationRequest::refine)
    std::string out;                   // -o: run the plan as a compress job into this archive
};

struct AnalysisCommands {
    CLI::App* sensitivity = nullptr;
    CLI::App* allocate = nullptr;
    SensitivityOptions options;
    AllocateOptions allocateOptions;
};

// Registers the subcommands on `app`; `commands` must outlive the parse.
void addAnalysisCommands(CLI::App& app, AnalysisCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runAnalysisCommands(const Globals& g, const AnalysisCommands& commands);

} // namespace cli
