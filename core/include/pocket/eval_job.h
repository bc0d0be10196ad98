// Perplexity of a model file (Hugging Face folder, llama2.c file or .pllm archive) on a text file:
// open, tokenize, load, evaluate, and optionally record the run in the experiment store. The one
// code path behind `pocketllm-cli eval` and the workbench's Evaluate panel. Call from one thread
// (a worker thread in the workbench); progress is reported on that thread.
#pragma once

#include "pocket/checkpoint.h"
#include "pocket/method_registry.h"
#include "pocket/perplexity.h"
#include "pocket/result.h"
#include "pocket/run_recorder.h"

#include <functional>
#include <memory>
#include <string>

namespace pocket {

struct EvalJobParams {
    std::string modelPath;     // HF folder, .safetensors, llama2.c .bin, or .pllm archive
    std::string textPath;      // UTF-8 text to score
    std::string tokenizerPath; // "" = the one beside the model (or embedded in the archive)
    EvalParams eval;           // eval.ctx 0 = min(2048, the model's max positions)
};

struct EvalJobProgress {
    enum class Phase { Loading, Evaluating };
    Phase phase = Phase::Loading;
    int tensorsLoaded = 0; // Loading
    int tensorsTotal = 0;
    EvalProgress eval;     // Evaluating
};

struct EvalJobResult {
    EvalResult result;
    std::string modelPath;
    std::string tokenizerPath; // the tokenizer used
    double tokenizeSeconds = 0;
    double loadSeconds = 0;
    double totalSeconds = 0;
    std::int64_t runId = 0;    // the run recorded in the store (0 = not recorded)
};

// Opens a model or, for a .pllm file, the decoding view of an archive (see openArchiveCheckpoint).
Result<std::unique_ptr<Checkpoint>> openModelOrArchive(const std::string& path, const MethodRegistry& registry);

// Runs the evaluation. `recording` null = record nothing. Errors name the file; errors about
// options start with "--" (e.g. "--ctx ..."). `onProgress` returning false cancels ("cancelled").
Result<EvalJobResult> runEvalJob(const EvalJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                 const std::function<bool(const EvalJobProgress&)>& onProgress = {});

} // namespace pocket
