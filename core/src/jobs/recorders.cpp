#include "recorders.h"

#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/fingerprint.h"
#include "pocket/io/model_config.h"
#include "pocket/store/experiment_store.h"
#include "pocket/support/app_paths.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace pocket {

using nlohmann::ordered_json;

namespace {

ordered_json parseOrString(const std::string& text)
{
    if (text.empty())
        return ordered_json::object();
    ordered_json j = ordered_json::parse(text, nullptr, false);
    return j.is_discarded() ? ordered_json(text) : j;
}

std::string evalParamsJson(const std::string& textPath, const std::string& tokenizerPath, const EvalParams& p, ComputePrecision precision,
                           const std::string& referencePath)
{
    ordered_json j{{"ctx", p.ctx},
                   {"stride", p.stride},
                   {"max_tokens", p.maxTokens},
                   {"batch", p.batch},
                   {"text", absolutePath(textPath)},
                   {"tokenizer", tokenizerPath}};
    if (p.scoring != EvalScoring::AllTokens) // only then, so earlier records keep their parameters
        j["scoring"] = evalScoringName(p.scoring);
    if (precision != ComputePrecision::F32) // likewise
        j["precision"] = computePrecisionName(precision);
    if (!referencePath.empty())
        j["reference"] = absolutePath(referencePath);
    return j.dump();
}

} // namespace

EvalRecorder::EvalRecorder(RecorderOptions options, const Checkpoint& checkpoint, const std::string& textPath, const std::string& tokenizerPath,
                           const EvalParams& params, ComputePrecision precision, const std::string& referencePath)
    : EvalRecorder(std::move(options), checkpoint, evalParamsJson(textPath, tokenizerPath, params, precision, referencePath))
{
    m_textPath = textPath;
}

EvalRecorder::EvalRecorder(RecorderOptions options, const Checkpoint& checkpoint, std::string paramsJson)
    : RunRecorder(std::move(options)),
      m_modelPath(checkpoint.path()),
      m_modelName(displayName(checkpoint.path())),
      m_architecture(checkpoint.config().architecture),
      m_paramsJson(std::move(paramsJson))
{
    for (const auto& t : checkpoint.tensors())
        m_parameters += elementCount(t.shape);
    m_storedBytes = checkpoint.totalBytes();
    // A GGUF in llama.cpp's block types is a result of llama.cpp's quantisation: it is recorded as
    // the method family "llamacpp:<type>" with its bits counted as ours are (over the linear matrices).
    const StoredTypes stored = storedTypes(checkpoint);
    if (checkpoint.format() == CheckpointFormat::Gguf && stored.quantized()) {
        std::string type = checkpoint.fileType();
        if (type.empty()) { // no general.file_type: the linear matrices' commonest type
            std::int64_t most = 0;
            for (const auto& [name, count] : stored.linear)
                if (count > most) {
                    most = count;
                    type = name;
                }
        }
        m_storedMethod = "llamacpp:" + type;
        m_storedTypes = stored.linearMix();
        m_storedBpwLinear = stored.linearBitsPerWeight;
        m_storedBpwAllIn = stored.allBitsPerWeight;
    }
}

Result<std::int64_t> EvalRecorder::insertRun(ExperimentStore& store)
{
    RunStart start;
    start.kind = RunKind::Eval;
    start.notes = m_options.notes;
    std::optional<double> bpwCompressed;
    std::optional<double> bpwAllIn;
    if (isPllmFile(m_modelPath)) {
        // An archive: the method, parameters and bits are in its manifest; the model is the one it
        // was made from, through the compress run that wrote it when this store has it.
        auto archive = Archive::open(m_modelPath, ContainerReader::Verify::ManifestOnly);
        if (!archive)
            return archive.error();
        const ArchiveManifest& m = (*archive)->manifest();
        start.archivePath = absolutePath(m_modelPath);
        start.method = m.groups.empty() ? "none" : m.groups.front().payload.methodId;
        ordered_json params = ordered_json::parse(m_paramsJson);
        if (!m.groups.empty())
            params["method"] = parseOrString(m.groups.front().payload.paramsJson);
        start.paramsJson = params.dump();
        start.selectionJson = m.selectionJson;
        const ArchiveBits bits = accountBits(m);
        bpwAllIn = bits.bpwAllIn();
        if (bits.compressedWeights > 0)
            bpwCompressed = bits.bpwCompressed();
        auto parent = store.findCompressRun(start.archivePath, (*archive)->container().fileSize());
        if (!parent)
            return parent.error();
        start.parentRunId = *parent;
        if (*parent > 0) {
            auto parentRun = store.run(*parent);
            if (!parentRun)
                return parentRun.error();
            start.modelId = parentRun->modelId;
        }
        if (start.modelId == 0) {
            // The source model is not on hand: identify it by its name and configuration.
            const std::string key = m.sourceName + "\n" + hfConfigJson(m.config);
            ModelInfo model{0, m.sourceName, m.config.architecture, m.config.parameterCount(), "source:" + textFingerprint(key), ""};
            auto id = store.upsertModel(model);
            if (!id)
                return id.error();
            start.modelId = *id;
        }
    } else {
        auto hash = modelFingerprint(m_modelPath);
        if (!hash)
            return hash.error();
        ModelInfo model{0, m_modelName, m_architecture, m_parameters, *hash, absolutePath(m_modelPath)};
        auto id = store.upsertModel(model);
        if (!id)
            return id.error();
        start.modelId = *id;
        start.method = "none";
        start.paramsJson = m_paramsJson;
        if (m_parameters > 0)
            bpwAllIn = 8.0 * static_cast<double>(m_storedBytes) / static_cast<double>(m_parameters);
        if (!m_storedMethod.empty()) {
            start.method = m_storedMethod;
            ordered_json params = ordered_json::parse(m_paramsJson);
            params["stored_types"] = m_storedTypes;
            start.paramsJson = params.dump();
            bpwCompressed = m_storedBpwLinear;
            bpwAllIn = m_storedBpwAllIn;
        }
    }
    m_bpwCompressed = bpwCompressed;
    m_bpwAllIn = bpwAllIn;
    return store.beginRun(start);
}

std::int64_t EvalRecorder::done(const EvalResult& r)
{
    if (!startFinishing())
        return 0;
    auto dataset = upsertTextDataset(m_textPath);
    if (!dataset)
        return disable(dataset.message());
    RunResult result;
    result.datasetId = *dataset;
    result.ctx = r.ctx;
    result.stride = r.stride;
    result.tokens = r.tokensScored;
    result.metric = "perplexity";
    result.value = r.perplexity;
    if (auto s = m_store->addResult(m_runId, result); !s)
        return disable(s.message());
    result.metric = "nll";
    result.value = r.meanNll;
    if (auto s = m_store->addResult(m_runId, result); !s)
        return disable(s.message());
    if (r.divergence) { // against a reference model, on the same tokens
        const DivergenceResult& d = *r.divergence;
        const std::pair<const char*, double> rows[] = {{"kl", d.meanKl},
                                                       {"kl_p90", d.klP90},
                                                       {"kl_p99", d.klP99},
                                                       {"kl_p99.9", d.klP999},
                                                       {"top1_agreement", d.top1Agreement},
                                                       {"perplexity_reference", d.referencePerplexity}};
        for (const auto& [metric, value] : rows) {
            result.metric = metric;
            result.value = value;
            if (auto s = m_store->addResult(m_runId, result); !s)
                return disable(s.message());
        }
    }
    return finishEval();
}

std::int64_t EvalRecorder::finishEval()
{
    RunFinish f;
    f.wallSeconds = secondsSinceStart();
    f.bpwCompressed = m_bpwCompressed;
    f.bpwAllIn = m_bpwAllIn;
    return finishDone(f);
}

std::int64_t EvalRecorder::done(const std::vector<DatasetResult>& results)
{
    if (!startFinishing())
        return 0;
    for (const DatasetResult& r : results) {
        std::string hash = "none:" + r.datasetName;
        if (!r.datasetPath.empty()) {
            auto fingerprint = fileFingerprint(r.datasetPath);
            if (!fingerprint)
                return disable(fingerprint.message());
            hash = *fingerprint;
        }
        // The split as the file name says it ("piqa_validation.jsonl", "winogrande_dev.jsonl").
        const std::string file = r.datasetPath.empty() ? "" : displayName(r.datasetPath);
        const std::string split = file.find("test") != std::string::npos ? "test"
                                  : file.find("valid") != std::string::npos || file.find("dev") != std::string::npos ? "validation"
                                  : file.find("train") != std::string::npos ? "train"
                                                                            : "";
        auto dataset = m_store->upsertDataset({0, r.datasetName, split, hash,
                                               r.datasetPath.empty() ? "" : absolutePath(r.datasetPath)});
        if (!dataset)
            return disable(dataset.message());
        RunResult result = r.result;
        result.datasetId = *dataset;
        if (auto s = m_store->addResult(m_runId, result); !s)
            return disable(s.message());
    }
    return finishEval();
}

CompressRecorder::CompressRecorder(RecorderOptions options, CompressJobParams params)
    : RunRecorder(std::move(options)), m_params(std::move(params))
{
}

Result<std::int64_t> CompressRecorder::insertRun(ExperimentStore& store)
{
    auto checkpoint = openCheckpoint(m_params.modelPath);
    if (!checkpoint)
        return checkpoint.error();
    auto modelId = upsertModelOf(store, **checkpoint);
    if (!modelId)
        return modelId.error();
    RunStart start;
    start.kind = RunKind::Compress;
    start.method = m_params.methodId;
    ordered_json params{{"set", m_params.settings}};
    // An input already quantised (a GGUF's block types): its own bits are the starting point.
    if (const StoredTypes stored = storedTypes(**checkpoint); stored.quantized()) {
        ordered_json source{{"stored_types", stored.linearMix()}, {"bpw_linear", stored.linearBitsPerWeight}, {"bpw_all_in", stored.allBitsPerWeight}};
        if (!(*checkpoint)->fileType().empty())
            source["file_type"] = (*checkpoint)->fileType();
        m_sourceJson = source.dump();
        params["source"] = source;
    }
    start.paramsJson = params.dump();
    start.modelId = *modelId;
    // The selection as requested; replaced by the archive's resolved selection when the run succeeds.
    start.selectionJson =
        m_params.requestedSelectionJson.empty() ? layerSelectionJson(m_params.selection) : m_params.requestedSelectionJson;
    start.archivePath = absolutePath(m_params.outPath);
    start.notes = m_options.notes;
    return store.beginRun(start);
}

std::int64_t CompressRecorder::done(const CompressJobResult& r)
{
    if (!startFinishing())
        return 0;
    std::vector<MatrixMetric> metrics;
    for (const MatrixReport& m : r.matrices)
        metrics.push_back(matrixMetricOf(m));
    if (auto s = m_store->addMatrixMetrics(m_runId, metrics); !s)
        return disable(s.message());
    RunFinish f;
    f.wallSeconds = r.seconds;
    f.archiveBytes = r.archiveBytes;
    f.bpwCompressed = r.bits.bpwCompressed();
    f.bpwAllIn = r.bits.bpwAllIn();
    if (!r.groups.empty()) {
        f.paramsJson = r.groups.front().paramsJson;
        if (!m_sourceJson.empty()) {
            ordered_json params = parseOrString(f.paramsJson);
            if (params.is_object()) {
                params["source"] = ordered_json::parse(m_sourceJson);
                f.paramsJson = params.dump();
            }
        }
    }
    if (auto archive = Archive::open(r.archivePath, ContainerReader::Verify::ManifestOnly))
        f.selectionJson = (*archive)->manifest().selectionJson;
    return finishDone(f);
}

} // namespace pocket
