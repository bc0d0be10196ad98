#include "sensitivity_recorder.h"

#include "pocket/io/fingerprint.h"
#include "pocket/store/experiment_store.h"
#include "pocket/support/app_paths.h"

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

} // namespace pocket
