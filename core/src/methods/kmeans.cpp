#include "pocket/methods/kmeans.h"
#include "pocket/support/phases.h"

#include "pocket/io/dtype.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace pocket::vqcommon {

std::int64_t subvectorCount(const MatrixRef& ref, int d)
{
    return (ref.cols + d - 1) / d * ref.rows;
}

namespace {
float distance2(const float* a, const float* b, int d)
{
    float s = 0;
    for (int j = 0; j < d; ++j)
        s += (a[j] - b[j]) * (a[j] - b[j]);
    return s;
}
} // namespace

std::vector<float> rowScales(const WeightMatrix& m)
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

std::vector<std::uint8_t> halfBytes(const std::vector<float>& v)
{
    std::vector<std::uint8_t> bytes(v.size() * 2);
    convertFromFloat(v.data(), v.size(), DType::F16, bytes.data());
    return bytes;
}

std::vector<float> columnWeights(const WeightMatrix& m)
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

Weighting makeWeighting(const std::vector<MatrixRef>& refs, int d, const std::vector<std::vector<float>>& colWeights,
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

void nearestWeighted(const std::vector<float>& points, std::int64_t n, const std::vector<float>& codebook, std::int64_t k,
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

std::vector<float> seedPlusPlus(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, std::int64_t sampleSize,
                                std::mt19937_64& gen, int threads)
{
    const ScopedPhase phase("k-means seeding");
    std::vector<std::int64_t> sample(static_cast<std::size_t>(n));
    std::iota(sample.begin(), sample.end(), 0);
    if (n > sampleSize) {
        std::shuffle(sample.begin(), sample.end(), gen);
        sample.resize(static_cast<std::size_t>(sampleSize));
        std::sort(sample.begin(), sample.end());
    }
    const std::int64_t s = static_cast<std::int64_t>(sample.size());
    // The sample gathered once, so the k passes over it read memory in order.
    std::vector<float> gathered(static_cast<std::size_t>(s * d));
    for (std::int64_t i = 0; i < s; ++i)
        std::memcpy(&gathered[i * d], &points[sample[i] * d], sizeof(float) * d);
    std::vector<float> centers(static_cast<std::size_t>(k * d));
    std::vector<double> minDist(static_cast<std::size_t>(s), std::numeric_limits<double>::infinity());
    std::uniform_real_distribution<double> uniform(0, 1);
    std::int64_t chosen = sample[static_cast<std::size_t>(gen() % static_cast<std::uint64_t>(s))];
    for (std::int64_t c = 0; c < k; ++c) {
        std::memcpy(&centers[c * d], &points[chosen * d], sizeof(float) * d);
        const float* center = &centers[c * d];
        parallelFor(s, threads, 16384, [&](std::int64_t b, std::int64_t e) {
            for (std::int64_t i = b; i < e; ++i)
                minDist[i] = std::min(minDist[i], static_cast<double>(distance2(&gathered[i * d], center, d)));
        });
        double total = 0; // in order: the same draw for any number of threads
        for (std::int64_t i = 0; i < s; ++i)
            total += minDist[i];
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

bool kmeans(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, int iters, const std::string& init,
            std::int64_t initSample, std::mt19937_64& gen, const Weighting& weighting, int threads, std::vector<float>& codebook,
                   const std::function<bool(int, const KmeansStats&)>& onIteration)
{
    const ScopedPhase phase("k-means");
    if (init == "random") {
        codebook.resize(static_cast<std::size_t>(k * d));
        for (std::int64_t c = 0; c < k; ++c) {
            const std::int64_t i = static_cast<std::int64_t>(gen() % static_cast<std::uint64_t>(n));
            std::memcpy(&codebook[c * d], &points[i * d], sizeof(float) * d);
        }
    } else {
        codebook = seedPlusPlus(points, n, d, k, initSample, gen, threads);
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

std::pair<std::int64_t, double> usage(const std::vector<std::int32_t>& idx, std::int64_t k)
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
