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

// One matrix's cost and predicted damage under every menu entry (indices parallel to the menu).
struct MatrixOptions {
    std::string name;
    std::int64_t weights = 0;
    std::vector<double> bits;   // total bits of the matrix under each option
    std::vector<double> damage; // predicted damage under each option (lower is better)
};

struct AllocationPlan {
    std::vector<int> choice;    // per matrix: the menu index chosen
    double totalBits = 0;
    std::int64_t totalWeights = 0;
    double bpw = 0;             // totalBits / totalWeights
    double predictedDamage = 0; // sum over matrices
};

// The allocation for `budgetBpw`. Error when even the cheapest option of every matrix exceeds
// the budget, or when the inputs are inconsistent (names the matrix).
Result<AllocationPlan> allocateBits(const std::vector<MatrixOptions>& matrices, double budgetBpw);

// The exact optimum by exhaustive search, for tests on small inputs (menu^matrices <= ~1e6).
Result<AllocationPlan> allocateBitsExhaustive(const std::vector<MatrixOptions>& matrices, double budgetBpw);

} // namespace pocket
