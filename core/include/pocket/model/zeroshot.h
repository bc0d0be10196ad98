// Zero-shot multiple-choice tasks scored the way EleutherAI's lm-evaluation-harness scores them
// (lm_eval/api/task.py and the task yamls), so that accuracies compare with published tables:
// - each choice is the continuation " " + choice of the task's prompt (target delimiter one space);
//   WinoGrande instead builds one context per option and scores the shared rest of the sentence;
// - trailing spaces of the context move into the continuation; context + continuation are tokenised
//   together and the context's tokens sliced off; the input is truncated on the left to the model's
//   maximum positions; no BOS unless asked for (the harness's add_bos_token=False), but an empty
//   context gets BOS as its prefix token;
// - acc: the choice with the highest summed log-likelihood; acc_norm: the highest sum divided by the
//   choice's length in characters (Python code points, without the leading space); standard errors
//   as the harness's mean_stderr (sample standard deviation / sqrt(n)).
#pragma once

#include "pocket/io/tokenizer.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

enum class ZeroShotTask { Piqa, ArcEasy, ArcChallenge, HellaSwag, WinoGrande, BoolQ, OpenBookQa };

// "piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "boolq", "openbookqa" (the
// harness's task names) and back; parseZeroShotTask also takes a file name that starts with one
// ("piqa_validation.jsonl", "ARC-Challenge-test.jsonl").
const char* zeroShotTaskName(ZeroShotTask task);
std::optional<ZeroShotTask> parseZeroShotTask(const std::string& nameOrFile);
std::vector<ZeroShotTask> allZeroShotTasks();
// Whether the harness reports acc_norm for the task (not for BoolQ and WinoGrande).
bool zeroShotHasAccNorm(ZeroShotTask task);

// One item as the harness builds its requests: one (context, continuation) pair per choice, and the
// choice texts acc_norm divides by.
struct ZeroShotItem {
    std::vector<std::string> contexts;      // per choice (WinoGrande: differ; others: all the same prompt)
    std::vector<std::string> continuations; // per choice, delimiter included (" " + choice)
    std::vector<std::string> choices;       // per choice, the text acc_norm measures
    int label = 0;                          // 0-based
};

// Builds the item of one JSON line of `task`. Accepts the public datasets' formats (PIQA goal/sol1/
// sol2, ARC and OpenBookQA choices {text,label} with answerKey, HellaSwag activity_label/ctx_a/ctx_b/
// endings, WinoGrande option1/option2/answer "1"/"2", BoolQ passage/question/answer) and the flat
// form with "choices": [...] and a 0-based "label". Errors say what is missing.
Result<ZeroShotItem> buildZeroShotItem(ZeroShotTask task, const std::string& jsonLine);

// Reads a JSONL file of `task` (blank lines skipped), at most `limit` items (0 = all). Errors name
// the file and line.
Result<std::vector<ZeroShotItem>> loadZeroShotTask(ZeroShotTask task, const std::string& path, int limit = 0);

// The harness's HellaSwag text cleaning (strip, " [title]" -> ". ", "[...]" removed, double spaces).
std::string hellaswagPreprocess(const std::string& text);

// The token ids of one request, as the harness's _encode_pair and loglikelihood build them.
struct EncodedRequest {
    std::vector<std::int32_t> input;  // what the model sees (truncated on the left to maxLength)
    int continuationTokens = 0;       // the last this many predictions of input + 1 are scored
    std::vector<std::int32_t> target; // the continuation's tokens
};
EncodedRequest encodeZeroShotRequest(const Tokenizer& tokenizer, std::string context, std::string continuation, int maxLength,
                                     bool addBos);

struct ZeroShotParams {
    int batch = 16;      // requests per forward pass (padded on the right to the longest)
    bool addBos = false; // prepend BOS to every context (the harness's add_bos_token)
    int maxLength = 0;   // 0 = the model's maximum positions
};

struct ZeroShotItemScore {
    std::vector<double> logLikelihoods; // per choice
    bool correct = false;
    bool correctNorm = false;
};

struct ZeroShotTaskResult {
    ZeroShotTask task = ZeroShotTask::Piqa;
    int items = 0;
    double acc = 0, accStderr = 0;         // fractions (0..1)
    double accNorm = 0, accNormStderr = 0; // only when zeroShotHasAccNorm
    std::int64_t tokens = 0;               // tokens run through the model
    double seconds = 0;
    std::vector<ZeroShotItemScore> scores; // per item
};

struct ZeroShotProgress {
    int requestsDone = 0;
    int requestsTotal = 0;
    double elapsedSeconds = 0;
};

// Scores `items` with `model`. `onProgress` after each batch; returning false cancels.
Result<ZeroShotTaskResult> evaluateZeroShot(const LlamaModel& model, const Tokenizer& tokenizer, ZeroShotTask task,
                                            const std::vector<ZeroShotItem>& items, const ZeroShotParams& params,
                                            const std::function<bool(const ZeroShotProgress&)>& onProgress = {});

// acc / acc_norm and their standard errors from per-item scores (fills the task result's figures).
void summariseZeroShot(ZeroShotTaskResult& result, const std::vector<ZeroShotItem>& items);

} // namespace pocket
