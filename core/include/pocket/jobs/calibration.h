// Calibration data for methods that need layer-input statistics (GPTQ, VQ/PocketLLM with error
// feedback or Hessian weighting): windows of text tokens at seeded random places. Pure functions.
#pragma once

#include "pocket/support/result.h"

#include <cstdint>
#include <string>
#include <vector>

namespace pocket {

// `samples` windows of `length` tokens (BOS + length-1 text tokens) at seeded random places of
// the text file `textPath`.
struct CalibrationParams {
    std::string textPath;
    int samples = 128;
    int length = 256;
    std::uint64_t seed = 0;
};

// The calibration windows for `params` from `tokens` (the encoded text). Errors: Usage for
// samples < 1 or length < 2 (settings "calibration samples" / "calibration length"), Input
// naming the file when the text is too short.
Result<std::vector<std::vector<std::int32_t>>> calibrationWindows(const std::vector<std::int32_t>& tokens, std::int32_t bosId,
                                                                  const CalibrationParams& params);

} // namespace pocket
