// Value statistics of a stored tensor (min, max, mean, RMS, non-finite count), computed straight
// from its bytes in small chunks, so a walk over a model holds only one tensor's mapped pages and
// no float copy of it. Used by `pocketllm-cli info --walk` and the workbench's model summary.
// Pure function; any thread.
#pragma once

#include "pocket/io/tensor_data.h"

#include <cstdint>

namespace pocket {

struct TensorStats {
    float min = 0;              // over the finite values (+inf/-inf when none is finite)
    float max = 0;
    double mean = 0;            // over all values, non-finite ones counted as zero
    double rms = 0;
    std::int64_t nonFinite = 0; // NaN and infinite values
};

// The statistics of a float tensor (F64, F32, F16 or BF16).
TensorStats tensorStats(const TensorData& data);

} // namespace pocket
