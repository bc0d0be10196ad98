// k-means vector quantisation in weight space: the ablation of PocketLLM without its latent space.
// Sub-vectors are laid out exactly as PocketLLM lays them out (same d), clustered with k-means++
// seeding and Lloyd iterations (the bounded-memory nearest-codeword kernel), and stored as an fp16
// codebook plus bit-packed indices. Groups follow the same sharing scopes as PocketLLM.
// Plain C++ (no LibTorch).
#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/vq_kernels.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

namespace pocket::vq {

namespace {

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "vq";
        m.displayName = "k-means VQ (weight space)";
        m.version = 1;
        m.description = "k-means (k-means++ seeding, Lloyd iterations) on d-wide weight sub-vectors; fp16 codebook, packed indices.";
        m.lossy = true;
        m.bitsFormula = "(rows*cols/d)*ceil(log2 K) + 16*K*d per group, shared bits split over the group";
        m.params = {ParamSpec::integer("d", 4, 1, 64, "sub-vector length (weights per code)"),
                    ParamSpec::integer("K", 256, 2, 1 << 20, "codebook size", true),
                    ParamSpec::integer("iters", 25, 0, 10000, "Lloyd iterations (stops early when no code changes)"),
                    ParamSpec::choice("init", "kmeans++", {"kmeans++", "random"}, "seeding"),
                    ParamSpec::integer("init_sample", 65536, 1, 1 << 30,
                                       "sub-vectors sampled for k-means++ seeding (its cost is sample x K)", true),
                    ParamSpec::choice("sharing", "matrix", {"matrix", "type", "model"},
                                      "one codebook per matrix, per matrix type across blocks, or for the whole model"),
                    ParamSpec::integer("seed", 1, 0, 2147483647, "random seed (combined with the group id)"),
                    ParamSpec::boolean("feedback", false,
                                       "GPTVQ-style error feedback: codes chosen column block by column block with the "
                                       "Hessian-weighted distance, each block's error pushed onto the columns not yet "
                                       "quantised (needs --calib-text; one matrix per group)"),
                    ParamSpec::real("damp", "0.01", 0, 1, "feedback: dampening, as a fraction of the mean Hessian diagonal")};
        return m;
    }();
    return info;
}

// Lower Cholesky factor of a symmetric positive-definite n x n matrix, in place; false if not PD.
bool choleskyLower(std::vector<double>& a, std::int64_t n)
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
bool inverseCholeskyUpper(std::vector<double> h, std::int64_t n, std::vector<double>& u)
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

std::int64_t subvectorCount(const MatrixRef& ref, int d)
{
    return (ref.cols + d - 1) / d * ref.rows;
}

float distance2(const float* a, const float* b, int d)
{
    float s = 0;
    for (int j = 0; j < d; ++j)
        s += (a[j] - b[j]) * (a[j] - b[j]);
    return s;
}

// k-means++ seeding on a sample of the points (D^2 sampling, deterministic given `gen`).
std::vector<float> seedPlusPlus(const std::vector<float>& points, std::int64_t n, int d, std::int64_t k, std::int64_t sampleSize,
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

class VqMethod final : public CompressionMethod {
public:
    const MethodInfo& info() const override { return methodInfo(); }

    Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>& matrices, const ParamSet& params) const override
    {
        return groupsBySharing(matrices, params.getText("sharing"));
    }

    bool needsCalibration(const ParamSet& params) const override { return params.getBool("feedback"); }

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        const int d = static_cast<int>(params.getInt("d"));
        const std::int64_t k = params.getInt("K");
        perMatrix.clear();
        for (const MatrixRef& m : group) {
            BitCounts b;
            b.indexBits = static_cast<std::uint64_t>(subvectorCount(m, d)) * static_cast<std::uint64_t>(indexBits(k));
            perMatrix.push_back(b);
        }
        BitCounts shared;
        shared.codebookBits = 16ull * static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(d);
        return shared;
    }

    Result<GroupPayload> compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context) override
    {
        try {
            return compressImpl(group, params, context);
        } catch (const std::exception& e) {
            return Error{"vq: compressing " + group.id + " failed: " + e.what()};
        }
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& p) const override
    {
        const auto meta = nlohmann::json::parse(p.metaJson, nullptr, false);
        if (!meta.is_object() || !meta.contains("d") || !meta["d"].is_number_integer() || !meta.contains("K") ||
            !meta["K"].is_number_integer())
            return Error{"vq: group " + p.groupId + ": bad metadata"};
        const int d = meta["d"].get<int>();
        const std::int64_t k = meta["K"].get<std::int64_t>();
        if (d < 1 || d > 64 || k < 2 || k > (1 << 20))
            return Error{"vq: group " + p.groupId + ": metadata out of range"};
        const PayloadSection* codebookSection = p.section("codebook");
        if (!codebookSection || codebookSection->bytes.size() != static_cast<std::size_t>(k * d) * 2)
            return Error{"vq: group " + p.groupId + ": codebook section missing or of the wrong size"};
        std::vector<float> codebook(static_cast<std::size_t>(k * d));
        convertToFloat(DType::F16, codebookSection->bytes.data(), codebook.size(), codebook.data());
        const int bits = indexBits(k);
        std::vector<std::vector<float>> out;
        for (const MatrixResult& r : p.matrices) {
            const std::int64_t count = subvectorCount(r.ref, d);
            if (r.ref.rows < 1 || r.ref.cols < 1)
                return Error{"vq: " + r.ref.name + ": bad shape"};
            const PayloadSection* section = p.section("indices/" + r.ref.name);
            std::vector<std::int32_t> idx(static_cast<std::size_t>(count));
            if (!section || !unpackBits(section->bytes.data(), section->bytes.size(), count, bits, idx.data()))
                return Error{"vq: " + r.ref.name + ": index section missing or too short"};
            std::vector<float> sub(static_cast<std::size_t>(count * d));
            for (std::int64_t i = 0; i < count; ++i) {
                if (idx[i] >= k)
                    return Error{"vq: " + r.ref.name + ": index out of the codebook's range"};
                std::memcpy(&sub[i * d], &codebook[idx[i] * d], sizeof(float) * d);
            }
            std::vector<float> w(static_cast<std::size_t>(r.ref.weights()));
            fromSubvectors(sub.data(), r.ref.rows, r.ref.cols, d, w.data());
            out.push_back(std::move(w));
        }
        return out;
    }

private:
    // GPTVQ-style assignment (van Baalen et al. 2024) with a fixed codebook: column block by column
    // block, codes minimise the distance weighted by the inverse Hessian's Cholesky diagonal, and the
    // block's error is pushed onto the later columns exactly as GPTQ does column by column.
    static Status assignWithFeedback(const WeightMatrix& m, const std::vector<float>& codebook, std::int64_t k, int d, double damp,
                                     std::int32_t* idx, int threads)
    {
        const std::int64_t rows = m.ref.rows, cols = m.ref.cols;
        if (cols % d != 0)
            return Error{"vq: " + m.ref.name + ": error feedback needs d to divide the " + std::to_string(cols) + " columns"};
        if (m.hessian.size() != static_cast<std::size_t>(cols * cols))
            return Error{"vq: " + m.ref.name + ": error feedback needs calibration (pass --calib-text)"};
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
            return Error{"vq: " + m.ref.name + ": the Hessian is not positive definite; try a larger damp"};
        std::vector<float> scaledBook(static_cast<std::size_t>(k * d)), scaled(static_cast<std::size_t>(rows * d));
        std::vector<std::int32_t> codes(static_cast<std::size_t>(rows));
        for (std::int64_t c0 = 0; c0 < cols; c0 += d) {
            for (std::int64_t c = 0; c < k; ++c)
                for (int j = 0; j < d; ++j)
                    scaledBook[c * d + j] = static_cast<float>(codebook[c * d + j] / u[(c0 + j) * cols + c0 + j]);
            for (std::int64_t r = 0; r < rows; ++r)
                for (int j = 0; j < d; ++j)
                    scaled[r * d + j] = static_cast<float>(w[r * cols + c0 + j] / u[(c0 + j) * cols + c0 + j]);
            nearestCodewords(scaled.data(), rows, scaledBook.data(), k, d, codes.data(), nullptr, threads);
            for (std::int64_t r = 0; r < rows; ++r)
                idx[(c0 / d) * rows + r] = codes[r];
            for (int j = 0; j < d; ++j) {
                const std::int64_t col = c0 + j;
                const double diag = u[col * cols + col];
                for (std::int64_t r = 0; r < rows; ++r) {
                    const double err = (w[r * cols + col] - codebook[codes[r] * d + j]) / diag;
                    double* row = &w[r * cols];
                    const double* ucol = &u[col * cols];
                    for (std::int64_t c = col + 1; c < cols; ++c)
                        row[c] -= err * ucol[c];
                }
            }
        }
        return {};
    }

    Result<GroupPayload> compressImpl(const MatrixGroup& group, const ParamSet& params, const CompressContext& context)
    {
        const auto start = std::chrono::steady_clock::now();
        const int d = static_cast<int>(params.getInt("d"));
        const std::int64_t k = params.getInt("K");
        const int iters = static_cast<int>(params.getInt("iters"));
        std::vector<std::int64_t> counts;
        std::int64_t n = 0;
        for (const WeightMatrix& m : group.matrices) {
            if (static_cast<std::int64_t>(m.values.size()) != m.ref.weights())
                return Error{"vq: " + m.ref.name + ": expected " + std::to_string(m.ref.weights()) + " values"};
            counts.push_back(subvectorCount(m.ref, d));
            n += counts.back();
        }
        std::vector<float> points(static_cast<std::size_t>(n * d));
        std::int64_t offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            toSubvectors(group.matrices[i].values.data(), group.matrices[i].ref.rows, group.matrices[i].ref.cols, d, &points[offset * d]);
            offset += counts[i];
        }

        std::mt19937_64 gen(groupSeed(params.getInt("seed"), group.id));
        std::vector<float> codebook;
        if (params.getText("init") == "random") {
            codebook.resize(static_cast<std::size_t>(k * d));
            for (std::int64_t c = 0; c < k; ++c) {
                const std::int64_t i = static_cast<std::int64_t>(gen() % static_cast<std::uint64_t>(n));
                std::memcpy(&codebook[c * d], &points[i * d], sizeof(float) * d);
            }
        } else {
            codebook = seedPlusPlus(points, n, d, k, params.getInt("init_sample"), gen);
        }

        std::vector<std::int32_t> idx(static_cast<std::size_t>(n)), previous;
        std::vector<float> dist(static_cast<std::size_t>(n));
        TrainProgress progress;
        progress.groupId = group.id;
        progress.totalSteps = iters;
        progress.epochs = iters;
        for (int it = 0; it < iters; ++it) {
            nearestCodewords(points.data(), n, codebook.data(), k, d, idx.data(), dist.data(), context.threads);
            const bool converged = !previous.empty() && previous == idx;
            previous = idx;
            std::vector<double> sums(static_cast<std::size_t>(k * d), 0.0);
            std::vector<std::int64_t> members(static_cast<std::size_t>(k), 0);
            double total = 0;
            for (std::int64_t i = 0; i < n; ++i) {
                ++members[idx[i]];
                total += dist[i];
                for (int j = 0; j < d; ++j)
                    sums[idx[i] * d + j] += points[i * d + j];
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
                        codebook[c * d + j] = static_cast<float>(sums[c * d + j] / static_cast<double>(members[c]));
                } else if (next < order.size()) {
                    std::memcpy(&codebook[c * d], &points[order[next++] * d], sizeof(float) * d);
                }
            }
            progress.step = progress.epoch = it + 1;
            progress.loss = progress.reconstruction = total / static_cast<double>(n * d);
            progress.deadCodewords = dead;
            progress.codebookUsage = static_cast<double>(k - dead) / static_cast<double>(k);
            progress.elapsedSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            progress.etaSeconds = progress.elapsedSeconds / (it + 1) * (iters - it - 1);
            if (context.onProgress && !context.onProgress(progress))
                return Error{"cancelled"};
            if (converged)
                break;
        }

        // What the archive stores: the fp16 codebook, and codes chosen against it.
        std::vector<std::uint8_t> codebookBytes(static_cast<std::size_t>(k * d) * 2);
        convertFromFloat(codebook.data(), codebook.size(), DType::F16, codebookBytes.data());
        convertToFloat(DType::F16, codebookBytes.data(), codebook.size(), codebook.data());
        nearestCodewords(points.data(), n, codebook.data(), k, d, idx.data(), nullptr, context.threads);
        if (params.getBool("feedback")) {
            offset = 0;
            for (std::size_t i = 0; i < group.matrices.size(); ++i) {
                auto fed = assignWithFeedback(group.matrices[i], codebook, k, d, params.getFloat("damp"), &idx[offset], context.threads);
                if (!fed)
                    return fed.error();
                offset += counts[i];
            }
        }

        GroupPayload p;
        p.groupId = group.id;
        p.methodId = methodInfo().id;
        p.methodVersion = methodInfo().version;
        p.paramsJson = params.toJson(methodInfo().params);
        p.metaJson = nlohmann::json{{"layout", "column-blocks"}, {"d", d}, {"K", k}, {"index_bits", indexBits(k)}}.dump();
        p.sections.push_back({"codebook", std::move(codebookBytes)});
        p.sharedBits.codebookBits = 16ull * static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(d);
        offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            MatrixResult r;
            r.ref = group.matrices[i].ref;
            r.bits.indexBits = static_cast<std::uint64_t>(counts[i]) * static_cast<std::uint64_t>(indexBits(k));
            p.matrices.push_back(r);
            p.sections.push_back({"indices/" + r.ref.name, packBits(&idx[offset], counts[i], indexBits(k))});
            offset += counts[i];
        }
        if (auto measured = measureByDecoding(*this, group, p); !measured)
            return measured.error();
        return p;
    }
};

} // namespace

} // namespace pocket::vq

POCKET_METHOD_PLUGIN(pocket::vq::VqMethod)
