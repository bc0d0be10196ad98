// pocketllm-cli's commands that judge and repair a compressed model beyond perplexity: zeroshot
// (multiple-choice tasks scored as lm-evaluation-harness scores them) and recover (LoRA adapters).
#pragma once

#include "cli_common.h"

#include <CLI/CLI.hpp>

#include <cstdint>
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

struct RecoverOptions {
    std::string archive;
    std::string out;
    bool force = false;
    std::string calibText;
    int calibSamples = 128;
    int calibLen = 256;
    std::uint64_t seed = 1;
    std::string tokenizer;
    std::string original;
    std::string objective = "nll";
    std::string types;
    int rank = 32;
    float alpha = 64;
    int epochs = 1;
    double lr = 1e-4;
    int batch = 8;
    int threads = 0;
};

struct EvalCommands {
    CLI::App* zeroshot = nullptr;
    ZeroShotOptions zeroShotOptions;
    CLI::App* recover = nullptr;
    RecoverOptions recoverOptions;
};

void addEvalCommands(CLI::App& app, EvalCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runEvalCommands(const Globals& g, const EvalCommands& commands);

} // namespace cli
