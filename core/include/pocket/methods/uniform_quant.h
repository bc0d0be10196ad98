// Asymmetric min/max uniform quantisation in groups of columns, shared by the rtn and gptq plugins.
// Each row of a [rows, cols] matrix is cut into groups of `group` columns (the last one may be
// shorter); a group stores an fp16 scale and an fp16 minimum (32 bits) and `bits`-bit codes:
//   w_hat = fp16(q * scale + min),   q = clamp(round((w - min) / scale), 0, 2^bits - 1).
// Payload of one matrix: sections "codes/<name>" (packed codes, row-major), "scales/<name>" and
// "mins/<name>" (fp16, one per group, row-major over [rows, groups per row]); metaJson
// {"bits": b, "groups": [columns per group of each matrix]}.
// With "zero": "int" in metaJson (parameter zero=int), a group stores an integer zero point z
// instead of a minimum (in "mins/<name>", as fp16, exact for z < 2048), the range is widened to
// include 0, z is kept in [1, 2^bits - 1], and w_hat = fp16((q - z) * scale): AutoGPTQ's asymmetric
// quantiser, so the codes map to the GPTQ (v1) checkpoint format exactly.
// Header-only, no LibTorch; needs nlohmann_json (the plugins link it). Reentrant.
#pragma once

#include "pocket/io/dtype.h"
#include "pocket/methods/method.h"
#include "pocket/methods/vq_kernels.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace pocket::uniform {

// Columns per group: `group`, or the whole row when group is 0 (or wider than the row).
inline std::int64_t groupColumns(std::int64_t cols, std::int64_t group)
{
    return group <= 0 || group > cols ? cols : group;
}

// Groups of a matrix (rows * groups per row).
inline std::int64_t groupCount(const MatrixRef& ref, std::int64_t groupCols)
{
    return ref.rows * ((ref.cols + groupCols - 1) / groupCols);
}

// Bits of one matrix: rows*cols*bits codes + 32 per group.
inline BitCounts matrixBits(const MatrixRef& ref, int bits, std::int64_t groupCols)
{
    BitCounts b;
    b.indexBits = static_cast<std::uint64_t>(ref.weights()) * static_cast<std::uint64_t>(bits);
    b.scaleBits = 32ull * static_cast<std::uint64_t>(groupCount(ref, groupCols));
    return b;
}

// CompressionMethod::estimateBits for methods whose parameters include `bits` and `group`: every
// matrix quantised on its own, nothing shared.
inline BitCounts estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix)
{
    perMatrix.clear();
    for (const MatrixRef& m : group)
        perMatrix.push_back(matrixBits(m, static_cast<int>(params.getInt("bits")), groupColumns(m.cols, params.getInt("group"))));
    return BitCounts{};
}

// The stored parameters of one group and the quantiser they define.
struct GroupQuant {
    std::uint16_t scaleHalf = 0;
    std::uint16_t minHalf = 0;
    float scale = 1;    // halfToFloat(scaleHalf)
    float minValue = 0; // halfToFloat(minHalf); with an integer zero point: the zero point
    int top = 15;       // 2^bits - 1
    bool intZero = false;

    // Fitted as AutoGPTQ's asymmetric quantiser: range widened to include 0, scale (hi-lo)/top,
    // integer zero point round(-lo/scale), kept in [1, top] (GPTQ v1 stores zero - 1), stored in
    // minHalf.
    static GroupQuant fitIntZero(float lo, float hi, int bits)
    {
        GroupQuant q;
        q.intZero = true;
        q.top = (1 << bits) - 1;
        lo = std::min(lo, 0.0f);
        hi = std::max(hi, 0.0f);
        q.scaleHalf = floatToHalf(hi > lo ? (hi - lo) / static_cast<float>(q.top) : 1.0f);
        if (halfToFloat(q.scaleHalf) == 0)
            q.scaleHalf = floatToHalf(1e-7f);
        q.scale = halfToFloat(q.scaleHalf);
        // z >= 1: the GPTQ v1 format stores z - 1 unsigned, so a zero point of 0 cannot be written.
        const long z = std::clamp<long>(std::lround(-lo / q.scale), 1, q.top);
        q.minHalf = floatToHalf(static_cast<float>(z));
        q.minValue = static_cast<float>(z);
        return q;
    }

    // Symmetric (zero=sym): the integer zero point is always 2^(bits-1) and the scale
    // max(|lo|, |hi|) / (2^(bits-1) - 1), so a zero weight has the same code in every group and the
    // codes of bell-shaped weights centre on it (what an entropy coder wants). Stored as zero=int.
    static GroupQuant fitSymmetric(float lo, float hi, int bits)
    {
        GroupQuant q;
        q.intZero = true;
        q.top = (1 << bits) - 1;
        const int half = 1 << (bits - 1);
        const float m = std::max(std::fabs(lo), std::fabs(hi));
        q.scaleHalf = floatToHalf(m > 0 ? m / static_cast<float>(half - 1) : 1.0f);
        if (halfToFloat(q.scaleHalf) == 0)
            q.scaleHalf = floatToHalf(1e-7f);
        q.scale = halfToFloat(q.scaleHalf);
        q.minHalf = floatToHalf(static_cast<float>(half));
        q.minValue = static_cast<float>(half);
        return q;
    }

    // Fitted to a group whose smallest value is `lo` and largest `hi`.
    static GroupQuant fit(float lo, float hi, int bits)
    {
        GroupQuant q;
        q.top = (1 << bits) - 1;
        // The decoder sees the fp16 values, so codes are chosen against them.
        q.minHalf = floatToHalf(lo);
        q.minValue = halfToFloat(q.minHalf);
        const float range = hi - q.minValue;
        q.scaleHalf = floatToHalf(range > 0 ? range / static_cast<float>(q.top) : 1.0f);
        if (halfToFloat(q.scaleHalf) == 0)
            q.scaleHalf = floatToHalf(1e-7f); // smallest subnormal range: all codes 0
        q.scale = halfToFloat(q.scaleHalf);
        return q;
    }
    // Restores the quantiser from stored fp16 values.
    static GroupQuant fromHalves(std::uint16_t scaleHalf, std::uint16_t minHalf, int bits, bool intZero = false)
    {
        GroupQuant q;
        q.intZero = intZero;
        q.top = (1 << bits) - 1;
        q.scaleHalf = scaleHalf;
        q.minHalf = minHalf;
        q.scale = halfToFloat(scaleHalf);
        q.minValue = halfToFloat(minHalf);
        return q;
    }
    // The nearest code of w.
    std::int32_t code(float w) const
    {
        const long q = intZero ? std::lround(w / scale) + static_cast<long>(minValue) : std::lround((w - minValue) / scale);
        return static_cast<std::int32_t>(std::clamp<long>(q, 0, top));
    }
    // value(c) for every code c = 0 .. top (2^bits floats) before the final rounding to fp16:
    // roundThroughHalf() of them gives exactly what value() gives.
    void unroundedTable(float* out) const
    {
        for (int c = 0; c <= top; ++c)
            out[c] = intZero ? static_cast<float>(c - static_cast<std::int32_t>(minValue)) * scale : static_cast<float>(c) * scale + minValue;
    }
    // The decoded weight of a code.
    float value(std::int32_t code) const
    {
        if (intZero)
            return halfToFloat(floatToHalf(static_cast<float>(code - static_cast<std::int32_t>(minValue)) * scale));
        return halfToFloat(floatToHalf(static_cast<float>(code) * scale + minValue));
    }
    // Fitted by the payload's rule.
    static GroupQuant fitFor(float lo, float hi, int bits, bool intZero) { return intZero ? fitIntZero(lo, hi, bits) : fit(lo, hi, bits); }
    // Fitted by the "zero" parameter's rule: "fp16", "int" or "sym".
    static GroupQuant fitFor(float lo, float hi, int bits, const std::string& zero)
    {
        return zero == "sym" ? fitSymmetric(lo, hi, bits) : fitFor(lo, hi, bits, zero == "int");
    }
};

// Compression-aware (entropy-constrained) rounding, shared by rtn and gptq: a code c costs
// ((w - value(c)) / step)^2 + rate * bits(c), bits(c) = -log2 p(c) under a code distribution.
// The "rate" parameter of both plugins.
inline ParamSpec rateParam()
{
    return ParamSpec::real("rate", "0", 0, 10,
                           "rate weight of entropy-constrained rounding: a code costs (error/step)^2 + rate * its bits under the "
                           "matrix's code distribution (0 = round to nearest)");
}

// rate * bits(c) for every code from code counts (half a count added to each: no code is
// infinitely expensive).
inline std::vector<double> codeCosts(const std::vector<double>& counts, double rate)
{
    double total = 0;
    for (double c : counts)
        total += c + 0.5;
    std::vector<double> cost(counts.size());
    for (std::size_t c = 0; c < counts.size(); ++c)
        cost[c] = rate * -std::log2((counts[c] + 0.5) / total);
    return cost;
}

// The cheapest code of w under `cost` among the five around its nearest code.
inline std::int32_t rateConstrainedCode(const struct GroupQuant& q, float w, const std::vector<double>& cost);

// One quantised matrix: codes row-major, scales and mins row-major over [rows, groups per row].
struct QuantisedMatrix {
    std::vector<std::int32_t> codes;
    std::vector<std::uint16_t> scales;
    std::vector<std::uint16_t> mins;
};

// Round to nearest, each group fitted to its own minimum and maximum by the "zero" rule ("fp16",
// "int" or "sym"); `quantisers`, when given, receives each group's quantiser (row-major over
// [rows, groups per row]). rtn's quantiser, and the code distribution gptq's rate term starts from.
inline QuantisedMatrix quantiseNearest(const std::vector<float>& values, const MatrixRef& ref, std::int64_t groupCols, int bits,
                                       const std::string& zero, std::vector<GroupQuant>* quantisers = nullptr)
{
    const std::int64_t perRow = (ref.cols + groupCols - 1) / groupCols;
    QuantisedMatrix q;
    q.codes.resize(values.size());
    for (std::int64_t r = 0; r < ref.rows; ++r)
        for (std::int64_t b = 0; b < perRow; ++b) {
            const std::int64_t begin = r * ref.cols + b * groupCols, end = r * ref.cols + std::min(ref.cols, (b + 1) * groupCols);
            const auto [lo, hi] = std::minmax_element(values.begin() + begin, values.begin() + end);
            const GroupQuant gq = GroupQuant::fitFor(*lo, *hi, bits, zero);
            for (std::int64_t i = begin; i < end; ++i)
                q.codes[static_cast<std::size_t>(i)] = gq.code(values[static_cast<std::size_t>(i)]);
            q.scales.push_back(gq.scaleHalf);
            q.mins.push_back(gq.minHalf);
            if (quantisers)
                quantisers->push_back(gq);
        }
    return q;
}

// How often each code 0 .. 2^bits - 1 occurs (for codeCosts).
inline std::vector<double> codeCounts(const std::vector<std::int32_t>& codes, int bits)
{
    std::vector<double> counts(static_cast<std::size_t>(1) << bits, 0);
    for (std::int32_t c : codes)
        counts[static_cast<std::size_t>(c)] += 1;
    return counts;
}

inline std::int32_t rateConstrainedCode(const GroupQuant& q, float w, const std::vector<double>& cost)
{
    const std::int32_t nearest = q.code(w);
    const double step = std::max(1e-30, static_cast<double>(q.scale));
    std::int32_t best = nearest;
    double bestCost = std::numeric_limits<double>::infinity();
    for (std::int32_t c = std::max(0, nearest - 2); c <= std::min(q.top, nearest + 2); ++c) {
        const double e = (static_cast<double>(w) - q.value(c)) / step;
        const double total = e * e + cost[static_cast<std::size_t>(c)];
        if (total < bestCost) {
            bestCost = total;
            best = c;
        }
    }
    return best;
}

// The metaJson of a payload of matrices with these group widths.
inline std::string metaJson(int bits, const std::vector<std::int64_t>& groupCols, bool intZero = false)
{
    nlohmann::json j{{"bits", bits}, {"groups", groupCols}};
    if (intZero)
        j["zero"] = "int";
    return j.dump();
}

// The "zero" parameter both plugins take: fp16 (a minimum per group) or int (AutoGPTQ's zero point).
inline ParamSpec zeroParam()
{
    return ParamSpec::choice("zero", "fp16", {"fp16", "int", "sym"},
                             "fp16: an fp16 minimum per group; int: an integer zero point (AutoGPTQ's quantiser; exports to the GPTQ format "
                             "exactly); sym: symmetric, zero point fixed at 2^(bits-1) (stored as int; codes line up across groups, "
                             "which the entropy coder rewards)");
}

// Whether a payload's metaJson says zero=int.
inline bool intZeroOf(const nlohmann::json& meta) { return meta.is_object() && meta.value("zero", std::string()) == "int"; }

// Appends the three sections of matrix `ref` and its MatrixResult (bits; errors are
// filled later by measureReconstruction).
inline void appendMatrix(GroupPayload& payload, const MatrixRef& ref, const QuantisedMatrix& q, int bits)
{
    const auto halfBytes = [](const std::vector<std::uint16_t>& h) {
        std::vector<std::uint8_t> out(h.size() * 2);
        std::memcpy(out.data(), h.data(), out.size());
        return out;
    };
    MatrixResult result;
    result.ref = ref;
    result.bits.indexBits = static_cast<std::uint64_t>(q.codes.size()) * static_cast<std::uint64_t>(bits);
    result.bits.scaleBits = 32ull * q.scales.size();
    payload.matrices.push_back(result);
    payload.sections.push_back(codeSection("codes/" + ref.name, q.codes.data(), static_cast<std::int64_t>(q.codes.size()), bits));
    payload.sections.push_back({"scales/" + ref.name, halfBytes(q.scales)});
    payload.sections.push_back({"mins/" + ref.name, halfBytes(q.mins)});
}

// The checked layout of a payload in this format.
struct PayloadLayout {
    int bits = 0;
    bool intZero = false;
    struct Matrix {
        std::int64_t group = 0, perRow = 0;
        const PayloadSection* codes = nullptr;
        const PayloadSection* scales = nullptr;
        const PayloadSection* mins = nullptr;
    };
    std::vector<Matrix> matrices;

    // Checks metadata and section sizes; errors start with "<methodId>: ".
    static Result<PayloadLayout> check(const GroupPayload& p, const std::string& methodId)
    {
        const auto meta = nlohmann::json::parse(p.metaJson, nullptr, false);
        if (!meta.is_object() || !meta.contains("bits") || !meta["bits"].is_number_integer() || !meta.contains("groups") ||
            !meta["groups"].is_array() || meta["groups"].size() != p.matrices.size())
            return Error{methodId + ": group " + p.groupId + ": bad metadata"};
        PayloadLayout l;
        l.bits = meta["bits"].get<int>();
        l.intZero = intZeroOf(meta);
        if (l.bits < 2 || l.bits > 8)
            return Error{methodId + ": group " + p.groupId + ": bits out of range"};
        for (std::size_t mi = 0; mi < p.matrices.size(); ++mi) {
            const MatrixRef& ref = p.matrices[mi].ref;
            const auto& gj = meta["groups"][mi];
            Matrix m;
            m.group = gj.is_number_integer() ? gj.get<std::int64_t>() : 0;
            if (ref.rows < 1 || ref.cols < 1 || m.group < 1 || m.group > ref.cols)
                return Error{methodId + ": " + ref.name + ": bad group size"};
            m.perRow = (ref.cols + m.group - 1) / m.group;
            const auto groups = static_cast<std::uint64_t>(ref.rows * m.perRow);
            m.codes = p.section("codes/" + ref.name);
            m.scales = p.section("scales/" + ref.name);
            m.mins = p.section("mins/" + ref.name);
            if (!m.codes || !m.scales || !m.mins || m.scales->bytes.size() != groups * 2 || m.mins->bytes.size() != groups * 2)
                return Error{methodId + ": " + ref.name + ": sections missing or of the wrong size"};
            if (m.codes->bytes.size() < (static_cast<std::uint64_t>(ref.weights()) * static_cast<std::uint64_t>(l.bits) + 7) / 8)
                return Error{methodId + ": " + ref.name + ": codes section too short"};
            l.matrices.push_back(m);
        }
        return l;
    }

    // The quantiser of group `b` of row `row` of matrix `mi`.
    GroupQuant quantiser(std::size_t mi, std::int64_t row, std::int64_t b) const
    {
        const Matrix& m = matrices[mi];
        std::uint16_t s, mn;
        const std::size_t k = static_cast<std::size_t>(row * m.perRow + b) * 2;
        std::memcpy(&s, m.scales->bytes.data() + k, 2);
        std::memcpy(&mn, m.mins->bytes.data() + k, 2);
        return GroupQuant::fromHalves(s, mn, bits, intZero);
    }
};

// Decodes every matrix of a payload in this layout; errors start with "<methodId>: ". The plain
// reference (one code at a time); UniformDecoder is the fast one.
inline Result<std::vector<std::vector<float>>> decodePayload(const GroupPayload& p, const std::string& methodId)
{
    auto layout = PayloadLayout::check(p, methodId);
    if (!layout)
        return layout.error();
    std::vector<std::vector<float>> out;
    for (std::size_t mi = 0; mi < p.matrices.size(); ++mi) {
        const MatrixRef& ref = p.matrices[mi].ref;
        const PayloadLayout::Matrix& m = layout->matrices[mi];
        std::vector<std::int32_t> codes(static_cast<std::size_t>(ref.weights()));
        if (!unpackBits(m.codes->bytes.data(), m.codes->bytes.size(), ref.weights(), layout->bits, codes.data()))
            return Error{methodId + ": " + ref.name + ": codes section too short"};
        std::vector<float> w(codes.size());
        for (std::int64_t row = 0; row < ref.rows; ++row) {
            for (std::int64_t b = 0; b < m.perRow; ++b) {
                const GroupQuant q = layout->quantiser(mi, row, b);
                const std::int64_t begin = row * ref.cols + b * m.group, end = row * ref.cols + std::min(ref.cols, (b + 1) * m.group);
                for (std::int64_t i = begin; i < end; ++i)
                    w[i] = q.value(codes[i]);
            }
        }
        out.push_back(std::move(w));
    }
    return out;
}

// The fast decoder: per group of columns, the 2^bits decoded values are tabulated once (exactly
// GroupQuant::value) and the packed codes are looked up in that table; rows split over threads.
class UniformDecoder final : public PayloadDecoder {
public:
    static Result<std::unique_ptr<PayloadDecoder>> make(GroupPayload p, const std::string& methodId)
    {
        std::unique_ptr<UniformDecoder> d(new UniformDecoder);
        d->m_payload = std::move(p);
        auto layout = PayloadLayout::check(d->m_payload, methodId);
        if (!layout)
            return layout.error();
        d->m_layout = std::move(*layout);
        return std::unique_ptr<PayloadDecoder>(std::move(d));
    }
    std::size_t matrixCount() const override { return m_payload.matrices.size(); }
    const MatrixRef& matrix(std::size_t index) const override { return m_payload.matrices.at(index).ref; }
    std::uint64_t bytes() const override { return payloadBytes(m_payload); }
    Status decodeMatrix(std::size_t index, float* out, int threads) const override
    {
        if (index >= m_payload.matrices.size())
            return Error::internal("decodeMatrix: no matrix " + std::to_string(index) + " in group " + m_payload.groupId);
        const MatrixRef& ref = m_payload.matrices[index].ref;
        const PayloadLayout::Matrix& m = m_layout.matrices[index];
        const int bits = m_layout.bits;
        const std::int64_t levels = std::int64_t{1} << bits;
        parallelFor(ref.rows, threads, std::max<std::int64_t>(1, 65536 / ref.cols), [&](std::int64_t r0, std::int64_t r1) {
            // The tables of a whole row at once, rounded to fp16 in one pass.
            std::vector<float> tables(static_cast<std::size_t>(m.perRow * levels));
            for (std::int64_t row = r0; row < r1; ++row) {
                for (std::int64_t b = 0; b < m.perRow; ++b)
                    m_layout.quantiser(index, row, b).unroundedTable(&tables[static_cast<std::size_t>(b * levels)]);
                roundThroughHalf(tables.data(), tables.size());
                for (std::int64_t b = 0; b < m.perRow; ++b) {
                    const std::int64_t begin = row * ref.cols + b * m.group;
                    const std::int64_t count = std::min(ref.cols, (b + 1) * m.group) - b * m.group;
                    unpackThroughTable(m.codes->bytes.data(), m.codes->bytes.size(), static_cast<std::uint64_t>(begin), count, bits,
                                       &tables[static_cast<std::size_t>(b * levels)], out + begin);
                }
            }
        });
        return {};
    }

private:
    UniformDecoder() = default;
    GroupPayload m_payload;
    PayloadLayout m_layout;
};

} // namespace pocket::uniform
