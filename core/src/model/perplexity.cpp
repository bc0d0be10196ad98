#include "pocket/model/perplexity.h"
#include "pocket/support/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

namespace pocket {

const char* evalScoringName(EvalScoring scoring) { return scoring == EvalScoring::SecondHalf ? "second-half" : "all"; }

std::optional<EvalScoring> parseEvalScoring(const std::string& name)
{
    if (name == "all")
        return EvalScoring::AllTokens;
    if (name == "second-half")
        return EvalScoring::SecondHalf;
    return std::nullopt;
}

std::vector<EvalWindow> planSecondHalfWindows(std::int64_t textTokens, int ctx)
{
    std::vector<EvalWindow> windows;
    const std::int64_t chunks = (textTokens + 1) / ctx; // of BOS + text
    if (chunks < 2)
        return windows;
    for (std::int64_t c = 0; c < chunks; ++c)
        windows.push_back({c * ctx, ctx - 1, c * ctx + ctx / 2});
    return windows;
}

std::vector<EvalWindow> planWindows(std::int64_t textTokens, int ctx, int stride)
{
    std::vector<EvalWindow> windows;
    const std::int64_t span = ctx - 1; // text tokens per window after BOS
    std::int64_t scoredUpTo = 0;
    for (std::int64_t start = 0; scoredUpTo < textTokens; start += stride) {
        EvalWindow w;
        w.start = start;
        w.length = std::min(span, textTokens - start);
        w.scoreFrom = scoredUpTo;
        scoredUpTo = start + w.length;
        windows.push_back(w);
    }
    return windows;
}

double quantile(std::vector<float>& values, double q)
{
    if (values.empty())
        return 0;
    const double position = std::clamp(q, 0.0, 1.0) * static_cast<double>(values.size() - 1);
    const auto lower = static_cast<std::size_t>(std::floor(position));
    std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(lower), values.end());
    const double a = values[lower];
    if (lower + 1 >= values.size())
        return a;
    const double b = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(lower) + 1, values.end());
    return a + (b - a) * (position - static_cast<double>(lower));
}

namespace {

// Per sequence of a batch: the NLL of each next token, and with a reference, per position the
// KL(reference || model) and whether both rank the same token first.
struct BatchScores {
    std::vector<std::vector<double>> nll, referenceNll, kl;
    std::vector<std::vector<char>> sameTop1;
};

Result<BatchScores> scoreBatch(const LlamaModel& model, const LlamaModel* reference, const std::vector<std::vector<std::int32_t>>& inputs)
{
    BatchScores out;
    if (!reference) {
        auto nll = model.nextTokenNll(inputs);
        if (!nll)
            return nll.error();
        out.nll = std::move(*nll);
        return out;
    }
    auto q = model.logProbs(inputs);
    if (!q)
        return q.error();
    auto p = reference->logProbs(inputs);
    if (!p)
        return p.error().prefixed("the reference model");
    const std::size_t vocab = static_cast<std::size_t>(model.config().vocabSize);
    const std::size_t len = inputs.front().size();
    for (std::size_t b = 0; b < inputs.size(); ++b) {
        std::vector<double> nll(len - 1), refNll(len - 1), kl(len - 1);
        std::vector<char> same(len - 1);
        for (std::size_t t = 0; t + 1 < len; ++t) {
            const float* lq = q->data() + (b * len + t) * vocab;
            const float* lp = p->data() + (b * len + t) * vocab;
            double sum = 0;
            for (std::size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(lp[v])) * (static_cast<double>(lp[v]) - lq[v]);
            const auto next = static_cast<std::size_t>(inputs[b][t + 1]);
            nll[t] = -lq[next];
            refNll[t] = -lp[next];
            kl[t] = std::max(0.0, sum); // rounding can leave a tiny negative
            same[t] = std::max_element(lq, lq + vocab) - lq == std::max_element(lp, lp + vocab) - lp;
        }
        out.nll.push_back(std::move(nll));
        out.referenceNll.push_back(std::move(refNll));
        out.kl.push_back(std::move(kl));
        out.sameTop1.push_back(std::move(same));
    }
    return out;
}

} // namespace

// Long: checks, batch sizing, windows by length, and the scoring loop with its running sums.
Result<EvalResult> evaluatePerplexity(const LlamaModel& model, const std::vector<std::int32_t>& textTokens, std::int32_t bosId,
                                      const EvalParams& params, const std::function<bool(const EvalProgress&)>& onProgress,
                                      const LlamaModel* reference)
{
    if (reference && reference->config().vocabSize != model.config().vocabSize)
        return Error::usage("the reference model's vocabulary (" + std::to_string(reference->config().vocabSize) + ") differs from the model's (" +
                                std::to_string(model.config().vocabSize) + "): they cannot be compared token by token",
                            "reference");
    const ModelConfig& config = model.config();
    if (params.ctx < 2)
        return Error::usage("ctx must be at least 2 (got " + std::to_string(params.ctx) + ")", "ctx");
    const int stride = params.stride > 0 ? params.stride : params.ctx - 1;
    if (stride > params.ctx - 1)
        return Error::usage("stride " + std::to_string(stride) + " must not exceed ctx - 1 = " + std::to_string(params.ctx - 1) + " (tokens would go unscored)",
                            "stride");
    if (params.maxTokens < 0)
        return Error::usage("max tokens must not be negative", "max tokens");
    if (bosId < 0 || bosId >= config.vocabSize)
        return Error{"the tokenizer's BOS id " + std::to_string(bosId) + " is outside the model's vocabulary"};
    std::int64_t count = static_cast<std::int64_t>(textTokens.size());
    if (params.maxTokens > 0)
        count = std::min(count, params.maxTokens);
    if (count == 0)
        return Error{"the text produced no tokens"};

    int batch = params.batch;
    if (batch <= 0) {
        // Bound the per-batch activations: logits (ctx x vocab) near 128 MB and attention scores
        // (heads x ctx x ctx) near 16 MB. Larger blocks fall out of the allocator's cache and are
        // page-faulted in on every pass, which costs more than batching saves.
        const double ctx = params.ctx;
        const double logitBytes = ctx * static_cast<double>(config.vocabSize) * 4.0;
        const double scoreBytes = static_cast<double>(config.numHeads) * ctx * ctx * 4.0;
        batch = static_cast<int>(std::clamp(std::min(128e6 / logitBytes, 16e6 / scoreBytes), 1.0, 16.0));
        if (reference) // two models' log-probabilities are held at once
            batch = std::max(1, batch / 2);
    }

    const bool secondHalf = params.scoring == EvalScoring::SecondHalf;
    const auto windows = secondHalf ? planSecondHalfWindows(count, params.ctx) : planWindows(count, params.ctx, stride);
    if (windows.empty())
        return Error{"the text's " + std::to_string(count) + " tokens are fewer than the two chunks of " + std::to_string(params.ctx) +
                     " that second-half scoring needs"};
    // Windows of equal length share a batch (only the last one is usually shorter).
    std::map<std::int64_t, std::vector<std::size_t>, std::greater<>> byLength;
    for (std::size_t i = 0; i < windows.size(); ++i) byLength[windows[i].length].push_back(i);

    EvalResult result;
    result.ctx = params.ctx;
    result.stride = secondHalf ? params.ctx : stride;
    result.batch = batch;
    result.windows = static_cast<int>(windows.size());
    double nllSum = 0, referenceNllSum = 0, klSum = 0;
    std::int64_t sameTop1 = 0;
    std::vector<float> klValues;
    int done = 0;
    const auto startTime = std::chrono::steady_clock::now();
    for (const auto& [length, indices] : byLength) {
        for (std::size_t first = 0; first < indices.size(); first += static_cast<std::size_t>(batch)) {
            const std::size_t last = std::min(indices.size(), first + static_cast<std::size_t>(batch));
            std::vector<std::vector<std::int32_t>> inputs;
            for (std::size_t k = first; k < last; ++k) {
                const EvalWindow& w = windows[indices[k]];
                std::vector<std::int32_t> seq;
                seq.reserve(static_cast<std::size_t>(w.length + 1));
                seq.push_back(bosId);
                seq.insert(seq.end(), textTokens.begin() + w.start, textTokens.begin() + w.start + w.length);
                inputs.push_back(std::move(seq));
            }
            auto scores = scoreBatch(model, reference, inputs);
            if (!scores)
                return scores.error();
            for (std::size_t k = first; k < last; ++k) {
                const EvalWindow& w = windows[indices[k]];
                const auto& row = scores->nll[k - first]; // row[p] is the NLL of text token w.start + p
                for (std::int64_t t = w.scoreFrom; t < w.start + w.length; ++t) {
                    const auto p = static_cast<std::size_t>(t - w.start);
                    nllSum += row[p];
                    if (reference) {
                        referenceNllSum += scores->referenceNll[k - first][p];
                        klSum += scores->kl[k - first][p];
                        klValues.push_back(static_cast<float>(scores->kl[k - first][p]));
                        sameTop1 += scores->sameTop1[k - first][p];
                    }
                }
                result.tokensScored += w.start + w.length - w.scoreFrom;
                result.tokensProcessed += w.length + 1;
            }
            done += static_cast<int>(last - first);
            if (onProgress) {
                EvalProgress p;
                p.windowsDone = done;
                p.windowsTotal = result.windows;
                p.tokensScored = result.tokensScored;
                p.elapsedSeconds = secondsSince(startTime);
                p.perplexitySoFar = std::exp(nllSum / static_cast<double>(result.tokensScored));
                if (!onProgress(p))
                    return Error::cancelled();
            }
        }
    }
    result.elapsedSeconds = secondsSince(startTime);
    result.meanNll = nllSum / static_cast<double>(result.tokensScored);
    result.perplexity = std::exp(result.meanNll);
    result.tokensPerSecond = result.elapsedSeconds > 0 ? static_cast<double>(result.tokensProcessed) / result.elapsedSeconds : 0;
    if (reference) {
        DivergenceResult d;
        d.tokens = result.tokensScored;
        const double n = static_cast<double>(d.tokens);
        d.meanKl = klSum / n;
        d.top1Agreement = static_cast<double>(sameTop1) / n;
        d.referenceMeanNll = referenceNllSum / n;
        d.referencePerplexity = std::exp(d.referenceMeanNll);
        d.klMax = klValues.empty() ? 0 : *std::max_element(klValues.begin(), klValues.end());
        d.klP90 = quantile(klValues, 0.90);
        d.klP99 = quantile(klValues, 0.99);
        d.klP999 = quantile(klValues, 0.999);
        result.divergence = d;
    }
    return result;
}

} // namespace pocket
