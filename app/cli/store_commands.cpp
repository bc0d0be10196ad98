#include "store_commands.h"

#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/store/experiment_store.h"
#include "pocket/io/model_config.h"
#include "pocket/model/perplexity.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <sstream>

namespace cli {

namespace fs = std::filesystem;

namespace {

using pocket::absolutePath;
using pocket::displayName;

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
        return fail(g, store.error());
    auto runs = (*store)->listRuns(filter);
    if (!runs)
        return fail(g, runs.error());
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
          << std::setw(22) << "model" << std::setw(17) << "method" << std::right << std::setw(8) << "bpw" << std::setw(9) << "wall"
          << "  result\n";
    for (const auto& r : *runs) {
        const auto bpw = r.bpwCompressed ? r.bpwCompressed : r.bpwAllIn;
        t << std::left << std::setw(6) << r.id << std::setw(9) << pocket::runKindName(r.kind) << std::setw(10) << pocket::runStatusName(r.status)
          << std::setw(21) << r.startedAt << std::setw(22) << clip(r.modelName, 21) << std::setw(17) << clip(r.method, 16) << std::right
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
        return fail(g, store.error());
    auto run = (*store)->run(o.runId);
    if (!run)
        return fail(g, run.error());
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
        return fail(g, store.error());
    auto rows = (*store)->compare(filter);
    if (!rows)
        return fail(g, rows.error());
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

} // namespace

std::string storePath(const Globals& g) { return g.store.empty() ? pocket::defaultStorePath() : g.store; }

void addStoreCommands(CLI::App& app, StoreCommands& c)
{
    StoreOptions& o = c.options;
    c.runs = app.add_subcommand("runs", "List or show the runs recorded in the experiment store");
    c.runs->require_subcommand(1);
    c.runsList = c.runs->add_subcommand("list", "The newest runs, one line each");
    c.runsList->add_option("--limit", o.limit, "At most this many runs (0 = all)")->capture_default_str()->check(CLI::Range(0, 1 << 30));
    c.runsList->add_option("--kind", o.kind, "Only compress, eval or sensitivity runs")->check(CLI::IsMember({"compress", "eval", "sensitivity"}));
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

pocket::RecorderOptions recorderOptions(const Globals& g) { return {storePath(g), !g.noStore, g.commandLine}; }

} // namespace cli
