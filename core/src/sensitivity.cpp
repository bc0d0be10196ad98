#include "pocket/sensitivity.h"

#include "pocket/app_paths.h"
#include "pocket/archive.h"
#include "pocket/checkpoint.h"
#include "pocket/dtype.h"
#include "pocket/experiment_store.h"
#include "pocket/llama_model.h"
#include "pocket/text.h"
#include "pocket/tokenizer.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

namespace pocket {

namespace {

using json = nlohmann::ordered_json;

double secondsSince(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// log-softmax of one row of logits, in double for the sum.
void logSoftmax(const float* logits, std::int64_t n, float* out)
{
    double maxValue = -INFINITY;
    for (std::int64_t i = 0; i < n; ++i)
        maxValue = std::max<double>(maxValue, logits[i]);
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i)
        sum += std::exp(static_cast<double>(logits[i]) - maxValue);
    const double logZ = maxValue + std::log(sum);
    for (std::int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(logits[i] - logZ);
}

std::int64_t argmax(const float* v, std::int64_t n) { return std::max_element(v, v + n) - v; }

// Records a sensitivity run: the model, the settings, then each unit's matrices as they finish.
class SensitivityRecorder : public RunRecorder {
public:
    SensitivityRecorder(RecorderOptions options, const Checkpoint& checkpoint, const SensitivityParams& params, std::string paramsJson)
        : RunRecorder(std::move(options)),
          m_checkpoint(checkpoint),
          m_params(params),
          m_paramsJson(std::move(paramsJson))
    {
    }

    void addUnit(const UnitSensitivity& u, const std::vector<MatrixMetric>& matrices)
    {
        begin();
        if (!m_store || m_runId == 0)
            return;
        std::vector<MatrixMetric> rows = matrices;
        for (MatrixMetric& m : rows) {
            m.groupId = u.unit;
            m.sensitivity = u.klMean;
            m.deltaPerplexity = u.deltaPerplexity;
            m.top1Agreement = u.top1Agreement;
        }
        if (auto s = m_store->addMatrixMetrics(m_runId, rows); !s)
            disable(s.message());
    }

    std::int64_t done(const SensitivityResult& r, std::int64_t bitsWeights, double bitsTotal)
    {
        begin();
        m_finished = true;
        if (!m_store || m_runId == 0)
            return 0;
        auto hash = fileFingerprint(m_params.textPath);
        if (!hash)
            return disable(hash.message());
        auto dataset = m_store->upsertDataset({0, displayName(m_params.textPath), "", *hash, absolutePath(m_params.textPath)});
        if (!dataset)
            return disable(dataset.message());
        RunResult base;
        base.metric = "perplexity";
        base.datasetId = *dataset;
        base.ctx = m_params.ctx;
        base.value = r.basePerplexity;
        base.tokens = r.tokensScored;
        if (auto s = m_store->addResult(m_runId, base); !s)
            return disable(s.message());
        RunFinish f;
        f.status = RunStatus::Done;
        f.wallSeconds = r.seconds;
        f.peakRssMb = peakRssMb();
        if (bitsWeights > 0)
            f.bpwCompressed = bitsTotal / static_cast<double>(bitsWeights);
        if (auto s = m_store->finishRun(m_runId, f); !s)
            return disable(s.message());
        return m_runId;
    }

    void failed(const std::string& error) { markEnded(endStatusOf(error), error); }

protected:
    Result<std::int64_t> insertRun(ExperimentStore& store) override
    {
        auto modelId = upsertModelOf(store, m_checkpoint);
        if (!modelId)
            return modelId.error();
        RunStart start;
        start.kind = RunKind::Sensitivity;
        start.method = m_params.methodId;
        start.paramsJson = m_paramsJson;
        start.modelId = *modelId;
        start.selectionJson = layerSelectionJson(m_params.selection);
        start.notes = m_options.notes;
        return store.beginRun(start);
    }

private:
    const Checkpoint& m_checkpoint;
    SensitivityParams m_params;
    std::string m_paramsJson;
};

struct Unit {
    std::string name;
    std::vector<MatrixRef> matrices;
};

} // namespace

const char* sensitivityUnitName(SensitivityUnit unit)
{
    switch (unit) {
    case SensitivityUnit::Matrix: return "matrix";
    case SensitivityUnit::Block: return "block";
    case SensitivityUnit::Type: return "type";
    }
    return "matrix";
}

std::optional<SensitivityUnit> parseSensitivityUnit(const std::string& name)
{
    for (SensitivityUnit u : {SensitivityUnit::Matrix, SensitivityUnit::Block, SensitivityUnit::Type})
        if (name == sensitivityUnitName(u))
            return u;
    return std::nullopt;
}

Result<SensitivityResult> runSensitivity(const SensitivityParams& params, MethodRegistry& registry, const RecorderOptions* recording,
                                         const std::function<bool(const SensitivityProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    if (isPllmFile(params.modelPath))
        return Error{params.modelPath + ": sensitivity needs the original model, not a compressed archive"};
    if (params.ctx < 2)
        return Error{"--ctx must be at least 2"};
    if (params.windows < 1)
        return Error{"--windows must be at least 1"};
    auto found = registry.find(params.methodId);
    if (!found)
        return found.error();
    CompressionMethod& method = **found;
    auto resolved = ParamSet::resolve(method.info().params, params.settings);
    if (!resolved)
        return resolved.error();
    if (method.needsCalibration(*resolved))
        return Error{"--method " + params.methodId + ": these settings need calibration data, which sensitivity runs do not collect yet; "
                     "use a method without it (rtn, vq, pocketllm)"};

    auto ckpt = openCheckpoint(params.modelPath);
    if (!ckpt)
        return ckpt.error();
    const Checkpoint& c = **ckpt;
    const std::string tokenizerPath = params.tokenizerPath.empty() ? c.tokenizerPath() : params.tokenizerPath;
    if (tokenizerPath.empty())
        return Error{c.path() + ": no tokenizer found beside the model (tokenizer.model or tokenizer.bin); pass --tokenizer"};
    auto tokenizer = loadTokenizer(tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    auto text = readTextFile(params.textPath);
    if (!text)
        return text.error();
    const std::vector<std::int32_t> tokens = (*tokenizer)->encode(*text);

    // Units, in model order.
    auto names = params.selection.select(c.config());
    if (!names)
        return names.error();
    if (names->empty())
        return Error{"the layer selection matches no matrix of " + c.path()};
    std::vector<Unit> units;
    std::map<std::string, std::size_t> unitIndex;
    for (int layer = 0; layer < c.config().numLayers; ++layer)
        for (const MatrixType type : kMatrixTypes) {
            const std::string name = matrixTensorName(layer, type);
            if (std::find(names->begin(), names->end(), name) == names->end())
                continue;
            const TensorInfo* info = c.find(name);
            if (!info || info->shape.size() != 2)
                return Error{c.path() + ": " + name + " is not a matrix"};
            const MatrixRef ref{name, layer, type, info->shape[0], info->shape[1]};
            std::string key = name;
            if (params.unit == SensitivityUnit::Block)
                key = "block " + std::to_string(layer);
            else if (params.unit == SensitivityUnit::Type)
                key = matrixTypeName(type);
            auto [it, inserted] = unitIndex.emplace(key, units.size());
            if (inserted)
                units.push_back({key, {}});
            units[it->second].matrices.push_back(ref);
        }
    if (params.unit == SensitivityUnit::Type) // q k v o gate up down, not first-seen order
        std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) { return a.matrices[0].type < b.matrices[0].type; });

    // Windows of the text's start, each BOS + ctx-1 tokens; ctx-1 predictions scored per window.
    const std::int64_t vocab = c.config().vocabSize;
    const std::int64_t perWindow = params.ctx - 1;
    int windows = static_cast<int>(std::min<std::int64_t>(params.windows, static_cast<std::int64_t>(tokens.size()) / perWindow));
    if (windows < 1)
        return Error{params.textPath + ": too short for one window of " + std::to_string(params.ctx) + " tokens (" +
                     std::to_string(tokens.size()) + " tokens)"};
    const std::uint64_t bytesPerWindow = static_cast<std::uint64_t>(perWindow * vocab) * sizeof(float);
    if (static_cast<std::uint64_t>(windows) * bytesPerWindow > params.maxCacheBytes) {
        const int fit = std::max<int>(1, static_cast<int>(params.maxCacheBytes / bytesPerWindow));
        spdlog::warn("sensitivity: caching {} windows of log-probabilities would take {} MiB; using {} windows", windows,
                     windows * bytesPerWindow >> 20, fit);
        windows = fit;
    }
    std::vector<std::vector<std::int32_t>> inputs(static_cast<std::size_t>(windows));
    for (int w = 0; w < windows; ++w) {
        inputs[w].push_back((*tokenizer)->bosId());
        inputs[w].insert(inputs[w].end(), tokens.begin() + w * perWindow, tokens.begin() + (w + 1) * perWindow);
    }
    const auto targetOf = [&](int w, std::int64_t pos) { return tokens[static_cast<std::size_t>(w * perWindow + pos)]; };

    auto model = LlamaModel::load(c);
    if (!model)
        return model.error();

    SensitivityResult result;
    result.windows = windows;
    result.tokensScored = windows * perWindow;
    // The uncompressed model's log-probabilities, once.
    std::vector<float> baseLogp(static_cast<std::size_t>(windows) * perWindow * vocab);
    std::vector<std::int32_t> baseTop(static_cast<std::size_t>(windows) * perWindow);
    double baseNll = 0;
    for (int w = 0; w < windows; ++w) {
        auto logits = (*model)->logits(inputs[w]);
        if (!logits)
            return logits.error();
        for (std::int64_t p = 0; p < perWindow; ++p) {
            float* row = baseLogp.data() + (w * perWindow + p) * vocab;
            logSoftmax(logits->data() + p * vocab, vocab, row);
            baseNll -= row[targetOf(w, p)];
            baseTop[w * perWindow + p] = static_cast<std::int32_t>(argmax(row, vocab));
        }
    }
    result.basePerplexity = std::exp(baseNll / static_cast<double>(result.tokensScored));

    json paramsJson{{"settings", params.settings}, {"method_params", json::parse(resolved->toJson(method.info().params))},
                    {"unit", sensitivityUnitName(params.unit)}, {"ctx", params.ctx}, {"windows", windows},
                    {"text", absolutePath(params.textPath)}, {"tokenizer", tokenizerPath}};
    std::unique_ptr<SensitivityRecorder> recorder;
    if (recording && recording->enabled)
        recorder = std::make_unique<SensitivityRecorder>(*recording, c, params, paramsJson.dump());

    SensitivityProgress progress;
    progress.unitCount = static_cast<int>(units.size());
    progress.basePerplexity = result.basePerplexity;
    const auto cancelled = [&]() -> Error {
        if (recorder)
            recorder->failed("cancelled");
        return Error{"cancelled"};
    };
    if (recorder)
        recorder->begin();
    if (onProgress && !onProgress(progress))
        return cancelled();

    std::int64_t allWeights = 0;
    double allBits = 0;
    std::vector<float> logp(static_cast<std::size_t>(vocab));
    for (const Unit& unit : units) {
        const auto unitStart = std::chrono::steady_clock::now();
        UnitSensitivity u;
        u.unit = unit.name;
        auto groups = method.planGroups(unit.matrices, *resolved);
        if (!groups)
            return groups.error();
        std::map<std::string, std::vector<float>> originals;
        std::vector<MatrixMetric> metrics;
        double bits = 0, mseSum = 0, snrSum = 0;
        for (std::size_t g = 0; g < groups->size(); ++g) {
            MatrixGroup group;
            group.id = unit.name + (groups->size() > 1 ? "#" + std::to_string(g) : std::string());
            for (const MatrixRef& ref : (*groups)[g]) {
                auto data = c.load(ref.name);
                if (!data)
                    return data.error();
                group.matrices.push_back({ref, data->toFloat(), {}});
                originals[ref.name] = group.matrices.back().values;
            }
            CompressContext context;
            context.threads = computeThreads();
            auto payload = method.compress(group, *resolved, context);
            if (!payload)
                return Error{unit.name + ": " + payload.message()};
            auto decoded = method.decode(*payload);
            if (!decoded)
                return Error{unit.name + ": " + decoded.message()};
            std::int64_t groupWeights = 0;
            for (const auto& m : payload->matrices)
                groupWeights += m.ref.weights();
            for (std::size_t i = 0; i < payload->matrices.size(); ++i) {
                const MatrixResult& m = payload->matrices[i];
                const double bpw = matrixBitsPerWeight(m.ref, m.bits, payload->sharedBits, groupWeights);
                bits += bpw * static_cast<double>(m.ref.weights());
                mseSum += m.mse * static_cast<double>(m.ref.weights());
                snrSum += m.snrDb;
                u.weights += m.ref.weights();
                u.matrices.push_back(m.ref.name);
                metrics.push_back({m.ref.name, unit.name, m.ref.rows, m.ref.cols, m.mse, m.snrDb, bpw, std::nullopt, std::nullopt, std::nullopt});
                if (auto s = (*model)->setWeight(m.ref.name, (*decoded)[i]); !s)
                    return s.error();
            }
        }
        u.bpw = u.weights > 0 ? bits / static_cast<double>(u.weights) : 0;
        u.mse = u.weights > 0 ? mseSum / static_cast<double>(u.weights) : 0;
        u.snrDb = metrics.empty() ? 0 : snrSum / static_cast<double>(metrics.size());
        allWeights += u.weights;
        allBits += bits;

        double nll = 0, kl = 0;
        std::int64_t agree = 0;
        for (int w = 0; w < windows; ++w) {
            auto logits = (*model)->logits(inputs[w]);
            if (!logits)
                return logits.error();
            for (std::int64_t p = 0; p < perWindow; ++p) {
                logSoftmax(logits->data() + p * vocab, vocab, logp.data());
                const float* base = baseLogp.data() + (w * perWindow + p) * vocab;
                double k = 0;
                for (std::int64_t v = 0; v < vocab; ++v)
                    k += std::exp(static_cast<double>(base[v])) * (static_cast<double>(base[v]) - logp[v]);
                kl += std::max(0.0, k);
                nll -= logp[targetOf(w, p)];
                agree += argmax(logp.data(), vocab) == baseTop[w * perWindow + p];
            }
        }
        for (const auto& [name, values] : originals) // back to the exact model for the next unit
            if (auto s = (*model)->setWeight(name, values); !s)
                return s.error();
        const double n = static_cast<double>(result.tokensScored);
        u.perplexity = std::exp(nll / n);
        u.deltaPerplexity = u.perplexity - result.basePerplexity;
        u.klMean = kl / n;
        u.top1Agreement = static_cast<double>(agree) / n;
        u.seconds = secondsSince(unitStart);
        result.units.push_back(u);
        if (recorder)
            recorder->addUnit(u, metrics);

        progress.unitsDone = static_cast<int>(result.units.size());
        progress.elapsedSeconds = secondsSince(start);
        progress.etaSeconds = progress.elapsedSeconds / progress.unitsDone * (progress.unitCount - progress.unitsDone);
        progress.latest = &result.units.back();
        if (onProgress && !onProgress(progress))
            return cancelled();
    }
    result.seconds = secondsSince(start);
    if (recorder)
        result.runId = recorder->done(result, allWeights, allBits);
    return result;
}

Result<AllocationResult> planBitAllocation(const AllocationRequest& request, MethodRegistry& registry, const RecorderOptions* recording,
                                           const std::function<bool(const AllocationProgress&)>& onProgress)
{
    if (request.menu.empty())
        return Error{"--menu: give at least one setting to choose from"};
    AllocationResult out;
    AllocationProgress progress;
    progress.optionCount = static_cast<int>(request.menu.size());
    for (std::size_t k = 0; k < request.menu.size(); ++k) {
        SensitivityParams p = request.base;
        p.unit = SensitivityUnit::Matrix;
        p.settings.insert(p.settings.end(), request.menu[k].begin(), request.menu[k].end());
        progress.option = static_cast<int>(k);
        auto r = runSensitivity(p, registry, recording, [&](const SensitivityProgress& s) {
            progress.sensitivity = s;
            return !onProgress || onProgress(progress);
        });
        if (!r)
            return r.message() == "cancelled" ? r.error() : Error{"--menu entry " + std::to_string(k + 1) + ": " + r.message()};
        out.basePerplexity = r->basePerplexity;
        out.perOption.push_back(std::move(r->units));
    }
    const std::size_t n = out.perOption.front().size();
    std::vector<MatrixOptions> options(n);
    for (std::size_t i = 0; i < n; ++i) {
        options[i].name = out.perOption.front()[i].unit;
        options[i].weights = out.perOption.front()[i].weights;
        for (const auto& perMatrix : out.perOption) {
            options[i].bits.push_back(perMatrix[i].bpw * static_cast<double>(perMatrix[i].weights));
            options[i].damage.push_back(perMatrix[i].klMean);
        }
    }
    for (const auto& perMatrix : out.perOption) {
        double bits = 0;
        std::int64_t weights = 0;
        for (const auto& u : perMatrix) {
            bits += u.bpw * static_cast<double>(u.weights);
            weights += u.weights;
        }
        out.uniformBpw.push_back(bits / static_cast<double>(weights));
    }
    auto plan = allocateBits(options, request.budgetBpw);
    if (!plan)
        return plan.error();
    out.plan = *plan;
    for (std::size_t i = 0; i < n; ++i)
        out.matrixSettings[options[i].name] = request.menu[static_cast<std::size_t>(plan->choice[i])];
    return out;
}

} // namespace pocket
