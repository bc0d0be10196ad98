// The k-means toolkit shared by the vector-quantisation methods (vq, and PocketLLM's init=vq,
// which must start exactly where vq ends): the sub-vector layout's counts, per-row scales,
// per-column (Hessian-diagonal) weights, weighted nearest-codeword search, k-means++ seeding,
// Lloyd iterations (plain or weighted per element), and codebook usage. No LibTorch; reentrant.
#pragma once

#include "pocket/methods/method.h"

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace pocket::vqcommon {

// Sub-vectors of width d of a matrix (its columns padded to a multiple of d): ceil(cols/d) * rows.
std::int64_t subvectorCount(const MatrixRef& ref, int d);

// Per-row scales of a matrix: each row's RMS rounded through fp16 (1 for an all-zero row), as stored.
std::vector<float> rowScales(const WeightMatrix& m);

// The fp16 bytes of `v` (the stored form of scales and codebooks).
std::vector<std::uint8_t> halfBytes(const std::vector<float>& v);

// Per-input-column weights from a Hessian's diagonal (the inputs' second moments), normalised to
// mean 1 over the matrix; a dead input gets a small weight (its weights never matter). All ones
// without a Hessian.
std::vector<float> columnWeights(const WeightMatrix& m);

// Element weights of the stacked sub-vectors of a group, in a form the nearest-codeword kernel can
// use: points [runStart[p], runStart[p+1]) share the per-dimension weights pattern[p*d .. p*d+d)
// (one column block of one matrix), times a per-point factor (a row scale squared).
struct Weighting {
    std::vector<float> pattern;        // [P, d] weights (not square-rooted)
    std::vector<std::int64_t> runStart; // P + 1
    std::vector<float> pointFactor;    // [n]
    bool empty() const { return pattern.empty(); }
};

// Builds the weighting of a group's stacked sub-vectors (column blocks of width d, matrix after
// matrix) from per-matrix column weights and row factors (either may be empty = ones).
Weighting makeWeighting(const std::vector<MatrixRef>& refs, int d, const std::vector<std::vector<float>>& colWeights,
                        const std::vector<std::vector<float>>& rowFactors);

// Nearest codeword of every point under the weighted distance sum_j pattern_j (x_j - c_j)^2 (the
// point factor does not change a point's choice); `dist` (optional) gets the weighted distance
// including the point factor.
void nearestWeighted(const std::vector<float>& points, std::int64_t n, const std::vector<float>& codebook, std::int64_t k,
                     int d, const Weighting& w, std::int32_t* idx, float* dist, int threads);

// k-means++ seeding on a sample of the points (D^2 sampling, deterministic given `gen`, the same
// for any `threads`: the distance updates are split over threads, their sum is taken in order).
std::vector<float> seedPlusPlus(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, std::int64_t sampleSize,
                                std::mt19937_64& gen, int threads = 1);

struct KmeansStats {
    int iterations = 0;
    double loss = 0; // mean (weighted) squared distance per value of the last assignment
    int dead = 0;
};

// Seeds (k-means++ or random points) and runs Lloyd iterations; with a non-empty weighting the
// distance and the centroids are weighted per element. `onIteration` may cancel (returns false).
// Returns false if cancelled.
bool kmeans(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, int iters, const std::string& init,
            std::int64_t initSample, std::mt19937_64& gen, const Weighting& weighting, int threads, std::vector<float>& codebook,
                   const std::function<bool(int, const KmeansStats&)>& onIteration);

// Codebook usage of a set of codes: codewords used, and the entropy of the index histogram in bits.
std::pair<std::int64_t, double> usage(const std::vector<std::int32_t>& idx, std::int64_t k);

} // namespace pocket::vqcommon
