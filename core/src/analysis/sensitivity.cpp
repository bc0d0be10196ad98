// Per-layer sensitivity (pocket/analysis/sensitivity.h), as named steps: checkRequest, buildUnits,
// scoringWindows, measureBase, then for every unit compressUnit, scoreUnit and restoreUnit.
#include "pocket/analysis/sensitivity.h"

#include "sensitivity_recorder.h"

#include "pocket/archive/bit_accounting.h"
#include "pocket/archive/container.h"
#include "pocket/archive/lossless.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/fingerprint.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "pocket/jobs/cluster.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/app_paths.h"
#include "pocket/support/timing.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

namespace pocket {

namespace {

using json = nlohmann::ordered_json;

std::int64_t argmax(const float* v, std::int64_t n) { return std::max_element(v, v + n) - v; }

struct Unit {
    std::string name;
    std::vector<MatrixRef> matrices;
};

// The scored text: windows of BOS + ctx-1 tokens from the text's start; ctx-1 predictions each.
struct Windows {
    std::vector<std::vector<std::int32_t>> inputs;
    const std::vector<std::int32_t>* tokens = nullptr;
    std::int64_t perWindow = 0;
    int count() const { return static_cast<int>(inputs.size()); }
    std::int32_t target(int w, std::int64_t pos) const { return (*tokens)[static_cast<std::size_t>(w * perWindow + pos)]; }
};

// The uncompressed model's log-probabilities and top-1 predictions, computed once.
struct BaseScores {
    std::vector<float> logp;
    std::vector<std::int32_t> top;
    double perplexity = 0;
};

// What one unit's compression did to the weights, kept until the unit is scored and restored.
struct CompressedUnit {
    std::map<std::string, std::vector<float>> originals;
    std::vector<MatrixMetric> metrics;
    double bits = 0;
};

Status checkRequest(const SensitivityParams& params, MethodRegistry& registry, CompressionMethod*& method, ParamSet& resolved)
{
    if (isPllmFile(params.modelPath))
        return fileError(params.modelPath, "sensitivity needs the original model, not a compressed archive");
    if (params.ctx < 2)
        return Error::usage("ctx must be at least 2", "ctx");
    if (params.windows < 1)
        return Error::usage("windows must be at least 1", "windows");
    auto found = registry.find(params.methodId);
    if (!found)
        return found.error();
    method = *found;
    auto r = ParamSet::resolve(method->info().params, params.settings);
    if (!r)
        return r.error();
    resolved = *r;
    return {};
}

// The units in model order (type units: q k v o gate up down).
Result<std::vector<Unit>> buildUnits(const Checkpoint& c, const SensitivityParams& params)
{
    auto names = params.selection.select(c.config());
    if (!names)
        return names.error();
    if (names->empty())
        return Error::usage("the layer selection matches no matrix of " + c.path(), "selection");
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
    return units;
}

// Matrix units for a method that shares codebooks: the method's groups over all the units'
// matrices (measured and charged as a whole), named as a compress job names them.
Status groupUnits(std::vector<Unit>& units, const CompressionMethod& method, const ParamSet& resolved)
{
    std::vector<MatrixRef> refs;
    for (const Unit& u : units)
        refs.insert(refs.end(), u.matrices.begin(), u.matrices.end());
    auto groups = method.planGroups(refs, resolved);
    if (!groups)
        return groups.error();
    if (groups->size() == refs.size())
        return {}; // one matrix each
    units.clear();
    for (std::size_t g = 0; g < groups->size(); ++g)
        units.push_back({matrixGroupId((*groups)[g], g, refs.size()), (*groups)[g]});
    return {};
}

// As many windows as asked, the text holds, and the log-probability cache allows.
Result<Windows> scoringWindows(const std::vector<std::int32_t>& tokens, std::int32_t bosId, std::int64_t vocab,
                               const SensitivityParams& params)
{
    Windows w;
    w.tokens = &tokens;
    w.perWindow = params.ctx - 1;
    int windows = static_cast<int>(std::min<std::int64_t>(params.windows, static_cast<std::int64_t>(tokens.size()) / w.perWindow));
    if (windows < 1)
        return Error{params.textPath + ": too short for one window of " + std::to_string(params.ctx) + " tokens (" +
                     std::to_string(tokens.size()) + " tokens)"};
    const std::uint64_t bytesPerWindow = static_cast<std::uint64_t>(w.perWindow * vocab) * sizeof(float);
    if (static_cast<std::uint64_t>(windows) * bytesPerWindow > params.maxCacheBytes) {
        const int fit = std::max<int>(1, static_cast<int>(params.maxCacheBytes / bytesPerWindow));
        spdlog::warn("sensitivity: caching {} windows of log-probabilities would take {} MiB; using {} windows", windows,
                     windows * bytesPerWindow >> 20, fit);
        windows = fit;
    }
    w.inputs.resize(static_cast<std::size_t>(windows));
    for (int i = 0; i < windows; ++i) {
        w.inputs[i].push_back(bosId);
        w.inputs[i].insert(w.inputs[i].end(), tokens.begin() + i * w.perWindow, tokens.begin() + (i + 1) * w.perWindow);
    }
    return w;
}

// Windows [first, first + count) as one batch for LlamaModel::logProbs.
std::vector<std::vector<std::int32_t>> batchOf(const Windows& w, int first, int count)
{
    return {w.inputs.begin() + first, w.inputs.begin() + first + count};
}

// Windows per forward pass: as many as keep the batch's log-probabilities under 128 MiB.
int windowsPerPass(const Windows& w, std::int64_t vocab)
{
    const std::uint64_t perWindow = static_cast<std::uint64_t>((w.perWindow + 1) * vocab) * sizeof(float);
    return static_cast<int>(std::clamp<std::uint64_t>((128ull << 20) / std::max<std::uint64_t>(perWindow, 1), 1, 64));
}

// Runs the windows in batched forward passes and calls visit(window, position, log-probabilities)
// for every scored position.
template <typename Visit>
Status forEachScored(const LlamaModel& model, const Windows& w, std::int64_t vocab, Visit visit)
{
    const int step = windowsPerPass(w, vocab);
    for (int first = 0; first < w.count(); first += step) {
        const int count = std::min(step, w.count() - first);
        auto logp = model.logProbs(batchOf(w, first, count));
        if (!logp)
            return logp.error();
        for (int b = 0; b < count; ++b)
            for (std::int64_t p = 0; p < w.perWindow; ++p)
                visit(first + b, p, logp->data() + (static_cast<std::int64_t>(b) * (w.perWindow + 1) + p) * vocab);
    }
    return {};
}

Result<BaseScores> measureBase(const LlamaModel& model, const Windows& w, std::int64_t vocab)
{
    BaseScores base;
    base.logp.resize(static_cast<std::size_t>(w.count()) * w.perWindow * vocab);
    base.top.resize(static_cast<std::size_t>(w.count()) * w.perWindow);
    double nll = 0;
    const Status scored = forEachScored(model, w, vocab, [&](int i, std::int64_t p, const float* logp) {
        float* row = base.logp.data() + (i * w.perWindow + p) * vocab;
        std::copy(logp, logp + vocab, row);
        nll -= row[w.target(i, p)];
        base.top[i * w.perWindow + p] = static_cast<std::int32_t>(argmax(row, vocab));
    });
    if (!scored)
        return scored.error();
    base.perplexity = std::exp(nll / static_cast<double>(w.count() * w.perWindow));
    return base;
}

// Input Hessians by tensor name (q/k/v share one vector, gate/up another).
using Hessians = std::map<std::string, std::shared_ptr<const std::vector<float>>>;

// The calibration Hessians of every matrix of `units`, measured block by block on the uncompressed
// model (each unit is compressed with the rest of the model exact, so its inputs are the original's).
Result<Hessians> measureHessians(LlamaModel& model, const Checkpoint& c, const Tokenizer& tokenizer, const std::vector<Unit>& units,
                                 const SensitivityParams& params)
{
    CalibrationParams cp = calibrationOf(params);
    cp.length = static_cast<int>(std::min<std::int64_t>(cp.length, c.config().maxPositions));
    auto text = readTextFile(cp.textPath);
    if (!text)
        return text.error();
    auto windows = calibrationWindows(tokenizer.encode(*text), tokenizer.bosId(), cp);
    if (!windows)
        return windows.error().prefixed(cp.textPath);
    auto run = model.startCalibration(*windows);
    if (!run)
        return run.error();
    std::map<int, std::vector<MatrixRef>> byBlock;
    for (const Unit& unit : units)
        for (const MatrixRef& m : unit.matrices)
            byBlock[m.layer].push_back(m);
    Hessians out;
    const int lastBlock = byBlock.empty() ? 0 : byBlock.rbegin()->first;
    for (const auto& [block, matrices] : byBlock) {
        while ((*run)->nextBlock() < block)
            POCKET_TRY((*run)->advance());
        // One pass gives the block's Hessians and the next block's inputs (weights unchanged).
        auto h = block < lastBlock ? (*run)->hessiansThenAdvance() : (*run)->hessians();
        if (!h)
            return h.error();
        std::map<MatrixType, std::shared_ptr<const std::vector<float>>> shared; // one copy per input
        for (const MatrixRef& m : matrices) {
            // hessians() gives k/v q's Hessian and up gate's: keep that one copy
            const MatrixType input = m.type == MatrixType::K || m.type == MatrixType::V ? MatrixType::Q
                                     : m.type == MatrixType::Up                         ? MatrixType::Gate
                                                                                        : m.type;
            auto& kept = shared[input];
            if (!kept)
                kept = std::make_shared<const std::vector<float>>(std::move((*h)[input]));
            out[m.name] = kept;
        }
    }
    return out;
}

// Compresses the unit's groups with the method and puts the decoded weights into the model;
// `hessians` (may be null) gives the matrices their calibration Hessians. Bits are counted after
// the lossless stage of `entropy`, as an archive stores them.
Result<CompressedUnit> compressUnit(const Unit& unit, const Checkpoint& c, CompressionMethod& method, const ParamSet& resolved,
                                    const Hessians* hessians, const EntropyOptions& entropy, LlamaModel& model, UnitSensitivity& u)
{
    auto groups = method.planGroups(unit.matrices, resolved);
    if (!groups)
        return groups.error();
    CompressedUnit out;
    double mseSum = 0, snrSum = 0;
    for (std::size_t g = 0; g < groups->size(); ++g) {
        MatrixGroup group;
        group.id = unit.name + (groups->size() > 1 ? "#" + std::to_string(g) : std::string());
        for (const MatrixRef& ref : (*groups)[g]) {
            auto data = c.load(ref.name);
            if (!data)
                return data.error();
            group.matrices.push_back({ref, data->toFloat(), {}});
            if (hessians)
                group.matrices.back().hessian = *hessians->at(ref.name);
            out.originals[ref.name] = group.matrices.back().values;
        }
        CompressContext context;
        context.threads = computeThreads();
        auto payload = method.compress(group, resolved, context);
        if (!payload)
            return payload.error().prefixed(unit.name);
        auto decoded = method.decode(*payload);
        if (!decoded)
            return decoded.error().prefixed(unit.name);
        ArchiveGroup stored;
        stored.payload = std::move(*payload);
        if (entropy.mode != EntropyMode::None)
            POCKET_TRY(applyLosslessStage(stored, entropy));
        const std::vector<MatrixReport> reports = matrixReports(stored.payload);
        for (std::size_t i = 0; i < reports.size(); ++i) {
            const MatrixReport& m = reports[i];
            out.bits += m.bpw * static_cast<double>(m.rows * m.cols);
            mseSum += m.mse * static_cast<double>(m.rows * m.cols);
            snrSum += m.snrDb;
            u.weights += m.rows * m.cols;
            u.matrices.push_back(m.name);
            out.metrics.push_back(matrixMetricOf(m));
            out.metrics.back().groupId = unit.name;
            POCKET_TRY(model.setWeight(m.name, (*decoded)[i]));
        }
    }
    u.bpw = u.weights > 0 ? out.bits / static_cast<double>(u.weights) : 0;
    u.mse = u.weights > 0 ? mseSum / static_cast<double>(u.weights) : 0;
    u.snrDb = out.metrics.empty() ? 0 : snrSum / static_cast<double>(out.metrics.size());
    return out;
}

// Perplexity, KL from the base distributions and top-1 agreement of the model as it is now.
Status scoreUnit(const LlamaModel& model, const Windows& w, const BaseScores& base, std::int64_t vocab, UnitSensitivity& u)
{
    double nll = 0, kl = 0;
    std::int64_t agree = 0;
    const Status scored = forEachScored(model, w, vocab, [&](int i, std::int64_t p, const float* logp) {
        const float* ref = base.logp.data() + (i * w.perWindow + p) * vocab;
        double k = 0;
        for (std::int64_t v = 0; v < vocab; ++v)
            k += std::exp(static_cast<double>(ref[v])) * (static_cast<double>(ref[v]) - logp[v]);
        kl += std::max(0.0, k);
        nll -= logp[w.target(i, p)];
        agree += argmax(logp, vocab) == base.top[i * w.perWindow + p];
    });
    if (!scored)
        return scored.error();
    const double n = static_cast<double>(w.count() * w.perWindow);
    u.perplexity = std::exp(nll / n);
    u.deltaPerplexity = u.perplexity - base.perplexity;
    u.klMean = kl / n;
    u.top1Agreement = static_cast<double>(agree) / n;
    return {};
}

// Back to the exact model for the next unit.
Status restoreUnit(const CompressedUnit& unit, LlamaModel& model)
{
    for (const auto& [name, values] : unit.originals)
        POCKET_TRY(model.setWeight(name, values));
    return {};
}

// One unit measured: compressed into the model, scored, and the model restored.
struct MeasuredUnit {
    UnitSensitivity unit;
    std::vector<MatrixMetric> metrics;
};

Result<MeasuredUnit> measureUnit(const Unit& unit, const Checkpoint& c, CompressionMethod& method, const ParamSet& resolved,
                                 const Hessians* hessians, const SensitivityParams& params, LlamaModel& model, const Windows& windows,
                                 const BaseScores& base, std::int64_t vocab)
{
    const Stopwatch clock;
    MeasuredUnit out;
    out.unit.unit = unit.name;
    auto compressed = compressUnit(unit, c, method, resolved, hessians, params.entropy, model, out.unit);
    if (!compressed)
        return compressed.error();
    POCKET_TRY(scoreUnit(model, windows, base, vocab, out.unit));
    POCKET_TRY(restoreUnit(*compressed, model));
    out.unit.seconds = clock.seconds();
    out.metrics = std::move(compressed->metrics);
    return out;
}

// A measured unit as a worker sends it to rank 0 (doubles survive the JSON text exactly).
nlohmann::json measuredJson(const MeasuredUnit& m)
{
    const UnitSensitivity& u = m.unit;
    nlohmann::json metrics = nlohmann::json::array();
    for (const MatrixMetric& x : m.metrics)
        metrics.push_back({{"name", x.name}, {"group", x.groupId}, {"rows", x.rows}, {"cols", x.cols}, {"mse", x.mse}, {"snr", x.snrDb}, {"bpw", x.bpw}});
    return nlohmann::json{{"unit", u.unit}, {"matrices", u.matrices}, {"weights", u.weights}, {"bpw", u.bpw}, {"mse", u.mse}, {"snr", u.snrDb},
                {"perplexity", u.perplexity}, {"delta", u.deltaPerplexity}, {"kl", u.klMean}, {"top1", u.top1Agreement},
                {"seconds", u.seconds}, {"metrics", metrics}};
}

Result<MeasuredUnit> measuredFrom(const nlohmann::json& j)
{
    try {
        MeasuredUnit m;
        UnitSensitivity& u = m.unit;
        u.unit = j.at("unit").get<std::string>();
        u.matrices = j.at("matrices").get<std::vector<std::string>>();
        u.weights = j.at("weights").get<std::int64_t>();
        u.bpw = j.at("bpw").get<double>();
        u.mse = j.at("mse").get<double>();
        u.snrDb = j.at("snr").get<double>();
        u.perplexity = j.at("perplexity").get<double>();
        u.deltaPerplexity = j.at("delta").get<double>();
        u.klMean = j.at("kl").get<double>();
        u.top1Agreement = j.at("top1").get<double>();
        u.seconds = j.at("seconds").get<double>();
        for (const nlohmann::json& x : j.at("metrics")) {
            MatrixMetric metric;
            metric.name = x.at("name").get<std::string>();
            metric.groupId = x.at("group").get<std::string>();
            metric.rows = x.at("rows").get<std::int64_t>();
            metric.cols = x.at("cols").get<std::int64_t>();
            metric.mse = x.at("mse").get<double>();
            metric.snrDb = x.at("snr").get<double>();
            metric.bpw = x.at("bpw").get<double>();
            m.metrics.push_back(std::move(metric));
        }
        return m;
    } catch (const nlohmann::json::exception& e) {
        return Error::internal(std::string("a unit's result from another rank is malformed: ") + e.what());
    }
}

// What every analysis starts from: the model, its tokenizer, the units, the scored windows and
// the uncompressed model's scores on them. Built in place (the windows point into `tokens`).
struct Setup {
    std::unique_ptr<Checkpoint> checkpoint;
    std::string tokenizerPath;
    std::unique_ptr<Tokenizer> tokenizer;
    std::vector<std::int32_t> tokens;
    std::vector<Unit> units;
    Windows windows;
    std::unique_ptr<LlamaModel> model;
    BaseScores base;
    std::int64_t vocab = 0;
};

Status prepare(const SensitivityParams& params, Setup& s)
{
    auto ckpt = openCheckpoint(params.modelPath);
    if (!ckpt)
        return ckpt.error();
    s.checkpoint = std::move(*ckpt);
    const Checkpoint& c = *s.checkpoint;
    s.tokenizerPath = params.tokenizerPath.empty() ? c.tokenizerPath() : params.tokenizerPath;
    if (s.tokenizerPath.empty())
        return Error{c.path() + ": no tokenizer found beside the model (tokenizer.model, tokenizer.json or tokenizer.bin), and none was given: pass one (or a .gguf that carries one)",
                     ErrorKind::Input, "tokenizer"};
    auto tokenizer = loadTokenizer(s.tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    s.tokenizer = std::move(*tokenizer);
    auto text = readTextFile(params.textPath);
    if (!text)
        return text.error();
    s.tokens = s.tokenizer->encode(*text);
    auto units = buildUnits(c, params);
    if (!units)
        return units.error();
    s.units = std::move(*units);
    s.vocab = c.config().vocabSize;
    auto windows = scoringWindows(s.tokens, s.tokenizer->bosId(), s.vocab, params);
    if (!windows)
        return windows.error();
    s.windows = std::move(*windows);
    auto model = LlamaModel::load(c);
    if (!model)
        return model.error();
    s.model = std::move(*model);
    auto base = measureBase(*s.model, s.windows, s.vocab);
    if (!base)
        return base.error();
    s.base = std::move(*base);
    return {};
}

// The identity of a measurement (SensitivityParams::reuse): fingerprints of every input, the method,
// its version and resolved settings, ctx and the windows scored. "" when an input cannot be read.
std::string cacheKey(const SensitivityParams& params, const Setup& s, const CompressionMethod& method, const ParamSet& resolved, bool calibrated)
{
    auto model = modelFingerprint(params.modelPath);
    auto text = fileFingerprint(params.textPath);
    auto tokenizer = modelFingerprint(s.tokenizerPath);
    if (!model || !text || !tokenizer)
        return {};
    json key{{"model", *model}, {"text", *text}, {"tokenizer", *tokenizer}, {"method", method.info().id}, {"version", method.info().version},
             {"params", json::parse(resolved.toJson(method.info().params))}, {"ctx", params.ctx}, {"windows", s.windows.count()},
             {"entropy", {entropyModeName(params.entropy.mode), entropyCoderName(params.entropy.coder), params.entropy.minSaving, params.entropy.zstdSlack}}};
    if (calibrated) {
        const CalibrationParams cp = calibrationOf(params);
        auto calib = fileFingerprint(cp.textPath);
        if (!calib)
            return {};
        key["calibration"] = {{"text", *calib}, {"samples", cp.samples}, {"length", cp.length}, {"seed", cp.seed}};
    }
    return textFingerprint(key.dump());
}

bool sameMatrices(std::vector<std::string> a, const std::vector<MatrixRef>& refs)
{
    std::vector<std::string> b;
    for (const MatrixRef& m : refs)
        b.push_back(m.name);
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    return a == b;
}

// Reports a finished unit (`done` units so far, ETA from the time per unit); false: cancelled.
bool reportUnit(SensitivityProgress& progress, int done, const UnitSensitivity& latest, const Stopwatch& clock,
                const std::function<bool(const SensitivityProgress&)>& onProgress)
{
    progress.unitsDone = done;
    progress.elapsedSeconds = clock.seconds();
    progress.etaSeconds = progress.elapsedSeconds / progress.unitsDone * (progress.unitCount - progress.unitsDone);
    progress.latest = &latest;
    return !onProgress || onProgress(progress);
}

// Rank 0 of a distributed analysis: the units without a stored result, across the ranks. Each
// worker opened the same model and text, scored the base, measured the Hessians, and measures a
// unit exactly as this process would (the rest of its model exact).
template <class RecordedFor>
Result<std::vector<std::optional<MeasuredUnit>>> measureAcrossRanks(ClusterChannel& channel, Setup& setup, CompressionMethod& method,
                                                                   const ParamSet& resolved, const Hessians* hessians,
                                                                   const SensitivityParams& params, const RecordedFor& recordedFor,
                                                                   SensitivityProgress& progress, const Stopwatch& clock,
                                                                   const std::function<bool(const SensitivityProgress&)>& onProgress)
{
    std::vector<std::string> ids;
    std::vector<std::size_t> todo;
    for (std::size_t i = 0; i < setup.units.size(); ++i) {
        ids.push_back(setup.units[i].name);
        if (!recordedFor(setup.units[i]))
            todo.push_back(i);
    }
    std::vector<std::optional<MeasuredUnit>> measured(setup.units.size());
    progress.unitsDone = static_cast<int>(setup.units.size() - todo.size());
    const auto finished = [&](std::size_t i, MeasuredUnit m) -> Status {
        measured[i] = std::move(m);
        return reportUnit(progress, progress.unitsDone + 1, measured[i]->unit, clock, onProgress) ? Status() : Status(Error::cancelled());
    };
    ClusterCoordinator coordinator(channel);
    POCKET_TRY(coordinator.start("", ids));
    ClusterCoordinator::Hooks hooks;
    hooks.workHere = [&](std::size_t i) -> Status {
        auto m = measureUnit(setup.units[i], *setup.checkpoint, method, resolved, hessians, params, *setup.model, setup.windows, setup.base,
                             setup.vocab);
        if (!m)
            return m.error();
        return finished(i, std::move(*m));
    };
    hooks.itemDone = [&](int, std::size_t i, const nlohmann::json& done) -> Status {
        auto m = measuredFrom(done);
        if (!m)
            return m.error();
        if (m->unit.unit != setup.units[i].name)
            return Error::internal("a rank measured " + m->unit.unit + " for the unit " + setup.units[i].name);
        return finished(i, std::move(*m));
    };
    POCKET_TRY(coordinator.runWave(todo, hooks));
    for (std::size_t i : todo)
        if (!measured[i])
            return Error::internal("distributed analysis: the unit " + setup.units[i].name + " was not measured");
    return measured;
}

} // namespace

Status runSensitivityWorker(const SensitivityParams& params, MethodRegistry& registry, ClusterChannel& channel)
{
    CompressionMethod* method = nullptr;
    ParamSet resolved;
    Setup setup;
    Hessians hessians;
    bool calibrated = false;
    ClusterWorker worker;
    worker.open = [&](const nlohmann::json& start) -> Status {
        POCKET_TRY(checkRequest(params, registry, method, resolved));
        POCKET_TRY(prepare(params, setup));
        if (params.unit == SensitivityUnit::Matrix)
            POCKET_TRY(groupUnits(setup.units, *method, resolved));
        std::vector<std::string> ids;
        for (const Unit& u : setup.units)
            ids.push_back(u.name);
        if (start["ids"] != nlohmann::json(ids))
            return Error{"has other units than rank 0 (" + std::to_string(ids.size()) + " against " + std::to_string(start["ids"].size()) +
                         "): every rank must be given the same command line and model"};
        calibrated = method->needsCalibration(resolved);
        if (calibrated) {
            auto h = measureHessians(*setup.model, *setup.checkpoint, *setup.tokenizer, setup.units, params);
            if (!h)
                return h.error();
            hessians = std::move(*h);
        }
        return {};
    };
    worker.work = [&](std::size_t index, const std::function<bool()>&) -> Result<nlohmann::json> {
        if (index >= setup.units.size())
            return Error::internal("rank 0 handed out unit " + std::to_string(index) + " of " + std::to_string(setup.units.size()));
        auto m = measureUnit(setup.units[index], *setup.checkpoint, *method, resolved, calibrated ? &hessians : nullptr, params, *setup.model,
                             setup.windows, setup.base, setup.vocab);
        if (!m)
            return m.error();
        return measuredJson(*m);
    };
    return serveCluster(channel, worker);
}

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
    const Stopwatch clock;
    CompressionMethod* method = nullptr;
    ParamSet resolved;
    POCKET_TRY(checkRequest(params, registry, method, resolved));
    Setup setup;
    POCKET_TRY(prepare(params, setup));
    if (params.unit == SensitivityUnit::Matrix)
        POCKET_TRY(groupUnits(setup.units, *method, resolved));
    const Checkpoint& c = *setup.checkpoint;
    LlamaModel& model = *setup.model;
    const bool calibrated = method->needsCalibration(resolved);
    const bool recordingOn = recording && recording->enabled;
    const std::string key = recordingOn ? cacheKey(params, setup, *method, resolved, calibrated) : std::string();
    std::map<std::string, RecordedUnit> recorded;
    if (params.reuse && !key.empty())
        recorded = recordedUnits(*recording, method->info().id, key, setup.base.perplexity);
    const auto recordedFor = [&](const Unit& unit) -> const RecordedUnit* {
        auto it = recorded.find(unit.name);
        return it != recorded.end() && sameMatrices(it->second.unit.matrices, unit.matrices) ? &it->second : nullptr;
    };
    Hessians hessians;
    const bool allRecorded = std::all_of(setup.units.begin(), setup.units.end(), [&](const Unit& u) { return recordedFor(u) != nullptr; });
    if (calibrated && !allRecorded) {
        auto h = measureHessians(model, c, *setup.tokenizer, setup.units, params);
        if (!h)
            return h.error();
        hessians = std::move(*h);
    }

    SensitivityResult result;
    result.windows = setup.windows.count();
    result.tokensScored = setup.windows.count() * setup.windows.perWindow;
    result.basePerplexity = setup.base.perplexity;
    json paramsJson{{"settings", params.settings}, {"method_params", json::parse(resolved.toJson(method->info().params))},
                    {"unit", sensitivityUnitName(params.unit)}, {"ctx", params.ctx}, {"windows", result.windows},
                    {"text", absolutePath(params.textPath)}, {"tokenizer", setup.tokenizerPath},
                    {"entropy", entropyModeName(params.entropy.mode)}};
    if (calibrated) {
        const CalibrationParams cp = calibrationOf(params);
        paramsJson["calibration"] = {{"text", absolutePath(cp.textPath)}, {"samples", cp.samples}, {"length", cp.length}, {"seed", cp.seed}};
    }
    if (!key.empty())
        paramsJson["cache_key"] = key;
    std::unique_ptr<SensitivityRecorder> recorder;
    if (recordingOn)
        recorder = std::make_unique<SensitivityRecorder>(*recording, c, params, paramsJson.dump());
    // Everything after the base pass ends through here, so a begun run is always finished.
    const auto fail = [&](const Error& e) {
        if (recorder)
            recorder->failed(e);
        return e;
    };

    SensitivityProgress progress;
    progress.unitCount = static_cast<int>(setup.units.size());
    progress.basePerplexity = result.basePerplexity;
    if (recorder)
        recorder->begin();
    if (onProgress && !onProgress(progress))
        return fail(Error::cancelled());

    // A distributed run: the units not in the store measured across the ranks first (progress as
    // they finish), then recorded in model order below.
    std::vector<std::optional<MeasuredUnit>> measuredByRanks;
    if (params.cluster) {
        auto measured = measureAcrossRanks(*params.cluster, setup, *method, resolved, calibrated ? &hessians : nullptr, params, recordedFor,
                                           progress, clock, onProgress);
        stopClusterWorkers(*params.cluster);
        if (!measured)
            return fail(measured.error());
        measuredByRanks = std::move(*measured);
    }

    std::int64_t allWeights = 0;
    double allBits = 0;
    for (const Unit& unit : setup.units) {
        UnitSensitivity u;
        u.unit = unit.name;
        std::vector<MatrixMetric> metrics;
        if (const RecordedUnit* r = recordedFor(unit)) {
            u = r->unit;
            metrics = r->matrices;
            ++result.cachedUnits;
        } else if (!measuredByRanks.empty()) {
            u = measuredByRanks[static_cast<std::size_t>(&unit - setup.units.data())]->unit;
            metrics = measuredByRanks[static_cast<std::size_t>(&unit - setup.units.data())]->metrics;
        } else {
            auto measured = measureUnit(unit, c, *method, resolved, calibrated ? &hessians : nullptr, params, model, setup.windows, setup.base,
                                        setup.vocab);
            if (!measured)
                return fail(measured.error());
            u = std::move(measured->unit);
            metrics = std::move(measured->metrics);
        }
        allWeights += u.weights;
        allBits += u.bpw * static_cast<double>(u.weights);
        result.units.push_back(u);
        if (recorder)
            recorder->addUnit(u, metrics);

        if (!measuredByRanks.empty())
            continue; // reported as they finished
        if (!reportUnit(progress, static_cast<int>(result.units.size()), result.units.back(), clock, onProgress))
            return fail(Error::cancelled());
    }
    result.seconds = clock.seconds();
    if (recorder)
        result.runId = recorder->done(result, allWeights, allBits);
    return result;
}

CalibrationParams calibrationOf(const SensitivityParams& params)
{
    CalibrationParams cp = params.calibration;
    if (cp.textPath.empty())
        cp.textPath = params.textPath;
    return cp;
}

Result<UnitSensitivity> measurePlan(const SensitivityParams& params, const std::map<std::string, PlanChoice>& plan, MethodRegistry& registry)
{
    if (plan.empty())
        return Error::usage("the plan names no matrix", "plan");
    const Stopwatch clock;
    SensitivityParams p = params;
    p.unit = SensitivityUnit::Matrix;
    p.selection = LayerSelection{};
    for (const auto& [name, choice] : plan)
        p.selection.names.push_back(name);
    Setup setup;
    POCKET_TRY(prepare(p, setup));
    // Grouped exactly as the compress job of this plan groups it (planCompressJob): matrices with the
    // same method and settings together, shared codebooks spanning their partition, the job's ids.
    CompressJobParams job;
    job.modelPath = p.modelPath;
    job.methodId = plan.begin()->second.methodId;
    job.selection = p.selection;
    for (const auto& [name, choice] : plan) { // every matrix with its method and its effective settings alone
        job.matrixMethods[name] = choice.methodId;
        job.matrixSettings[name] = choice.settings;
    }
    auto base = registry.find(job.methodId);
    if (!base)
        return base.error();
    auto jobPlan = planCompressJob(job, *setup.checkpoint, **base, &registry);
    if (!jobPlan)
        return jobPlan.error();
    bool calibrated = false;
    for (std::size_t g = 0; g < jobPlan->groups.size(); ++g)
        calibrated = calibrated || jobPlan->groupMethods[g]->needsCalibration(jobPlan->groupParams[g]);
    Hessians hessians;
    if (calibrated) {
        auto h = measureHessians(*setup.model, *setup.checkpoint, *setup.tokenizer, setup.units, p);
        if (!h)
            return h.error();
        hessians = std::move(*h);
    }
    UnitSensitivity all;
    all.unit = "plan";
    double bits = 0, mse = 0, snr = 0;
    int matrices = 0;
    for (std::size_t g = 0; g < jobPlan->groups.size(); ++g) {
        CompressionMethod& method = *jobPlan->groupMethods[g];
        const ParamSet& ps = jobPlan->groupParams[g];
        const Unit unit{jobPlan->groupIds[g], jobPlan->groups[g]};
        UnitSensitivity u; // its weights stay in the model
        auto compressed = compressUnit(unit, *setup.checkpoint, method, ps, method.needsCalibration(ps) ? &hessians : nullptr, p.entropy,
                                       *setup.model, u);
        if (!compressed)
            return compressed.error();
        bits += compressed->bits;
        mse += u.mse * static_cast<double>(u.weights);
        snr += u.snrDb * static_cast<double>(u.matrices.size());
        matrices += static_cast<int>(u.matrices.size());
        all.weights += u.weights;
        all.matrices.insert(all.matrices.end(), u.matrices.begin(), u.matrices.end());
    }
    POCKET_TRY(scoreUnit(*setup.model, setup.windows, setup.base, setup.vocab, all));
    all.bpw = all.weights > 0 ? bits / static_cast<double>(all.weights) : 0;
    all.mse = all.weights > 0 ? mse / static_cast<double>(all.weights) : 0;
    all.snrDb = matrices > 0 ? snr / matrices : 0;
    all.seconds = clock.seconds();
    return all;
}

} // namespace pocket
