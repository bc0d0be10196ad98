// Checks and suggestions on a compression plan before it runs: the warnings the workbench and the
// CLI show (more than 16 bits per weight, an archive larger than the model) and settings whose
// codebook and decoder overhead fits the model (the workbench's Suggest button and its proposals).
#include "pocket/jobs/compress_job.h"

#include "pocket/io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

namespace pocket {

namespace {

std::string bytesText(double bytes)
{
    const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
    return buf;
}

double overheadOf(const ArchiveBits& bits)
{
    const BitCounts& c = bits.compressed;
    return c.indexBits > 0 ? static_cast<double>(c.codebookBits + c.decoderBits) / static_cast<double>(c.indexBits) : 0;
}

const ParamSpec* findSpec(const CompressionMethod& method, const std::string& name) { return findParamSpec(method.info().params, name); }

// `settings` with name=value set (replacing any earlier assignment of `name`).
std::vector<std::string> withSetting(std::vector<std::string> settings, const std::string& name, const std::string& value)
{
    std::vector<std::string> out;
    for (std::string& s : settings)
        if (s.rfind(name + "=", 0) != 0)
            out.push_back(std::move(s));
    out.push_back(name + "=" + value);
    return out;
}

// The resolved value of `name` under `settings`, in its canonical text ("" when the method has no such parameter).
std::string resolvedValue(const CompressionMethod& method, const std::vector<std::string>& settings, const std::string& name)
{
    auto r = ParamSet::resolve(method.info().params, settings);
    const auto it = r ? r->values().find(name) : std::map<std::string, std::string>::const_iterator{};
    return r && it != r->values().end() ? it->second : std::string();
}

// The plan of `params` with its settings replaced by `settings`.
Result<JobPlan> planWith(const CompressJobParams& params, std::vector<std::string> settings, const Checkpoint& checkpoint,
                         CompressionMethod& method, const MethodRegistry* registry)
{
    CompressJobParams p = params;
    p.settings = std::move(settings);
    return planCompressJob(p, checkpoint, method, registry);
}

} // namespace

PlanCheck checkPlan(const JobPlan& plan, const Checkpoint& checkpoint)
{
    PlanCheck check;
    const ArchiveBits& b = plan.estimatedBits;
    check.overhead = overheadOf(b);
    char buf[512];
    if (b.compressedWeights > 0 && b.bpwCompressed() > 16) {
        std::snprintf(buf, sizeof buf,
                      "%.1f bits per weight: more than fp16's 16. The codebooks and decoders (%.0fx the codes) outweigh what they "
                      "save on this model; share them more widely or use a smaller codebook (the workbench's Suggest does both)",
                      b.bpwCompressed(), check.overhead);
        check.warnings.push_back(buf);
    }
    const double archiveBytes = static_cast<double>(b.totalBits()) / 8;
    const double modelBytes = static_cast<double>(checkpoint.totalBytes());
    if (modelBytes > 0 && archiveBytes > modelBytes)
        check.warnings.push_back("the archive (about " + bytesText(archiveBytes) + ") would be larger than the model (" + bytesText(modelBytes) +
                                 " on disk)");
    return check;
}

// Long: one search over the sharing levels, then over the codebook sizes, each a plan estimate.
Result<SettingsSuggestion> suggestSettings(const CompressJobParams& params, const Checkpoint& checkpoint, CompressionMethod& method,
                                           const MethodRegistry* registry, double maxOverhead)
{
    auto estimate = [&](const std::vector<std::string>& settings) { return planWith(params, settings, checkpoint, method, registry); };
    SettingsSuggestion s;
    s.settings = params.settings;
    auto current = estimate(s.settings);
    if (!current)
        return current.error();
    s.overhead = overheadOf(current->estimatedBits);
    s.bpwCompressed = current->estimatedBits.bpwCompressed();
    char buf[256];
    if (s.overhead <= maxOverhead) {
        std::snprintf(buf, sizeof buf, "the settings fit the model: codebooks and decoders cost %.1f%% of the codes", 100 * s.overhead);
        s.reason = buf;
        return s;
    }
    auto accept = [&](std::vector<std::string> settings, const JobPlan& plan) {
        s.settings = std::move(settings);
        s.overhead = overheadOf(plan.estimatedBits);
        s.bpwCompressed = plan.estimatedBits.bpwCompressed();
    };
    // Sharing levels, narrowest first, with the codebook as it is.
    const ParamSpec* sharing = findSpec(method, "sharing");
    std::vector<std::string> widest = s.settings;
    if (sharing)
        for (const std::string& level : sharing->choices) {
            std::vector<std::string> candidate = withSetting(s.settings, "sharing", level);
            auto plan = estimate(candidate);
            if (!plan)
                continue;
            widest = candidate;
            if (overheadOf(plan->estimatedBits) <= maxOverhead) {
                accept(candidate, *plan);
                break;
            }
        }
    // Smaller codebooks at the widest sharing: K halved, or B one bit less, down to the minimum.
    if (s.overhead > maxOverhead) {
        std::string name = findSpec(method, "K") ? "K" : findSpec(method, "B") ? "B" : "";
        std::vector<std::string> candidate = widest, lastSettings;
        std::optional<JobPlan> last; // the plan of lastSettings
        while (!name.empty()) {
            const ParamSpec& spec = *findSpec(method, name);
            const std::int64_t value = std::stoll(resolvedValue(method, candidate, name));
            const std::int64_t next = name == "K" ? value / 2 : value - 1;
            if (next < std::max<std::int64_t>(1, static_cast<std::int64_t>(spec.minValue)))
                break;
            candidate = withSetting(candidate, name, std::to_string(next));
            auto plan = estimate(candidate);
            if (!plan)
                break;
            last = *plan;
            lastSettings = candidate;
            if (overheadOf(plan->estimatedBits) <= maxOverhead)
                break;
        }
        if (last)
            accept(lastSettings, *last);
        else if (widest != params.settings)
            if (auto plan = estimate(widest))
                accept(widest, *plan);
    }
    for (const std::string& name : {std::string("sharing"), std::string("K"), std::string("B")}) {
        const std::string before = resolvedValue(method, params.settings, name), after = resolvedValue(method, s.settings, name);
        if (before != after)
            s.changes.push_back(name + "=" + after);
    }
    s.changed = !s.changes.empty();
    std::string list;
    for (const std::string& c : s.changes)
        list += (list.empty() ? "" : ", ") + c;
    std::snprintf(buf, sizeof buf, "%s: codebooks and decoders cost %.1f%% of the codes (%.3f bits per weight)",
                  s.changed ? list.c_str() : "no setting fits better", 100 * s.overhead, s.bpwCompressed);
    s.reason = s.overhead <= maxOverhead ? buf : std::string(buf) + "; still above the aim of " + std::to_string(int(100 * maxOverhead)) + "%";
    return s;
}

namespace {

// The candidate grid of bracketingSettings for `method` (its own assignments only).
std::vector<std::vector<std::string>> bracketCandidates(const CompressionMethod& method)
{
    std::vector<std::vector<std::string>> out;
    if (const ParamSpec* bits = findSpec(method, "bits")) {
        const int lo = std::max(2, static_cast<int>(bits->minValue)), hi = std::min(8, static_cast<int>(bits->maxValue));
        for (int b = lo; b <= hi; ++b)
            for (int group : {32, 64, 128})
                out.push_back(findSpec(method, "group") ? std::vector<std::string>{"bits=" + std::to_string(b), "group=" + std::to_string(group)}
                                                        : std::vector<std::string>{"bits=" + std::to_string(b)});
    } else if (const ParamSpec* k = findSpec(method, "K")) {
        const ParamSpec* sharing = findSpec(method, "sharing");
        const std::vector<std::string> levels = sharing ? sharing->choices : std::vector<std::string>{""};
        for (const std::string& level : levels)
            for (int d : {2, 4, 8})
                for (std::int64_t K = std::max<std::int64_t>(4, static_cast<std::int64_t>(k->minValue));
                     K <= std::min<std::int64_t>(65536, static_cast<std::int64_t>(k->maxValue)); K *= 2) {
                    std::vector<std::string> c{"d=" + std::to_string(d), "K=" + std::to_string(K)};
                    if (!level.empty())
                        c.push_back("sharing=" + level);
                    out.push_back(c);
                }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

} // namespace

Result<std::vector<BracketChoice>> bracketingSettings(const CompressJobParams& params, const Checkpoint& checkpoint, CompressionMethod& method,
                                                      double targetBpw, const MethodRegistry* registry)
{
    struct Planned {
        std::vector<std::string> settings;
        double bpw, overhead;
    };
    std::vector<Planned> planned;
    for (const std::vector<std::string>& candidate : bracketCandidates(method)) {
        std::vector<std::string> settings = params.settings;
        for (const std::string& c : candidate)
            settings = withSetting(settings, c.substr(0, c.find('=')), c.substr(c.find('=') + 1));
        auto plan = planWith(params, settings, checkpoint, method, registry);
        if (plan) // else e.g. a d the matrices' widths do not allow
            planned.push_back({candidate, plan->estimatedBits.bpwCompressed(), overheadOf(plan->estimatedBits)});
    }
    // Settings that make sense first: codebooks and decoders at most a quarter of the codes.
    const bool sensibleExist = std::any_of(planned.begin(), planned.end(), [](const Planned& p) { return p.overhead <= 0.25; });
    std::optional<BracketChoice> below, above;
    double belowOverhead = 0, aboveOverhead = 0;
    for (const Planned& c : planned) {
        if (sensibleExist && c.overhead > 0.25)
            continue;
        const std::vector<std::string>& candidate = c.settings;
        const double bpw = c.bpw, overhead = c.overhead;
        if (bpw <= targetBpw) {
            if (!below || bpw > below->bpwCompressed + 1e-9 || (bpw > below->bpwCompressed - 1e-9 && overhead < belowOverhead)) {
                below = BracketChoice{candidate, bpw, false};
                belowOverhead = overhead;
            }
        } else if (!above || bpw < above->bpwCompressed - 1e-9 || (bpw < above->bpwCompressed + 1e-9 && overhead < aboveOverhead)) {
            above = BracketChoice{candidate, bpw, true};
            aboveOverhead = overhead;
        }
    }
    std::vector<BracketChoice> out;
    if (below)
        out.push_back(*below);
    if (above)
        out.push_back(*above);
    if (out.empty())
        return Error::usage(method.info().id + ": no setting of its range can be planned for this model");
    return out;
}

} // namespace pocket
