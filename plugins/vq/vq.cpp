// k-means vector quantisation in weight space: the ablation of PocketLLM without its latent space.
// Sub-vectors are laid out exactly as PocketLLM lays them out (same d), clustered with k-means++
// seeding and Lloyd iterations (the bounded-memory nearest-codeword kernel), and stored as an fp16
// codebook plus bit-packed indices. Groups follow the same sharing scopes as PocketLLM.
// Plain C++ (no LibTorch).
#include "pocket/io/dtype.h"
#include "pocket/methods/method_base.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/timing.h"
#include "pocket/methods/feedback.h"
#include "pocket/methods/kmeans.h"

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
                                       "each matrix's codes are chosen with its own Hessian (needs calibration text)"),
                    ParamSpec::real("damp", "0.01", 0, 1, "feedback: dampening, as a fraction of the mean Hessian diagonal"),
                    ParamSpec::boolean("row_scale", false,
                                       "divide each output row by its RMS before clustering; the fp16 scales are stored "
                                       "(16 bits per row, counted)"),
                    ParamSpec::choice("weighting", "none", {"none", "hessian_diag"},
                                      "k-means distance and centroids weighted per input column by the calibration "
                                      "inputs' second moments (the Hessian diagonal; needs calibration text)")};
        return m;
    }();
    return info;
}

using namespace vqcommon;

// The checked layout of a vq payload: codebook (as float), index width, sections per matrix.
struct VqLayout {
    int d = 0;
    std::int64_t k = 0;
    int bits = 0;
    std::vector<float> codebook;                      // K * d
    std::vector<const PayloadSection*> indices;       // per matrix
    std::vector<std::vector<float>> rowScales;        // per matrix; empty without row scales

    static Result<VqLayout> check(const GroupPayload& p)
    {
        const auto meta = nlohmann::json::parse(p.metaJson, nullptr, false);
        if (!meta.is_object() || !meta.contains("d") || !meta["d"].is_number_integer() || !meta.contains("K") ||
            !meta["K"].is_number_integer())
            return Error{"vq: group " + p.groupId + ": bad metadata"};
        VqLayout l;
        l.d = meta["d"].get<int>();
        l.k = meta["K"].get<std::int64_t>();
        if (l.d < 1 || l.d > 64 || l.k < 2 || l.k > (1 << 20))
            return Error{"vq: group " + p.groupId + ": metadata out of range"};
        const PayloadSection* codebookSection = p.section("codebook");
        if (!codebookSection || codebookSection->bytes.size() != static_cast<std::size_t>(l.k * l.d) * 2)
            return Error{"vq: group " + p.groupId + ": codebook section missing or of the wrong size"};
        l.codebook.resize(static_cast<std::size_t>(l.k * l.d));
        convertToFloat(DType::F16, codebookSection->bytes.data(), l.codebook.size(), l.codebook.data());
        l.bits = indexBits(l.k);
        const bool rowScaled = meta.contains("row_scale") && meta["row_scale"].is_boolean() && meta["row_scale"].get<bool>();
        for (const MatrixResult& r : p.matrices) {
            if (r.ref.rows < 1 || r.ref.cols < 1)
                return Error{"vq: " + r.ref.name + ": bad shape"};
            const PayloadSection* section = p.section("indices/" + r.ref.name);
            const auto count = static_cast<std::uint64_t>(subvectorCount(r.ref, l.d));
            if (!section || section->bytes.size() < (count * static_cast<std::uint64_t>(l.bits) + 7) / 8)
                return Error{"vq: " + r.ref.name + ": index section missing or too short"};
            l.indices.push_back(section);
            l.rowScales.emplace_back();
            if (rowScaled) {
                const PayloadSection* scales = p.section("row_scales/" + r.ref.name);
                if (!scales || scales->bytes.size() != static_cast<std::size_t>(r.ref.rows) * 2)
                    return Error{"vq: " + r.ref.name + ": row scale section missing or of the wrong size"};
                l.rowScales.back().resize(static_cast<std::size_t>(r.ref.rows));
                convertToFloat(DType::F16, scales->bytes.data(), l.rowScales.back().size(), l.rowScales.back().data());
            }
        }
        return l;
    }

    std::uint64_t bytes() const
    {
        std::uint64_t n = codebook.size() * sizeof(float);
        for (const auto& rs : rowScales)
            n += rs.size() * sizeof(float);
        return n;
    }

    // The fast decoder's rows [r0, r1) of matrix `index`: each row gathered straight from the
    // codebook (no sub-vector copy of the matrix, no unpacked index array). "" or an error.
    std::string decodeRows(const MatrixRef& ref, std::size_t index, std::int64_t r0, std::int64_t r1, float* out) const
    {
        const std::int64_t blocks = (ref.cols + d - 1) / d;
        const PayloadSection& section = *indices[index];
        const std::vector<float>& rs = rowScales[index];
        for (std::int64_t row = r0; row < r1; ++row) {
            float* dst = out + row * ref.cols;
            for (std::int64_t b = 0; b < blocks; ++b) {
                const std::uint32_t code = packedValue(section.bytes.data(), section.bytes.size(), static_cast<std::uint64_t>(b * ref.rows + row), bits);
                if (code >= static_cast<std::uint64_t>(k))
                    return "vq: " + ref.name + ": index out of the codebook's range";
                const std::int64_t width = std::min<std::int64_t>(d, ref.cols - b * d);
                std::memcpy(dst + b * d, &codebook[static_cast<std::size_t>(code) * static_cast<std::size_t>(d)],
                            sizeof(float) * static_cast<std::size_t>(width));
            }
            if (!rs.empty())
                for (std::int64_t c = 0; c < ref.cols; ++c)
                    dst[c] *= rs[static_cast<std::size_t>(row)];
        }
        return {};
    }
};

class VqMethod final : public MethodBase {
public:
    VqMethod() : MethodBase(methodInfo()) {}

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

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& p) const override
    {
        auto layout = VqLayout::check(p);
        if (!layout)
            return layout.error();
        const int d = layout->d;
        std::vector<std::vector<float>> out;
        for (std::size_t mi = 0; mi < p.matrices.size(); ++mi) {
            const MatrixRef& ref = p.matrices[mi].ref;
            const std::int64_t count = subvectorCount(ref, d);
            std::vector<std::int32_t> idx(static_cast<std::size_t>(count));
            const PayloadSection* section = layout->indices[mi];
            if (!unpackBits(section->bytes.data(), section->bytes.size(), count, layout->bits, idx.data()))
                return Error{"vq: " + ref.name + ": index section missing or too short"};
            std::vector<float> sub(static_cast<std::size_t>(count * d));
            for (std::int64_t i = 0; i < count; ++i) {
                if (idx[i] >= layout->k)
                    return Error{"vq: " + ref.name + ": index out of the codebook's range"};
                std::memcpy(&sub[i * d], &layout->codebook[idx[i] * d], sizeof(float) * d);
            }
            std::vector<float> w(static_cast<std::size_t>(ref.weights()));
            fromSubvectors(sub.data(), ref.rows, ref.cols, d, w.data());
            if (!layout->rowScales[mi].empty())
                for (std::int64_t row = 0; row < ref.rows; ++row)
                    for (std::int64_t c = 0; c < ref.cols; ++c)
                        w[row * ref.cols + c] *= layout->rowScales[mi][static_cast<std::size_t>(row)];
            out.push_back(std::move(w));
        }
        return out;
    }

    Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload p) const override { return RowDecoder<VqLayout>::make(std::move(p)); }

protected:
    Status compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& p) override
    {
        const Stopwatch clock;
        const int d = static_cast<int>(params.getInt("d"));
        const std::int64_t k = params.getInt("K");
        if (params.getText("weighting") != "none")
            for (const WeightMatrix& m : group.matrices)
                if (m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
                    return Error{"vq: " + m.ref.name + ": weighting=hessian_diag needs calibration data", ErrorKind::Usage, "calibration text"};
        Points pts = stackPoints(group, params, d);
        std::vector<float> codebook;
        if (!fitCodebook(group, params, context, clock, pts, d, k, codebook))
            return Error::cancelled();
        // What the archive stores: the fp16 codebook, and codes chosen against it.
        std::vector<std::uint8_t> codebookBytes(static_cast<std::size_t>(k * d) * 2);
        convertFromFloat(codebook.data(), codebook.size(), DType::F16, codebookBytes.data());
        convertToFloat(DType::F16, codebookBytes.data(), codebook.size(), codebook.data());
        auto idx = assignCodes(group, params, context, pts, d, k, codebook);
        if (!idx)
            return idx.error();
        writePayload(group, params, pts, d, k, std::move(codebookBytes), *idx, p);
        return {};
    }

private:
    // The group's sub-vectors stacked matrix after matrix (each row divided by its fp16 RMS with
    // row_scale), and the per-element weighting of the distance (row scales, Hessian diagonal).
    struct Points {
        std::vector<float> values;
        std::vector<std::int64_t> counts; // sub-vectors per matrix
        std::int64_t n = 0;
        std::vector<std::vector<float>> scales; // per matrix, with row_scale
        Weighting weighting;
    };

    static Points stackPoints(const MatrixGroup& group, const ParamSet& params, int d)
    {
        const bool rowScaled = params.getBool("row_scale");
        const bool weighted = params.getText("weighting") != "none";
        Points pts;
        std::vector<MatrixRef> refs;
        for (const WeightMatrix& m : group.matrices) {
            pts.counts.push_back(subvectorCount(m.ref, d));
            refs.push_back(m.ref);
            pts.n += pts.counts.back();
        }
        // Row scales (fp16, as stored): clustering sees each row divided by its scale.
        pts.scales.resize(group.matrices.size());
        std::vector<std::vector<float>> rowFactors(group.matrices.size()), colWeights(group.matrices.size());
        pts.values.resize(static_cast<std::size_t>(pts.n * d));
        std::int64_t offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            const WeightMatrix& m = group.matrices[i];
            if (rowScaled) {
                pts.scales[i] = rowScales(m);
                std::vector<float> normalised(m.values);
                for (std::int64_t r = 0; r < m.ref.rows; ++r)
                    for (std::int64_t c = 0; c < m.ref.cols; ++c)
                        normalised[r * m.ref.cols + c] /= pts.scales[i][static_cast<std::size_t>(r)];
                toSubvectors(normalised.data(), m.ref.rows, m.ref.cols, d, &pts.values[offset * d]);
                rowFactors[i] = pts.scales[i];
                for (float& f : rowFactors[i])
                    f *= f; // the weight-space error of a row grows with its scale squared
            } else {
                toSubvectors(m.values.data(), m.ref.rows, m.ref.cols, d, &pts.values[offset * d]);
            }
            if (weighted)
                colWeights[i] = columnWeights(m);
            offset += pts.counts[i];
        }
        if (rowScaled || weighted)
            pts.weighting = makeWeighting(refs, d, colWeights, rowFactors);
        return pts;
    }

    // k-means with live progress (elapsed time on `clock`, started with the group); false when cancelled.
    static bool fitCodebook(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, const Stopwatch& clock,
                            const Points& pts, int d, std::int64_t k, std::vector<float>& codebook)
    {
        const int iters = static_cast<int>(params.getInt("iters"));
        std::mt19937_64 gen(groupSeed(params.getInt("seed"), group.id));
        TrainProgress progress;
        progress.groupId = group.id;
        progress.totalSteps = iters;
        progress.epochs = iters;
        return kmeans(pts.values, pts.n, d, k, iters, params.getText("init"), params.getInt("init_sample"), gen, pts.weighting,
                      context.threads, codebook, [&](int it, const KmeansStats& stats) {
                          progress.step = progress.epoch = it + 1;
                          progress.loss = progress.reconstruction = stats.loss;
                          progress.deadCodewords = stats.dead;
                          progress.codebookUsage = static_cast<double>(k - stats.dead) / static_cast<double>(k);
                          progress.elapsedSeconds = clock.seconds();
                          progress.etaSeconds = progress.elapsedSeconds / (it + 1) * (iters - it - 1);
                          return report(context, progress);
                      });
    }

    // The codes against the stored (fp16) codebook: nearest, or with error feedback.
    static Result<std::vector<std::int32_t>> assignCodes(const MatrixGroup& group, const ParamSet& params, const CompressContext& context,
                                                         const Points& pts, int d, std::int64_t k, const std::vector<float>& codebook)
    {
        const ScopedPhase phase("assignment");
        std::vector<std::int32_t> idx(static_cast<std::size_t>(pts.n));
        if (pts.weighting.empty())
            nearestCodewords(pts.values.data(), pts.n, codebook.data(), k, d, idx.data(), nullptr, context.threads);
        else
            nearestWeighted(pts.values, pts.n, codebook, k, d, pts.weighting, idx.data(), nullptr, context.threads);
        if (!params.getBool("feedback"))
            return idx;
        // Codebook fitted on the whole group; each matrix's codes chosen with its own Hessian.
        std::int64_t offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            const BlockBooks books = [&](std::int64_t, std::vector<float>& b, std::vector<std::int32_t>& bookOfRow) {
                bookOfRow.resize(static_cast<std::size_t>(group.matrices[i].ref.rows));
                if (b.empty())
                    b = codebook;
                bookOfRow.assign(bookOfRow.size(), 0);
            };
            POCKET_TRY(assignWithFeedback(group.matrices[i], k, d, params.getFloat("damp"), pts.scales[i], books, &idx[offset],
                                          context.threads, "vq"));
            offset += pts.counts[i];
        }
        return idx;
    }

    static void writePayload(const MatrixGroup& group, const ParamSet& params, const Points& pts, int d, std::int64_t k,
                             std::vector<std::uint8_t> codebookBytes, const std::vector<std::int32_t>& idx, GroupPayload& p)
    {
        const bool rowScaled = params.getBool("row_scale");
        p.methodVersion = rowScaled ? 2 : 1; // version 1 programs decode everything but row scales
        const auto [used, entropy] = usage(idx, k);
        nlohmann::json meta{{"layout", "column-blocks"}, {"d", d}, {"K", k}, {"index_bits", indexBits(k)}};
        if (rowScaled)
            meta["row_scale"] = true;
        meta["used_codewords"] = used;
        meta["index_entropy_bits"] = entropy;
        p.metaJson = meta.dump();
        p.sections.push_back({"codebook", std::move(codebookBytes)});
        p.sharedBits.codebookBits = 16ull * static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(d);
        std::int64_t offset = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            MatrixResult r;
            r.ref = group.matrices[i].ref;
            r.bits.indexBits = static_cast<std::uint64_t>(pts.counts[i]) * static_cast<std::uint64_t>(indexBits(k));
            p.sections.push_back(codeSection("indices/" + r.ref.name, &idx[offset], pts.counts[i], indexBits(k)));
            if (rowScaled) {
                p.sections.push_back({"row_scales/" + r.ref.name, halfBytes(pts.scales[i])});
                r.bits.scaleBits = 16ull * static_cast<std::uint64_t>(r.ref.rows);
            }
            p.matrices.push_back(r);
            offset += pts.counts[i];
        }
    }
};

} // namespace

} // namespace pocket::vq

POCKET_METHOD_PLUGIN(pocket::vq::VqMethod)
