// pocketllm-cli's evaluation commands beyond perplexity: zeroshot (multiple-choice tasks scored as
// lm-evaluation-harness scores them).
#pragma once

#include "cli_common.h"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace cli {

struct ZeroShotOptions {
    std::string model;
    std::vector<std::string> tasks; // FILE or TASK=FILE; a bare task name takes the bundled file
    std::string tokenizer;
    int limit = 0;
    int batch = 16;
    bool addBos = false;
    int maxLength = 0;
    int threads = 0;
    std::string precision = "fp32";
    std::string memoryBudget;
};

struct EvalCommands {
    CLI::App* zeroshot = nullptr;
    ZeroShotOptions zeroShotOptions;
};

void addEvalCommands(CLI::App& app, EvalCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runEvalCommands(const Globals& g, const EvalCommands& commands);

} // namespace cli
