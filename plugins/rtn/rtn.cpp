// Round-to-nearest baseline: each row of a weight matrix is cut into groups of `group` columns
// (the last one may be shorter); each group is quantised asymmetrically between its minimum and
// maximum to 2^bits levels. Stored per group: an fp16 scale and an fp16 minimum (32 bits), so
//   w_hat = q * scale + min,   q = clamp(round((w - min) / scale), 0, 2^bits - 1).
// Plain C++ (no LibTorch).
#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/vq_kernels.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

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
                    ParamSpec::integer("group", 128, 0, 1 << 20, "columns per group (0 = a whole row)")};
        return m;
    }();
    return info;
}

std::int64_t groupSize(const MatrixRef& ref, const ParamSet& params)
{
    const std::int64_t g = params.getInt("group");
    return g <= 0 || g > ref.cols ? ref.cols : g;
}

std::int64_t groupsOf(const MatrixRef& ref, const ParamSet& params)
{
    const std::int64_t g = groupSize(ref, params);
    return ref.rows * ((ref.cols + g - 1) / g);
}

std::vector<std::uint8_t> halfBytes(const std::vector<std::uint16_t>& h)
{
    std::vector<std::uint8_t> out(h.size() * 2);
    std::memcpy(out.data(), h.data(), out.size());
    return out;
}

class RtnMethod final : public CompressionMethod {
public:
    const MethodInfo& info() const override { return methodInfo(); }

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        perMatrix.clear();
        for (const MatrixRef& m : group) {
            BitCounts b;
            b.indexBits = static_cast<std::uint64_t>(m.weights()) * static_cast<std::uint64_t>(params.getInt("bits"));
            b.scaleBits = 32ull * static_cast<std::uint64_t>(groupsOf(m, params));
            perMatrix.push_back(b);
        }
        return BitCounts{};
    }

    Result<GroupPayload> compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context) override
    {
        const int bits = static_cast<int>(params.getInt("bits"));
        const int top = (1 << bits) - 1;
        GroupPayload p;
        p.groupId = group.id;
        p.methodId = methodInfo().id;
        p.methodVersion = methodInfo().version;
        p.paramsJson = params.toJson(methodInfo().params);
        nlohmann::json meta{{"bits", bits}, {"groups", nlohmann::json::array()}};
        for (const WeightMatrix& m : group.matrices)
            meta["groups"].push_back(groupSize(m.ref, params));
        p.metaJson = meta.dump();
        int step = 0;
        for (const WeightMatrix& m : group.matrices) {
            if (static_cast<std::int64_t>(m.values.size()) != m.ref.weights())
                return Error{"rtn: " + m.ref.name + ": expected " + std::to_string(m.ref.weights()) + " values"};
            const std::int64_t g = groupSize(m.ref, params);
            const std::int64_t perRow = (m.ref.cols + g - 1) / g;
            std::vector<std::uint16_t> scales, mins;
            std::vector<std::int32_t> codes(m.values.size());
            for (std::int64_t r = 0; r < m.ref.rows; ++r) {
                for (std::int64_t b = 0; b < perRow; ++b) {
                    const std::int64_t begin = r * m.ref.cols + b * g, end = r * m.ref.cols + std::min(m.ref.cols, (b + 1) * g);
                    const auto [lo, hi] = std::minmax_element(m.values.begin() + begin, m.values.begin() + end);
                    // The decoder sees the fp16 values, so codes are chosen against them.
                    const std::uint16_t minHalf = floatToHalf(*lo);
                    const float minValue = halfToFloat(minHalf);
                    const float range = *hi - minValue;
                    std::uint16_t scaleHalf = floatToHalf(range > 0 ? range / top : 1.0f);
                    if (halfToFloat(scaleHalf) == 0)
                        scaleHalf = floatToHalf(1e-7f); // smallest subnormal range: all codes 0
                    const float scale = halfToFloat(scaleHalf);
                    for (std::int64_t i = begin; i < end; ++i) {
                        const long q = std::lround((m.values[i] - minValue) / scale);
                        codes[i] = static_cast<std::int32_t>(std::clamp<long>(q, 0, top));
                    }
                    scales.push_back(scaleHalf);
                    mins.push_back(minHalf);
                }
            }
            MatrixResult result;
            result.ref = m.ref;
            result.bits.indexBits = static_cast<std::uint64_t>(codes.size()) * static_cast<std::uint64_t>(bits);
            result.bits.scaleBits = 32ull * scales.size();
            p.matrices.push_back(result);
            p.sections.push_back({"codes/" + m.ref.name, packBits(codes.data(), static_cast<std::int64_t>(codes.size()), bits)});
            p.sections.push_back({"scales/" + m.ref.name, halfBytes(scales)});
            p.sections.push_back({"mins/" + m.ref.name, halfBytes(mins)});
            TrainProgress progress;
            progress.groupId = group.id;
            progress.step = ++step;
            progress.totalSteps = static_cast<int>(group.matrices.size());
            progress.epoch = progress.epochs = 1;
            if (context.onProgress && !context.onProgress(progress))
                return Error{"cancelled"};
        }
        auto decoded = decode(p);
        if (!decoded)
            return decoded.error();
        measureReconstruction(group, *decoded, p);
        return p;
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& p) const override
    {
        const auto meta = nlohmann::json::parse(p.metaJson, nullptr, false);
        if (!meta.is_object() || !meta.contains("bits") || !meta["bits"].is_number_integer() || !meta.contains("groups") ||
            !meta["groups"].is_array() || meta["groups"].size() != p.matrices.size())
            return Error{"rtn: group " + p.groupId + ": bad metadata"};
        std::vector<std::vector<float>> out;
        const int bits = meta["bits"].get<int>();
        if (bits < 2 || bits > 8)
            return Error{"rtn: group " + p.groupId + ": bits out of range"};
        for (std::size_t mi = 0; mi < p.matrices.size(); ++mi) {
            const MatrixResult& r = p.matrices[mi];
            const auto& gj = meta["groups"][mi];
            const std::int64_t g = gj.is_number_integer() ? gj.get<std::int64_t>() : 0;
            if (r.ref.rows < 1 || r.ref.cols < 1 || g < 1 || g > r.ref.cols)
                return Error{"rtn: " + r.ref.name + ": bad group size"};
            const std::int64_t perRow = (r.ref.cols + g - 1) / g;
            const auto groups = static_cast<std::uint64_t>(r.ref.rows * perRow);
            const PayloadSection* codesSection = p.section("codes/" + r.ref.name);
            const PayloadSection* scalesSection = p.section("scales/" + r.ref.name);
            const PayloadSection* minsSection = p.section("mins/" + r.ref.name);
            if (!codesSection || !scalesSection || !minsSection || scalesSection->bytes.size() != groups * 2 ||
                minsSection->bytes.size() != groups * 2)
                return Error{"rtn: " + r.ref.name + ": sections missing or of the wrong size"};
            std::vector<std::int32_t> codes(static_cast<std::size_t>(r.ref.weights()));
            if (!unpackBits(codesSection->bytes.data(), codesSection->bytes.size(), r.ref.weights(), bits, codes.data()))
                return Error{"rtn: " + r.ref.name + ": codes section too short"};
            std::vector<float> w(codes.size());
            for (std::int64_t row = 0; row < r.ref.rows; ++row) {
                for (std::int64_t b = 0; b < perRow; ++b) {
                    std::uint16_t s, mn;
                    const std::size_t k = static_cast<std::size_t>(row * perRow + b) * 2;
                    std::memcpy(&s, scalesSection->bytes.data() + k, 2);
                    std::memcpy(&mn, minsSection->bytes.data() + k, 2);
                    const float scale = halfToFloat(s), minValue = halfToFloat(mn);
                    const std::int64_t begin = row * r.ref.cols + b * g, end = row * r.ref.cols + std::min(r.ref.cols, (b + 1) * g);
                    for (std::int64_t i = begin; i < end; ++i)
                        w[i] = halfToFloat(floatToHalf(static_cast<float>(codes[i]) * scale + minValue));
                }
            }
            out.push_back(std::move(w));
        }
        return out;
    }

};

} // namespace

} // namespace pocket::rtn

POCKET_METHOD_PLUGIN(pocket::rtn::RtnMethod)
