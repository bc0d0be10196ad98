// Bit allocation from measured sensitivities: one matrix-level sensitivity run per menu entry
// (the entry's settings on top of base.settings; units already in the store are reused), then
// allocateWithGroups() with each matrix's (or shared group's) bits and KL under every entry. The
// plan's matrixSettings and matrixMethods feed CompressJobParams.
// Call from one thread.
#pragma once

#include "pocket/analysis/bit_allocation.h"
#include "pocket/analysis/sensitivity.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

struct AllocationRequest {
    SensitivityParams base;                      // model, text, method, base settings, selection; unit is forced to matrix
    std::vector<std::vector<std::string>> menu;  // e.g. {{"bits=2"}, {"bits=3"}, {"bits=4"}}
    // Each entry's method ("" or missing: base.methodId, its settings on top of base.settings; any
    // other method takes the entry's settings alone). A plan across methods.
    std::vector<std::string> menuMethods;
    double budgetBpw = 0;
    bool measurePlan = true; // compress the plan's choices all at once and measure its real KL and perplexity
    // With measurePlan: for up to this many of the plan's items with the largest predicted damage
    // (where the summed-KL approximation errs most), the plan made without that item's chosen entry
    // is measured as a whole too; the plan with the least real KL is kept. 0 = none.
    int refine = 0;
};

// One alternative plan tried by AllocationRequest::refine.
struct PlanRefinement {
    std::string item;               // the matrix or group whose chosen entry was left out
    std::vector<std::string> left;  // that entry
    double predictedDamage = 0;     // the alternative's summed KL
    double bpw = 0;
    UnitSensitivity measured;       // the alternative measured as a whole
    bool kept = false;              // it measured better than the best plan before it
};

// One item of a plan: a matrix, or the group of matrices that share a codebook under its entry.
struct PlannedUnit {
    std::size_t entry = 0;     // menu index
    UnitSensitivity measured;  // that entry's measurement of the item
};

struct AllocationResult {
    // [menu entry][unit]: each entry's units in model order. A unit is a matrix, or under an entry
    // with shared codebooks (sharing=type/model) the group, measured and charged as a whole; the
    // plan moves a group's members together.
    std::vector<std::vector<UnitSensitivity>> perOption;
    GroupedPlan plan;
    std::vector<PlannedUnit> planned;            // the plan's items, in model order of their first matrix
    std::map<std::string, std::vector<std::string>> matrixSettings; // matrix -> its menu entry
    std::map<std::string, std::string> matrixMethods;               // matrix -> its entry's method, where not base.methodId
    std::vector<double> uniformBpw;              // bpw of using each entry everywhere
    double basePerplexity = 0;
    std::optional<UnitSensitivity> measured;     // the plan measured as a whole (measurePlan)
    std::vector<PlanRefinement> refinements;     // the alternatives AllocationRequest::refine measured, in order
};

struct AllocationProgress {
    int option = 0;       // menu entry being measured
    int optionCount = 0;
    SensitivityProgress sensitivity;
};

// One menu entry as the front ends write it, "[method:]name=value,name=value": the method ("" when
// not named) and the settings.
std::pair<std::string, std::vector<std::string>> parseMenuEntry(const std::string& entry);

// Runs the analyses and the allocation. Each analysis is recorded when `recording` is given.
Result<AllocationResult> planBitAllocation(const AllocationRequest& request, MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                           const std::function<bool(const AllocationProgress&)>& onProgress = {});

} // namespace pocket
