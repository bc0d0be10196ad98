// Perplexity of a model file (Hugging Face folder, llama2.c file or .pllm archive) on a text file:
// open, tokenize, load, evaluate, and optionally record the run in the experiment store. The one
// code path behind `pocketllm-cli eval` and the workbench's Evaluate panel. Call from one thread
// (a worker thread in the workbench); progress is reported on that thread.
#pragma once

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/io/checkpoint.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/perplexity.h"
#include "pocket/support/result.h"
#include "pocket/jobs/run_recorder.h"

#include <functional>
#include <memory>
#include <string>

namespace pocket {

struct EvalJobParams {
    std::string modelPath;     // HF folder, .safetensors, llama2.c .bin, or .pllm archive
    std::string textPath;      // UTF-8 text to score
    std::string tokenizerPath; // "" = the one beside the model (or embedded in the archive)
    EvalParams eval;           // eval.ctx 0 = min(2048, the model's max positions)
    RunOptions run;            // precision, and for an archive the memory budget
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
    WeightMemory memory;       // where the model's weight memory went
    std::int64_t runId = 0;    // the run recorded in the store (0 = not recorded)
};

// Runs the evaluation and, when `recording` is given and enabled, records it in the experiment
// store. Errors name the file; errors about a setting are Usage errors naming it (Error::setting
// "ctx", "stride", "max tokens", "tokenizer"). `onProgress` returning false cancels
// (ErrorKind::Cancelled).
Result<EvalJobResult> runEvalJob(const EvalJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                 const std::function<bool(const EvalJobProgress&)>& onProgress = {});

} // namespace pocket
