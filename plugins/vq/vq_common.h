// Weight-space vector quantisation pieces shared by the k-means VQ plugin and PocketLLM's `init=vq`
// (which must start exactly where VQ ends): k-means++ seeding, Lloyd iterations (plain, or weighted
// per element by activation statistics and row scales), per-row scales, and GPTVQ-style assignment
// with error feedback against candidate codebooks supplied per column block. Header-only, no LibTorch.
#pragma once

#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/vq_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace pocket::vqcommon {

// Lower Cholesky factor of a symmetric positive-definite n x n matrix, in place; false if not PD.
inline bool choleskyLower(std::vector<double>& a, std::int64_t n)
{
    for (std::int64_t j = 0; j < n; ++j) {
        double diag = a[j * n + j];
        for (std::int64_t k = 0; k < j; ++k)
            diag -= a[j * n + k] * a[j * n + k];
        if (!(diag > 0))
            return false;
        const double l = std::sqrt(diag);
        a[j * n + j] = l;
        for (std::int64_t i = j + 1; i < n; ++i) {
            double v = a[i * n + j];
            for (std::int64_t k = 0; k < j; ++k)
                v -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = v / l;
        }
        for (std::int64_t k = j + 1; k < n; ++k)
            a[j * n + k] = 0;
    }
    return true;
}

// U with U^T U = H^-1 (upper), as GPTQ uses it: from H's Cholesky factor, H^-1 = L^-T L^-1.
inline bool inverseCholeskyUpper(std::vector<double> h, std::int64_t n, std::vector<double>& u)
{
    if (!choleskyLower(h, n))
        return false;
    std::vector<double> linv(static_cast<std::size_t>(n * n), 0.0); // L^-1, lower
    for (std::int64_t i = 0; i < n; ++i) {
        linv[i * n + i] = 1 / h[i * n + i];
        for (std::int64_t j = 0; j < i; ++j) {
            double v = 0;
            for (std::int64_t k = j; k < i; ++k)
                v -= h[i * n + k] * linv[k * n + j];
            linv[i * n + j] = v / h[i * n + i];
        }
    }
    std::vector<double> hinv(static_cast<std::size_t>(n * n), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j <= i; ++j) {
            double v = 0;
            for (std::int64_t k = i; k < n; ++k)
                v += linv[k * n + i] * linv[k * n + j];
            hinv[i * n + j] = hinv[j * n + i] = v;
        }
    if (!choleskyLower(hinv, n))
        return false;
    u.assign(static_cast<std::size_t>(n * n), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = i; j < n; ++j)
            u[i * n + j] = hinv[j * n + i];
    return true;
}

inline std::int64_t subvectorCount(const MatrixRef& ref, int d)
{
    return (ref.cols + d - 1) / d * ref.rows;
}

inline float distance2(const float* a, const float* b, int d)
{
    float s = 0;
    for (int j = 0; j < d; ++j)
        s += (a[j] - b[j]) * (a[j] - b[j]);
    return s;
}

// Per-row scales of a matrix: each row's RMS rounded through fp16 (1 for an all-zero row), as stored.
inline std::vector<float> rowScales(const WeightMatrix& m)
{
    std::vector<float> s(static_cast<std::size_t>(m.ref.rows));
    for (std::int64_t r = 0; r < m.ref.rows; ++r) {
        double sum = 0;
        for (std::int64_t c = 0; c < m.ref.cols; ++c)
            sum += static_cast<double>(m.values[r * m.ref.cols + c]) * m.values[r * m.ref.cols + c];
        const float rms = static_cast<float>(std::sqrt(sum / static_cast<double>(m.ref.cols)));
        std::uint16_t h = floatToHalf(rms > 0 && std::isfinite(rms) ? rms : 1.0f);
        float back = halfToFloat(h);
        if (!(back > 0) || !std::isfinite(back)) // below fp16's range
            back = 1.0f, h = floatToHalf(1.0f);
        s[static_cast<std::size_t>(r)] = back;
    }
    return s;
}

inline std::vector<std::uint8_t> halfBytes(const std::vector<float>& v)
{
    std::vector<std::uint8_t> bytes(v.size() * 2);
    convertFromFloat(v.data(), v.size(), DType::F16, bytes.data());
    return bytes;
}

// Per-input-column weights from a Hessian's diagonal (the inputs' second moments), normalised to
// mean 1 over the matrix; a dead input gets a small weight (its weights never matter). All ones
// without a Hessian.
inline std::vector<float> columnWeights(const WeightMatrix& m)
{
    const std::int64_t cols = m.ref.cols;
    std::vector<float> w(static_cast<std::size_t>(cols), 1.0f);
    if (m.hessian.size() != static_cast<std::size_t>(cols * cols))
        return w;
    double mean = 0;
    for (std::int64_t c = 0; c < cols; ++c)
        mean += std::max(0.0f, m.hessian[c * cols + c]) / static_cast<double>(cols);
    if (!(mean > 0))
        return w;
    for (std::int64_t c = 0; c < cols; ++c)
        w[static_cast<std::size_t>(c)] = static_cast<float>(std::max(1e-6, std::max(0.0f, m.hessian[c * cols + c]) / mean));
    return w;
}

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
inline Weighting makeWeighting(const std::vector<MatrixRef>& refs, int d, const std::vector<std::vector<float>>& colWeights,
                               const std::vector<std::vector<float>>& rowFactors)
{
    Weighting w;
    std::int64_t offset = 0;
    w.runStart.push_back(0);
    for (std::size_t i = 0; i < refs.size(); ++i) {
        const MatrixRef& ref = refs[i];
        const std::int64_t blocks = (ref.cols + d - 1) / d;
        for (std::int64_t b = 0; b < blocks; ++b) {
            for (int j = 0; j < d; ++j) {
                const std::int64_t c = b * d + j;
                float v = 1.0f;
                if (c >= ref.cols)
                    v = 1e-6f; // padding
                else if (!colWeights[i].empty())
                    v = colWeights[i][static_cast<std::size_t>(c)];
                w.pattern.push_back(v);
            }
            for (std::int64_t r = 0; r < ref.rows; ++r)
                w.pointFactor.push_back(rowFactors[i].empty() ? 1.0f : rowFactors[i][static_cast<std::size_t>(r)]);
            offset += ref.rows;
            w.runStart.push_back(offset);
        }
    }
    return w;
}

// Nearest codeword of every point under the weighted distance sum_j pattern_j (x_j - c_j)^2 (the
// point factor does not change a point's choice); `dist` (optional) gets the weighted distance
// including the point factor.
inline void nearestWeighted(const std::vector<float>& points, std::int64_t n, const std::vector<float>& codebook, std::int64_t k,
                            int d, const Weighting& w, std::int32_t* idx, float* dist, int threads)
{
    std::vector<float> book(static_cast<std::size_t>(k * d)), pts;
    std::vector<float> sq(static_cast<std::size_t>(d));
    for (std::size_t p = 0; p + 1 < w.runStart.size(); ++p) {
        const std::int64_t b = w.runStart[p], e = std::min(n, w.runStart[p + 1]);
        if (e <= b)
            continue;
        for (int j = 0; j < d; ++j)
            sq[j] = std::sqrt(w.pattern[p * d + j]);
        for (std::int64_t c = 0; c < k; ++c)
            for (int j = 0; j < d; ++j)
                book[c * d + j] = codebook[c * d + j] * sq[j];
        pts.resize(static_cast<std::size_t>((e - b) * d));
        for (std::int64_t i = b; i < e; ++i)
            for (int j = 0; j < d; ++j)
                pts[(i - b) * d + j] = points[i * d + j] * sq[j];
        nearestCodewords(pts.data(), e - b, book.data(), k, d, idx + b, dist ? dist + b : nullptr, threads);
        if (dist)
            for (std::int64_t i = b; i < e; ++i)
                dist[i] *= w.pointFactor[i];
    }
}

// k-means++ seeding on a sample of the points (D^2 sampling, deterministic given `gen`).
inline std::vector<float> seedPlusPlus(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, std::int64_t sampleSize,
                                       std::mt19937_64& gen)
{
    std::vector<std::int64_t> sample(static_cast<std::size_t>(n));
    std::iota(sample.begin(), sample.end(), 0);
    if (n > sampleSize) {
        std::shuffle(sample.begin(), sample.end(), gen);
        sample.resize(static_cast<std::size_t>(sampleSize));
        std::sort(sample.begin(), sample.end());
    }
    const std::int64_t s = static_cast<std::int64_t>(sample.size());
    std::vector<float> centers(static_cast<std::size_t>(k * d));
    std::vector<double> minDist(static_cast<std::size_t>(s), std::numeric_limits<double>::infinity());
    std::uniform_real_distribution<double> uniform(0, 1);
    std::int64_t chosen = sample[static_cast<std::size_t>(gen() % static_cast<std::uint64_t>(s))];
    for (std::int64_t c = 0; c < k; ++c) {
        std::memcpy(&centers[c * d], &points[chosen * d], sizeof(float) * d);
        double total = 0;
        for (std::int64_t i = 0; i < s; ++i) {
            const double dist = distance2(&points[sample[i] * d], &centers[c * d], d);
            minDist[i] = std::min(minDist[i], dist);
            total += minDist[i];
        }
        if (c + 1 == k)
            break;
        if (total <= 0) { // every sampled point is already a center: repeat points in order
            chosen = sample[static_cast<std::size_t>((c + 1) % s)];
            continue;
        }
        double target = uniform(gen) * total;
        std::int64_t pick = s - 1;
        for (std::int64_t i = 0; i < s; ++i) {
            target -= minDist[i];
            if (target < 0) {
                pick = i;
                break;
            }
        }
        chosen = sample[pick];
    }
    return centers;
}

struct KmeansStats {
    int iterations = 0;
    double loss = 0; // mean (weighted) squared distance per value of the last assignment
    int dead = 0;
};

// Seeds (k-means++ or random points) and runs Lloyd iterations; with a non-empty weighting the
// distance and the centroids are weighted per element. `onIteration` may cancel (returns false).
// Returns false if cancelled.
inline bool kmeans(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, int iters, const std::string& init,
                   std::int64_t initSample, std::mt19937_64& gen, const Weighting& weighting, int threads, std::vector<float>& codebook,
                   const std::function<bool(int, const KmeansStats&)>& onIteration)
{
    if (init == "random") {
        codebook.resize(static_cast<std::size_t>(k * d));
        for (std::int64_t c = 0; c < k; ++c) {
            const std::int64_t i = static_cast<std::int64_t>(gen() % static_cast<std::uint64_t>(n));
            std::memcpy(&codebook[c * d], &points[i * d], sizeof(float) * d);
        }
    } else {
        codebook = seedPlusPlus(points, n, d, k, initSample, gen);
    }
    const bool weighted = !weighting.empty();
    std::vector<std::int32_t> idx(static_cast<std::size_t>(n)), previous;
    std::vector<float> dist(static_cast<std::size_t>(n));
    for (int it = 0; it < iters; ++it) {
        if (weighted)
            nearestWeighted(points, n, codebook, k, d, weighting, idx.data(), dist.data(), threads);
        else
            nearestCodewords(points.data(), n, codebook.data(), k, d, idx.data(), dist.data(), threads);
        const bool converged = !previous.empty() && previous == idx;
        previous = idx;
        std::vector<double> sums(static_cast<std::size_t>(k * d), 0.0);
        std::vector<double> dens; // weighted: per element
        std::vector<std::int64_t> members(static_cast<std::size_t>(k), 0);
        double total = 0;
        if (weighted) {
            dens.assign(static_cast<std::size_t>(k * d), 0.0);
            for (std::size_t p = 0; p + 1 < weighting.runStart.size(); ++p)
                for (std::int64_t i = weighting.runStart[p]; i < std::min(n, weighting.runStart[p + 1]); ++i) {
                    ++members[idx[i]];
                    total += dist[i];
                    for (int j = 0; j < d; ++j) {
                        const double wij = static_cast<double>(weighting.pattern[p * d + j]) * weighting.pointFactor[i];
                        sums[idx[i] * d + j] += wij * points[i * d + j];
                        dens[idx[i] * d + j] += wij;
                    }
                }
        } else {
            for (std::int64_t i = 0; i < n; ++i) {
                ++members[idx[i]];
                total += dist[i];
                for (int j = 0; j < d; ++j)
                    sums[idx[i] * d + j] += points[i * d + j];
            }
        }
        // Empty clusters take the points worst served so far (largest distance first).
        std::vector<std::int64_t> order;
        int dead = 0;
        for (std::int64_t c = 0; c < k; ++c)
            dead += members[c] == 0 ? 1 : 0;
        if (dead > 0) {
            order.resize(static_cast<std::size_t>(n));
            std::iota(order.begin(), order.end(), 0);
            const std::size_t take = std::min<std::size_t>(static_cast<std::size_t>(dead), order.size());
            std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(take), order.end(),
                              [&](std::int64_t a, std::int64_t b) { return dist[a] > dist[b] || (dist[a] == dist[b] && a < b); });
        }
        std::size_t next = 0;
        for (std::int64_t c = 0; c < k; ++c) {
            if (members[c] > 0) {
                for (int j = 0; j < d; ++j)
                    if (!weighted)
                        codebook[c * d + j] = static_cast<float>(sums[c * d + j] / static_cast<double>(members[c]));
                    else if (dens[c * d + j] > 0)
                        codebook[c * d + j] = static_cast<float>(sums[c * d + j] / dens[c * d + j]);
            } else if (next < order.size()) {
                std::memcpy(&codebook[c * d], &points[order[next++] * d], sizeof(float) * d);
            }
        }
        KmeansStats stats;
        stats.iterations = it + 1;
        stats.loss = total / static_cast<double>(n * d);
        stats.dead = dead;
        if (onIteration && !onIteration(it, stats))
            return false;
        if (converged)
            break;
    }
    return true;
}

// Supplies the candidate codebooks of one column block: `books` gets B codebooks of [k, d] values
// (in the scaled space the weights are divided into, i.e. before any row scale), `bookOfRow` the
// book each of the matrix's rows uses (runs of equal values are searched together).
using BlockBooks = std::function<void(std::int64_t block, std::vector<float>& books, std::vector<std::int32_t>& bookOfRow)>;

// GPTVQ-style assignment (van Baalen et al. 2024) with fixed candidates: column block by column
// block, codes minimise the distance weighted by the inverse Hessian's Cholesky diagonal, and the
// block's error (against rowScale[r] * candidate) is pushed onto the later columns exactly as GPTQ
// does column by column. `idx` gets (cols/d) * rows codes in sub-vector order (block-major).
inline Status assignWithFeedback(const WeightMatrix& m, std::int64_t k, int d, double damp, const std::vector<float>& rowScale,
                                 const BlockBooks& blockBooks, std::int32_t* idx, int threads, const std::string& who)
{
    const std::int64_t rows = m.ref.rows, cols = m.ref.cols;
    if (cols % d != 0)
        return Error{who + ": " + m.ref.name + ": error feedback needs d to divide the " + std::to_string(cols) + " columns"};
    if (m.hessian.size() != static_cast<std::size_t>(cols * cols))
        return Error{who + ": " + m.ref.name + ": error feedback needs calibration (pass --calib-text)"};
    std::vector<double> w(m.values.begin(), m.values.end());
    std::vector<double> h(m.hessian.begin(), m.hessian.end());
    double meanDiag = 0;
    for (std::int64_t i = 0; i < cols; ++i) {
        if (h[i * cols + i] == 0) { // a dead input: its weights never matter
            h[i * cols + i] = 1;
            for (std::int64_t r = 0; r < rows; ++r)
                w[r * cols + i] = 0;
        }
        meanDiag += h[i * cols + i] / static_cast<double>(cols);
    }
    for (std::int64_t i = 0; i < cols; ++i)
        h[i * cols + i] += damp * meanDiag;
    std::vector<double> u;
    if (!inverseCholeskyUpper(std::move(h), cols, u))
        return Error{who + ": " + m.ref.name + ": the Hessian is not positive definite; try a larger damp"};
    std::vector<float> books, scaledBook(static_cast<std::size_t>(k * d)), scaled(static_cast<std::size_t>(rows * d));
    std::vector<std::int32_t> bookOfRow, codes(static_cast<std::size_t>(rows));
    for (std::int64_t c0 = 0; c0 < cols; c0 += d) {
        blockBooks(c0 / d, books, bookOfRow);
        for (std::int64_t r = 0; r < rows; ++r) {
            const double s = rowScale.empty() ? 1.0 : rowScale[static_cast<std::size_t>(r)];
            for (int j = 0; j < d; ++j)
                scaled[r * d + j] = static_cast<float>(w[r * cols + c0 + j] / s / u[(c0 + j) * cols + c0 + j]);
        }
        for (std::int64_t r0 = 0; r0 < rows;) {
            std::int64_t r1 = r0 + 1;
            while (r1 < rows && bookOfRow[r1] == bookOfRow[r0])
                ++r1;
            const float* book = &books[static_cast<std::size_t>(bookOfRow[r0]) * k * d];
            for (std::int64_t c = 0; c < k; ++c)
                for (int j = 0; j < d; ++j)
                    scaledBook[c * d + j] = static_cast<float>(book[c * d + j] / u[(c0 + j) * cols + c0 + j]);
            nearestCodewords(&scaled[r0 * d], r1 - r0, scaledBook.data(), k, d, &codes[r0], nullptr, threads);
            r0 = r1;
        }
        for (std::int64_t r = 0; r < rows; ++r)
            idx[(c0 / d) * rows + r] = codes[r];
        for (int j = 0; j < d; ++j) {
            const std::int64_t col = c0 + j;
            const double diag = u[col * cols + col];
            for (std::int64_t r = 0; r < rows; ++r) {
                const double s = rowScale.empty() ? 1.0 : rowScale[static_cast<std::size_t>(r)];
                const double q = s * books[(static_cast<std::size_t>(bookOfRow[r]) * k + codes[r]) * d + j];
                const double err = (w[r * cols + col] - q) / diag;
                double* row = &w[r * cols];
                const double* ucol = &u[col * cols];
                for (std::int64_t c = col + 1; c < cols; ++c)
                    row[c] -= err * ucol[c];
            }
        }
    }
    return {};
}

// Codebook usage of a set of codes: codewords used, and the entropy of the index histogram in bits.
inline std::pair<std::int64_t, double> usage(const std::vector<std::int32_t>& idx, std::int64_t k)
{
    std::vector<std::int64_t> hist(static_cast<std::size_t>(k), 0);
    for (std::int32_t i : idx)
        ++hist[static_cast<std::size_t>(i)];
    std::int64_t used = 0;
    double entropy = 0;
    for (std::int64_t c : hist) {
        if (c == 0)
            continue;
        ++used;
        const double p = static_cast<double>(c) / static_cast<double>(idx.size());
        entropy -= p * std::log2(p);
    }
    return {used, entropy};
}

} // namespace pocket::vqcommon
