// Text generation on a LlamaModel: greedy or sampled decoding (temperature, top-k, top-p,
// repetition penalty, seed) over a KV cache, token by token, cancellable, with a sliding context
// when the cache is full; and the comparison of two models' next-token distributions that the
// playground tints tokens by. No LibTorch here (the model does the forward passes).
#pragma once

#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace pocket {

struct SamplingParams {
    bool greedy = false;            // the most likely token (after the repetition penalty)
    float temperature = 0.8f;       // > 0
    int topK = 40;                  // keep the k most likely tokens (0 = all)
    float topP = 0.95f;             // keep the smallest set whose probability reaches p (1 = all)
    float repetitionPenalty = 1.0f; // > 1 lowers tokens of the last `repetitionWindow` (CTRL's rule, as llama.cpp)
    int repetitionWindow = 64;
    std::uint64_t seed = 0;         // same seed, same model, same prompt: same text
};

enum class ContextOverflow {
    Refuse, // a prompt longer than the context is an error; generation stops when the context is full
    Slide,  // keep BOS and the most recent half of the context, and go on
};

struct GenerateParams {
    int maxTokens = 128;       // tokens to generate at most
    SamplingParams sampling;
    bool stopAtEos = true;
    int context = 0;           // KV cache capacity in tokens (0: the model's maximum, at most 4096)
    ContextOverflow overflow = ContextOverflow::Slide;
    int topChoices = 5;        // the model's most likely tokens reported with each generated one
};

struct TokenChoice {
    std::int32_t id = 0;
    float probability = 0;
};

struct GeneratedToken {
    std::int32_t id = 0;
    int index = 0;                 // 0 for the first generated token
    float probability = 0;         // the model's probability of it (softmax of the raw logits)
    std::vector<TokenChoice> top;  // the model's most likely tokens at that step
};

// Picks tokens from logits by SamplingParams. Deterministic for a seed.
class TokenSampler {
public:
    explicit TokenSampler(const SamplingParams& params);
    // `history`: the tokens so far (for the repetition penalty).
    std::int32_t pick(std::vector<float> logits, const std::vector<std::int32_t>& history);

private:
    SamplingParams m_params;
    std::mt19937_64 m_rng;
};

// Checks sampling parameters; errors are Usage errors naming the setting.
Status checkSamplingParams(const SamplingParams& params);

// Softmax probabilities of logits (in double for the sum, returned as float).
std::vector<float> softmaxOf(const std::vector<float>& logits);
// The n most likely tokens, most likely first.
std::vector<TokenChoice> topChoices(const std::vector<float>& probabilities, int n);

// Generation step by step over one model (the playground interleaves several).
class Generator {
public:
    // Feeds the prompt (BOS included by the caller; at least one token). A prompt longer than the
    // context is refused or, with ContextOverflow::Slide, cut to BOS and its most recent part.
    static Result<std::unique_ptr<Generator>> start(const LlamaModel& model, std::vector<std::int32_t> prompt, const GenerateParams& params,
                                                    std::int32_t eosId, const std::atomic<bool>* cancel = nullptr);
    // The next token, or nullptr when generation is over (see stopReason()); errors (cancelled
    // included) end it too.
    Result<std::unique_ptr<GeneratedToken>> next();
    // The logits the last token was chosen from (before any penalty), vocabulary floats.
    const std::vector<float>& lastLogits() const { return m_chosenFrom; }
    // "eos", "max tokens", "context full", or "" while running.
    const std::string& stopReason() const { return m_stopReason; }
    const std::vector<std::int32_t>& tokens() const { return m_tokens; } // prompt (as fed) and generated
    int promptTokens() const { return m_promptTokens; }
    bool slid() const { return m_slid; } // the context was cut at least once
    double promptSeconds() const { return m_promptSeconds; }
    double generateSeconds() const { return m_generateSeconds; }

private:
    Generator(const LlamaModel& model, const GenerateParams& params, std::int32_t eosId, const std::atomic<bool>* cancel);
    Status slide(); // refeeds BOS and the most recent half of the context

    const LlamaModel& m_model;
    GenerateParams m_params;
    std::int32_t m_eosId;
    const std::atomic<bool>* m_cancel;
    std::unique_ptr<InferenceSession> m_session;
    TokenSampler m_sampler;
    std::vector<std::int32_t> m_tokens;
    std::vector<float> m_logits;     // of the next position
    std::vector<float> m_chosenFrom; // of the position the last token was chosen for
    int m_promptTokens = 0;
    int m_generated = 0;
    bool m_slid = false;
    std::string m_stopReason;
    double m_promptSeconds = 0, m_generateSeconds = 0;
};

struct GenerateResult {
    std::vector<std::int32_t> tokens; // generated only
    int promptTokens = 0;
    std::string stopReason;           // "eos", "max tokens", "context full", "stopped"
    bool slid = false;
    double promptSeconds = 0;
    double generateSeconds = 0;
    double tokensPerSecond = 0;       // generated tokens over generateSeconds
};

// Runs a Generator to the end; `onToken` sees each token as it comes (returning false stops,
// with stopReason "stopped").
Result<GenerateResult> generate(const LlamaModel& model, const std::vector<std::int32_t>& prompt, const GenerateParams& params,
                                std::int32_t eosId, const std::function<bool(const GeneratedToken&)>& onToken = {},
                                const std::atomic<bool>* cancel = nullptr);

// How a reference model (the original) sees a token another model chose at the same position.
struct TokenAgreement {
    float referenceProbability = 0; // the reference's probability of the token
    float probability = 0;          // the other model's
    double klDivergence = 0;        // KL(reference || other) of the two next-token distributions, nats
    bool sameTop = false;           // both models' most likely token is the same
    std::vector<TokenChoice> referenceTop;
};
TokenAgreement compareNextToken(const std::vector<float>& referenceLogits, const std::vector<float>& logits, std::int32_t token,
                                int topN = 5);

} // namespace pocket
