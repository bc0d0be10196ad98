// pocketllm-cli's generate command: text from a model, a GGUF or a .pllm archive, token by token.
#pragma once

#include "cli_common.h"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace cli {

struct GenerateOptions {
    std::string model;
    std::string prompt;
    std::string promptFile;
    std::string tokenizer;
    int maxTokens = 128;
    bool greedy = false;
    float temperature = 0.8f;
    int topK = 40;
    float topP = 0.95f;
    float repeatPenalty = 1.0f;
    std::uint64_t seed = 0;
    int context = 0;
    bool noSlide = false;
    bool ignoreEos = false;
    int threads = 0;
    std::string precision = "fp32";
    std::string memoryBudget;
};

struct GenerateCommands {
    CLI::App* generate = nullptr;
    GenerateOptions options;
};

void addGenerateCommands(CLI::App& app, GenerateCommands& commands);
// Runs generate if it was given; returns -1 otherwise.
int runGenerateCommands(const Globals& g, const GenerateCommands& commands);

} // namespace cli
