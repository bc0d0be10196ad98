#include "sensitivity_recorder.h"

#include "pocket/io/fingerprint.h"
#include "pocket/store/experiment_store.h"
#include "pocket/support/app_paths.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace pocket {

SensitivityRecorder::SensitivityRecorder(RecorderOptions options, const Checkpoint& checkpoint, const SensitivityParams& params,
                                         std::string paramsJson)
    : RunRecorder(std::move(options)), m_checkpoint(checkpoint), m_params(params), m_paramsJson(std::move(paramsJson))
{
}

void SensitivityRecorder::addUnit(const UnitSensitivity& u, const std::vector<MatrixMetric>& matrices)
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

std::int64_t SensitivityRecorder::done(const SensitivityResult& r, std::int64_t bitsWeights, double bitsTotal)
{
    if (!startFinishing())
        return 0;
    auto dataset = upsertTextDataset(m_params.textPath);
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
    f.wallSeconds = r.seconds;
    if (bitsWeights > 0)
        f.bpwCompressed = bitsTotal / static_cast<double>(bitsWeights);
    return finishDone(f);
}

Result<std::int64_t> SensitivityRecorder::insertRun(ExperimentStore& store)
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

namespace {

// The unit of one run's rows that share a group id.
RecordedUnit unitOf(const std::string& name, std::vector<MatrixMetric> rows, double basePerplexity)
{
    RecordedUnit r;
    UnitSensitivity& u = r.unit;
    u.unit = name;
    u.cached = true;
    double bits = 0, mse = 0, snr = 0;
    for (const MatrixMetric& m : rows) {
        const auto w = m.rows * m.cols;
        u.matrices.push_back(m.name);
        u.weights += w;
        bits += m.bpw * static_cast<double>(w);
        mse += m.mse * static_cast<double>(w);
        snr += m.snrDb;
    }
    const MatrixMetric& first = rows.front();
    u.bpw = u.weights > 0 ? bits / static_cast<double>(u.weights) : 0;
    u.mse = u.weights > 0 ? mse / static_cast<double>(u.weights) : 0;
    u.snrDb = snr / static_cast<double>(rows.size());
    u.klMean = first.sensitivity.value_or(0);
    u.deltaPerplexity = first.deltaPerplexity.value_or(0);
    u.perplexity = basePerplexity + u.deltaPerplexity;
    u.top1Agreement = first.top1Agreement.value_or(0);
    r.matrices = std::move(rows);
    return r;
}

} // namespace

std::map<std::string, RecordedUnit> recordedUnits(const RecorderOptions& options, const std::string& methodId, const std::string& cacheKey,
                                                  double basePerplexity)
{
    std::map<std::string, RecordedUnit> out;
    if (!options.enabled || cacheKey.empty())
        return out;
    auto store = ExperimentStore::open(options.storePath);
    if (!store) {
        spdlog::warn("experiment store: {}; every unit is measured", store.message());
        return out;
    }
    RunFilter filter;
    filter.kind = RunKind::Sensitivity;
    filter.method = methodId;
    auto runs = (*store)->listRuns(filter);
    if (!runs) {
        spdlog::warn("experiment store: {}; every unit is measured", runs.message());
        return out;
    }
    for (const RunRecord& record : *runs) { // newest first: the first unit of a name wins
        const auto params = nlohmann::json::parse(record.paramsJson, nullptr, false);
        if (!params.is_object() || params.value("cache_key", std::string()) != cacheKey)
            continue;
        auto run = (*store)->run(record.id);
        if (!run)
            continue;
        std::map<std::string, std::vector<MatrixMetric>> byUnit;
        for (MatrixMetric& m : run->matrices)
            if (m.sensitivity && !m.groupId.empty())
                byUnit[m.groupId].push_back(std::move(m));
        for (auto& [name, rows] : byUnit)
            if (!out.count(name))
                out.emplace(name, unitOf(name, std::move(rows), basePerplexity));
    }
    return out;
}

} // namespace pocket
