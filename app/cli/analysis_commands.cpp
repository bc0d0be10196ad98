#include "analysis_commands.h"

#include "cluster_launch.h"
#include "compress_commands.h"
#include "store_commands.h"

#include "pocket/model/llama_model.h"
#include "pocket/analysis/allocation.h"
#include "pocket/analysis/sensitivity.h"
#include "pocket/jobs/compress_job.h"

#include <cstdio>
#include <iomanip>
#include <sstream>

namespace cli {

namespace {

ordered_json unitJson(const pocket::UnitSensitivity& u)
{
    return {{"unit", u.unit},       {"matrices", u.matrices},         {"weights", u.weights},
            {"bpw", u.bpw},         {"mse", u.mse},                   {"snr_db", u.snrDb},
            {"perplexity", u.perplexity}, {"delta_perplexity", u.deltaPerplexity}, {"kl", u.klMean},
            {"top1_agreement", u.top1Agreement}, {"seconds", u.seconds}, {"from_store", u.cached}};
}

std::string unitLine(const pocket::UnitSensitivity& u)
{
    char line[256];
    std::snprintf(line, sizeof line, "%-42s %7.3f %10.4f %+10.4f %10.5f %7.2f%% %7.2f%s", u.unit.c_str(), u.bpw, u.perplexity, u.deltaPerplexity,
                  u.klMean, 100 * u.top1Agreement, u.snrDb, u.cached ? "  (from the store)" : "");
    return line;
}

// The analysis parameters of `o`, or an option error.
pocket::Status sensitivityParams(const SensitivityOptions& o, pocket::SensitivityParams& p)
{
    p.modelPath = o.model;
    p.textPath = o.text;
    p.tokenizerPath = o.tokenizer;
    p.methodId = o.method;
    if (!o.settings.empty() || o.method != "rtn")
        p.settings = o.settings;
    const auto unit = pocket::parseSensitivityUnit(o.unit);
    if (!unit)
        return pocket::Error::usage("--unit: '" + o.unit + "' is not matrix, block or type");
    p.unit = *unit;
    if (!o.blocks.empty()) {
        auto blocks = pocket::LayerSelection::parseBlocks(o.blocks);
        if (!blocks)
            return blocks.error();
        p.selection.blocks = *blocks;
    }
    if (!o.types.empty()) {
        auto types = pocket::LayerSelection::parseTypes(o.types);
        if (!types)
            return types.error();
        p.selection.types = *types;
    }
    p.ctx = o.ctx;
    p.windows = o.windows;
    p.calibration = o.calibration;
    p.reuse = !o.remeasure;
    auto entropy = entropyOptions(o.entropy, o.coder, o.minSaving);
    if (!entropy)
        return entropy.error();
    p.entropy = *entropy;
    pocket::setComputeThreads(o.threads);
    return {};
}

int runSensitivityCommand(const Globals& g, const SensitivityOptions& o)
{
    pocket::SensitivityParams p;
    if (auto s = sensitivityParams(o, p); !s)
        return fail(g, s.error());
    // A distributed analysis: rank 0 goes on below, the other ranks measure units for it.
    ClusterRole role = joinCluster(g, o.mpi, o.threads, [&](pocket::ClusterChannel& c) { return pocket::runSensitivityWorker(p, registry(), c); });
    if (role.exitCode)
        return *role.exitCode;
    const ClusterStop stopWorkers{role.channel.get()};
    p.cluster = role.channel.get();

    const bool stream = !g.json;
    if (stream)
        std::printf("%-42s %7s %10s %10s %10s %8s %7s\n", "unit", "bpw", "ppl", "d_ppl", "KL", "top-1", "SNR");
    ProgressLine progress(!g.quiet);
    const pocket::RecorderOptions recording = recorderOptions(g);
    auto result = pocket::runSensitivity(p, registry(), &recording, [&](const pocket::SensitivityProgress& s) {
        progress.finish();
        if (s.latest && stream) {
            std::printf("%s\n", unitLine(*s.latest).c_str());
            std::fflush(stdout);
        } else if (!s.latest && stream) {
            std::printf("%-42s %7s %10.4f\n", "(uncompressed)", "-", s.basePerplexity);
        }
        progress.show("unit " + std::to_string(s.unitsDone) + "/" + std::to_string(s.unitCount) + "  ETA " + formatDuration(s.etaSeconds));
        return true;
    });
    progress.finish();
    if (!result)
        return fail(g, result.error());
    ordered_json units = ordered_json::array();
    for (const auto& u : result->units)
        units.push_back(unitJson(u));
    ordered_json out{{"model", o.model}, {"text", o.text}, {"method", o.method}, {"settings", p.settings},
                     {"unit", o.unit},   {"ctx", o.ctx},   {"windows", result->windows}, {"tokens", result->tokensScored},
                     {"base_perplexity", result->basePerplexity}, {"units", units}, {"seconds", result->seconds}};
    if (result->runId > 0)
        out["run_id"] = result->runId;
    std::ostringstream t;
    t << std::fixed << std::setprecision(1) << result->units.size() << " units, " << result->tokensScored << " tokens in " << result->windows
      << " windows, " << result->seconds << " s";
    if (result->cachedUnits > 0)
        t << " (" << result->cachedUnits << " units read from the store)";
    if (result->runId > 0)
        t << "; recorded as run #" << result->runId;
    t << "\n";
    if (g.json)
        emit(g, out, "");
    else
        std::cout << t.str();
    return kExitOk;
}

int runAllocateCommand(const Globals& g, const AllocateOptions& o)
{
    pocket::AllocationRequest request;
    if (auto s = sensitivityParams(o.base, request.base); !s)
        return fail(g, s.error());
    for (const std::string& entry : o.menu) {
        auto [method, settings] = pocket::parseMenuEntry(entry);
        request.menuMethods.push_back(method);
        request.menu.push_back(settings);
    }
    request.budgetBpw = o.budget;
    request.refine = o.refine;
    ProgressLine progress(!g.quiet);
    const pocket::RecorderOptions recording = recorderOptions(g);
    auto result = pocket::planBitAllocation(request, registry(), &recording, [&](const pocket::AllocationProgress& a) {
        progress.show("menu entry " + std::to_string(a.option + 1) + "/" + std::to_string(a.optionCount) + ": unit " +
                      std::to_string(a.sensitivity.unitsDone) + "/" + std::to_string(a.sensitivity.unitCount));
        return true;
    });
    progress.finish();
    if (!result)
        return fail(g, result.error());
    const auto& plan = result->plan;
    ordered_json matrices = ordered_json::array();
    std::ostringstream t;
    t << std::fixed;
    t << "menu (uniform bpw):";
    for (std::size_t k = 0; k < o.menu.size(); ++k)
        t << "  [" << k + 1 << "] " << o.menu[k] << " " << std::setprecision(3) << result->uniformBpw[k];
    t << "\n\n" << std::left << std::setw(44) << "matrix" << std::setw(24) << "setting" << std::right << std::setw(8) << "bpw" << std::setw(12)
      << "KL" << "\n";
    for (const pocket::PlannedUnit& item : result->planned) {
        const auto& u = item.measured;
        const std::string& setting = o.menu[item.entry];
        ordered_json row{{"matrix", u.unit}, {"setting", setting}, {"bpw", u.bpw}, {"kl", u.klMean}};
        if (u.matrices.size() > 1) // a group sharing one codebook, charged as a whole
            row["matrices"] = u.matrices;
        matrices.push_back(row);
        const std::string name = u.matrices.size() > 1 ? u.unit + " (" + std::to_string(u.matrices.size()) + " matrices)" : u.unit;
        t << std::left << std::setw(44) << name << std::setw(24) << setting << std::right << std::setprecision(3) << std::setw(8) << u.bpw
          << std::setprecision(5) << std::setw(12) << u.klMean << (u.cached ? "  (from the store)" : "") << "\n";
    }
    t << std::setprecision(3) << "\nplan: " << plan.bpw << " bits per weight (budget " << o.budget << "), predicted damage (summed KL) "
      << std::setprecision(5) << plan.predictedDamage << "\n";
    ordered_json out{{"model", o.base.model}, {"method", o.base.method}, {"settings", request.base.settings}, {"menu", o.menu},
                     {"uniform_bpw", result->uniformBpw}, {"budget", o.budget}, {"bpw", plan.bpw},
                     {"predicted_damage", plan.predictedDamage}, {"matrices", matrices}};
    ordered_json entries = ordered_json::array(); // what the analysis cost, per menu entry
    int measured = 0, fromStore = 0;
    for (std::size_t k = 0; k < result->perOption.size(); ++k) {
        double seconds = 0;
        int cached = 0;
        for (const auto& u : result->perOption[k]) {
            seconds += u.seconds;
            cached += u.cached ? 1 : 0;
        }
        const int units = static_cast<int>(result->perOption[k].size());
        measured += units - cached;
        fromStore += cached;
        entries.push_back({{"menu", o.menu[k]}, {"units", units}, {"from_store", cached}, {"seconds", seconds}});
    }
    out["entries"] = entries;
    t << "analysis: " << measured << " units measured, " << fromStore << " read from the store\n";
    if (result->measured) { // the summed per-matrix KL against the plan's real KL
        const pocket::UnitSensitivity& m = *result->measured;
        out["measured"] = {{"kl", m.klMean}, {"perplexity", m.perplexity}, {"base_perplexity", result->basePerplexity},
                           {"top1_agreement", m.top1Agreement}, {"seconds", m.seconds}};
        t << "measured:  KL " << std::setprecision(5) << m.klMean << " (predicted " << plan.predictedDamage << "), perplexity "
          << std::setprecision(4) << m.perplexity << " (original " << result->basePerplexity << "), top-1 agreement "
          << std::setprecision(2) << 100 * m.top1Agreement << "%\n";
    }
    ordered_json refinements = ordered_json::array();
    for (const pocket::PlanRefinement& r : result->refinements) {
        std::string left;
        for (const std::string& s : r.left)
            left += (left.empty() ? "" : ",") + s;
        refinements.push_back({{"item", r.item}, {"left_out", left}, {"bpw", r.bpw}, {"predicted_damage", r.predictedDamage},
                               {"kl", r.measured.klMean}, {"perplexity", r.measured.perplexity}, {"kept", r.kept}});
        t << "refine:    without " << left << " for " << r.item << ": KL " << std::setprecision(5) << r.measured.klMean << " (predicted "
          << r.predictedDamage << ")" << (r.kept ? ", kept" : "") << "\n";
    }
    if (!result->refinements.empty())
        out["refinements"] = refinements;

    if (!o.out.empty()) {
        pocket::CompressJobParams job;
        job.modelPath = o.base.model;
        job.methodId = o.base.method;
        job.settings = request.base.settings;
        job.matrixSettings = result->matrixSettings;
        job.matrixMethods = result->matrixMethods;
        job.selection = request.base.selection;
        job.tokenizerPath = o.base.tokenizer;
        job.calibration = pocket::calibrationOf(request.base);
        job.entropy = request.base.entropy;
        job.outPath = o.out;
        auto compressed = pocket::runCompressJob(job, registry(), &recording);
        if (!compressed)
            return fail(g, compressed.error());
        out["archive"] = compressed->archivePath;
        out["archive_bpw_compressed"] = compressed->bits.bpwCompressed();
        if (compressed->runId > 0)
            out["run_id"] = compressed->runId;
        t << "archive: " << compressed->archivePath << " (" << std::setprecision(3) << compressed->bits.bpwCompressed()
          << " bits per compressed weight)\n";
    }
    emit(g, out, t.str());
    return kExitOk;
}

} // namespace

namespace {

void addAnalysisOptions(CLI::App* cmd, SensitivityOptions& o, bool withUnit)
{
    cmd->add_option("MODEL", o.model, "HF folder, .safetensors file in one, .gguf file, or llama2.c .bin")->required();
    cmd->add_option("--text", o.text, "UTF-8 text; its first windows are scored")->required();
    cmd->add_option("--tokenizer", o.tokenizer, "tokenizer.model, tokenizer.json, tokenizer.bin or a .gguf (default: found beside the model or in the GGUF)");
    cmd->add_option("--method", o.method, "Compression method applied to each unit (default: rtn with bits=3 group=32)")
        ->capture_default_str();
    cmd->add_option("--set", o.settings, "Method parameter name=value (repeatable)");
    if (withUnit)
        cmd->add_option("--unit", o.unit, "matrix, block or type")->capture_default_str()->check(CLI::IsMember({"matrix", "block", "type"}));
    cmd->add_option("--blocks,--layers", o.blocks, "Only these blocks, e.g. 0-2,5,10-");
    cmd->add_option("--types", o.types, "Only these matrix types, e.g. q,k,v or attn or mlp");
    cmd->add_option("--ctx", o.ctx, "Tokens per window, BOS included")->capture_default_str()->check(CLI::Range(2, 1 << 20));
    cmd->add_option("--windows", o.windows, "Windows of the text scored")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--threads", o.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
    cmd->add_flag("--remeasure", o.remeasure,
                  "Measure every unit again; by default units an earlier recorded analysis measured from the same model, texts, "
                  "method and settings are read from the store");
    addEntropyOptions(cmd, o.entropy, o.coder, o.minSaving); // bits counted as an archive would store them
    addCalibrationOptions(cmd, o.calibration,
                          "Calibration text for methods that need it (gptq, vq/pocketllm feedback, aqlm); default: the --text file. "
                          "Hessians are measured once on the original model");
}

} // namespace

void addAnalysisCommands(CLI::App& app, AnalysisCommands& c)
{
    c.sensitivity = app.add_subcommand("sensitivity",
                                       "Compress one unit at a time and measure the damage: perplexity change, KL divergence from the "
                                       "original's next-token distributions, share of unchanged top-1 predictions");
    addAnalysisOptions(c.sensitivity, c.options, true);
    c.sensitivity->add_flag("--mpi", c.options.mpi,
                            "Measure the units across the processes mpirun started (on by itself when it started more than one)");
    AllocateOptions& a = c.allocateOptions;
    c.allocate = app.add_subcommand("allocate",
                                    "Choose each matrix's setting from a menu to minimise the summed sensitivity (KL) within a budget of "
                                    "bits per weight; optionally compress with the plan");
    addAnalysisOptions(c.allocate, a.base, false);
    c.allocate->add_option("--menu", a.menu,
                           "A choice, e.g. bits=3 or K=256,d=4 (settings on top of --set), or another method's: gptq:bits=3,group=32 "
                           "(its settings alone); repeat for each")
        ->required();
    c.allocate->add_option("--budget", a.budget, "Bits per weight over the compressed matrices, overheads included")
        ->required()
        ->check(CLI::PositiveNumber);
    c.allocate->add_option("--refine", a.refine,
                           "After planning, measure up to N alternative plans (each without the chosen entry of one of the items with "
                           "the largest predicted damage) as a whole and keep the one with the least real KL")
        ->capture_default_str()
        ->check(CLI::Range(0, 1000));
    c.allocate->add_option("-o,--out", a.out, "Compress with the plan into this .pllm archive");
}

int runAnalysisCommands(const Globals& g, const AnalysisCommands& c)
{
    if (*c.sensitivity)
        return runSensitivityCommand(g, c.options);
    if (*c.allocate)
        return runAllocateCommand(g, c.allocateOptions);
    return -1;
}

} // namespace cli
