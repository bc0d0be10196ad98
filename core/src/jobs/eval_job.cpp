#include "pocket/jobs/eval_job.h"

#include "recorders.h"

#include "pocket/model/llama_model.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"

#include <spdlog/spdlog.h>

#include "pocket/support/timing.h"

#include <algorithm>

namespace pocket {

Result<EvalJobResult> runEvalJob(const EvalJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording,
                                 const std::function<bool(const EvalJobProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    auto ckpt = openModelOrArchive(params.modelPath, registry);
    if (!ckpt)
        return ckpt.error();
    const ModelConfig& config = (*ckpt)->config();
    EvalJobResult out;
    out.modelPath = (*ckpt)->path();
    out.tokenizerPath = params.tokenizerPath.empty() ? (*ckpt)->tokenizerPath() : params.tokenizerPath;
    if (out.tokenizerPath.empty())
        return Error{(*ckpt)->path() + ": no tokenizer found beside the model (tokenizer.model, tokenizer.json or tokenizer.bin), and none was given: pass one (or a .gguf that carries one)",
                     ErrorKind::Input, "tokenizer"};
    auto tokenizer = loadTokenizer(out.tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    if ((*tokenizer)->vocabSize() > config.vocabSize)
        return Error{out.tokenizerPath + ": the tokenizer has " + std::to_string((*tokenizer)->vocabSize()) +
                     " tokens but the model's vocabulary has only " + std::to_string(config.vocabSize) + " (wrong tokenizer for this model?)"};
    auto text = readTextFile(params.textPath);
    if (!text)
        return text.error();

    EvalParams evalParams = params.eval;
    if (evalParams.ctx <= 0)
        evalParams.ctx = static_cast<int>(std::min<std::int64_t>(2048, config.maxPositions));
    if (evalParams.ctx > config.maxPositions)
        spdlog::warn("ctx {} is longer than the model's max_position_embeddings {}: positions past it were never trained", evalParams.ctx,
                     config.maxPositions);

    const auto tokenizeStart = std::chrono::steady_clock::now();
    const std::vector<std::int32_t> tokens = (*tokenizer)->encode(*text);
    out.tokenizeSeconds = secondsSince(tokenizeStart);
    spdlog::debug("tokenized {} bytes into {} tokens in {:.2f} s", text->size(), tokens.size(), out.tokenizeSeconds);

    const auto loadStart = std::chrono::steady_clock::now();
    EvalJobProgress progress;
    auto runnable = loadRunnableModel(std::move(*ckpt), params.run, [&](int done, int total) {
        progress.tensorsLoaded = done;
        progress.tensorsTotal = total;
        return !onProgress || onProgress(progress);
    });
    if (!runnable)
        return runnable.error();
    const LlamaModel& model = *runnable->model;
    out.loadSeconds = secondsSince(loadStart);
    out.memory = model.memory();

    std::unique_ptr<EvalRecorder> recorder;
    if (recording && recording->enabled)
        recorder = std::make_unique<EvalRecorder>(*recording, *runnable->checkpoint, params.textPath, out.tokenizerPath, evalParams,
                                                  params.run.precision);
    progress.phase = EvalJobProgress::Phase::Evaluating;
    auto result = evaluatePerplexity(model, tokens, (*tokenizer)->bosId(), evalParams, [&](const EvalProgress& p) {
        if (recorder)
            recorder->begin();
        progress.eval = p;
        return !onProgress || onProgress(progress);
    });
    if (!result) {
        if (recorder)
            recorder->failed(result.error());
        if (result.kind() == ErrorKind::Usage || result.cancelled())
            return result.error();
        return result.error().prefixed(out.modelPath + " on " + params.textPath);
    }
    out.result = *result;
    if (recorder)
        out.runId = recorder->done(*result);
    out.totalSeconds = secondsSince(start);
    return out;
}

} // namespace pocket
