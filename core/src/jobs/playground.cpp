// The playground (see pocket/jobs/playground.h).
#include "pocket/jobs/playground.h"

#include "pocket/io/tokenizer.h"

#include <memory>

namespace pocket {

namespace {

struct Side {
    std::unique_ptr<Generator> generator;
    std::unique_ptr<IncrementalDecoder> stream;
    std::vector<std::int32_t> tokens;
    bool done = false;
};

// One token of `side`, or false when it has finished.
Result<bool> step(Side& side, PlaygroundToken& out)
{
    if (side.done)
        return false;
    auto token = side.generator->next();
    if (!token)
        return token.error();
    if (!*token) {
        side.done = true;
        return false;
    }
    out.index = (*token)->index;
    out.id = (*token)->id;
    out.probability = (*token)->probability;
    out.text = side.stream->push(out.id);
    side.tokens.push_back(out.id);
    return true;
}

} // namespace

// Long: the lockstep loop of the three passes (original, compressed, original on the compressed text).
Result<PlaygroundResult> runPlayground(const PlaygroundRequest& request, const MethodRegistry& registry,
                                       const std::function<void(const PlaygroundToken&)>& onToken,
                                       const std::function<void(PlaygroundPhase)>& onPhase, const std::atomic<bool>* cancel)
{
    const auto stopped = [&] { return cancel && cancel->load(); };
    const auto progress = [&](int, int) { return !stopped(); };
    if (onPhase)
        onPhase(PlaygroundPhase::LoadingOriginal);
    auto original = loadRunnableModel(request.originalPath, registry, request.originalRun, progress);
    if (!original)
        return original.error();
    if (onPhase)
        onPhase(PlaygroundPhase::LoadingCompressed);
    auto compressed = loadRunnableModel(request.compressedPath, registry, request.compressedRun, progress);
    if (!compressed)
        return compressed.error();
    if (compressed->model->config().vocabSize != original->model->config().vocabSize)
        return Error::usage(request.compressedPath + " has a vocabulary of " + std::to_string(compressed->model->config().vocabSize) +
                                " tokens, the original " + std::to_string(original->model->config().vocabSize) + ": not the same model",
                            "model");
    const std::string tokenizerPath = request.tokenizerPath.empty() ? original->checkpoint->tokenizerPath() : request.tokenizerPath;
    if (tokenizerPath.empty())
        return Error{request.originalPath + ": no tokenizer beside the model; choose one", ErrorKind::Input, "tokenizer"};
    auto tokenizer = loadTokenizer(tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    const Tokenizer& tok = **tokenizer;
    std::vector<std::int32_t> prompt{tok.bosId()};
    const std::vector<std::int32_t> text = tok.encode(request.prompt);
    prompt.insert(prompt.end(), text.begin(), text.end());

    if (onPhase)
        onPhase(PlaygroundPhase::Generating);
    Side a, b;
    // The judge follows the compressed model position by position: no sliding context.
    GenerateParams params = request.generate;
    params.overflow = ContextOverflow::Refuse;
    auto ga = Generator::start(*original->model, prompt, params, tok.eosId(), cancel);
    if (!ga)
        return ga.error();
    auto gb = Generator::start(*compressed->model, prompt, params, tok.eosId(), cancel);
    if (!gb)
        return gb.error();
    a.generator = std::move(*ga);
    b.generator = std::move(*gb);
    a.stream = std::make_unique<IncrementalDecoder>(tok, a.generator->tokens());
    b.stream = std::make_unique<IncrementalDecoder>(tok, b.generator->tokens());
    // The original reading the compressed model's text: its next-token logits at each position.
    auto judge = original->model->startSession(b.generator->promptTokens() + params.maxTokens + 1);
    if (!judge)
        return judge.error();
    const std::vector<std::int32_t>& fedPrompt = b.generator->tokens();
    auto judgeLogits = (*judge)->feed(fedPrompt, cancel);
    if (!judgeLogits)
        return judgeLogits.error();

    PlaygroundResult out;
    out.promptTokens = static_cast<int>(fedPrompt.size());
    double klSum = 0;
    const bool greedy = request.generate.sampling.greedy;
    while (!a.done || !b.done) {
        PlaygroundToken ta;
        ta.side = PlaygroundToken::Side::Original;
        auto ra = step(a, ta);
        if (!ra)
            return ra.error();
        if (*ra) {
            ta.piece = tok.decode({ta.id});
            if (onToken)
                onToken(ta);
        }
        PlaygroundToken tb;
        tb.side = PlaygroundToken::Side::Compressed;
        auto rb = step(b, tb);
        if (!rb)
            return rb.error();
        if (!*rb)
            continue;
        tb.piece = tok.decode({tb.id});
        tb.agreement = compareNextToken(*judgeLogits, b.generator->lastLogits(), tb.id);
        for (const TokenChoice& c : tb.agreement.referenceTop)
            tb.originalTop.emplace_back(tok.decode({c.id}), c.probability);
        klSum += tb.agreement.klDivergence;
        const std::size_t i = b.tokens.size() - 1;
        if (greedy && out.divergenceAt < 0 && (i >= a.tokens.size() || a.tokens[i] != tb.id)) {
            out.divergenceAt = static_cast<int>(i);
            tb.firstDivergence = true;
        }
        if (!b.done && (*judge)->position() < (*judge)->capacity()) {
            judgeLogits = (*judge)->feed({tb.id}, cancel);
            if (!judgeLogits)
                return judgeLogits.error();
        }
        if (onToken)
            onToken(tb);
    }
    out.original = a.tokens;
    out.compressed = b.tokens;
    out.originalText = a.stream->text();
    out.compressedText = b.stream->text();
    out.meanKl = b.tokens.empty() ? 0 : klSum / static_cast<double>(b.tokens.size());
    const auto rate = [](const Generator& g, std::size_t n) { return g.generateSeconds() > 0 ? static_cast<double>(n) / g.generateSeconds() : 0; };
    out.originalTokensPerSecond = rate(*a.generator, a.tokens.size());
    out.compressedTokensPerSecond = rate(*b.generator, b.tokens.size());
    out.originalMemory = original->model->memory();
    out.compressedMemory = compressed->model->memory();
    out.originalStop = a.generator->stopReason();
    out.compressedStop = b.generator->stopReason();
    return out;
}

} // namespace pocket
