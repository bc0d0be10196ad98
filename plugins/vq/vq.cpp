// k-means vector quantisation in weight space: the ablation of PocketLLM without its latent space.
// Sub-vectors are laid out exactly as PocketLLM lays them out (same d), clustered with k-means++
// seeding and Lloyd iterations (the bounded-memory nearest-codeword kernel), and stored as an fp16
// codebook plus bit-packed indices. Groups follow the same sharing scopes as PocketLLM.
// Plain C++ (no LibTorch).
#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/vq_kernels.h"
#include "vq_common.h"

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
        m.version = 2; // 2: optional per-row scales (payloads without them are still written as version 1)
        m.description = "k-means (k-means++ seeding, Lloyd iterations) on d-wide weight sub-vectors; fp16 codebook, packed indices.";
        m.lossy = true;
        m.bitsFormula = "(rows*cols/d)*ceil(log2 K) + 16*rows (row_scale) per matrix, + 16*K*d per group, shared bits split over the group";
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
                                       "quantised; with sharing=type/model the codebook is fitted on the whole group and "
                                       "each matrix's codes are chosen with its own Hessian (needs --calib-text)"),
                    ParamSpec::real("damp", "0.01", 0, 1, "feedback: dampening, as a fraction of the mean Hessian diagonal"),
                    ParamSpec::boolean("row_scale", false,
                                       "divide each output row by its RMS before clustering; the fp16 scales are stored "
                                       "(16 bits per row, counted)"),
                    ParamSpec::choice("weighting", "none", {"none", "hessian_diag"},
                                      "k-means distance and centroids weighted per input column by the calibration "
                                      "inputs' second moments (the Hessian diagonal; needs --calib-text)")};
        return m;
    }();
    return info;
}

using namespace vqcommon;

class VqMethod final : public CompressionMethod {
public:
    const MethodInfo& info() const override { return methodInfo(); }

    Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>& matrices, const ParamSet& params) const override
    {
        return groupsBySharing(matrices, params.getText("sharing"));
    }

    bool needsCalibration(const ParamSet& params) const override
    {
        return params.getBool("feedback") || params.getText("weighting") != "none";
    }

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        const int d = static_cast<int>(params.getInt("d"));
        const std::int64_t k = params.getInt("K");
        perMatrix.clear();
        for (const MatrixRef& m : group) {
            BitCounts b;
            b.indexBits = static_cast<std::uint64_t>(subvectorCount(m, d)) * static_cast<std::uint64_t>(indexBits(k));
            if (params.getBool("row_scale"))
                b.scaleBits = 16ull * static_cast<std::uint64_t>(m.rows);
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
        const bool rowScaled = meta.contains("row_scale") && meta["row_scale"].is_boolean() && meta["row_scale"].get<bool>();
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
            if (rowScaled) {
                const PayloadSection* scales = p.section("row_scales/" + r.ref.name);
                if (!scales || scales->bytes.size() != static_cast<std::size_t>(r.ref.rows) * 2)
                    return Error{"vq: " + r.ref.name + ": row scale section missing or of the wrong size"};
                std::vector<float> rs(static_cast<std::size_t>(r.ref.rows));
                convertToFloat(DType::F16, scales->bytes.data(), rs.size(), rs.data());
                for (std::int64_t row = 0; row < r.ref.rows; ++row)
                    for (std::int64_t c = 0; c < r.ref.cols; ++c)
                        w[row * r.ref.cols + c] *= rs[static_cast<std::size_t>(row)];
            }
            out.push_back(std::move(w));
        }
        return out;
    }

private:
    Result<GroupPayload> compressImpl(const MatrixGroup& group, const ParamSet& params, const CompressContext& context)
    {
        const auto start = std::chrono::steady_clock::now();
        const int d = static_cast<int>(params.getInt("d"));
        const std::int64_t k = params.getInt("K");
        const int iters = static_cast<int>(params.getInt("iters"));
        const bool rowScaled = params.getBool("row_scale");
        const bool weighted = params.getText("weighting") != "none";
        std::vector<std::int64_t> counts;
        std::vector<MatrixRef> refs;
        std::int64_t n = 0;
        for (const WeightMatrix& m : group.matrices) {
            if (static_cast<std::int64_t>(m.values.size()) != m.ref.weights())
                return Error{"vq: " + m.ref.name + ": expected " + std::to_string(m.ref.weights()) + " values"};
            if (weighted && m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
                return Error{"vq: " + m.ref.name + ": weighting=hessian_diag needs calibration (pass --calib-text)"};
            counts.push_back(subvectorCount(m.ref, d));
            refs.push_back(m.ref);
            n += counts.back();
        }
        // Row scales (fp16, as stored): clustering sees each row divided by its scale.
        std::vector<std::vector<float>> scales(group.matrices.size()), rowFactors(group.matrices.size()),
            colWeights(group.matrices.size());
        std::vector<float> points(static_cast<std::size_t>(n * d));
        std::int64_t offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            const WeightMatrix& m = group.matrices[i];
            if (rowScaled) {
                scales[i] = rowScales(m);
                std::vector<float> normalised(m.values);
                for (std::int64_t r = 0; r < m.ref.rows; ++r)
                    for (std::int64_t c = 0; c < m.ref.cols; ++c)
                        normalised[r * m.ref.cols + c] /= scales[i][static_cast<std::size_t>(r)];
                toSubvectors(normalised.data(), m.ref.rows, m.ref.cols, d, &points[offset * d]);
                rowFactors[i] = scales[i];
                for (float& f : rowFactors[i])
                    f *= f; // the weight-space error of a row grows with its scale squared
            } else {
                toSubvectors(m.values.data(), m.ref.rows, m.ref.cols, d, &points[offset * d]);
            }
            if (weighted)
                colWeights[i] = columnWeights(m);
            offset += counts[i];
        }
        Weighting weighting;
        if (rowScaled || weighted)
            weighting = makeWeighting(refs, d, colWeights, rowFactors);

        std::mt19937_64 gen(groupSeed(params.getInt("seed"), group.id));
        std::vector<float> codebook;
        TrainProgress progress;
        progress.groupId = group.id;
        progress.totalSteps = iters;
        progress.epochs = iters;
        const bool finished = kmeans(points, n, d, k, iters, params.getText("init"), params.getInt("init_sample"), gen, weighting,
                                     context.threads, codebook, [&](int it, const KmeansStats& stats) {
                                         progress.step = progress.epoch = it + 1;
                                         progress.loss = progress.reconstruction = stats.loss;
                                         progress.deadCodewords = stats.dead;
                                         progress.codebookUsage = static_cast<double>(k - stats.dead) / static_cast<double>(k);
                                         progress.elapsedSeconds =
                                             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                                         progress.etaSeconds = progress.elapsedSeconds / (it + 1) * (iters - it - 1);
                                         return !context.onProgress || context.onProgress(progress);
                                     });
        if (!finished)
            return Error{"cancelled"};

        // What the archive stores: the fp16 codebook, and codes chosen against it.
        std::vector<std::uint8_t> codebookBytes(static_cast<std::size_t>(k * d) * 2);
        convertFromFloat(codebook.data(), codebook.size(), DType::F16, codebookBytes.data());
        convertToFloat(DType::F16, codebookBytes.data(), codebook.size(), codebook.data());
        std::vector<std::int32_t> idx(static_cast<std::size_t>(n));
        if (weighting.empty())
            nearestCodewords(points.data(), n, codebook.data(), k, d, idx.data(), nullptr, context.threads);
        else
            nearestWeighted(points, n, codebook, k, d, weighting, idx.data(), nullptr, context.threads);
        if (params.getBool("feedback")) {
            // Codebook fitted on the whole group; each matrix's codes chosen with its own Hessian.
            const BlockBooks books = [&](std::int64_t, std::vector<float>& b, std::vector<std::int32_t>& bookOfRow) {
                if (b.empty())
                    b = codebook;
                bookOfRow.assign(bookOfRow.size(), 0);
            };
            offset = 0;
            for (std::size_t i = 0; i < group.matrices.size(); ++i) {
                const BlockBooks sized = [&](std::int64_t block, std::vector<float>& b, std::vector<std::int32_t>& bookOfRow) {
                    bookOfRow.resize(static_cast<std::size_t>(group.matrices[i].ref.rows));
                    books(block, b, bookOfRow);
                };
                auto fed = assignWithFeedback(group.matrices[i], k, d, params.getFloat("damp"), scales[i], sized, &idx[offset],
                                              context.threads, "vq");
                if (!fed)
                    return fed.error();
                offset += counts[i];
            }
        }

        GroupPayload p;
        p.groupId = group.id;
        p.methodId = methodInfo().id;
        p.methodVersion = rowScaled ? 2 : 1; // version 1 programs decode everything but row scales
        p.paramsJson = params.toJson(methodInfo().params);
        const auto [used, entropy] = usage(idx, k);
        nlohmann::json meta{{"layout", "column-blocks"}, {"d", d}, {"K", k}, {"index_bits", indexBits(k)}};
        if (rowScaled)
            meta["row_scale"] = true;
        meta["used_codewords"] = used;
        meta["index_entropy_bits"] = entropy;
        p.metaJson = meta.dump();
        p.sections.push_back({"codebook", std::move(codebookBytes)});
        p.sharedBits.codebookBits = 16ull * static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(d);
        offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            MatrixResult r;
            r.ref = group.matrices[i].ref;
            r.bits.indexBits = static_cast<std::uint64_t>(counts[i]) * static_cast<std::uint64_t>(indexBits(k));
            p.sections.push_back({"indices/" + r.ref.name, packBits(&idx[offset], counts[i], indexBits(k))});
            if (rowScaled) {
                p.sections.push_back({"row_scales/" + r.ref.name, halfBytes(scales[i])});
                r.bits.scaleBits = 16ull * static_cast<std::uint64_t>(r.ref.rows);
            }
            p.matrices.push_back(r);
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
