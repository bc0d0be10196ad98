// Perplexity of a model file (Hugging Face folder, llama2.c file or .pllm archive) on a text file:
// open, tokenize, load, evaluate, and optionally record the run in the experiment store. The one
// code path behind `pocketllm-cli eval` and the workbench's Evaluate panel. Call from one thread
// (a worker thread in the workbench); progress is reported on that thread.
#pragma once

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/io/checkpoint.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/perplexity.h"
#include "pocket/model/zeroshot.h"
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
    // "" = none; else a model (usually the original the evaluated one was compressed from) run on
    // the same windows: the result then has the divergence figures. Loaded in fp32, all decoded.
    std::string referencePath;
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
    std::string referencePath; // the reference model, when one was given
};

// Runs the evaluation and, when `recording` is given and enabled, records it in the experiment
// store. Errors name the file; errors about a setting are Usage errors naming it (Error::setting
// "ctx", "stride", "max tokens", "tokenizer"). `onProgress` returning false cancels
// (ErrorKind::Cancelled).
Result<EvalJobResult> runEvalJob(const EvalJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                 const std::function<bool(const EvalJobProgress&)>& onProgress = {});

// Zero-shot multiple-choice accuracy of a model on task files (see pocket/model/zeroshot.h).
struct ZeroShotJobTask {
    ZeroShotTask task = ZeroShotTask::Piqa;
    std::string path; // JSONL
};

struct ZeroShotJobParams {
    std::string modelPath;
    std::vector<ZeroShotJobTask> tasks;
    std::string tokenizerPath; // "" = beside the model / embedded
    int limit = 0;             // items per task, 0 = all
    ZeroShotParams zeroShot;
    RunOptions run;
};

struct ZeroShotJobProgress {
    enum class Phase { Loading, Scoring };
    Phase phase = Phase::Loading;
    int tensorsLoaded = 0;
    int tensorsTotal = 0;
    int taskIndex = 0; // Scoring: which of params.tasks
    ZeroShotProgress scoring;
};

struct ZeroShotJobResult {
    std::vector<ZeroShotTaskResult> tasks;
    double meanAcc = 0;        // unweighted mean of the tasks' acc (fractions)
    std::string averageName;   // the dataset name the mean is recorded under ("zero-shot-5" for the
                               // five tasks of the published tables, else "zero-shot:<tasks>")
    std::string modelPath;
    std::string tokenizerPath;
    double loadSeconds = 0;
    double totalSeconds = 0;
    std::int64_t runId = 0;
};

// The task files bundled with the program (<resources>/eval/zeroshot/*.jsonl whose names start
// with a task's), in file-name order; empty when there are none.
std::vector<ZeroShotJobTask> bundledZeroShotTasks();

// Reads every task file first (so that a bad line fails before the model loads), loads the model,
// scores the tasks in order and records an eval run whose results are per task "accuracy" and,
// where the harness has it, "accuracy_norm" (percent, as the published tables), their
// "..._stderr", and the mean as "accuracy_avg".
Result<ZeroShotJobResult> runZeroShotJob(const ZeroShotJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                         const std::function<bool(const ZeroShotJobProgress&)>& onProgress = {});

} // namespace pocket
