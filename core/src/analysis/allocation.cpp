// Bit allocation from measured sensitivities (pocket/analysis/allocation.h).
#include "pocket/analysis/allocation.h"

#include <algorithm>
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

namespace {

// The allocation's items from every entry's units: each matrix's options alone (entries that
// measured it alone) and the groups (entries that measured matrices together; equal member sets
// merged into one group with several options). Matrices in the order of the entry with most units.
struct Items {
    std::vector<std::string> names;
    std::vector<MatrixOptions> matrices;
    std::vector<GroupOptions> groups;
    std::map<std::pair<std::size_t, std::string>, const UnitSensitivity*> unitOf; // (entry, first member if alone / group name)
};

Items itemsOf(const std::vector<std::vector<UnitSensitivity>>& perOption)
{
    Items items;
    std::size_t finest = 0;
    for (std::size_t k = 0; k < perOption.size(); ++k)
        if (perOption[k].size() > perOption[finest].size())
            finest = k;
    std::map<std::string, std::size_t> index;
    const auto add = [&](const std::string& name) {
        if (index.emplace(name, items.names.size()).second) {
            items.names.push_back(name);
            items.matrices.push_back({name, 0, {}, {}, {}});
        }
    };
    for (const UnitSensitivity& u : perOption[finest])
        for (const std::string& m : u.matrices)
            add(m);
    std::map<std::vector<std::size_t>, std::size_t> groupIndex;
    for (std::size_t k = 0; k < perOption.size(); ++k)
        for (const UnitSensitivity& u : perOption[k]) {
            const double bits = u.bpw * static_cast<double>(u.weights);
            if (u.matrices.size() == 1) {
                add(u.matrices.front());
                MatrixOptions& m = items.matrices[index.at(u.matrices.front())];
                m.weights = u.weights;
                m.bits.push_back(bits);
                m.damage.push_back(u.klMean);
                m.entries.push_back(static_cast<int>(k));
                items.unitOf[{k, u.matrices.front()}] = &u;
                continue;
            }
            std::vector<std::size_t> members;
            for (const std::string& name : u.matrices) {
                add(name);
                members.push_back(index.at(name));
            }
            std::sort(members.begin(), members.end());
            auto [it, inserted] = groupIndex.emplace(members, items.groups.size());
            if (inserted)
                items.groups.push_back({u.unit, members, u.weights, {}, {}, {}});
            GroupOptions& g = items.groups[it->second];
            g.entries.push_back(static_cast<int>(k));
            g.bits.push_back(bits);
            g.damage.push_back(u.klMean);
            items.unitOf[{k, g.name}] = &u;
        }
    return items;
}

// The plan's items in model order of their first matrix.
std::vector<PlannedUnit> plannedUnits(const Items& items, const GroupedPlan& plan)
{
    std::vector<PlannedUnit> out;
    std::vector<bool> done(items.names.size(), false);
    for (std::size_t i = 0; i < items.names.size(); ++i) {
        if (done[i])
            continue;
        const auto entry = static_cast<std::size_t>(plan.entry[i]);
        std::string key = items.names[i];
        for (std::size_t g = 0; g < items.groups.size(); ++g)
            if (plan.groupOption[g] >= 0 && std::count(items.groups[g].members.begin(), items.groups[g].members.end(), i)) {
                key = items.groups[g].name;
                for (std::size_t m : items.groups[g].members)
                    done[m] = true;
            }
        done[i] = true;
        out.push_back({entry, *items.unitOf.at({entry, key})});
    }
    return out;
}

// Each matrix's method and effective settings under `plan`.
std::map<std::string, PlanChoice> choicesOf(const AllocationRequest& request, const Items& items, const GroupedPlan& plan)
{
    std::map<std::string, PlanChoice> choices;
    for (std::size_t i = 0; i < items.names.size(); ++i) {
        const auto k = static_cast<std::size_t>(plan.entry[i]);
        choices[items.names[i]] = {methodOf(request, k), effectiveSettings(request, k)};
    }
    return choices;
}

// `plan` into the result: the plan, its items, and each matrix's settings and method.
void applyPlan(const AllocationRequest& request, const Items& items, const GroupedPlan& plan, AllocationResult& out)
{
    out.plan = plan;
    out.planned = plannedUnits(items, plan);
    out.matrixSettings.clear();
    out.matrixMethods.clear();
    for (std::size_t i = 0; i < items.names.size(); ++i) {
        const auto k = static_cast<std::size_t>(plan.entry[i]);
        out.matrixSettings[items.names[i]] = request.menu[k];
        if (methodOf(request, k) != request.base.methodId)
            out.matrixMethods[items.names[i]] = methodOf(request, k);
    }
}

// The items without the option `plan` chose for one of its items (a matrix alone, or a chosen group).
Items without(const Items& items, const GroupedPlan& plan, const PlannedUnit& item)
{
    Items out = items;
    const UnitSensitivity& u = item.measured;
    const int entry = static_cast<int>(item.entry);
    if (u.matrices.size() == 1) {
        const auto i = static_cast<std::size_t>(std::find(out.names.begin(), out.names.end(), u.matrices.front()) - out.names.begin());
        MatrixOptions& m = out.matrices[i];
        const auto k = static_cast<std::size_t>(std::find(m.entries.begin(), m.entries.end(), entry) - m.entries.begin());
        if (k < m.entries.size()) {
            m.entries.erase(m.entries.begin() + k);
            m.bits.erase(m.bits.begin() + k);
            m.damage.erase(m.damage.begin() + k);
        }
        return out;
    }
    for (std::size_t g = 0; g < out.groups.size(); ++g)
        if (plan.groupOption[g] >= 0 && out.groups[g].name == u.unit) {
            GroupOptions& group = out.groups[g];
            const auto k = static_cast<std::size_t>(plan.groupOption[g]);
            group.entries.erase(group.entries.begin() + k);
            group.bits.erase(group.bits.begin() + k);
            group.damage.erase(group.damage.begin() + k);
            if (group.entries.empty())
                out.groups.erase(out.groups.begin() + g);
            break;
        }
    return out;
}

// AllocationRequest::refine: for the items with the largest predicted damage, the plan made without
// their chosen entry, measured as a whole; the plan with the least real KL is kept.
Status refinePlan(const AllocationRequest& request, const Items& items, MethodRegistry& registry, AllocationResult& out)
{
    std::vector<PlannedUnit> order = out.planned;
    std::stable_sort(order.begin(), order.end(), [](const PlannedUnit& a, const PlannedUnit& b) { return a.measured.klMean > b.measured.klMean; });
    const GroupedPlan first = out.plan;
    std::vector<std::vector<int>> tried{first.entry};
    for (std::size_t r = 0; r < order.size() && static_cast<int>(out.refinements.size()) < request.refine; ++r) {
        const Items fewer = without(items, first, order[r]);
        auto plan = allocateWithGroups(fewer.matrices, fewer.groups, request.budgetBpw);
        if (!plan || std::find(tried.begin(), tried.end(), plan->entry) != tried.end())
            continue; // nothing else fits, or a plan measured already
        tried.push_back(plan->entry);
        auto measured = pocket::measurePlan(request.base, choicesOf(request, fewer, *plan), registry);
        if (!measured)
            return measured.error().prefixed("measuring an alternative plan");
        const bool better = measured->klMean < out.measured->klMean;
        out.refinements.push_back({order[r].measured.unit, request.menu[order[r].entry], plan->predictedDamage, plan->bpw, *measured, better});
        if (better) {
            applyPlan(request, fewer, *plan, out);
            out.measured = *measured;
        }
    }
    return {};
}

} // namespace

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
    for (const auto& perUnit : out.perOption) {
        double bits = 0;
        std::int64_t weights = 0;
        for (const auto& u : perUnit) {
            bits += u.bpw * static_cast<double>(u.weights);
            weights += u.weights;
        }
        out.uniformBpw.push_back(bits / static_cast<double>(weights));
    }
    const Items items = itemsOf(out.perOption);
    auto plan = allocateWithGroups(items.matrices, items.groups, request.budgetBpw);
    if (!plan)
        return plan.error();
    applyPlan(request, items, *plan, out);
    if (request.measurePlan) {
        auto measured = pocket::measurePlan(request.base, choicesOf(request, items, *plan), registry);
        if (!measured)
            return measured.error().prefixed("measuring the plan");
        out.measured = *measured;
        POCKET_TRY(refinePlan(request, items, registry, out));
    }
    return out;
}

} // namespace pocket
