// The code search of additive quantisation (AQLM, Egiazarian et al. 2024) on a layer's output error,
// shared by the aqlm plugin and PocketLLM's additive codebooks (feedback=true): every group of g
// input weights of a row is s_r * sum_m C_m[c_m]; a sweep visits the column groups in order and gives
// each group the codes a beam search over the M codebooks finds for tr(E H E^T) with the other groups
// fixed, keeping the current codes unless the search found lower.
// LibTorch: for the plugins that use it (never include it where QCustomPlot is).
#pragma once

#include "pocket/methods/method.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace pocket::additive {

// One matrix being searched: its weights, metric, row scales and codes.
struct MatrixState {
    std::int64_t rows = 0, cols = 0, padded = 0, groups = 0;
    at::Tensor w;      // [rows, padded] original weights, zero padded
    at::Tensor h;      // [padded, padded] normalised, damped Hessian (zero on padding before damping)
    at::Tensor scale0; // [rows] starting row scales (fp16 values)
    at::Tensor scale;  // [rows] current row scales (fp16 values)
    at::Tensor codes;  // [groups, rows, M] long
    double norm = 0;   // tr(W H W^T)
};

// The search state of matrix `m` cut into groups of `g` columns (the last padded with zeros): its
// shape, padded weights, and metric: the Hessian (with `useHessian`; else the identity) normalised to
// a mean diagonal of 1, zero on the padding, plus damp * I. The caller sets scales and codes.
MatrixState matrixState(const WeightMatrix& m, int g, bool useHessian, double damp);

// The sum of each code tuple's codewords: `stacked` holds M codebooks of K rows ([M*K, d]), `codes`
// [..., M] indexes them (code m into codebook m). Returns [..., d].
at::Tensor sumCodewords(const at::Tensor& stacked, const at::Tensor& codes);

// Y[rows, padded]: every group's sum of codewords (unscaled); codebooks [M, K, g], codes [groups, rows, M].
at::Tensor codewordSums(const at::Tensor& codebooks, const at::Tensor& codes, std::int64_t rows, std::int64_t padded);

// One step of a beam search over codebook `book` [K, g]: keeps the `beam` lowest of `scores`
// [rows, W, K] (W partial sums, each extended by each codeword); `partial` [rows, W, g] and `paths`
// [rows, W, depth] (the codes so far) become those of the kept candidates. Returns their scores
// [rows, min(beam, W*K)], lowest first.
at::Tensor beamStep(const at::Tensor& scores, const at::Tensor& book, std::int64_t beam, at::Tensor& partial, at::Tensor& paths);

// Beam search over the M codebooks in order for rows sharing the metric A = H_bb: minimises
// s^2 y^T A y - 2 s y.a over y = sum_m C_m[c_m]. Returns the best sum [rows, g], its codes
// [rows, M] and its cost [rows]. With a beam of at least K^(M-1) every combination is tried.
std::tuple<at::Tensor, at::Tensor, at::Tensor> beamSearch(const at::Tensor& codebooks, const at::Tensor& a, const at::Tensor& metric,
                                                          const at::Tensor& scale, std::int64_t beam);

// One sweep of the code search over the column groups of one matrix, rows in chunks; a group's
// codes change only where the search found a lower cost than the current codes'.
void searchCodes(MatrixState& s, const at::Tensor& codebooks, std::int64_t beam);

} // namespace pocket::additive
