#include "store_commands.h"

#include "pocket/archive.h"
#include "pocket/checkpoint.h"
#include "pocket/compress_job.h"
#include "pocket/experiment_store.h"
#include "pocket/model_config.h"
#include "pocket/perplexity.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <sstream>

namespace cli {

namespace fs = std::filesystem;

namespace {

// Absolute, normalised, symlinks resolved where the path exists: the key that links an eval of
// an archive to the compress run that wrote it.
std::string absolutePath(const std::string& path)
{
    std::error_code ec;
    const fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
    return ec ? path : p.string();
}

// "stories260K.bin" for a file, "Llama-2-7b-hf" for a folder (trailing slash or not).
std::string displayName(const std::string& path)
{
    fs::path p = fs::path(path).lexically_normal();
    if (p.filename().empty())
        p = p.parent_path();
    return p.filename().string();
}

ordered_json parseOrString(const std::string& text)
{
    if (text.empty())
        return ordered_json::object();
    ordered_json j = ordered_json::parse(text, nullptr, false);
    return j.is_discarded() ? ordered_json(text) : j;
}

template <class T>
ordered_json optJson(const std::optional<T>& v)
{
    if (!v)
        return nullptr;
    if constexpr (std::is_floating_point_v<T>)
        if (!std::isfinite(*v))
            return nullptr;
    return *v;
}

ordered_json numberJson(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(nullptr); }

std::string fixed(double v, int digits)
{
    if (std::isnan(v))
        return "-";
    std::ostringstream s;
    s << std::fixed << std::setprecision(digits) << v;
    return s.str();
}

std::string fixed(const std::optional<double>& v, int digits) { return v ? fixed(*v, digits) : "-"; }

// Four significant digits: perplexities from 4.634 to 21553.
std::string significant(double v)
{
    if (std::isnan(v))
        return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return buf;
}

std::string csvField(const std::string& s)
{
    if (s.find_first_of(",\"\n\r") == std::string::npos)
        return s;
    std::string out = "\"";
    for (char c : s) {
        if (c == '"')
            out += '"';
        out += c;
    }
    return out + "\"";
}

std::string csvNumber(const std::optional<double>& v)
{
    if (!v || std::isnan(*v))
        return "";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.10g", *v);
    return buf;
}

std::string clip(const std::string& s, std::size_t width) { return s.size() <= width ? s : s.substr(0, width - 1) + "~"; }

// Opens the store for a `runs` / `compare` command, or fails the command.
pocket::Result<std::unique_ptr<pocket::ExperimentStore>> openForReading(const Globals& g)
{
    return pocket::ExperimentStore::open(storePath(g));
}

ordered_json resultJson(const pocket::RunResult& r)
{
    return {{"metric", r.metric}, {"dataset", r.datasetName}, {"ctx", optJson(r.ctx)}, {"stride", optJson(r.stride)},
            {"value", numberJson(r.value)}, {"tokens", optJson(r.tokens)}};
}

ordered_json runJson(const pocket::RunRecord& r, bool withMatrices)
{
    ordered_json results = ordered_json::array();
    for (const auto& x : r.results)
        results.push_back(resultJson(x));
    ordered_json j{{"id", r.id},
                   {"kind", pocket::runKindName(r.kind)},
                   {"status", pocket::runStatusName(r.status)},
                   {"method", r.method},
                   {"model", r.modelName},
                   {"params", parseOrString(r.paramsJson)},
                   {"selection", r.selectionJson.empty() ? ordered_json(nullptr) : parseOrString(r.selectionJson)},
                   {"started_at", r.startedAt},
                   {"finished_at", r.finishedAt.empty() ? ordered_json(nullptr) : ordered_json(r.finishedAt)},
                   {"wall_s", optJson(r.wallSeconds)},
                   {"peak_rss_mb", optJson(r.peakRssMb)},
                   {"program_version", r.programVersion},
                   {"archive", r.archivePath.empty() ? ordered_json(nullptr) : ordered_json(r.archivePath)},
                   {"archive_bytes", optJson(r.archiveBytes)},
                   {"bpw_compressed", optJson(r.bpwCompressed)},
                   {"bpw_all_in", optJson(r.bpwAllIn)},
                   {"parent_run", r.parentRunId > 0 ? ordered_json(r.parentRunId) : ordered_json(nullptr)},
                   {"notes", r.notes},
                   {"error", r.error.empty() ? ordered_json(nullptr) : ordered_json(r.error)},
                   {"results", results}};
    if (withMatrices) {
        ordered_json matrices = ordered_json::array();
        for (const auto& m : r.matrices)
            matrices.push_back({{"name", m.name}, {"group", m.groupId}, {"rows", m.rows}, {"cols", m.cols}, {"mse", numberJson(m.mse)},
                                {"snr_db", numberJson(m.snrDb)}, {"bpw", numberJson(m.bpw)}, {"sensitivity", optJson(m.sensitivity)}});
        j["matrices"] = matrices;
    }
    return j;
}

// The headline of a run for one-line listings: its first result, or its archive.
std::string runSummary(const pocket::RunRecord& r)
{
    for (const auto& x : r.results)
        if (x.metric == "perplexity")
            return "ppl " + significant(x.value) + " on " + x.datasetName + (x.ctx ? " @" + std::to_string(*x.ctx) : "");
    if (!r.results.empty())
        return r.results.front().metric + " " + significant(r.results.front().value);
    if (!r.error.empty())
        return r.error;
    if (!r.archivePath.empty())
        return displayName(r.archivePath);
    return "";
}

int runRunsList(const Globals& g, const StoreOptions& o)
{
    pocket::RunFilter filter;
    filter.limit = o.limit;
    filter.model = o.model;
    if (!o.kind.empty()) {
        filter.kind = pocket::parseRunKind(o.kind);
        if (!filter.kind)
            return fail(g, "--kind: '" + o.kind + "' is not compress or eval", kExitUsage);
    }
    auto store = openForReading(g);
    if (!store)
        return fail(g, store.message());
    auto runs = (*store)->listRuns(filter);
    if (!runs)
        return fail(g, runs.message());
    if (o.csv) {
        std::cout << "id,kind,status,started_at,model,method,bpw_compressed,bpw_all_in,wall_s,peak_rss_mb,archive,metric,dataset,ctx,value,tokens\n";
        for (const auto& r : *runs) {
            const std::string head = std::to_string(r.id) + "," + pocket::runKindName(r.kind) + "," + pocket::runStatusName(r.status) + "," +
                                     r.startedAt + "," + csvField(r.modelName) + "," + csvField(r.method) + "," + csvNumber(r.bpwCompressed) +
                                     "," + csvNumber(r.bpwAllIn) + "," + csvNumber(r.wallSeconds) + "," + csvNumber(r.peakRssMb) + "," +
                                     csvField(r.archivePath) + ",";
            if (r.results.empty())
                std::cout << head << ",,,,\n";
            for (const auto& x : r.results)
                std::cout << head << csvField(x.metric) << "," << csvField(x.datasetName) << "," << (x.ctx ? std::to_string(*x.ctx) : "") << ","
                          << csvNumber(x.value) << "," << (x.tokens ? std::to_string(*x.tokens) : "") << "\n";
        }
        return kExitOk;
    }
    ordered_json list = ordered_json::array();
    for (const auto& r : *runs)
        list.push_back(runJson(r, false));
    std::ostringstream t;
    if (runs->empty())
        t << "no runs recorded in " << (*store)->path() << "\n";
    else
        t << std::left << std::setw(6) << "id" << std::setw(9) << "kind" << std::setw(10) << "status" << std::setw(21) << "started (UTC)"
          << std::setw(22) << "model" << std::setw(12) << "method" << std::right << std::setw(8) << "bpw" << std::setw(9) << "wall"
          << "  result\n";
    for (const auto& r : *runs) {
        const auto bpw = r.bpwCompressed ? r.bpwCompressed : r.bpwAllIn;
        t << std::left << std::setw(6) << r.id << std::setw(9) << pocket::runKindName(r.kind) << std::setw(10) << pocket::runStatusName(r.status)
          << std::setw(21) << r.startedAt << std::setw(22) << clip(r.modelName, 21) << std::setw(12) << clip(r.method, 11) << std::right
          << std::setw(8) << fixed(bpw, 3) << std::setw(9) << (r.wallSeconds ? formatDuration(*r.wallSeconds) : "-") << "  " << runSummary(r)
          << "\n";
    }
    emit(g, ordered_json{{"store", (*store)->path()}, {"runs", list}}, t.str());
    return kExitOk;
}

int runRunsShow(const Globals& g, const StoreOptions& o)
{
    auto store = openForReading(g);
    if (!store)
        return fail(g, store.message());
    auto run = (*store)->run(o.runId);
    if (!run)
        return fail(g, run.message());
    const pocket::RunRecord& r = *run;
    std::ostringstream t;
    t << "run          #" << r.id << " " << pocket::runKindName(r.kind) << ", " << pocket::runStatusName(r.status) << "\n"
      << "model        " << (r.modelName.empty() ? "-" : r.modelName) << "\n"
      << "method       " << r.method << " " << (r.paramsJson.empty() ? "{}" : r.paramsJson) << "\n";
    if (!r.selectionJson.empty())
        t << "selection    " << r.selectionJson << "\n";
    t << "started      " << r.startedAt << (r.finishedAt.empty() ? "" : ", finished " + r.finishedAt) << "\n"
      << "wall time    " << (r.wallSeconds ? formatDuration(*r.wallSeconds) : "-") << ", peak RSS " << fixed(r.peakRssMb, 1) << " MiB\n"
      << "program      " << r.programVersion << "\n";
    if (!r.archivePath.empty())
        t << "archive      " << r.archivePath << (r.archiveBytes ? " (" + std::to_string(*r.archiveBytes) + " bytes)" : "") << "\n";
    if (r.bpwCompressed || r.bpwAllIn)
        t << "bits/weight  " << fixed(r.bpwCompressed, 3) << " compressed, " << fixed(r.bpwAllIn, 3) << " all-in\n";
    if (r.parentRunId > 0)
        t << "archive of   run #" << r.parentRunId << "\n";
    if (!r.error.empty())
        t << "error        " << r.error << "\n";
    if (!r.notes.empty())
        t << "notes        " << r.notes << "\n";
    for (const auto& x : r.results)
        t << "result       " << x.metric << " " << significant(x.value) << (x.datasetName.empty() ? "" : " on " + x.datasetName)
          << (x.ctx ? ", ctx " + std::to_string(*x.ctx) : "") << (x.tokens ? ", " + std::to_string(*x.tokens) + " tokens" : "") << "\n";
    if (!r.matrices.empty()) {
        t << "matrices     " << r.matrices.size() << "\n";
        for (const auto& m : r.matrices)
            t << "  " << std::left << std::setw(48) << m.name << std::right << std::setw(8) << fixed(m.bpw, 3) << " bpw  " << std::setw(7)
              << fixed(m.snrDb, 2) << " dB  mse " << significant(m.mse) << "\n";
    }
    emit(g, runJson(r, true), t.str());
    return kExitOk;
}

int runCompare(const Globals& g, const StoreOptions& o)
{
    pocket::CompareFilter filter;
    filter.model = o.model;
    filter.dataset = o.dataset;
    if (o.ctx > 0)
        filter.ctx = o.ctx;
    filter.metric = o.metric == "all" ? std::string() : o.metric;
    auto store = openForReading(g);
    if (!store)
        return fail(g, store.message());
    auto rows = (*store)->compare(filter);
    if (!rows)
        return fail(g, rows.message());
    if (o.csv) {
        std::cout << "model,dataset,ctx,metric,method,bpw,value,wall_s,compress_s,source,published,run_id,note\n";
        for (const auto& r : *rows)
            std::cout << csvField(r.model) << "," << csvField(r.dataset) << "," << (r.ctx ? std::to_string(*r.ctx) : "") << "," << csvField(r.metric)
                      << "," << csvField(r.method) << "," << csvNumber(r.bpw) << "," << csvNumber(r.value) << "," << csvNumber(r.wallSeconds) << ","
                      << csvNumber(r.compressSeconds) << "," << csvField(r.source) << "," << (r.published ? "true" : "false") << ","
                      << (r.runId > 0 ? std::to_string(r.runId) : "") << "," << csvField(r.note) << "\n";
        return kExitOk;
    }
    ordered_json list = ordered_json::array();
    std::ostringstream t;
    t << std::left << std::setw(20) << "model" << std::setw(18) << "dataset" << std::setw(6) << "ctx" << std::setw(14) << "metric" << std::setw(20)
      << "method" << std::right << std::setw(7) << "bpw" << std::setw(10) << "value" << std::setw(9) << "wall" << "  source\n";
    for (const auto& r : *rows) {
        list.push_back({{"model", r.model},
                        {"dataset", r.dataset},
                        {"ctx", optJson(r.ctx)},
                        {"metric", r.metric},
                        {"method", r.method},
                        {"bpw", optJson(r.bpw)},
                        {"value", numberJson(r.value)},
                        {"wall_s", optJson(r.wallSeconds)},
                        {"compress_s", optJson(r.compressSeconds)},
                        {"source", r.source},
                        {"published", r.published},
                        {"run_id", r.runId > 0 ? ordered_json(r.runId) : ordered_json(nullptr)},
                        {"note", r.note}});
        std::string wall = r.wallSeconds ? formatDuration(*r.wallSeconds) : "-";
        t << std::left << std::setw(20) << clip(r.model, 19) << std::setw(18) << clip(r.dataset, 17) << std::setw(6)
          << (r.ctx ? std::to_string(*r.ctx) : "-") << std::setw(14) << clip(r.metric, 13) << std::setw(20) << clip(r.method, 19) << std::right
          << std::setw(7) << fixed(r.bpw, 3) << std::setw(10) << significant(r.value) << std::setw(9) << wall << "  "
          << (r.published ? "published: " + r.source : r.source) << "\n";
    }
    if (rows->empty())
        t << "(nothing matches)\n";
    emit(g, ordered_json{{"store", (*store)->path()}, {"rows", list}}, t.str());
    return kExitOk;
}

std::string evalParamsJson(const std::string& textPath, const std::string& tokenizerPath,
                           const pocket::EvalParams& p)
{
    ordered_json j{{"ctx", p.ctx},
                   {"stride", p.stride},
                   {"max_tokens", p.maxTokens},
                   {"batch", p.batch},
                   {"text", absolutePath(textPath)},
                   {"tokenizer", tokenizerPath}};
    return j.dump();
}

} // namespace

std::string storePath(const Globals& g)
{
    if (!g.store.empty())
        return g.store;
    if (const char* env = std::getenv("POCKETLLM_STORE"); env && *env)
        return env;
    return pocket::ExperimentStore::defaultPath();
}

void addStoreCommands(CLI::App& app, StoreCommands& c)
{
    StoreOptions& o = c.options;
    c.runs = app.add_subcommand("runs", "List or show the runs recorded in the experiment store");
    c.runs->require_subcommand(1);
    c.runsList = c.runs->add_subcommand("list", "The newest runs, one line each");
    c.runsList->add_option("--limit", o.limit, "At most this many runs (0 = all)")->capture_default_str()->check(CLI::Range(0, 1 << 30));
    c.runsList->add_option("--kind", o.kind, "Only compress or eval runs")->check(CLI::IsMember({"compress", "eval"}));
    c.runsList->add_option("--model", o.model, "Only runs whose model name contains this (case-insensitive)");
    c.runsList->add_flag("--csv", o.csv, "Print CSV (one line per result) instead of a table");
    c.runsShow = c.runs->add_subcommand("show", "One run with its results and per-matrix metrics");
    c.runsShow->add_option("ID", o.runId, "Run id (see `runs list`)")->required()->check(CLI::PositiveNumber);

    c.compare = app.add_subcommand("compare", "Your runs next to the published numbers: method, bits per weight, value, wall time, source");
    c.compare->add_option("--model", o.model, "Model name contains this (case-insensitive), e.g. llama-2-7b");
    c.compare->add_option("--dataset", o.dataset, "Dataset name contains this (case-insensitive), e.g. wikitext2, c4, or a text file's name");
    c.compare->add_option("--ctx", o.ctx, "Only this context length")->check(CLI::Range(1, 1 << 24));
    c.compare->add_option("--metric", o.metric, "perplexity, nll, accuracy, accuracy_avg, nominal_bpw, or all")->capture_default_str();
    c.compare->add_flag("--csv", o.csv, "Print CSV instead of a table");
}

int runStoreCommands(const Globals& g, const StoreCommands& c)
{
    if (*c.runsList)
        return runRunsList(g, c.options);
    if (*c.runsShow)
        return runRunsShow(g, c.options);
    if (*c.compare)
        return runCompare(g, c.options);
    return -1;
}

// ----------------------------------------------------------------------------- recorders
RunRecorder::RunRecorder(const Globals& g) : m_globals(g), m_enabled(!g.noStore), m_start(std::chrono::steady_clock::now()) {}

RunRecorder::~RunRecorder()
{
    if (m_begun && !m_finished)
        markFailed("interrupted: the command ended without a result");
}

std::int64_t RunRecorder::disable(const std::string& message)
{
    if (m_enabled)
        spdlog::warn("experiment store: {}; this run is not recorded (--no-store turns recording off)", message);
    m_enabled = false;
    m_store.reset();
    return 0;
}

void RunRecorder::begin()
{
    if (m_begun || !m_enabled)
        return;
    m_begun = true;
    auto store = pocket::ExperimentStore::open(storePath(m_globals));
    if (!store) {
        disable(store.message());
        return;
    }
    m_store = std::move(*store);
    auto id = insertRun(*m_store);
    if (!id) {
        disable(id.message());
        return;
    }
    m_runId = *id;
    spdlog::debug("recording as run #{} in {}", m_runId, m_store->path());
}

void RunRecorder::markFailed(const std::string& error)
{
    m_finished = true;
    if (!m_store || m_runId == 0)
        return;
    pocket::RunFinish f;
    f.status = pocket::RunStatus::Failed;
    f.error = error;
    f.wallSeconds = secondsSince(m_start);
    f.peakRssMb = peakRssMb();
    if (auto s = m_store->finishRun(m_runId, f); !s)
        disable(s.message());
}

EvalRecorder::EvalRecorder(const Globals& g, const pocket::Checkpoint& checkpoint, const std::string& textPath, const std::string& tokenizerPath,
                           const pocket::EvalParams& params)
    : RunRecorder(g),
      m_modelPath(checkpoint.path()),
      m_modelName(displayName(checkpoint.path())),
      m_architecture(checkpoint.config().architecture),
      m_textPath(textPath),
      m_paramsJson(evalParamsJson(textPath, tokenizerPath, params))
{
    for (const auto& t : checkpoint.tensors())
        m_parameters += pocket::elementCount(t.shape);
    m_storedBytes = checkpoint.totalBytes();
}

pocket::Result<std::int64_t> EvalRecorder::insertRun(pocket::ExperimentStore& store)
{
    pocket::RunStart start;
    start.kind = pocket::RunKind::Eval;
    start.notes = m_globals.commandLine;
    std::optional<double> bpwCompressed;
    std::optional<double> bpwAllIn;
    if (pocket::isPllmFile(m_modelPath)) {
        // An archive: the method, parameters and bits are in its manifest; the model is the one it
        // was made from, through the compress run that wrote it when this store has it.
        auto archive = pocket::Archive::open(m_modelPath, pocket::ContainerReader::Verify::ManifestOnly);
        if (!archive)
            return archive.error();
        const pocket::ArchiveManifest& m = (*archive)->manifest();
        start.archivePath = absolutePath(m_modelPath);
        start.method = m.groups.empty() ? "none" : m.groups.front().payload.methodId;
        ordered_json params = ordered_json::parse(m_paramsJson);
        if (!m.groups.empty())
            params["method"] = parseOrString(m.groups.front().payload.paramsJson);
        start.paramsJson = params.dump();
        start.selectionJson = m.selectionJson;
        const pocket::ArchiveBits bits = pocket::accountBits(m);
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
            const std::string key = m.sourceName + "\n" + pocket::hfConfigJson(m.config);
            pocket::ModelInfo model{0, m.sourceName, m.config.architecture, m.config.parameterCount(), "source:" + pocket::textFingerprint(key), ""};
            auto id = store.upsertModel(model);
            if (!id)
                return id.error();
            start.modelId = *id;
        }
    } else {
        auto hash = pocket::modelFingerprint(m_modelPath);
        if (!hash)
            return hash.error();
        pocket::ModelInfo model{0, m_modelName, m_architecture, m_parameters, *hash, absolutePath(m_modelPath)};
        auto id = store.upsertModel(model);
        if (!id)
            return id.error();
        start.modelId = *id;
        start.method = "none";
        start.paramsJson = m_paramsJson;
        if (m_parameters > 0)
            bpwAllIn = 8.0 * static_cast<double>(m_storedBytes) / static_cast<double>(m_parameters);
    }
    m_bpwCompressed = bpwCompressed;
    m_bpwAllIn = bpwAllIn;
    return store.beginRun(start);
}

std::int64_t EvalRecorder::done(const pocket::EvalResult& r)
{
    begin();
    m_finished = true;
    if (!m_store || m_runId == 0)
        return 0;
    auto dataset = [&]() -> pocket::Result<std::int64_t> {
        auto hash = pocket::fileFingerprint(m_textPath);
        if (!hash)
            return hash.error();
        return m_store->upsertDataset({0, displayName(m_textPath), "", *hash, absolutePath(m_textPath)});
    }();
    if (!dataset)
        return disable(dataset.message());
    pocket::RunResult result;
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
    pocket::RunFinish f;
    f.status = pocket::RunStatus::Done;
    f.wallSeconds = secondsSince(m_start);
    f.peakRssMb = peakRssMb();
    f.bpwCompressed = m_bpwCompressed;
    f.bpwAllIn = m_bpwAllIn;
    if (auto s = m_store->finishRun(m_runId, f); !s)
        return disable(s.message());
    spdlog::info("recorded as run #{} in {}", m_runId, m_store->path());
    return m_runId;
}

void EvalRecorder::failed(const std::string& error) { markFailed(error); }

CompressRecorder::CompressRecorder(const Globals& g, const CompressOptions& options) : RunRecorder(g), m_options(options) {}

pocket::Result<std::int64_t> CompressRecorder::insertRun(pocket::ExperimentStore& store)
{
    auto checkpoint = pocket::openCheckpoint(m_options.model);
    if (!checkpoint)
        return checkpoint.error();
    const pocket::Checkpoint& c = **checkpoint;
    auto hash = pocket::modelFingerprint(c.path());
    if (!hash)
        return hash.error();
    std::int64_t parameters = 0;
    for (const auto& t : c.tensors())
        parameters += pocket::elementCount(t.shape);
    auto modelId = store.upsertModel({0, displayName(c.path()), c.config().architecture, parameters, *hash, absolutePath(c.path())});
    if (!modelId)
        return modelId.error();
    const CompressOptions& o = m_options;
    pocket::RunStart start;
    start.kind = pocket::RunKind::Compress;
    start.method = o.method;
    start.paramsJson = ordered_json{{"set", o.settings}}.dump();
    start.modelId = *modelId;
    // The options as given; replaced by the archive's resolved selection when the run succeeds.
    start.selectionJson = ordered_json{{"preset", o.preset}, {"blocks", o.blocks}, {"types", o.types}, {"include", o.include},
                                       {"exclude", o.exclude}, {"skip_first", o.skipFirst}, {"skip_last", o.skipLast},
                                       {"keep_dtype", o.keepDtype}}
                              .dump();
    start.archivePath = absolutePath(o.out);
    start.notes = m_globals.commandLine;
    return store.beginRun(start);
}

std::int64_t CompressRecorder::done(const pocket::CompressJobResult& r)
{
    begin();
    m_finished = true;
    if (!m_store || m_runId == 0)
        return 0;
    std::vector<pocket::MatrixMetric> metrics;
    for (const pocket::GroupPayload& g : r.groups) {
        std::int64_t groupWeights = 0;
        for (const auto& m : g.matrices)
            groupWeights += m.ref.weights();
        for (const auto& m : g.matrices)
            metrics.push_back({m.ref.name, g.groupId, m.ref.rows, m.ref.cols, m.mse, m.snrDb,
                               pocket::matrixBitsPerWeight(m.ref, m.bits, g.sharedBits, groupWeights), std::nullopt});
    }
    if (auto s = m_store->addMatrixMetrics(m_runId, metrics); !s)
        return disable(s.message());
    pocket::RunFinish f;
    f.status = pocket::RunStatus::Done;
    f.wallSeconds = r.seconds;
    f.peakRssMb = peakRssMb();
    f.archiveBytes = r.archiveBytes;
    f.bpwCompressed = r.bits.bpwCompressed();
    f.bpwAllIn = r.bits.bpwAllIn();
    if (!r.groups.empty())
        f.paramsJson = r.groups.front().paramsJson;
    if (auto archive = pocket::Archive::open(r.archivePath, pocket::ContainerReader::Verify::ManifestOnly))
        f.selectionJson = (*archive)->manifest().selectionJson;
    if (auto s = m_store->finishRun(m_runId, f); !s)
        return disable(s.message());
    spdlog::info("recorded as run #{} in {}", m_runId, m_store->path());
    return m_runId;
}

void CompressRecorder::failed(const std::string& error) { markFailed(error); }

} // namespace cli
