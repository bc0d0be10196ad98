// GPTQ-style error feedback for vector quantisation, shared by vq and PocketLLM: the inverse
// Hessian's upper Cholesky factor, and GPTVQ-style assignment of codes column block by column
// block with each block's error pushed onto the columns not yet quantised. No LibTorch; reentrant.
#pragma once

#include "pocket/methods/method.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pocket::vqcommon {

// Lower Cholesky factor of a symmetric positive-definite n x n matrix, in place; false if not PD.
bool choleskyLower(std::vector<double>& a, std::int64_t n);

// U with U^T U = H^-1 (upper), as GPTQ uses it: from H's Cholesky factor, H^-1 = L^-T L^-1.
bool inverseCholeskyUpper(std::vector<double> h, std::int64_t n, std::vector<double>& u);

// Supplies the candidate codebooks of one column block: `books` gets B codebooks of [k, d] values
// (in the scaled space the weights are divided into, i.e. before any row scale), `bookOfRow` the
// book each of the matrix's rows uses (runs of equal values are searched together).
using BlockBooks = std::function<void(std::int64_t block, std::vector<float>& books, std::vector<std::int32_t>& bookOfRow)>;

// GPTVQ-style assignment (van Baalen et al. 2024) with fixed candidates: column block by column
// block, codes minimise the distance weighted by the inverse Hessian's Cholesky diagonal, and the
// block's error (against rowScale[r] * candidate) is pushed onto the later columns exactly as GPTQ
// does column by column. `idx` gets (cols/d) * rows codes in sub-vector order (block-major).
Status assignWithFeedback(const WeightMatrix& m, std::int64_t k, int d, double damp, const std::vector<float>& rowScale,
                          const BlockBooks& blockBooks, std::int32_t* idx, int threads, const std::string& who);

} // namespace pocket::vqcommon
