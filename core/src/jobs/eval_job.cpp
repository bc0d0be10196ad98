#include "pocket/jobs/eval_job.h"

#include "recorders.h"

#include "pocket/model/llama_model.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"

#include <spdlog/spdlog.h>

#include "pocket/support/app_paths.h"
#include "pocket/support/timing.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

namespace pocket {

namespace {

// A model file opened (not loaded) with the tokenizer it is run with.
struct OpenedModel {
    std::unique_ptr<Checkpoint> checkpoint;
    std::string tokenizerPath;
    std::unique_ptr<Tokenizer> tokenizer;
};

Result<OpenedModel> openWithTokenizer(const std::string& modelPath, const std::string& tokenizerPath, const MethodRegistry& registry)
{
    auto ckpt = openModelOrArchive(modelPath, registry);
    if (!ckpt)
        return ckpt.error();
    OpenedModel out;
    out.checkpoint = std::move(*ckpt);
    const ModelConfig& config = out.checkpoint->config();
    out.tokenizerPath = tokenizerPath.empty() ? out.checkpoint->tokenizerPath() : tokenizerPath;
    if (out.tokenizerPath.empty())
        return Error{out.checkpoint->path() + ": no tokenizer found beside the model (tokenizer.model, tokenizer.json or tokenizer.bin), and none was given: pass one (or a .gguf that carries one)",
                     ErrorKind::Input, "tokenizer"};
    auto tokenizer = loadTokenizer(out.tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    if ((*tokenizer)->vocabSize() > config.vocabSize)
        return Error{out.tokenizerPath + ": the tokenizer has " + std::to_string((*tokenizer)->vocabSize()) +
                     " tokens but the model's vocabulary has only " + std::to_string(config.vocabSize) + " (wrong tokenizer for this model?)"};
    out.tokenizer = std::move(*tokenizer);
    return out;
}

} // namespace

// Long: open, tokenize, load (and the reference), evaluate, record, each with its own errors.
Result<EvalJobResult> runEvalJob(const EvalJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording,
                                 const std::function<bool(const EvalJobProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    auto opened = openWithTokenizer(params.modelPath, params.tokenizerPath, registry);
    if (!opened)
        return opened.error();
    std::unique_ptr<Checkpoint> ckpt = std::move(opened->checkpoint);
    const std::unique_ptr<Tokenizer>& tokenizer = opened->tokenizer;
    const ModelConfig& config = ckpt->config();
    EvalJobResult out;
    out.modelPath = ckpt->path();
    out.tokenizerPath = opened->tokenizerPath;
    std::unique_ptr<Checkpoint> referenceCkpt;
    if (!params.referencePath.empty()) {
        auto ref = openModelOrArchive(params.referencePath, registry);
        if (!ref)
            return ref.error();
        if ((*ref)->config().vocabSize != config.vocabSize)
            return Error::usage(params.referencePath + ": the reference model's vocabulary (" + std::to_string((*ref)->config().vocabSize) +
                                    ") differs from " + out.modelPath + "'s (" + std::to_string(config.vocabSize) + "): not the same model family",
                                "reference");
        referenceCkpt = std::move(*ref);
        out.referencePath = referenceCkpt->path();
    }
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
    const std::vector<std::int32_t> tokens = tokenizer->encode(*text);
    out.tokenizeSeconds = secondsSince(tokenizeStart);
    spdlog::debug("tokenized {} bytes into {} tokens in {:.2f} s", text->size(), tokens.size(), out.tokenizeSeconds);

    const auto loadStart = std::chrono::steady_clock::now();
    EvalJobProgress progress;
    const auto onTensor = [&](int done, int total) {
        progress.tensorsLoaded = done;
        progress.tensorsTotal = total;
        return !onProgress || onProgress(progress);
    };
    auto runnable = loadRunnableModel(std::move(ckpt), params.run, onTensor);
    if (!runnable)
        return runnable.error();
    const LlamaModel& model = *runnable->model;
    std::optional<RunnableModel> reference;
    if (referenceCkpt) {
        auto loaded = loadRunnableModel(std::move(referenceCkpt), RunOptions{}, onTensor);
        if (!loaded)
            return loaded.error();
        reference = std::move(*loaded);
    }
    out.loadSeconds = secondsSince(loadStart);
    out.memory = model.memory();

    std::unique_ptr<EvalRecorder> recorder;
    if (recording && recording->enabled)
        recorder = std::make_unique<EvalRecorder>(*recording, *runnable->checkpoint, params.textPath, out.tokenizerPath, evalParams,
                                                  params.run.precision, out.referencePath);
    progress.phase = EvalJobProgress::Phase::Evaluating;
    auto result = evaluatePerplexity(
        model, tokens, tokenizer->bosId(), evalParams,
        [&](const EvalProgress& p) {
            if (recorder)
                recorder->begin();
            progress.eval = p;
            return !onProgress || onProgress(progress);
        },
        reference ? reference->model.get() : nullptr);
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

namespace {

std::string zeroShotParamsJson(const ZeroShotJobParams& p, const std::string& tokenizerPath)
{
    nlohmann::ordered_json tasks = nlohmann::ordered_json::array();
    for (const auto& t : p.tasks) tasks.push_back({{"task", zeroShotTaskName(t.task)}, {"file", absolutePath(t.path)}});
    nlohmann::ordered_json j{{"zero_shot", tasks},
                             {"limit", p.limit},
                             {"batch", p.zeroShot.batch},
                             {"add_bos", p.zeroShot.addBos},
                             {"max_length", p.zeroShot.maxLength},
                             {"tokenizer", tokenizerPath}};
    if (p.run.precision != ComputePrecision::F32)
        j["precision"] = computePrecisionName(p.run.precision);
    return j.dump();
}

// The dataset name of the tasks' mean: the published tables' "zero-shot-5" (WinoGrande, PIQA,
// HellaSwag, ARC-e, ARC-c) when those are the tasks, else "zero-shot:" and the task names.
std::string averageName(const std::vector<ZeroShotJobTask>& tasks)
{
    std::set<ZeroShotTask> set;
    std::string names;
    for (const auto& t : tasks) {
        set.insert(t.task);
        names += (names.empty() ? "" : ",") + std::string(zeroShotTaskName(t.task));
    }
    const std::set<ZeroShotTask> five{ZeroShotTask::WinoGrande, ZeroShotTask::Piqa, ZeroShotTask::HellaSwag, ZeroShotTask::ArcEasy,
                                      ZeroShotTask::ArcChallenge};
    return set == five && tasks.size() == 5 ? "zero-shot-5" : "zero-shot:" + names;
}

} // namespace

std::vector<ZeroShotJobTask> bundledZeroShotTasks()
{
    namespace fs = std::filesystem;
    std::vector<ZeroShotJobTask> out;
    const std::string resources = resourcesDir();
    std::error_code ec;
    const fs::path dir = fs::path(resources) / "eval" / "zeroshot";
    if (resources.empty() || !fs::is_directory(dir, ec))
        return out;
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().extension() == ".jsonl")
            files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (const auto& f : files)
        if (auto task = parseZeroShotTask(f))
            out.push_back({*task, f});
    return out;
}

// Long: read every task, open and load the model, score task by task, record per-task rows.
Result<ZeroShotJobResult> runZeroShotJob(const ZeroShotJobParams& params, const MethodRegistry& registry, const RecorderOptions* recording,
                                         const std::function<bool(const ZeroShotJobProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    if (params.tasks.empty())
        return Error::usage("no zero-shot task given", "tasks");
    if (params.limit < 0)
        return Error::usage("limit must not be negative", "limit");
    std::vector<std::vector<ZeroShotItem>> items;
    for (const auto& t : params.tasks) {
        auto loaded = loadZeroShotTask(t.task, t.path, params.limit);
        if (!loaded)
            return loaded.error();
        items.push_back(std::move(*loaded));
    }
    auto opened = openWithTokenizer(params.modelPath, params.tokenizerPath, registry);
    if (!opened)
        return opened.error();
    ZeroShotJobResult out;
    out.modelPath = opened->checkpoint->path();
    out.tokenizerPath = opened->tokenizerPath;
    out.averageName = averageName(params.tasks);
    const auto loadStart = std::chrono::steady_clock::now();
    ZeroShotJobProgress progress;
    auto runnable = loadRunnableModel(std::move(opened->checkpoint), params.run, [&](int done, int total) {
        progress.tensorsLoaded = done;
        progress.tensorsTotal = total;
        return !onProgress || onProgress(progress);
    });
    if (!runnable)
        return runnable.error();
    out.loadSeconds = secondsSince(loadStart);
    std::unique_ptr<EvalRecorder> recorder;
    if (recording && recording->enabled)
        recorder = std::make_unique<EvalRecorder>(*recording, *runnable->checkpoint, zeroShotParamsJson(params, out.tokenizerPath));
    progress.phase = ZeroShotJobProgress::Phase::Scoring;
    std::vector<EvalRecorder::DatasetResult> rows;
    double accSum = 0;
    for (std::size_t i = 0; i < params.tasks.size(); ++i) {
        progress.taskIndex = static_cast<int>(i);
        auto r = evaluateZeroShot(*runnable->model, *opened->tokenizer, params.tasks[i].task, items[i], params.zeroShot,
                                  [&](const ZeroShotProgress& p) {
                                      if (recorder)
                                          recorder->begin();
                                      progress.scoring = p;
                                      return !onProgress || onProgress(progress);
                                  });
        if (!r) {
            if (recorder)
                recorder->failed(r.error());
            if (r.kind() == ErrorKind::Usage || r.cancelled())
                return r.error();
            return r.error().prefixed(out.modelPath + " on " + params.tasks[i].path);
        }
        const std::string name = zeroShotTaskName(r->task);
        auto row = [&](const char* metric, double value) {
            RunResult result;
            result.metric = metric;
            result.value = value;
            result.tokens = r->tokens;
            rows.push_back({name, params.tasks[i].path, result});
        };
        row("accuracy", 100 * r->acc);
        row("accuracy_stderr", 100 * r->accStderr);
        if (zeroShotHasAccNorm(r->task)) {
            row("accuracy_norm", 100 * r->accNorm);
            row("accuracy_norm_stderr", 100 * r->accNormStderr);
        }
        accSum += r->acc;
        out.tasks.push_back(std::move(*r));
    }
    out.meanAcc = accSum / static_cast<double>(out.tasks.size());
    RunResult mean;
    mean.metric = "accuracy_avg";
    mean.value = 100 * out.meanAcc;
    rows.push_back({out.averageName, "", mean});
    if (recorder)
        out.runId = recorder->done(rows);
    out.totalSeconds = secondsSince(start);
    return out;
}

} // namespace pocket
