// GPTQ (Frantar et al. 2022, the reference implementation's `fasterquant`): columns are quantised
// one at a time with the asymmetric min/max group quantiser of rtn (pocket/methods/uniform_quant.h), and
// each column's error, scaled by the inverse of the layer's input Hessian H = 2/n X^T X, is pushed
// onto the columns not yet quantised, so that tr((W - Q) H (W - Q)^T) stays small. The inverse is
// taken once as the upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1; updates within a
// block of `block` columns are applied column by column, the rest once per block.
// The payload is rtn's (codes, fp16 scale and minimum per group); decoding is rtn's decoding.
#include "pocket/methods/method_base.h"
#include "pocket/methods/uniform_quant.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <tuple>

namespace pocket::gptq {

namespace {

// Matrices with at most this many columns are processed in float64 (H is cols x cols; beyond this
// the float64 copies of H would cost gigabytes, and float32 is what the reference uses anyway).
constexpr std::int64_t kDoubleColumns = 4096;

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "gptq";
        m.displayName = "GPTQ (Hessian-aware rounding)";
        m.version = 1;
        m.description = "Column-by-column quantisation with error feedback through the inverse input Hessian (Frantar et al. "
                        "2022); rtn's storage: fp16 scale and minimum per group. Without a Hessian it equals rtn.";
        m.lossy = true;
        m.needsCalibration = true;
        m.bitsFormula = "rows*cols*bits + 32 per group (fp16 scale + fp16 minimum)";
        m.params = {ParamSpec::integer("bits", 4, 2, 8, "bits per weight"),
                    ParamSpec::integer("group", 128, 0, 1 << 20, "columns per group (0 = a whole row)"),
                    ParamSpec::real("damp", "0.01", 0, 1, "dampening added to diag(H), as a fraction of its mean"),
                    ParamSpec::integer("block", 128, 1, 1 << 20, "columns per lazy-update block (speed only)"),
                    ParamSpec::boolean("act_order", false, "quantise columns in order of decreasing diag(H)"), uniform::zeroParam(),
                    uniform::rateParam()};
        return m;
    }();
    return info;
}

struct Options {
    int bits = 4;
    std::int64_t group = 128;
    double damp = 0.01;
    std::int64_t block = 128;
    bool actOrder = false;
    std::string zero = "fp16"; // int: AutoGPTQ's integer zero point; sym: symmetric (stored as int)
    double rate = 0;           // entropy-constrained rounding (0: nearest)
};

// The code costs of compression-aware GPTQ: the matrix's code distribution under round-to-nearest
// with groups fitted to the original weights (GPTQ's own codes are not known until the end; its
// error feedback then compensates what the rate term moves).
std::vector<double> rtnCodeCosts(const WeightMatrix& m, const Options& o)
{
    const uniform::QuantisedMatrix q = uniform::quantiseNearest(m.values, m.ref, uniform::groupColumns(m.ref.cols, o.group), o.bits, o.zero);
    return uniform::codeCosts(uniform::codeCounts(q.codes, o.bits), o.rate);
}

std::int64_t blocksOf(std::int64_t cols, std::int64_t block)
{
    return (cols + block - 1) / block;
}

// U with U^T U = (H + damp * mean(diag H) * I)^-1 (upper), as fasterquant takes it. H is consumed
// and freed as early as possible: for wide matrices each cols x cols copy is large.
Result<at::Tensor> dampedInverseFactor(at::Tensor H, double damp, const std::string& name)
{
    const double meanDiag = H.diagonal().mean().item<double>();
    H.diagonal().add_(damp * meanDiag);
    const std::string notPd = "gptq: " + name + ": the Hessian is not positive definite after dampening (damp=" +
                              std::to_string(damp) + "); try a larger damp";
    at::Tensor U;
    auto [L, info] = at::linalg_cholesky_ex(H);
    H = at::Tensor();
    if (info.item<int>() != 0)
        return Error{notPd};
    L = at::cholesky_inverse(L);
    std::tie(U, info) = at::linalg_cholesky_ex(L, /*upper=*/true);
    if (info.item<int>() != 0 || !at::isfinite(U).all().item<bool>())
        return Error{notPd};
    return U;
}

// Quantises one matrix; `onBlock` is called after each block and cancels when it returns false.
Result<uniform::QuantisedMatrix> quantiseMatrix(const WeightMatrix& m, const Options& o, const std::function<bool()>& onBlock)
{
    const std::string& name = m.ref.name;
    const std::int64_t rows = m.ref.rows, cols = m.ref.cols;
    if (rows < 1 || cols < 1 || static_cast<std::int64_t>(m.values.size()) != m.ref.weights())
        return Error{"gptq: " + name + ": expected " + std::to_string(m.ref.weights()) + " values"};
    if (!m.hessian.empty() && static_cast<std::int64_t>(m.hessian.size()) != cols * cols)
        return Error{"gptq: " + name + ": the Hessian has " + std::to_string(m.hessian.size()) + " values, expected " +
                     std::to_string(cols) + "x" + std::to_string(cols)};
    const at::ScalarType dtype = cols <= kDoubleColumns ? at::kDouble : at::kFloat;
    const at::TensorOptions opts = at::TensorOptions().dtype(dtype);

    // Without calibration data, H = I: no error feedback, and GPTQ reduces to rtn.
    at::Tensor H = m.hessian.empty() ? at::eye(cols, opts)
                                     : at::from_blob(const_cast<float*>(m.hessian.data()), {cols, cols}, at::kFloat).to(dtype).clone();
    if (!at::isfinite(H).all().item<bool>())
        return Error{"gptq: " + name + ": the Hessian has non-finite values"};
    // Columns are rows of Wt, so that a column and its updates are contiguous.
    at::Tensor Wt = at::empty({cols, rows}, opts).copy_(at::from_blob(const_cast<float*>(m.values.data()), {rows, cols}, at::kFloat).t());

    // A column whose input is always zero does not affect the output: GPTQ zeroes it and gives it
    // a unit diagonal so that H stays invertible.
    const at::Tensor dead = H.diagonal() == 0;
    H.diagonal().masked_fill_(dead, 1.0);
    Wt.masked_fill_(dead.unsqueeze(1), 0.0);

    const std::int64_t g = uniform::groupColumns(cols, o.group);
    const std::int64_t perRow = (cols + g - 1) / g;
    uniform::QuantisedMatrix out;
    out.codes.resize(static_cast<std::size_t>(rows * cols));
    out.scales.resize(static_cast<std::size_t>(rows * perRow));
    out.mins.resize(out.scales.size());
    std::vector<uniform::GroupQuant> quant(out.scales.size()); // [row, group]
    const auto fitGroup = [&](const at::Tensor& columns, std::int64_t groupIndex) { // columns: [n, rows]
        const at::Tensor lo = std::get<0>(columns.min(0)).to(at::kFloat).contiguous();
        const at::Tensor hi = std::get<0>(columns.max(0)).to(at::kFloat).contiguous();
        const float* l = lo.data_ptr<float>();
        const float* h = hi.data_ptr<float>();
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::size_t k = static_cast<std::size_t>(r * perRow + groupIndex);
            quant[k] = uniform::GroupQuant::fitFor(l[r], h[r], o.bits, o.zero);
            out.scales[k] = quant[k].scaleHalf;
            out.mins[k] = quant[k].minHalf;
        }
    };

    std::vector<std::int64_t> order(static_cast<std::size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    if (o.actOrder) {
        // Static groups: with a permuted order a group's columns are no longer quantised together,
        // so each group's scale and minimum are fitted once, to the original (dead-zeroed) weights
        // of its original columns, and a column is quantised with its original group's parameters.
        // The payload therefore has rtn's layout exactly and decoding needs no permutation.
        for (std::int64_t b = 0; b < perRow; ++b)
            fitGroup(Wt.narrow(0, b * g, std::min(g, cols - b * g)), b);
        const at::Tensor d = H.diagonal().to(at::kDouble).contiguous();
        const double* dp = d.data_ptr<double>();
        std::stable_sort(order.begin(), order.end(), [dp](std::int64_t a, std::int64_t b) { return dp[a] > dp[b]; });
        const at::Tensor perm = at::tensor(order, at::kLong);
        Wt = Wt.index_select(0, perm).contiguous();
        H = H.index_select(0, perm).index_select(1, perm).contiguous();
    }

    auto inverse = dampedInverseFactor(std::move(H), o.damp, name);
    if (!inverse)
        return inverse.error();
    const at::Tensor U = std::move(*inverse);
    const std::vector<double> costs = o.rate > 0 ? rtnCodeCosts(m, o) : std::vector<double>{};
    const at::Tensor diagU = U.diagonal().to(at::kDouble).contiguous();
    const double* dU = diagU.data_ptr<double>();
    at::Tensor e = at::empty({rows}, at::kDouble);
    double* ep = e.data_ptr<double>();

    const std::int64_t blocks = blocksOf(cols, o.block);
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
        const std::int64_t i1 = blk * o.block, i2 = std::min(cols, i1 + o.block), count = i2 - i1;
        at::Tensor W1 = Wt.narrow(0, i1, count); // a view: updates land in Wt
        at::Tensor Err1 = at::zeros({count, rows}, opts);
        for (std::int64_t j = 0; j < count; ++j) {
            const std::int64_t i = i1 + j, column = order[static_cast<std::size_t>(i)];
            if (!o.actOrder && i % g == 0) {
                // Fitted to the current weights of the group: the in-block columns are up to date in
                // W1; columns past the block still lack this block's pending updates, so they are
                // added here (fasterquant reads the stale values, which only differs when a group
                // straddles a block boundary).
                const std::int64_t end = std::min(cols, i + g);
                at::Tensor current = W1.narrow(0, j, std::min(end, i2) - i);
                if (end > i2) {
                    at::Tensor later = Wt.narrow(0, i2, end - i2);
                    if (j > 0)
                        later = later - U.narrow(0, i1, j).narrow(1, i2, end - i2).t().mm(Err1.narrow(0, 0, j));
                    current = at::cat({current, later}, 0);
                }
                fitGroup(current, i / g);
            }
            const double d = dU[i];
            const at::Tensor w = W1[j].to(at::kDouble).contiguous();
            const double* wp = w.data_ptr<double>();
            for (std::int64_t r = 0; r < rows; ++r) {
                const uniform::GroupQuant& q = quant[static_cast<std::size_t>(r * perRow + column / g)];
                const std::int32_t code = o.rate > 0 ? uniform::rateConstrainedCode(q, static_cast<float>(wp[r]), costs)
                                                     : q.code(static_cast<float>(wp[r]));
                out.codes[static_cast<std::size_t>(r * cols + column)] = code;
                ep[r] = (wp[r] - static_cast<double>(q.value(code))) / d;
            }
            at::Tensor err = Err1[j];
            err.copy_(e);
            if (j + 1 < count)
                W1.narrow(0, j + 1, count - j - 1).addr_(U[i].narrow(0, i + 1, count - j - 1), err, 1, -1);
        }
        if (i2 < cols)
            Wt.narrow(0, i2, cols - i2).addmm_(U.narrow(0, i1, count).narrow(1, i2, cols - i2).t(), Err1, 1, -1);
        if (!onBlock())
            return Error::cancelled();
    }
    return out;
}

class GptqMethod final : public MethodBase {
public:
    GptqMethod() : MethodBase(methodInfo()) {}

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        return uniform::estimateBits(group, params, perMatrix);
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& p) const override { return uniform::decodePayload(p, "gptq"); }
    Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload p) const override { return uniform::UniformDecoder::make(std::move(p), "gptq"); }

protected:
    Status compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& p) override
    {
        Options o;
        o.bits = static_cast<int>(params.getInt("bits"));
        o.group = params.getInt("group");
        o.damp = params.getFloat("damp");
        o.block = params.getInt("block");
        o.actOrder = params.getBool("act_order");
        o.zero = params.getText("zero");
        o.rate = params.getFloat("rate");

        std::vector<std::int64_t> groupCols;
        int totalSteps = 0;
        for (const WeightMatrix& m : group.matrices) {
            groupCols.push_back(uniform::groupColumns(m.ref.cols, o.group));
            totalSteps += static_cast<int>(blocksOf(m.ref.cols, o.block));
        }
        p.metaJson = uniform::metaJson(o.bits, groupCols, o.zero != "fp16");

        at::NoGradGuard noGrad;
        TrainProgress progress;
        progress.groupId = group.id;
        progress.totalSteps = totalSteps;
        progress.epoch = progress.epochs = 1;
        const auto onBlock = [&] {
            ++progress.step;
            return report(context, progress);
        };
        for (const WeightMatrix& m : group.matrices) {
            auto q = quantiseMatrix(m, o, onBlock);
            if (!q)
                return q.error();
            uniform::appendMatrix(p, m.ref, *q, o.bits);
        }
        return {};
    }
};

} // namespace

} // namespace pocket::gptq

POCKET_METHOD_PLUGIN(pocket::gptq::GptqMethod)
