// Perplexity of a model on a token stream, in windows of a fixed context length.
#pragma once

#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

// Which predictions of a window count.
enum class EvalScoring {
    AllTokens,  // every text token once (GPTQ's and AQLM's convention; with a stride, sliding windows)
    SecondHalf, // llama.cpp's llama-perplexity: chunks of ctx tokens of BOS + text, each chunk's first
                // token replaced by BOS, only the predictions of its second half scored
};

// "all" / "second-half", and back (nullopt for anything else).
const char* evalScoringName(EvalScoring scoring);
std::optional<EvalScoring> parseEvalScoring(const std::string& name);

struct EvalParams {
    int ctx = 2048;             // tokens per window, BOS included
    int stride = 0;             // text tokens between window starts; 0 = ctx - 1 (non-overlapping); AllTokens only
    std::int64_t maxTokens = 0; // score at most this many text tokens (0 = all)
    int batch = 0;              // windows per forward pass; 0 = chosen from ctx and vocabulary size
    EvalScoring scoring = EvalScoring::AllTokens;
};

// One window: model input is BOS followed by text tokens [start, start + length); the
// predictions of text tokens [scoreFrom, start + length) count (earlier ones were scored by an
// earlier window, with more context).
struct EvalWindow {
    std::int64_t start = 0;
    std::int64_t length = 0;
    std::int64_t scoreFrom = 0;
};

// The windows for `textTokens` tokens. Non-overlapping by default (each text token is scored
// exactly once, each window starts with BOS, as GPTQ and llama.cpp evaluate); with a smaller
// stride, windows slide and only the tokens not yet scored count. Requires 2 <= ctx and
// 1 <= stride <= ctx - 1 (checked by evaluatePerplexity).
std::vector<EvalWindow> planWindows(std::int64_t textTokens, int ctx, int stride);

// llama-perplexity's chunks for `textTokens` tokens: chunk c holds BOS and text tokens
// [c*ctx, c*ctx + ctx - 1) (the token before it gives way to BOS) and scores the predictions of
// positions ctx/2 .. ctx-2. (textTokens + 1) / ctx chunks; none when that is below 2.
std::vector<EvalWindow> planSecondHalfWindows(std::int64_t textTokens, int ctx);

struct EvalProgress {
    int windowsDone = 0;
    int windowsTotal = 0;
    std::int64_t tokensScored = 0;
    double elapsedSeconds = 0;
    double perplexitySoFar = 0;
};

// How far a model's predictions are from a reference model's on the same windows (llama.cpp's
// llama-perplexity --kl-divergence figures): per scored token, KL(reference || model) over the
// vocabulary and whether both put the same token first.
struct DivergenceResult {
    double meanKl = 0;          // nats per token
    double klP90 = 0, klP99 = 0, klP999 = 0, klMax = 0;
    double top1Agreement = 0;   // share of tokens (0..1) with the same most likely next token
    double referencePerplexity = 0;
    double referenceMeanNll = 0;
    std::int64_t tokens = 0;
};

struct EvalResult {
    double perplexity = 0;
    double meanNll = 0;               // natural log, per scored token
    std::int64_t tokensScored = 0;
    std::int64_t tokensProcessed = 0; // tokens run through the model (BOS and overlaps included)
    int windows = 0;
    int ctx = 0;
    int stride = 0;
    int batch = 0;
    double elapsedSeconds = 0;
    double tokensPerSecond = 0;       // tokens processed per second
    std::optional<DivergenceResult> divergence; // with a reference model
};

// Evaluates `model` on `textTokens` (no BOS; it is added to every window). `onProgress` is
// called after each batch on the calling thread; returning false cancels ("cancelled" error).
// With `reference` (same vocabulary), both run on every window and the result's divergence is
// filled; only the current batch's log-probabilities are held, plus one float per scored token.
Result<EvalResult> evaluatePerplexity(const LlamaModel& model, const std::vector<std::int32_t>& textTokens, std::int32_t bosId,
                                      const EvalParams& params, const std::function<bool(const EvalProgress&)>& onProgress = {},
                                      const LlamaModel* reference = nullptr);

// The q-quantile (0..1) of `values` by linear interpolation between order statistics (numpy's
// default); `values` is reordered. 0 when empty.
double quantile(std::vector<float>& values, double q);

} // namespace pocket
