// Bit allocation from measured sensitivities: one matrix-level sensitivity run per menu entry
// (the entry's settings on top of base.settings), then allocateBits() with each matrix's bits and
// KL under every entry. The plan's matrixSettings feed CompressJobParams::matrixSettings.
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
};

struct AllocationResult {
    std::vector<std::vector<UnitSensitivity>> perOption; // [menu entry][matrix], model order
    AllocationPlan plan;
    std::map<std::string, std::vector<std::string>> matrixSettings; // matrix -> its menu entry
    std::map<std::string, std::string> matrixMethods;               // matrix -> its entry's method, where not base.methodId
    std::vector<double> uniformBpw;              // bpw of using each entry everywhere
    double basePerplexity = 0;
    std::optional<UnitSensitivity> measured;     // the plan measured as a whole (measurePlan)
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
