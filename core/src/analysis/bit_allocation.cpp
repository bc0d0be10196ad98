#include "pocket/analysis/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <queue>

namespace pocket {

namespace {

Status validate(const std::vector<MatrixOptions>& matrices, double budgetBpw)
{
    if (matrices.empty())
        return Error{"bit allocation: no matrices"};
    if (!(budgetBpw > 0))
        return Error::usage("budget must be a positive number of bits per weight", "budget");
    for (const MatrixOptions& m : matrices) {
        const std::size_t menu = m.bits.size();
        if (menu == 0)
            return Error{"bit allocation: " + m.name + " has no options"};
        if (m.damage.size() != menu || (!m.entries.empty() && m.entries.size() != menu))
            return Error{"bit allocation: " + m.name + " has " + std::to_string(m.bits.size()) + " costs, " + std::to_string(m.damage.size()) +
                         " damages and " + std::to_string(m.entries.size()) + " menu entries"};
        if (m.weights <= 0)
            return Error{"bit allocation: " + m.name + " has no weights"};
        for (std::size_t k = 0; k < menu; ++k)
            if (!std::isfinite(m.bits[k]) || !std::isfinite(m.damage[k]) || m.bits[k] < 0)
                return Error{"bit allocation: " + m.name + ": option " + std::to_string(k) + " has no finite cost or damage"};
    }
    return {};
}

AllocationPlan summarise(const std::vector<MatrixOptions>& matrices, std::vector<int> choice)
{
    AllocationPlan p;
    p.choice = std::move(choice);
    for (std::size_t i = 0; i < matrices.size(); ++i) {
        p.totalBits += matrices[i].bits[p.choice[i]];
        p.predictedDamage += matrices[i].damage[p.choice[i]];
        p.totalWeights += matrices[i].weights;
    }
    p.bpw = p.totalBits / static_cast<double>(p.totalWeights);
    return p;
}

// Indices of the lower convex hull of (bits, damage), cheapest first, damage strictly falling.
std::vector<int> lowerHull(const MatrixOptions& m)
{
    std::vector<int> order(m.bits.size());
    for (std::size_t k = 0; k < order.size(); ++k)
        order[k] = static_cast<int>(k);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return m.bits[a] != m.bits[b] ? m.bits[a] < m.bits[b] : m.damage[a] < m.damage[b]; });
    std::vector<int> hull;
    for (int k : order) {
        if (!hull.empty() && m.damage[k] >= m.damage[hull.back()])
            continue; // costs more, helps nothing
        while (hull.size() >= 2) {
            const int a = hull[hull.size() - 2], b = hull.back();
            // b is above the segment a-k: drop it (its marginal gain is worse than k's from a)
            const double cross = (m.bits[b] - m.bits[a]) * (m.damage[k] - m.damage[a]) - (m.damage[b] - m.damage[a]) * (m.bits[k] - m.bits[a]);
            if (cross <= 0)
                hull.pop_back();
            else
                break;
        }
        hull.push_back(k);
    }
    return hull;
}

} // namespace

namespace {

// Pairs of changes (one matrix to another option, and optionally a second one to another) that
// lower the summed damage within the budget, the best pair first, until none is left: what the
// greedy misses when a big upgrade fits only after a downgrade elsewhere. At most 200 rounds.
void refineBySwaps(const std::vector<MatrixOptions>& m, double budgetBits, std::vector<int>& choice)
{
    struct Move {
        std::size_t matrix;
        int option;
        double bits, saved; // extra bits, damage saved
    };
    double bits = 0;
    for (std::size_t i = 0; i < m.size(); ++i)
        bits += m[i].bits[choice[i]];
    for (int round = 0; round < 200; ++round) {
        std::vector<Move> moves;
        for (std::size_t i = 0; i < m.size(); ++i)
            for (std::size_t k = 0; k < m[i].bits.size(); ++k)
                if (static_cast<int>(k) != choice[i])
                    moves.push_back({i, static_cast<int>(k), m[i].bits[k] - m[i].bits[choice[i]], m[i].damage[choice[i]] - m[i].damage[k]});
        double bestSaved = 1e-15;
        const Move* bestA = nullptr;
        const Move* bestB = nullptr;
        const double room = budgetBits * (1 + 1e-12) - bits;
        for (const Move& a : moves) {
            if (a.bits <= room && a.saved > bestSaved) {
                bestSaved = a.saved;
                bestA = &a;
                bestB = nullptr;
            }
            for (const Move& b : moves)
                if (b.matrix > a.matrix && a.bits + b.bits <= room && a.saved + b.saved > bestSaved) {
                    bestSaved = a.saved + b.saved;
                    bestA = &a;
                    bestB = &b;
                }
        }
        if (!bestA)
            return;
        for (const Move* mv : {bestA, bestB})
            if (mv) {
                bits += mv->bits;
                choice[mv->matrix] = mv->option;
            }
    }
}

} // namespace

Result<AllocationPlan> allocateBits(const std::vector<MatrixOptions>& matrices, double budgetBpw)
{
    auto greedy = allocateGreedy(matrices, budgetBpw);
    if (!greedy)
        return greedy.error();
    std::int64_t totalWeights = 0;
    for (const MatrixOptions& m : matrices)
        totalWeights += m.weights;
    std::vector<int> choice = greedy->choice;
    refineBySwaps(matrices, budgetBpw * static_cast<double>(totalWeights), choice);
    return summarise(matrices, std::move(choice));
}

Result<AllocationPlan> allocateGreedy(const std::vector<MatrixOptions>& matrices, double budgetBpw)
{
    if (auto s = validate(matrices, budgetBpw); !s)
        return s.error();
    std::int64_t totalWeights = 0;
    for (const MatrixOptions& m : matrices)
        totalWeights += m.weights;
    const double budgetBits = budgetBpw * static_cast<double>(totalWeights);

    const std::size_t n = matrices.size();
    std::vector<std::vector<int>> hulls(n);
    std::vector<std::size_t> position(n, 0);
    std::vector<int> choice(n);
    double bits = 0;
    for (std::size_t i = 0; i < n; ++i) {
        hulls[i] = lowerHull(matrices[i]);
        choice[i] = hulls[i].front();
        bits += matrices[i].bits[choice[i]];
    }
    if (bits > budgetBits * (1 + 1e-12))
        return Error::usage("budget " + std::to_string(budgetBpw) + " bits per weight is below the cheapest plan (" +
                                std::to_string(bits / static_cast<double>(totalWeights)) + " bpw)",
                            "budget");

    // Greedy along the hulls: always take the upgrade with the most damage saved per bit.
    using Step = std::pair<double, std::size_t>; // (gain per bit, matrix)
    std::priority_queue<Step> queue;
    const auto push = [&](std::size_t i) {
        if (position[i] + 1 < hulls[i].size()) {
            const int from = hulls[i][position[i]], to = hulls[i][position[i] + 1];
            queue.push({(matrices[i].damage[from] - matrices[i].damage[to]) / (matrices[i].bits[to] - matrices[i].bits[from]), i});
        }
    };
    for (std::size_t i = 0; i < n; ++i)
        push(i);
    while (!queue.empty()) {
        const auto [gain, i] = queue.top();
        queue.pop();
        const int from = hulls[i][position[i]], to = hulls[i][position[i] + 1];
        const double extra = matrices[i].bits[to] - matrices[i].bits[from];
        if (bits + extra > budgetBits * (1 + 1e-12))
            continue; // this matrix stops here; smaller upgrades of others may still fit
        bits += extra;
        choice[i] = to;
        ++position[i];
        push(i);
    }
    // What budget is left: any single upgrade (hull or not) that saves damage and fits, best first.
    for (bool improved = true; improved;) {
        improved = false;
        double bestGain = 0;
        std::size_t bestI = 0;
        int bestK = -1;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t k = 0; k < matrices[i].bits.size(); ++k) {
                const double extra = matrices[i].bits[k] - matrices[i].bits[choice[i]];
                const double saved = matrices[i].damage[choice[i]] - matrices[i].damage[k];
                if (saved > bestGain && bits + extra <= budgetBits * (1 + 1e-12)) {
                    bestGain = saved;
                    bestI = i;
                    bestK = static_cast<int>(k);
                }
            }
        if (bestK >= 0) {
            bits += matrices[bestI].bits[bestK] - matrices[bestI].bits[choice[bestI]];
            choice[bestI] = bestK;
            improved = true;
        }
    }
    return summarise(matrices, choice);
}

Result<AllocationPlan> allocateBitsExhaustive(const std::vector<MatrixOptions>& matrices, double budgetBpw)
{
    if (auto s = validate(matrices, budgetBpw); !s)
        return s.error();
    const std::size_t n = matrices.size();
    double combos = 1;
    for (const MatrixOptions& m : matrices)
        combos *= static_cast<double>(m.bits.size());
    if (combos > 2e6)
        return Error{"bit allocation: too many combinations for an exhaustive search"};
    std::int64_t totalWeights = 0;
    for (const MatrixOptions& m : matrices)
        totalWeights += m.weights;
    const double budgetBits = budgetBpw * static_cast<double>(totalWeights);
    std::vector<int> choice(n, 0), best;
    double bestDamage = std::numeric_limits<double>::infinity();
    for (;;) {
        double bits = 0, damage = 0;
        for (std::size_t i = 0; i < n; ++i) {
            bits += matrices[i].bits[choice[i]];
            damage += matrices[i].damage[choice[i]];
        }
        if (bits <= budgetBits * (1 + 1e-12) && damage < bestDamage) {
            bestDamage = damage;
            best = choice;
        }
        std::size_t i = 0;
        while (i < n && ++choice[i] == static_cast<int>(matrices[i].bits.size()))
            choice[i++] = 0;
        if (i == n)
            break;
    }
    if (best.empty())
        return Error::usage("budget is below the cheapest plan", "budget");
    return summarise(matrices, best);
}

namespace {

// The search of allocateWithGroups: groups chosen so far (disjoint), then allocateBits on the rest.
struct GroupSearch {
    const std::vector<MatrixOptions>& matrices;
    const std::vector<GroupOptions>& groups;
    double budgetBpw;
    std::vector<int> option;        // per group, -1 = not chosen
    std::vector<bool> covered;      // per matrix
    std::int64_t tried = 0;
    std::optional<GroupedPlan> best;
    std::optional<Error> problem; // an inconsistency (not the budget) that allocateBits found

    int entryOf(const MatrixOptions& m, int k) const { return m.entries.empty() ? k : m.entries[static_cast<std::size_t>(k)]; }

    // A chosen set of groups: the items (remaining matrices, then the chosen groups) and the greedy's plan.
    struct Leaf {
        std::vector<MatrixOptions> items;
        std::vector<std::size_t> alone; // the matrix of each item before the groups
        std::vector<int> option;
        AllocationPlan plan;
    };
    std::vector<Leaf> leaves; // the best 16, by the greedy's damage

    void evaluate()
    {
        ++tried;
        Leaf leaf;
        for (std::size_t i = 0; i < matrices.size(); ++i) {
            if (covered[i])
                continue;
            if (matrices[i].bits.empty())
                return; // this matrix can only move with a group
            leaf.items.push_back(matrices[i]);
            leaf.alone.push_back(i);
        }
        for (std::size_t g = 0; g < groups.size(); ++g)
            if (option[g] >= 0) {
                const auto k = static_cast<std::size_t>(option[g]);
                leaf.items.push_back({groups[g].name, groups[g].weights, {groups[g].bits[k]}, {groups[g].damage[k]}, {}});
            }
        auto plan = allocateGreedy(leaf.items, budgetBpw);
        if (!plan && plan.error().setting != "budget")
            problem = plan.error();
        if (!plan)
            return;
        const auto worse = [](const Leaf& a, const Leaf& b) { return a.plan.predictedDamage < b.plan.predictedDamage; };
        if (leaves.size() == 16 && plan->predictedDamage >= leaves.back().plan.predictedDamage)
            return;
        leaf.option = option;
        leaf.plan = std::move(*plan);
        leaves.insert(std::upper_bound(leaves.begin(), leaves.end(), leaf, worse), std::move(leaf));
        if (leaves.size() > 16)
            leaves.pop_back();
    }

    // The leaves refined; the best as a plan over the matrices.
    void finish()
    {
        for (Leaf& leaf : leaves) {
            auto plan = allocateBits(leaf.items, budgetBpw);
            if (!plan || (best && plan->predictedDamage >= best->predictedDamage))
                continue;
            GroupedPlan p;
            p.entry.assign(matrices.size(), -1);
            for (std::size_t j = 0; j < leaf.alone.size(); ++j)
                p.entry[leaf.alone[j]] = entryOf(matrices[leaf.alone[j]], plan->choice[j]);
            for (std::size_t g = 0; g < groups.size(); ++g)
                if (leaf.option[g] >= 0)
                    for (std::size_t m : groups[g].members)
                        p.entry[m] = groups[g].entries[static_cast<std::size_t>(leaf.option[g])];
            p.groupOption = leaf.option;
            p.totalBits = plan->totalBits;
            p.totalWeights = plan->totalWeights;
            p.bpw = plan->bpw;
            p.predictedDamage = plan->predictedDamage;
            best = std::move(p);
        }
    }

    bool search(std::size_t g)
    {
        if (tried > 200000)
            return false;
        if (g == groups.size()) {
            evaluate();
            return true;
        }
        if (!search(g + 1)) // the group's members choose alone
            return false;
        for (std::size_t m : groups[g].members)
            if (covered[m])
                return true; // overlaps a chosen group
        for (std::size_t m : groups[g].members)
            covered[m] = true;
        for (std::size_t k = 0; k < groups[g].bits.size(); ++k) {
            option[g] = static_cast<int>(k);
            if (!search(g + 1))
                return false;
        }
        option[g] = -1;
        for (std::size_t m : groups[g].members)
            covered[m] = false;
        return true;
    }
};

} // namespace

Result<GroupedPlan> allocateWithGroups(const std::vector<MatrixOptions>& matrices, const std::vector<GroupOptions>& groups, double budgetBpw)
{
    if (matrices.empty())
        return Error{"bit allocation: no matrices"};
    if (!(budgetBpw > 0))
        return Error::usage("budget must be a positive number of bits per weight", "budget");
    for (const GroupOptions& g : groups) {
        if (g.members.empty() || g.bits.empty() || g.bits.size() != g.damage.size() || g.bits.size() != g.entries.size() || g.weights <= 0)
            return Error{"bit allocation: group " + g.name + " has no members, weights or consistent options"};
        for (std::size_t m : g.members)
            if (m >= matrices.size())
                return Error{"bit allocation: group " + g.name + " names a matrix that is not there"};
    }
    GroupSearch s{matrices, groups, budgetBpw, std::vector<int>(groups.size(), -1), std::vector<bool>(matrices.size(), false), 0, {}};
    const bool complete = s.search(0);
    if (!complete)
        return Error::usage("the menu's shared-codebook groups combine in too many ways to try (over 200,000): give fewer entries with "
                            "sharing=type or sharing=model",
                            "menu");
    s.finish();
    if (s.problem)
        return *s.problem;
    if (!s.best) {
        if (groups.empty()) // allocateBits' own message says why
            return allocateBits(matrices, budgetBpw).error();
        return Error::usage("budget " + std::to_string(budgetBpw) + " bits per weight fits no plan of this menu", "budget");
    }
    return *s.best;
}

} // namespace pocket
