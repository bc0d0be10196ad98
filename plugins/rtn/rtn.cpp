// Round-to-nearest baseline: each row of a weight matrix is cut into groups of `group` columns
// (the last one may be shorter); each group is quantised asymmetrically between its minimum and
// maximum to 2^bits levels. Stored per group: an fp16 scale and an fp16 minimum (32 bits), so
//   w_hat = q * scale + min,   q = clamp(round((w - min) / scale), 0, 2^bits - 1).
// The quantiser and the payload layout are pocket/methods/uniform_quant.h (shared with gptq).
// Plain C++ (no LibTorch).
#include "pocket/methods/method_base.h"
#include "pocket/methods/uniform_quant.h"

#include <algorithm>

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
                    ParamSpec::integer("group", 128, 0, 1 << 20, "columns per group (0 = a whole row)"), uniform::zeroParam()};
        return m;
    }();
    return info;
}

class RtnMethod final : public MethodBase {
public:
    RtnMethod() : MethodBase(methodInfo()) {}

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        return uniform::estimateBits(group, params, perMatrix);
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
        const bool intZero = params.getText("zero") == "int";
        p.metaJson = uniform::metaJson(bits, groupCols, intZero);
        int step = 0;
        for (const WeightMatrix& m : group.matrices) {
            const std::int64_t g = uniform::groupColumns(m.ref.cols, params.getInt("group"));
            const std::int64_t perRow = (m.ref.cols + g - 1) / g;
            uniform::QuantisedMatrix q;
            q.codes.resize(m.values.size());
            for (std::int64_t r = 0; r < m.ref.rows; ++r) {
                for (std::int64_t b = 0; b < perRow; ++b) {
                    const std::int64_t begin = r * m.ref.cols + b * g, end = r * m.ref.cols + std::min(m.ref.cols, (b + 1) * g);
                    const auto [lo, hi] = std::minmax_element(m.values.begin() + begin, m.values.begin() + end);
                    const uniform::GroupQuant gq = uniform::GroupQuant::fitFor(*lo, *hi, bits, intZero);
                    for (std::int64_t i = begin; i < end; ++i)
                        q.codes[i] = gq.code(m.values[i]);
                    q.scales.push_back(gq.scaleHalf);
                    q.mins.push_back(gq.minHalf);
                }
            }
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
