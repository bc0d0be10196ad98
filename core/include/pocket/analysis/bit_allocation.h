// Bit allocation under a budget: each matrix gets one setting from a menu (e.g. RTN bits 2..6, or
// PocketLLM/VQ (K, d) pairs) so that the summed predicted damage (the sensitivity analysis' KL per
// matrix, one analysis per menu entry) is smallest while the bits per weight over the compressed
// matrices, overheads included, stay within the budget. A multiple-choice knapsack, solved by
// greedy marginal gain along each matrix's lower convex hull of (bits, damage), then filling
// what budget is left with the best remaining upgrade. Pure computation; any thread.
#pragma once

#include "pocket/support/result.h"

#include <cstdint>
#include <string>
#include <vector>

namespace pocket {

// One matrix's (or one item's) cost and predicted damage under each of its options.
struct MatrixOptions {
    std::string name;
    std::int64_t weights = 0;
    std::vector<double> bits;   // total bits of the matrix under each option
    std::vector<double> damage; // predicted damage under each option (lower is better)
    std::vector<int> entries;   // allocateWithGroups: the menu entry of each option (empty: 0, 1, ...)
};

// Matrices that move together: under each of its options (menu entries that share one codebook
// across them) the group is compressed as a whole, and choosing it gives every member that entry.
struct GroupOptions {
    std::string name;
    std::vector<std::size_t> members; // indices into the matrices
    std::int64_t weights = 0;         // the members' together
    std::vector<int> entries;         // the menu entry of each option
    std::vector<double> bits, damage; // the whole group's
};

// A plan over matrices and groups: every matrix's menu entry, and each group's option (-1 when its
// members chose alone).
struct GroupedPlan {
    std::vector<int> entry;        // per matrix
    std::vector<int> groupOption;  // per group
    double totalBits = 0;
    std::int64_t totalWeights = 0;
    double bpw = 0;
    double predictedDamage = 0;
};

struct AllocationPlan {
    std::vector<int> choice;    // per matrix: the menu index chosen
    double totalBits = 0;
    std::int64_t totalWeights = 0;
    double bpw = 0;             // totalBits / totalWeights
    double predictedDamage = 0; // sum over matrices
};

// The allocation for `budgetBpw`: allocateGreedy(), then pairs of changes that lower the damage
// within the budget, best first, until none is left. Error when even the cheapest option of every
// matrix exceeds the budget, or when the inputs are inconsistent (names the matrix).
Result<AllocationPlan> allocateBits(const std::vector<MatrixOptions>& matrices, double budgetBpw);
// The greedy alone (marginal gain along the hulls, then the best single upgrades that fit).
Result<AllocationPlan> allocateGreedy(const std::vector<MatrixOptions>& matrices, double budgetBpw);

// The allocation when some options bind matrices into groups: every way of choosing disjoint groups
// (each with one of its options, or none) is tried with allocateGreedy() over the remaining
// matrices and the chosen groups as items, and the 16 best are refined as allocateBits() does; the
// plan with the least predicted damage within the budget is kept. A matrix may
// have no option alone when groups cover it. Error when the budget fits no plan, or the choices
// of groups are too many to try (over 200,000).
Result<GroupedPlan> allocateWithGroups(const std::vector<MatrixOptions>& matrices, const std::vector<GroupOptions>& groups, double budgetBpw);

// The exact optimum by exhaustive search, for tests on small inputs (menu^matrices <= ~1e6).
Result<AllocationPlan> allocateBitsExhaustive(const std::vector<MatrixOptions>& matrices, double budgetBpw);

} // namespace pocket
