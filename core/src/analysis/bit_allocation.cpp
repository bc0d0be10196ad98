#include "pocket/analysis/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>

namespace pocket {

namespace {

Status validate(const std::vector<MatrixOptions>& matrices, double budgetBpw)
{
    if (matrices.empty())
        return Error{"bit allocation: no matrices"};
    if (!(budgetBpw > 0))
        return Error::usage("budget must be a positive number of bits per weight", "budget");
    const std::size_t menu = matrices.front().bits.size();
    if (menu == 0)
        return Error{"bit allocation: the menu is empty"};
    for (const MatrixOptions& m : matrices) {
        if (m.bits.size() != menu || m.damage.size() != menu)
            return Error{"bit allocation: " + m.name + " has " + std::to_string(m.bits.size()) + " costs and " +
                         std::to_string(m.damage.size()) + " damages for a menu of " + std::to_string(menu)};
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

Result<AllocationPlan> allocateBits(const std::vector<MatrixOptions>& matrices, double budgetBpw)
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
    const std::size_t n = matrices.size(), menu = matrices.front().bits.size();
    double combos = std::pow(static_cast<double>(menu), static_cast<double>(n));
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
        while (i < n && ++choice[i] == static_cast<int>(menu))
            choice[i++] = 0;
        if (i == n)
            break;
    }
    if (best.empty())
        return Error::usage("budget is below the cheapest plan", "budget");
    return summarise(matrices, best);
}

} // namespace pocket
