// Per-layer sensitivity: compress one unit (a matrix, a block's matrices, or one matrix type
// across blocks) with a method, leave everything else exact, and measure what it does to the
// model's predictions on a text slice: perplexity change, mean KL divergence of the next-token
// distributions from the uncompressed model's, and the share of tokens whose top-1 prediction is
// unchanged. The uncompressed log-probabilities are computed once and cached. Results stream
// through the progress callback and, when recording, into the experiment store (one run of kind
// "sensitivity", per-matrix metrics written as each unit finishes). Call from one thread.
#pragma once

#include "pocket/archive/lossless.h"
#include "pocket/methods/layer_selection.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"
#include "pocket/jobs/calibration.h"
#include "pocket/jobs/run_recorder.h"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

class ClusterChannel; // pocket/jobs/cluster.h

// Matrix: one matrix at a time; with a method that shares a codebook across matrices
// (sharing=type/model) the unit is the method's group, measured and charged as a whole.
enum class SensitivityUnit { Matrix, Block, Type };
// "matrix" / "block" / "type", and back (nullopt for anything else).
const char* sensitivityUnitName(SensitivityUnit unit);
std::optional<SensitivityUnit> parseSensitivityUnit(const std::string& name);

struct SensitivityParams {
    std::string modelPath;      // HF folder, .safetensors or llama2.c file (not an archive)
    std::string textPath;       // the calibration slice is the start of this text
    std::string tokenizerPath;  // "" = the one beside the model
    std::string methodId = "rtn";
    std::vector<std::string> settings{"bits=3", "group=32"}; // a fast proxy by default
    SensitivityUnit unit = SensitivityUnit::Matrix;
    LayerSelection selection;   // the matrices studied (default: all)
    int ctx = 256;              // tokens per window, BOS included
    int windows = 16;           // windows of the text scored (fewer if the text is short)
    std::uint64_t maxCacheBytes = 1ull << 30; // cap on the cached log-probabilities (fewer windows if needed)
    // For methods that need calibration (GPTQ, VQ/PocketLLM feedback, AQLM): the windows whose layer
    // inputs give each matrix's Hessian, measured once on the uncompressed model (every unit is
    // compressed with the rest of the model exact). An empty textPath takes the scored text.
    CalibrationParams calibration;
    // The lossless stage a unit's bits are counted with, as a compress job with these options would
    // store them (default: auto, as compress; EntropyMode::None counts codes at their fixed width).
    EntropyOptions entropy;
    // When recording: units that an earlier analysis measured from identical inputs (the model's,
    // text's, tokenizer's and calibration text's fingerprints, the method, its version and resolved
    // settings, ctx and windows) are read from the store instead of being measured again.
    bool reuse = true;
    // Rank 0 of an analysis spread over several processes (pocket/jobs/cluster.h): the units are
    // measured across the ranks, with the same results as one process. nullptr = this process alone.
    ClusterChannel* cluster = nullptr;
};

// The outcome of compressing one unit alone.
struct UnitSensitivity {
    std::string unit;                  // tensor name, "block 3", or "q_proj"
    std::vector<std::string> matrices; // its matrices
    std::int64_t weights = 0;
    double bpw = 0;                    // bits per weight of the unit, overheads included, as stored (SensitivityParams::entropy)
    double mse = 0;                    // weight-weighted mean over its matrices
    double snrDb = 0;                  // mean over its matrices
    double perplexity = 0;
    double deltaPerplexity = 0;        // perplexity - base perplexity
    double klMean = 0;                 // mean over scored tokens of KL(original || compressed), nats
    double top1Agreement = 0;          // share of scored tokens with an unchanged argmax
    double seconds = 0;
    bool cached = false;               // read from the store, measured by an earlier analysis
};

struct SensitivityProgress {
    int unitsDone = 0;
    int unitCount = 0;
    double elapsedSeconds = 0;
    double etaSeconds = -1;
    double basePerplexity = 0;
    const UnitSensitivity* latest = nullptr; // the unit just finished (nullptr before the first)
};

struct SensitivityResult {
    double basePerplexity = 0;
    std::int64_t tokensScored = 0;
    int windows = 0;
    std::vector<UnitSensitivity> units; // in model order
    double seconds = 0;
    int cachedUnits = 0;                // units read from the store (see SensitivityParams::reuse)
    std::int64_t runId = 0;             // in the store (0 = not recorded)
};

// Runs the analysis. `onProgress` is called after the base pass and after each unit; returning
// false stops at once (ErrorKind::Cancelled; units finished so far stay recorded). Errors name the
// file or the setting (Usage errors: "ctx", "windows", "method", "settings", "selection").
// Methods that need calibration data get the Hessians of `calibration` (held in memory: the
// selected blocks' input Hessians, q/k/v and gate/up sharing theirs).
// The steps (sensitivity.cpp): checkRequest, buildUnits, scoringWindows, measureBase, then per
// unit compressUnit, scoreUnit and restoreUnit; SensitivityRecorder records as units finish.
Result<SensitivityResult> runSensitivity(const SensitivityParams& params, MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                         const std::function<bool(const SensitivityProgress&)>& onProgress = {});

// Every rank but 0 of a distributed analysis: opens the same model, text and method, scores the
// base, measures the Hessians if the method needs them, then measures the units rank 0 hands it
// until rank 0 says stop. Its failure (a model it cannot read, say) reaches rank 0, which names it.
Status runSensitivityWorker(const SensitivityParams& params, MethodRegistry& registry, ClusterChannel& channel);

// The calibration a run of `params` uses: params.calibration with the scored text when it names none.
CalibrationParams calibrationOf(const SensitivityParams& params);

// One matrix's choice in a plan: its method and its effective settings.
struct PlanChoice {
    std::string methodId;
    std::vector<std::string> settings;
};

// A plan's real damage, for checking the summed per-unit KL it was chosen by (an additive
// approximation): every matrix of `plan` compressed with its choice, all at once, and the model
// scored like one unit on the windows of `params` (its text, ctx, windows, calibration; its method
// and selection are ignored). Hessians come from the uncompressed model, as for the units.
Result<UnitSensitivity> measurePlan(const SensitivityParams& params, const std::map<std::string, PlanChoice>& plan, MethodRegistry& registry);

} // namespace pocket
