// pocketllm-cli and the experiment store: the `runs` and `compare` commands, and where every
// `compress` and `eval` run is recorded (core's recorders; global --no-store opts out). A store
// problem never fails a command: the recorders warn and the command carries on. Main thread only.
#pragma once

#include "cli_common.h"
#include "compress_commands.h"

#include "pocket/jobs/run_recorder.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace cli {

struct StoreOptions {
    int limit = 20;           // runs list: newest N (0 = all)
    std::string kind;         // runs list: compress | eval | "" (both)
    std::string model;        // runs list, compare: model name contains this
    std::int64_t runId = 0;   // runs show
    std::string dataset;      // compare
    int ctx = 0;              // compare (0 = any)
    std::string metric = "perplexity"; // compare ("all" = every metric)
    bool csv = false;         // runs list, compare: CSV on stdout
};

struct StoreCommands {
    CLI::App* runs = nullptr;
    CLI::App* runsList = nullptr;
    CLI::App* runsShow = nullptr;
    CLI::App* compare = nullptr;
    StoreOptions options;
};

// Registers `runs list`, `runs show` and `compare` on `app`; `commands` must outlive the parse.
void addStoreCommands(CLI::App& app, StoreCommands& commands);
// Runs whichever of these subcommands was given; returns -1 if none was.
int runStoreCommands(const Globals& g, const StoreCommands& commands);

// The store the CLI uses: --store, else $POCKETLLM_STORE, else <data dir>/experiments.sqlite.
std::string storePath(const Globals& g);

// Where and whether the CLI records its runs: --store / $POCKETLLM_STORE / the default, --no-store,
// and the command line as the run's notes.
pocket::RecorderOptions recorderOptions(const Globals& g);

} // namespace cli
