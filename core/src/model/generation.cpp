// Text generation (see pocket/model/generation.h).
#include "pocket/model/generation.h"

#include "pocket/support/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace pocket {

Status checkSamplingParams(const SamplingParams& p)
{
    if (p.greedy)
        return {};
    if (!(p.temperature > 0) || !std::isfinite(p.temperature))
        return Error::usage("temperature must be above 0 (use greedy decoding for the most likely token)", "temperature");
    if (p.topK < 0)
        return Error::usage("top-k must be 0 (all tokens) or more", "top-k");
    if (!(p.topP > 0 && p.topP <= 1))
        return Error::usage("top-p must be in (0, 1]", "top-p");
    if (!(p.repetitionPenalty >= 1) || !std::isfinite(p.repetitionPenalty))
        return Error::usage("the repetition penalty must be 1 (off) or more", "repetition penalty");
    return {};
}

std::vector<float> softmaxOf(const std::vector<float>& logits)
{
    std::vector<float> p(logits.size());
    if (logits.empty())
        return p;
    const float top = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (std::size_t i = 0; i < logits.size(); ++i)
        sum += std::exp(static_cast<double>(logits[i]) - top);
    for (std::size_t i = 0; i < logits.size(); ++i)
        p[i] = static_cast<float>(std::exp(static_cast<double>(logits[i]) - top) / sum);
    return p;
}

std::vector<TokenChoice> topChoices(const std::vector<float>& probabilities, int n)
{
    const auto value = [&](std::int32_t i) {
        const float p = probabilities[static_cast<std::size_t>(i)];
        return std::isnan(p) ? -1.0f : p;
    };
    std::vector<std::int32_t> ids(probabilities.size());
    std::iota(ids.begin(), ids.end(), 0);
    const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(std::max(0, n)), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](std::int32_t a, std::int32_t b) { return value(a) > value(b) || (value(a) == value(b) && a < b); });
    std::vector<TokenChoice> out;
    for (std::size_t i = 0; i < k; ++i)
        out.push_back({ids[i], probabilities[static_cast<std::size_t>(ids[i])]});
    return out;
}

TokenSampler::TokenSampler(const SamplingParams& params) : m_params(params), m_rng(params.seed) {}

std::int32_t TokenSampler::pick(std::vector<float> logits, const std::vector<std::int32_t>& history)
{
    for (float& l : logits) // a NaN would break the orderings below
        if (std::isnan(l))
            l = -std::numeric_limits<float>::infinity();
    if (m_params.repetitionPenalty > 1) {
        std::unordered_set<std::int32_t> seen;
        const std::size_t from = history.size() > static_cast<std::size_t>(std::max(0, m_params.repetitionWindow))
                                     ? history.size() - static_cast<std::size_t>(m_params.repetitionWindow)
                                     : 0;
        for (std::size_t i = from; i < history.size(); ++i)
            if (history[i] >= 0 && static_cast<std::size_t>(history[i]) < logits.size() && seen.insert(history[i]).second) {
                float& l = logits[static_cast<std::size_t>(history[i])];
                l = l > 0 ? l / m_params.repetitionPenalty : l * m_params.repetitionPenalty;
            }
    }
    if (m_params.greedy)
        return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    // Candidates by logit, most likely first (ties by id), cut by top-k.
    std::vector<std::int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const auto better = [&](std::int32_t a, std::int32_t b) {
        return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
               (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
    };
    std::size_t k = m_params.topK > 0 ? std::min<std::size_t>(static_cast<std::size_t>(m_params.topK), ids.size()) : ids.size();
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), better);
    ids.resize(k);
    // Temperature, then top-p over the tempered distribution.
    std::vector<double> p(k);
    const double top = logits[static_cast<std::size_t>(ids[0])];
    double sum = 0;
    for (std::size_t i = 0; i < k; ++i)
        sum += p[i] = std::exp((logits[static_cast<std::size_t>(ids[i])] - top) / m_params.temperature);
    double kept = 0;
    std::size_t n = 0;
    while (n < k && (n == 0 || kept < m_params.topP * sum))
        kept += p[n++];
    std::uniform_real_distribution<double> uniform(0.0, kept);
    double r = uniform(m_rng);
    for (std::size_t i = 0; i < n; ++i) {
        if (r < p[i])
            return ids[i];
        r -= p[i];
    }
    return ids[n - 1];
}

Generator::Generator(const LlamaModel& model, const GenerateParams& params, std::int32_t eosId, const std::atomic<bool>* cancel)
    : m_model(model), m_params(params), m_eosId(eosId), m_cancel(cancel), m_sampler(params.sampling)
{
}

Result<std::unique_ptr<Generator>> Generator::start(const LlamaModel& model, std::vector<std::int32_t> prompt, const GenerateParams& params,
                                                    std::int32_t eosId, const std::atomic<bool>* cancel)
{
    POCKET_TRY(checkSamplingParams(params.sampling));
    if (prompt.empty())
        return Error::usage("the prompt has no tokens (give at least BOS)", "prompt");
    if (params.maxTokens < 0)
        return Error::usage("max tokens must be 0 or more", "max tokens");
    const int context = params.context > 0 ? params.context : static_cast<int>(std::min<std::int64_t>(4096, model.config().maxPositions));
    std::unique_ptr<Generator> g(new Generator(model, params, eosId, cancel));
    auto session = model.startSession(context);
    if (!session)
        return session.error();
    g->m_session = std::move(*session);
    const auto capacity = static_cast<std::size_t>(g->m_session->capacity());
    if (prompt.size() >= capacity) {
        if (params.overflow == ContextOverflow::Refuse)
            return Error::usage("the prompt has " + std::to_string(prompt.size()) + " tokens; the context holds " + std::to_string(capacity) +
                                    " (shorten the prompt, raise the context, or let it slide)",
                                "prompt");
        std::vector<std::int32_t> cut{prompt.front()};
        cut.insert(cut.end(), prompt.end() - static_cast<std::ptrdiff_t>(capacity / 2), prompt.end());
        prompt = std::move(cut);
        g->m_slid = true;
    }
    const auto begin = std::chrono::steady_clock::now();
    auto logits = g->m_session->feed(prompt, cancel);
    if (!logits)
        return logits.error();
    g->m_promptSeconds = secondsSince(begin);
    g->m_logits = std::move(*logits);
    g->m_tokens = std::move(prompt);
    g->m_promptTokens = static_cast<int>(g->m_tokens.size());
    return g;
}

Status Generator::slide()
{
    const auto keep = static_cast<std::size_t>(m_session->capacity() / 2);
    std::vector<std::int32_t> window{m_tokens.front()};
    window.insert(window.end(), m_tokens.end() - static_cast<std::ptrdiff_t>(std::min(keep, m_tokens.size() - 1)), m_tokens.end());
    m_session->reset();
    // The last token is fed by next() as usual.
    window.pop_back();
    if (!window.empty()) {
        auto logits = m_session->feed(window, m_cancel);
        if (!logits)
            return logits.error();
    }
    m_slid = true;
    return {};
}

Result<std::unique_ptr<GeneratedToken>> Generator::next()
{
    if (!m_stopReason.empty())
        return std::unique_ptr<GeneratedToken>();
    if (m_generated >= m_params.maxTokens) {
        m_stopReason = "max tokens";
        return std::unique_ptr<GeneratedToken>();
    }
    const auto begin = std::chrono::steady_clock::now();
    auto token = std::make_unique<GeneratedToken>();
    token->id = m_sampler.pick(m_logits, m_tokens);
    token->index = m_generated++;
    const std::vector<float> probs = softmaxOf(m_logits);
    token->probability = probs[static_cast<std::size_t>(token->id)];
    token->top = topChoices(probs, m_params.topChoices);
    m_tokens.push_back(token->id);
    m_chosenFrom = m_logits;
    if (m_params.stopAtEos && token->id == m_eosId) {
        m_stopReason = "eos";
    } else if (m_generated < m_params.maxTokens) {
        // Run the new token now, so the next call has its logits.
        if (m_session->position() >= m_session->capacity()) {
            if (m_params.overflow == ContextOverflow::Refuse) {
                m_stopReason = "context full";
                m_generateSeconds += secondsSince(begin);
                return token;
            }
            if (auto slid = slide(); !slid) {
                m_stopReason = "error";
                return slid.error();
            }
        }
        auto logits = m_session->feed({token->id}, m_cancel);
        if (!logits) {
            m_stopReason = logits.cancelled() ? "cancelled" : "error"; // the session was reset: no going on
            return logits.error();
        }
        m_logits = std::move(*logits);
    }
    m_generateSeconds += secondsSince(begin);
    return token;
}

Result<GenerateResult> generate(const LlamaModel& model, const std::vector<std::int32_t>& prompt, const GenerateParams& params,
                                std::int32_t eosId, const std::function<bool(const GeneratedToken&)>& onToken,
                                const std::atomic<bool>* cancel)
{
    auto gen = Generator::start(model, prompt, params, eosId, cancel);
    if (!gen)
        return gen.error();
    GenerateResult out;
    out.promptTokens = (*gen)->promptTokens();
    for (;;) {
        auto token = (*gen)->next();
        if (!token)
            return token.error();
        if (!*token)
            break;
        out.tokens.push_back((*token)->id);
        if (onToken && !onToken(**token)) {
            out.stopReason = "stopped";
            break;
        }
    }
    if (out.stopReason.empty())
        out.stopReason = (*gen)->stopReason();
    out.slid = (*gen)->slid();
    out.promptSeconds = (*gen)->promptSeconds();
    out.generateSeconds = (*gen)->generateSeconds();
    out.tokensPerSecond = out.generateSeconds > 0 ? static_cast<double>(out.tokens.size()) / out.generateSeconds : 0;
    return out;
}

TokenAgreement compareNextToken(const std::vector<float>& referenceLogits, const std::vector<float>& logits, std::int32_t token, int topN)
{
    TokenAgreement a;
    const std::vector<float> p = softmaxOf(referenceLogits), q = softmaxOf(logits);
    const std::size_t n = std::min(p.size(), q.size());
    if (token >= 0 && static_cast<std::size_t>(token) < n) {
        a.referenceProbability = p[static_cast<std::size_t>(token)];
        a.probability = q[static_cast<std::size_t>(token)];
    }
    double kl = 0;
    for (std::size_t i = 0; i < n; ++i)
        if (p[i] > 0)
            kl += static_cast<double>(p[i]) * (std::log(static_cast<double>(p[i])) - std::log(std::max(static_cast<double>(q[i]), 1e-30)));
    a.klDivergence = std::max(0.0, kl);
    a.referenceTop = topChoices(p, topN);
    const std::vector<TokenChoice> otherTop = topChoices(q, 1);
    a.sameTop = !a.referenceTop.empty() && !otherTop.empty() && a.referenceTop[0].id == otherTop[0].id;
    return a;
}

} // namespace pocket
