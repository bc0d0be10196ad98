#include "analysis_commands.h"

#include "compress_commands.h"
#include "store_commands.h"

#include "pocket/llama_model.h"
#include "pocket/sensitivity.h"

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
            {"top1_agreement", u.top1Agreement}, {"seconds", u.seconds}};
}

std::string unitLine(const pocket::UnitSensitivity& u)
{
    char line[256];
    std::snprintf(line, sizeof line, "%-42s %7.3f %10.4f %+10.4f %10.5f %7.2f%% %7.2f", u.unit.c_str(), u.bpw, u.perplexity, u.deltaPerplexity,
                  u.klMean, 100 * u.top1Agreement, u.snrDb);
    return line;
}

int runSensitivityCommand(const Globals& g, const SensitivityOptions& o)
{
    pocket::SensitivityParams p;
    p.modelPath = o.model;
    p.textPath = o.text;
    p.tokenizerPath = o.tokenizer;
    p.methodId = o.method;
    if (!o.settings.empty() || o.method != "rtn")
        p.settings = o.settings;
    const auto unit = pocket::parseSensitivityUnit(o.unit);
    if (!unit)
        return fail(g, "--unit: '" + o.unit + "' is not matrix, block or type", kExitUsage);
    p.unit = *unit;
    if (!o.blocks.empty()) {
        auto blocks = pocket::LayerSelection::parseBlocks(o.blocks);
        if (!blocks)
            return fail(g, blocks.message(), kExitUsage);
        p.selection.blocks = *blocks;
    }
    if (!o.types.empty()) {
        auto types = pocket::LayerSelection::parseTypes(o.types);
        if (!types)
            return fail(g, types.message(), kExitUsage);
        p.selection.types = *types;
    }
    p.ctx = o.ctx;
    p.windows = o.windows;
    pocket::setComputeThreads(o.threads);

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
    if (!result) {
        const std::string& m = result.message();
        return fail(g, m, m.rfind("--", 0) == 0 || m.find("unknown method") != std::string::npos ? kExitUsage : kExitBadInput);
    }
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
    if (result->runId > 0)
        t << "; recorded as run #" << result->runId;
    t << "\n";
    if (g.json)
        emit(g, out, "");
    else
        std::cout << t.str();
    return kExitOk;
}

} // namespace

void addAnalysisCommands(CLI::App& app, AnalysisCommands& c)
{
    SensitivityOptions& o = c.options;
    c.sensitivity = app.add_subcommand("sensitivity",
                                       "Compress one unit at a time and measure the damage: perplexity change, KL divergence from the "
                                       "original's next-token distributions, share of unchanged top-1 predictions");
    c.sensitivity->add_option("MODEL", o.model, "HF folder, .safetensors file in one, or llama2.c .bin")->required();
    c.sensitivity->add_option("--text", o.text, "UTF-8 text; its first windows are scored")->required();
    c.sensitivity->add_option("--tokenizer", o.tokenizer, "tokenizer.model or tokenizer.bin (default: found beside the model)");
    c.sensitivity->add_option("--method", o.method, "Compression method applied to each unit (default: rtn with bits=3 group=32)")
        ->capture_default_str();
    c.sensitivity->add_option("--set", o.settings, "Method parameter name=value (repeatable)");
    c.sensitivity->add_option("--unit", o.unit, "matrix, block or type")->capture_default_str()->check(CLI::IsMember({"matrix", "block", "type"}));
    c.sensitivity->add_option("--blocks,--layers", o.blocks, "Only these blocks, e.g. 0-2,5,10-");
    c.sensitivity->add_option("--types", o.types, "Only these matrix types, e.g. q,k,v or attn or mlp");
    c.sensitivity->add_option("--ctx", o.ctx, "Tokens per window, BOS included")->capture_default_str()->check(CLI::Range(2, 1 << 20));
    c.sensitivity->add_option("--windows", o.windows, "Windows of the text scored")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    c.sensitivity->add_option("--threads", o.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
}

int runAnalysisCommands(const Globals& g, const AnalysisCommands& c)
{
    if (*c.sensitivity)
        return runSensitivityCommand(g, c.options);
    return -1;
}

} // namespace cli
