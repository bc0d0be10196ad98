// Round-to-nearest baseline: each row of a weight matrix is cut into groups of `group` columns
// (the last one may be shorter); each group is quantised asymmetrically between its minimum and
// maximum to 2^bits levels. Stored per group: an fp16 scale and an fp16 minimum (32 bits), so
//   w_hat = q * scale + min,   q = clamp(round((w - min) / scale), 0, 2^bits - 1).
// The quantiser and the payload layout are pocket/methods/uniform_quant.h (shared with gptq).
// Plain C++ (no LibTorch).
#include "pocket/methods/method_base.h"
#include "pocket/methods/uniform_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace pocket::rtn {

namespace {

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "rtn";
        m.displayName = "RTN (round to nearest)";
        m.version = 1;
        m.description = "Asymmetric min/max round-to-nearest per group of columns, fp16 scale and minimum per group.";
        m.lossy = true;
        m.bitsFormula = "rows*cols*bits + 32 per group (fp16 scale + fp16 minimum)";
        m.params = {ParamSpec::integer("bits", 4, 2, 8, "bits per weight"),
                    ParamSpec::integer("group", 128, 0, 1 << 20, "columns per group (0 = a whole row)"), uniform::zeroParam(),
                    uniform::rateParam(),
                    ParamSpec::real("prune", "0", 0, 0.99, "fraction of each row's weights set to zero before quantising"),
                    ParamSpec::choice("prune_by", "magnitude", {"magnitude", "input"},
                                      "which weights are pruned: smallest |w|, or smallest |w| * input norm (calibration Hessian diagonal)")};
        return m;
    }();
    return info;
}

// `m`'s weights with the `fraction` least important of each row set to zero: smallest |w|, or
// smallest |w| * sqrt(H_jj) (the input's RMS on column j) with byInput. Ties go to the lower column.
std::vector<float> pruned(const WeightMatrix& m, double fraction, bool byInput)
{
    std::vector<float> out = m.values;
    const std::int64_t cols = m.ref.cols;
    const auto k = static_cast<std::int64_t>(std::floor(fraction * static_cast<double>(cols)));
    if (k <= 0)
        return out;
    std::vector<float> norm(static_cast<std::size_t>(cols), 1.0f);
    if (byInput)
        for (std::int64_t j = 0; j < cols; ++j)
            norm[j] = std::sqrt(std::max(0.0f, m.hessian[static_cast<std::size_t>(j * cols + j)]));
    std::vector<std::int64_t> order(static_cast<std::size_t>(cols));
    for (std::int64_t r = 0; r < m.ref.rows; ++r) {
        float* row = out.data() + r * cols;
        std::iota(order.begin(), order.end(), 0);
        // A NaN score (a NaN weight, or 0 times an infinite norm) ranks last: the order stays strict.
        const auto score = [&](std::int64_t j) {
            const float v = std::fabs(row[j]) * norm[j];
            return std::isnan(v) ? std::numeric_limits<float>::infinity() : v;
        };
        std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), [&](std::int64_t a, std::int64_t b) {
            const float sa = score(a), sb = score(b);
            return sa < sb || (sa == sb && a < b);
        });
        for (std::int64_t i = 0; i < k; ++i)
            row[order[i]] = 0.0f;
    }
    return out;
}

// Entropy-constrained rounding (Chou, Lookabaugh and Gray's ECSQ with each group's step kept): each
// weight takes the code, among the five around its nearest, minimising (error / step)^2 +
// rate * (-log2 p(code)), p the matrix's code distribution; three passes, p re-estimated after each.
void rateConstrained(const std::vector<float>& values, const MatrixRef& ref, std::int64_t group, int bits,
                     const std::vector<uniform::GroupQuant>& quantisers, double rate, std::vector<std::int32_t>& codes)
{
    const std::int64_t perRow = (ref.cols + group - 1) / group;
    for (int pass = 0; pass < 3; ++pass) {
        const std::vector<double> cost = uniform::codeCosts(uniform::codeCounts(codes, bits), rate);
        for (std::int64_t r = 0; r < ref.rows; ++r)
            for (std::int64_t b = 0; b < perRow; ++b) {
                const uniform::GroupQuant& gq = quantisers[static_cast<std::size_t>(r * perRow + b)];
                const std::int64_t begin = r * ref.cols + b * group, end = r * ref.cols + std::min(ref.cols, (b + 1) * group);
                for (std::int64_t i = begin; i < end; ++i)
                    codes[static_cast<std::size_t>(i)] = uniform::rateConstrainedCode(gq, values[i], cost);
            }
    }
}

class RtnMethod final : public MethodBase {
public:
    RtnMethod() : MethodBase(methodInfo()) {}

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        return uniform::estimateBits(group, params, perMatrix);
    }

    bool needsCalibration(const ParamSet& params) const override
    {
        return params.getFloat("prune") > 0 && params.getText("prune_by") == "input";
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& p) const override { return uniform::decodePayload(p, "rtn"); }
    Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload p) const override { return uniform::UniformDecoder::make(std::move(p), "rtn"); }

protected:
    Status compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& p) override
    {
        const int bits = static_cast<int>(params.getInt("bits"));
        std::vector<std::int64_t> groupCols;
        for (const WeightMatrix& m : group.matrices)
            groupCols.push_back(uniform::groupColumns(m.ref.cols, params.getInt("group")));
        const std::string zero = params.getText("zero");
        p.metaJson = uniform::metaJson(bits, groupCols, zero != "fp16");
        const double prune = params.getFloat("prune");
        const bool byInput = params.getText("prune_by") == "input";
        const double rate = params.getFloat("rate");
        int step = 0;
        for (const WeightMatrix& m : group.matrices) {
            if (prune > 0 && byInput && m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
                return Error::usage("rtn: prune_by=input needs calibration Hessians for " + m.ref.name, "prune_by");
            const std::vector<float> values = prune > 0 ? pruned(m, prune, byInput) : m.values;
            const std::int64_t g = uniform::groupColumns(m.ref.cols, params.getInt("group"));
            std::vector<uniform::GroupQuant> quantisers;
            uniform::QuantisedMatrix q = uniform::quantiseNearest(values, m.ref, g, bits, zero, &quantisers);
            if (rate > 0)
                rateConstrained(values, m.ref, g, bits, quantisers, rate, q.codes);
            uniform::appendMatrix(p, m.ref, q, bits);
            TrainProgress progress;
            progress.groupId = group.id;
            progress.step = ++step;
            progress.totalSteps = static_cast<int>(group.matrices.size());
            progress.epoch = progress.epochs = 1;
            if (!report(context, progress))
                return Error::cancelled();
        }
        return {};
    }
};

} // namespace

} // namespace pocket::rtn

POCKET_METHOD_PLUGIN(pocket::rtn::RtnMethod)
