// pocketllm-cli's model commands: info, eval, convert, make-random, tokenize, doctor.
#pragma once

#include "cli_common.h"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace cli {

struct InfoOptions {
    std::string model;
    bool tensors = false;
    bool walk = false;
};

struct EvalOptions {
    std::string model;
    std::string text;
    std::string tokenizer;
    int ctx = 0;
    int stride = 0;
    std::string score = "all";
    std::int64_t maxTokens = 0;
    int batch = 0;
    int threads = 0;
    std::string precision = "fp32";
    std::string memoryBudget;
    std::string reference; // a model to measure the divergence from
};

struct WriteOptions {
    std::string to = "hf";  // convert: hf (a folder) or gguf (a file)
    std::string out;
    std::string dtype = "f32";
    std::string tokenizer;
    double shardMb = 0;
    bool force = false;
};

struct RandomOptions {
    std::string preset = "tiny";
    std::int64_t dim = 0, hidden = 0, layers = 0, heads = 0, kvHeads = 0, vocab = 0, seqLen = 0;
    bool tie = false, bias = false;
    double theta = 10000.0;
    std::uint64_t seed = 1;
};

struct TokenizeOptions {
    std::string source; // a tokenizer file, or a model (its tokenizer)
    std::string text;   // a text file
    std::string string; // or a string
};

struct ModelCommands {
    CLI::App* info = nullptr;
    CLI::App* eval = nullptr;
    CLI::App* convert = nullptr;
    CLI::App* makeRandom = nullptr;
    CLI::App* tokenize = nullptr;
    CLI::App* doctor = nullptr;
    InfoOptions infoOptions;
    EvalOptions evalOptions;
    WriteOptions writeOptions; // convert and make-random
    std::string convertModel;
    RandomOptions randomOptions;
    TokenizeOptions tokenizeOptions;
    int doctorThreads = 0;
};

// Registers the subcommands on `app`; `commands` must outlive the parse.
void addModelCommands(CLI::App& app, ModelCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runModelCommands(const Globals& g, const ModelCommands& commands);

} // namespace cli
