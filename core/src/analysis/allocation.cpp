// Bit allocation from measured sensitivities (pocket/analysis/allocation.h).
#include "pocket/analysis/allocation.h"

#include <sstream>

namespace pocket {

namespace {

const std::string& methodOf(const AllocationRequest& request, std::size_t entry)
{
    if (entry < request.menuMethods.size() && !request.menuMethods[entry].empty())
        return request.menuMethods[entry];
    return request.base.methodId;
}

// The settings entry `entry` measures with: on top of the base settings for the base method, alone
// for another method.
std::vector<std::string> effectiveSettings(const AllocationRequest& request, std::size_t entry)
{
    std::vector<std::string> s = methodOf(request, entry) == request.base.methodId ? request.base.settings : std::vector<std::string>{};
    s.insert(s.end(), request.menu[entry].begin(), request.menu[entry].end());
    return s;
}

} // namespace

std::pair<std::string, std::vector<std::string>> parseMenuEntry(const std::string& entry)
{
    const std::size_t colon = entry.find(':');
    const bool named = colon != std::string::npos && entry.find('=') > colon;
    std::pair<std::string, std::vector<std::string>> out{named ? entry.substr(0, colon) : std::string(), {}};
    std::string part;
    std::istringstream in(named ? entry.substr(colon + 1) : entry);
    while (std::getline(in, part, ','))
        if (!part.empty())
            out.second.push_back(part);
    return out;
}

Result<AllocationResult> planBitAllocation(const AllocationRequest& request, MethodRegistry& registry, const RecorderOptions* recording,
                                           const std::function<bool(const AllocationProgress&)>& onProgress)
{
    if (request.menu.empty())
        return Error::usage("menu: give at least one setting to choose from", "menu");
    AllocationResult out;
    AllocationProgress progress;
    progress.optionCount = static_cast<int>(request.menu.size());
    for (std::size_t k = 0; k < request.menu.size(); ++k) {
        SensitivityParams p = request.base;
        p.unit = SensitivityUnit::Matrix;
        p.methodId = methodOf(request, k);
        p.settings = effectiveSettings(request, k);
        progress.option = static_cast<int>(k);
        auto r = runSensitivity(p, registry, recording, [&](const SensitivityProgress& s) {
            progress.sensitivity = s;
            return !onProgress || onProgress(progress);
        });
        if (!r)
            return r.cancelled() ? r.error()
                                 : Error{"menu entry " + std::to_string(k + 1) + ": " + r.message(), r.kind(),
                                         r.error().setting.empty() ? std::string("menu") : r.error().setting};
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
    std::map<std::string, PlanChoice> choices;
    for (std::size_t i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(plan->choice[i]);
        out.matrixSettings[options[i].name] = request.menu[k];
        if (methodOf(request, k) != request.base.methodId)
            out.matrixMethods[options[i].name] = methodOf(request, k);
        choices[options[i].name] = {methodOf(request, k), effectiveSettings(request, k)};
    }
    if (request.measurePlan) {
        auto measured = pocket::measurePlan(request.base, choices, registry);
        if (!measured)
            return measured.error().prefixed("measuring the plan");
        out.measured = *measured;
    }
    return out;
}

} // namespace pocket
