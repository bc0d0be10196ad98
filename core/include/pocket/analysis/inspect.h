// What compression did to one matrix of an archive, as the workbench's Inspect tab draws it: the
// histograms of the original and decoded weights, the error W - W_hat downsampled to a heat map,
// and for codebook methods (vq, pocketllm) the codebook over the sub-vectors (d = 2 directly,
// larger d by PCA), the index usage with its dead codewords, and for PocketLLM what the decoder
// does: each codeword beside the mean of the sub-vectors it decodes to, and the statistics the
// reshaped LayerNorm (RLN3) normalises each tile with. Heavy (decodes the matrix): call it from a
// worker thread. Plain C++.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

// Counts per bin over [lo, hi] (bins of equal width; values outside are clamped to the end bins).
struct WeightHistogram {
    double lo = 0, hi = 0;
    std::vector<double> original; // empty without the original
    std::vector<double> decoded;
};

// W - W_hat in cells of rowsPerCell x colsPerCell weights (the last ones may be smaller), row-major.
struct ErrorMap {
    int rows = 0, cols = 0;                 // cells
    std::int64_t rowsPerCell = 1, colsPerCell = 1;
    std::vector<float> mean;                // mean signed error per cell
    std::vector<float> rms;                 // root mean square error per cell
};

// The codebook beside the sub-vectors, in the codebook's units (row scales and the group scale
// divided out), projected onto two axes.
struct CodebookView {
    int d = 0;                   // weights per sub-vector
    int dim = 0;                 // values per codeword (pocketllm: the latent size)
    std::int64_t codewords = 0;  // K (the first codebook's, with several)
    bool pca = false;            // false: d == 2, the axes are the two coordinates
    double explained[2] = {1, 0}; // share of the sub-vectors' variance along each axis
    // The projection: axis a of sub-vector s is sum_j axes[a*d + j] * (s[j] - center[j]).
    std::vector<double> axes, center;
    std::vector<float> points;   // sampled original sub-vectors, x y pairs (decoded ones without the original)
    std::vector<float> codebook; // every codeword, x y pairs (latent space projected on the same axes when dim == d)
    // pocketllm: where the decoder maps each codeword, the mean of the decoded sub-vectors that use
    // it, x y pairs (NaN for unused codewords); empty for vq (its codewords are their own decoding).
    std::vector<float> decodedCodewords;
    std::vector<std::int64_t> usage; // sub-vectors per codeword, this matrix
    int dead = 0;                // codewords this matrix never uses
    double indexPerplexity = 0;  // exp(entropy) of `usage`
    int rlnGroup = 0;            // pocketllm: sub-vectors per RLN tile
    std::vector<float> tileMean, tileStd; // pocketllm: RLN3's input mean and std per tile (at most maxTiles, evenly picked)
    std::string note;            // what was left out and why
};

struct MatrixInspection {
    std::string name, methodId, groupId;
    std::int64_t rows = 0, cols = 0;
    bool hasOriginal = false;
    double mse = 0, snrDb = 0;    // with the original
    WeightHistogram histogram;
    ErrorMap error;               // empty without the original
    std::optional<CodebookView> codebook; // vq and pocketllm
    std::string note;             // why a part is missing
};

struct InspectOptions {
    int bins = 101;
    int maxCells = 256;          // the heat map's cells per side at most
    int samplePoints = 4000;     // sub-vectors drawn in the codebook view
    int maxTiles = 4096;
    int threads = 0;             // 0 = the compute threads
    std::function<bool()> cancelled; // polled between stages
};

// The compressed matrices of an archive, in group order.
Result<std::vector<std::string>> archiveMatrixNames(const std::string& archivePath);

// Inspects `matrixName` of the archive; `original` (may be null) is the model it was compressed
// from (its tensor of that name must have the same shape).
Result<MatrixInspection> inspectMatrix(const std::string& archivePath, const std::string& matrixName, const Checkpoint* original,
                                       const MethodRegistry& registry, const InspectOptions& options = {});

// The two leading eigenvectors (unit length, d values each) and eigenvalues of a symmetric d x d
// matrix, by Jacobi rotations; for the codebook view's PCA, exposed for its test.
void leadingEigenvectors(const std::vector<double>& symmetric, int d, std::vector<double>& vectors, double values[2]);

} // namespace pocket
