// AQLM (Egiazarian et al., ICML 2024), computed here: every group of g input weights of an output
// row is the sum of M codewords, one from each of M learnt codebooks of 2^B entries, times the
// row's fp16 scale. Codebooks start from residual k-means on the row-normalised weights; then
// rounds alternate a beam search for the codes (column group by column group, each group's codes
// minimising the layer's output error ||(W - Ŵ)X||² = tr(E H E^T) with the other groups fixed)
// and Adam on the codebooks and the row scales over the same objective. H is the calibration
// Hessian (normalised to a mean diagonal of 1, damped) or, with objective=weights, the identity.
// A round's result is kept only when it does not raise the objective (measured on the fp16 values
// the archive stores), so the objective never rises across rounds.
// Payload: codebooks fp16 [M, 2^B, g]; per matrix codes packed at B bits ([group][row][m]) and
// fp16 row scales; every bit counted.
#include "pocket/io/dtype.h"
#include "pocket/methods/kmeans.h"
#include "pocket/methods/method_base.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/timing.h"

#include "pocket/methods/additive_search.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/optim/adam.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

namespace pocket::aqlm {

namespace {

using json = nlohmann::ordered_json;

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "aqlm";
        m.displayName = "AQLM (additive quantisation)";
        m.version = 1;
        m.description = "Each group of g input weights is the sum of M codewords from M learnt codebooks, scaled per output "
                        "row; codes by beam search on the layer's output error, codebooks and scales by Adam (Egiazarian et "
                        "al. 2024).";
        m.lossy = true;
        m.needsCalibration = true;
        m.bitsFormula = "rows*ceil(cols/g)*M*B + 16*rows (row scales) per matrix, + 16*M*2^B*g per group (codebooks), shared "
                        "bits split over the group";
        m.params = {ParamSpec::integer("M", 2, 1, 8, "codebooks: each group of g weights is the sum of M codewords"),
                    ParamSpec::integer("B", 8, 1, 16, "bits per code: every codebook has 2^B codewords"),
                    ParamSpec::integer("g", 8, 1, 64, "input weights per group (AQLM's in_group_size; out group size is 1)"),
                    ParamSpec::choice("sharing", "matrix", {"matrix", "type", "model"},
                                      "codebooks per matrix (AQLM), per matrix type across blocks, or for the whole model"),
                    ParamSpec::choice("objective", "output", {"output", "weights"},
                                      "output: the layer's output error with the calibration Hessian (needs calibration text); "
                                      "weights: plain squared weight error (identity Hessian)"),
                    ParamSpec::integer("beam", 8, 1, 1 << 16, "beam width of the code search", true),
                    ParamSpec::integer("rounds", 6, 0, 10000, "rounds of code search followed by codebook and scale updates"),
                    ParamSpec::integer("steps", 100, 0, 1000000, "Adam steps on codebooks and scales per round", true),
                    ParamSpec::real("lr", "0.001", 1e-7, 10, "Adam learning rate (codebooks in row-normalised units, scales as "
                                                            "multipliers of their start)", true),
                    ParamSpec::integer("kmeans_iters", 25, 0, 10000, "Lloyd iterations of each residual k-means stage"),
                    ParamSpec::integer("init_sample", 65536, 1, 1 << 30, "groups sampled for k-means++ seeding", true),
                    ParamSpec::real("damp", "0.01", 0, 1, "dampening added to the Hessian's diagonal (its mean is 1)"),
                    ParamSpec::integer("seed", 1, 0, 2147483647, "random seed (combined with the group id)")};
        return m;
    }();
    return info;
}

struct Shape {
    int m = 0, bits = 0, g = 0;
    std::int64_t k = 0;
};

Shape shapeOf(const ParamSet& params)
{
    Shape s;
    s.m = static_cast<int>(params.getInt("M"));
    s.bits = static_cast<int>(params.getInt("B"));
    s.g = static_cast<int>(params.getInt("g"));
    s.k = std::int64_t{1} << s.bits;
    return s;
}

std::int64_t groupsPerRow(const MatrixRef& ref, int g) { return (ref.cols + g - 1) / g; }

std::uint64_t codeCount(const MatrixRef& ref, const Shape& s)
{
    return static_cast<std::uint64_t>(groupsPerRow(ref, s.g)) * static_cast<std::uint64_t>(ref.rows) * static_cast<std::uint64_t>(s.m);
}

at::Tensor roundFp16(const at::Tensor& t) { return t.to(at::kHalf).to(at::kFloat); }

std::vector<std::uint8_t> fp16Bytes(const at::Tensor& t)
{
    const at::Tensor h = t.contiguous().to(at::kHalf);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(h.numel()) * 2);
    std::memcpy(bytes.data(), h.data_ptr(), bytes.size());
    return bytes;
}

// ---------------------------------------------------------------------------------------------
// The checked layout of a payload, and decoding (plain C++).
struct Layout {
    Shape shape;
    std::vector<float> codebooks;                // M * K * g
    std::vector<const PayloadSection*> codes;    // per matrix
    std::vector<std::vector<float>> rowScales;   // per matrix

    static Result<Layout> check(const GroupPayload& p)
    {
        const auto meta = nlohmann::json::parse(p.metaJson, nullptr, false);
        const auto intField = [&](const char* key) {
            return meta.is_object() && meta.contains(key) && meta[key].is_number_integer() ? meta[key].get<std::int64_t>() : -1;
        };
        Layout l;
        const std::int64_t m = intField("M"), b = intField("B"), g = intField("g");
        if (m < 1 || m > 8 || b < 1 || b > 16 || g < 1 || g > 64)
            return Error{"aqlm: group " + p.groupId + ": bad or missing metadata (M, B, g)"};
        l.shape = {static_cast<int>(m), static_cast<int>(b), static_cast<int>(g), std::int64_t{1} << b};
        const PayloadSection* books = p.section("codebooks");
        const std::size_t values = static_cast<std::size_t>(m * l.shape.k * g);
        if (!books || books->bytes.size() != values * 2)
            return Error{"aqlm: group " + p.groupId + ": codebook section missing or of the wrong size"};
        l.codebooks.resize(values);
        convertToFloat(DType::F16, books->bytes.data(), values, l.codebooks.data());
        for (const MatrixResult& r : p.matrices) {
            if (r.ref.rows < 1 || r.ref.cols < 1)
                return Error{"aqlm: " + r.ref.name + ": bad shape"};
            const PayloadSection* codes = p.section("codes/" + r.ref.name);
            if (!codes || codes->bytes.size() < (codeCount(r.ref, l.shape) * static_cast<std::uint64_t>(b) + 7) / 8)
                return Error{"aqlm: " + r.ref.name + ": code section missing or too short"};
            const PayloadSection* scales = p.section("row_scales/" + r.ref.name);
            if (!scales || scales->bytes.size() != static_cast<std::size_t>(r.ref.rows) * 2)
                return Error{"aqlm: " + r.ref.name + ": row scale section missing or of the wrong size"};
            l.codes.push_back(codes);
            l.rowScales.emplace_back(static_cast<std::size_t>(r.ref.rows));
            convertToFloat(DType::F16, scales->bytes.data(), l.rowScales.back().size(), l.rowScales.back().data());
        }
        return l;
    }

    std::uint64_t bytes() const
    {
        std::uint64_t n = codebooks.size() * sizeof(float);
        for (const auto& rs : rowScales)
            n += rs.size() * sizeof(float);
        return n;
    }

    // Rows [r0, r1) of matrix `index` into out (rows * cols floats of the whole matrix); codes of B
    // bits cannot leave the codebooks, so this never fails.
    std::string decodeRows(const MatrixRef& ref, std::size_t index, std::int64_t r0, std::int64_t r1, float* out) const
    {
        const Shape& s = shape;
        const PayloadSection& sec = *codes[index];
        const std::int64_t groups = groupsPerRow(ref, s.g);
        std::vector<float> y(static_cast<std::size_t>(s.g));
        for (std::int64_t r = r0; r < r1; ++r) {
            const float scale = rowScales[index][static_cast<std::size_t>(r)];
            for (std::int64_t b = 0; b < groups; ++b) {
                std::fill(y.begin(), y.end(), 0.0f);
                for (int m = 0; m < s.m; ++m) {
                    const std::uint64_t at = static_cast<std::uint64_t>((b * ref.rows + r) * s.m + m);
                    const std::uint32_t code = packedValue(sec.bytes.data(), sec.bytes.size(), at, s.bits);
                    const float* c = &codebooks[static_cast<std::size_t>((m * s.k + code) * s.g)];
                    for (int j = 0; j < s.g; ++j)
                        y[static_cast<std::size_t>(j)] += c[j];
                }
                const std::int64_t width = std::min<std::int64_t>(s.g, ref.cols - b * s.g);
                for (std::int64_t j = 0; j < width; ++j)
                    out[r * ref.cols + b * s.g + j] = y[static_cast<std::size_t>(j)] * scale;
            }
        }
        return {};
    }
};

using additive::MatrixState;
using additive::codewordSums;
using additive::searchCodes;

// tr(E H E^T) summed over the group's matrices, over their tr(W H W^T).
double objective(const std::vector<MatrixState>& ms, const at::Tensor& codebooks)
{
    double err = 0, norm = 0;
    for (const MatrixState& s : ms) {
        const at::Tensor e = s.w - codewordSums(codebooks, s.codes, s.rows, s.padded) * s.scale.unsqueeze(1);
        err += (e.mm(s.h) * e).sum().item<double>();
        norm += s.norm;
    }
    return norm > 0 ? err / norm : err;
}

// Adam on the codebooks and the row-scale multipliers, then both rounded to fp16 (as stored).
void updateCodebooksAndScales(std::vector<MatrixState>& ms, at::Tensor& codebooks, int steps, double lr)
{
    at::Tensor books = codebooks.clone().set_requires_grad(true);
    std::vector<at::Tensor> trainable{books}, multipliers;
    double norm = 0;
    for (MatrixState& s : ms) {
        multipliers.push_back((s.scale / s.scale0.clamp_min(1e-30)).clone().set_requires_grad(true));
        trainable.push_back(multipliers.back());
        norm += s.norm;
    }
    torch::optim::Adam optimizer(trainable, torch::optim::AdamOptions(lr));
    for (int step = 0; step < steps; ++step) {
        optimizer.zero_grad();
        for (std::size_t i = 0; i < ms.size(); ++i) {
            const MatrixState& s = ms[i];
            const at::Tensor e = s.w - codewordSums(books, s.codes, s.rows, s.padded) * (s.scale0 * multipliers[i]).unsqueeze(1);
            ((e.mm(s.h) * e).sum() / (norm > 0 ? norm : 1.0)).backward();
        }
        optimizer.step();
    }
    at::NoGradGuard noGrad;
    codebooks = roundFp16(books.detach());
    for (std::size_t i = 0; i < ms.size(); ++i)
        ms[i].scale = roundFp16(ms[i].scale0 * multipliers[i].detach());
}

// Residual k-means on the row-normalised groups of all matrices: codebook m is fitted to what the
// codebooks before it left; codes are each stage's nearest codewords. False when cancelled.
bool residualKmeans(std::vector<MatrixState>& ms, const Shape& shape, const ParamSet& params, const std::string& groupId, int threads,
                    at::Tensor& codebooks, const std::function<bool(int, double)>& report)
{
    std::vector<at::Tensor> parts;
    for (const MatrixState& s : ms)
        parts.push_back((s.w / s.scale0.unsqueeze(1)).view({s.rows, s.groups, shape.g}).permute({1, 0, 2}).reshape({-1, shape.g}));
    at::Tensor residual = at::cat(parts, 0).contiguous();
    const std::int64_t n = residual.size(0);
    std::mt19937_64 gen(groupSeed(params.getInt("seed"), groupId));
    std::vector<at::Tensor> books, codes;
    for (int m = 0; m < shape.m; ++m) {
        std::vector<float> points(residual.data_ptr<float>(), residual.data_ptr<float>() + n * shape.g), book;
        const bool finished = vqcommon::kmeans(points, n, shape.g, shape.k, static_cast<int>(params.getInt("kmeans_iters")), "kmeans++",
                                               params.getInt("init_sample"), gen, {}, threads, book,
                                               [&](int it, const vqcommon::KmeansStats& st) { return report(m * 1000 + it, st.loss); });
        if (!finished)
            return false;
        const at::Tensor c = roundFp16(at::from_blob(book.data(), {shape.k, shape.g}, at::kFloat).clone());
        std::vector<std::int32_t> idx(static_cast<std::size_t>(n));
        nearestCodewords(residual.data_ptr<float>(), n, c.data_ptr<float>(), shape.k, shape.g, idx.data(), nullptr, threads);
        const at::Tensor code = at::from_blob(idx.data(), {n}, at::kInt).to(at::kLong);
        residual = (residual - c.index_select(0, code)).contiguous();
        books.push_back(c);
        codes.push_back(code);
    }
    codebooks = at::stack(books, 0);
    const at::Tensor all = at::stack(codes, 1); // [n, M]
    std::int64_t offset = 0;
    for (MatrixState& s : ms) {
        s.codes = all.narrow(0, offset, s.groups * s.rows).view({s.groups, s.rows, shape.m}).clone();
        offset += s.groups * s.rows;
    }
    return true;
}

MatrixState stateOf(const WeightMatrix& m, const Shape& shape, bool useHessian, double damp)
{
    MatrixState s = additive::matrixState(m, shape.g, useHessian, damp);
    s.norm = (s.w.mm(s.h) * s.w).sum().item<double>();
    const std::vector<float> rs = vqcommon::rowScales(m);
    s.scale0 = at::from_blob(const_cast<float*>(rs.data()), {s.rows}, at::kFloat).clone();
    s.scale = s.scale0.clone();
    return s;
}

class AqlmMethod final : public MethodBase {
public:
    AqlmMethod() : MethodBase(methodInfo()) {}

    Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>& matrices, const ParamSet& params) const override
    {
        return groupsBySharing(matrices, params.getText("sharing"));
    }

    bool needsCalibration(const ParamSet& params) const override { return params.getText("objective") == "output"; }

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        const Shape s = shapeOf(params);
        perMatrix.clear();
        for (const MatrixRef& m : group) {
            BitCounts b;
            b.indexBits = codeCount(m, s) * static_cast<std::uint64_t>(s.bits);
            b.scaleBits = 16ull * static_cast<std::uint64_t>(m.rows);
            perMatrix.push_back(b);
        }
        BitCounts shared;
        shared.codebookBits = 16ull * static_cast<std::uint64_t>(s.m) * static_cast<std::uint64_t>(s.k) * static_cast<std::uint64_t>(s.g);
        return shared;
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& p) const override
    {
        auto layout = Layout::check(p);
        if (!layout)
            return layout.error();
        std::vector<std::vector<float>> out;
        for (std::size_t i = 0; i < p.matrices.size(); ++i) {
            const MatrixRef& ref = p.matrices[i].ref;
            std::vector<float> w(static_cast<std::size_t>(ref.weights()));
            layout->decodeRows(ref, i, 0, ref.rows, w.data());
            out.push_back(std::move(w));
        }
        return out;
    }

    Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload p) const override { return RowDecoder<Layout>::make(std::move(p)); }

protected:
    Status compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& p) override;
};

// Long: the whole compression of a group (init, rounds, payload) in one readable sequence.
Status AqlmMethod::compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& p)
{
    const Stopwatch clock;
    const Shape shape = shapeOf(params);
    const bool useHessian = params.getText("objective") == "output";
    std::vector<MatrixState> ms;
    for (const WeightMatrix& m : group.matrices) {
        if (useHessian && m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
            return methodError(m.ref.name + ": objective=output needs calibration data (give calibration text, or set "
                               "objective=weights)", ErrorKind::Usage);
        ms.push_back(stateOf(m, shape, useHessian, params.getFloat("damp")));
    }
    const int rounds = static_cast<int>(params.getInt("rounds"));
    TrainProgress progress;
    progress.groupId = group.id;
    progress.totalSteps = progress.epochs = rounds;
    const auto send = [&](int step, double loss) {
        progress.step = progress.epoch = step;
        progress.loss = progress.reconstruction = loss;
        progress.snrDb = loss > 0 ? -10 * std::log10(loss) : 0;
        progress.elapsedSeconds = clock.seconds();
        progress.etaSeconds = step > 0 ? progress.elapsedSeconds / step * (rounds - step) : 0;
        return report(context, progress);
    };
    at::Tensor codebooks;
    if (!residualKmeans(ms, shape, params, group.id, context.threads, codebooks, [&](int, double loss) { return send(0, loss); }))
        return Error::cancelled();
    const double initSeconds = clock.seconds();
    double searchSeconds = 0, updateSeconds = 0;
    json trace = json::array();
    double best = objective(ms, codebooks);
    trace.push_back(best);
    const std::int64_t beam = params.getInt("beam");
    for (int round = 0; round < rounds; ++round) {
        const Stopwatch phase;
        {
            at::NoGradGuard noGrad;
            for (MatrixState& s : ms)
                searchCodes(s, codebooks, beam);
        }
        searchSeconds += phase.seconds();
        const double searched = objective(ms, codebooks);
        std::vector<at::Tensor> scales;
        for (const MatrixState& s : ms)
            scales.push_back(s.scale);
        at::Tensor tuned = codebooks;
        const Stopwatch update;
        updateCodebooksAndScales(ms, tuned, static_cast<int>(params.getInt("steps")), params.getFloat("lr"));
        updateSeconds += update.seconds();
        const double after = objective(ms, tuned);
        if (after <= searched) {
            codebooks = tuned;
            best = after;
        } else { // Adam overshot (or fp16 rounding cost more than it gained): keep the searched state
            for (std::size_t i = 0; i < ms.size(); ++i)
                ms[i].scale = scales[i];
            best = searched;
        }
        trace.push_back(best);
        if (!send(round + 1, best))
            return Error::cancelled();
    }
    // The payload.
    json meta{{"layout", "column-groups"}, {"M", shape.m}, {"B", shape.bits}, {"g", shape.g}, {"objective", params.getText("objective")},
              {"objective_rounds", trace}};
    p.sections.push_back({"codebooks", fp16Bytes(codebooks)});
    p.sharedBits.codebookBits = 16ull * static_cast<std::uint64_t>(shape.m) * static_cast<std::uint64_t>(shape.k) * static_cast<std::uint64_t>(shape.g);
    std::vector<std::int32_t> all;
    for (std::size_t i = 0; i < ms.size(); ++i) {
        const MatrixState& s = ms[i];
        MatrixResult r;
        r.ref = group.matrices[i].ref;
        const at::Tensor codes = s.codes.to(at::kInt).contiguous();
        const std::int64_t count = codes.numel();
        p.sections.push_back(codeSection("codes/" + r.ref.name, codes.data_ptr<std::int32_t>(), count, shape.bits));
        p.sections.push_back({"row_scales/" + r.ref.name, fp16Bytes(s.scale)});
        r.bits.indexBits = static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(shape.bits);
        r.bits.scaleBits = 16ull * static_cast<std::uint64_t>(s.rows);
        p.matrices.push_back(r);
        all.insert(all.end(), codes.data_ptr<std::int32_t>(), codes.data_ptr<std::int32_t>() + count);
    }
    json usedPerBook = json::array(), entropyPerBook = json::array();
    for (int m = 0; m < shape.m; ++m) {
        std::vector<std::int32_t> book;
        for (std::size_t j = static_cast<std::size_t>(m); j < all.size(); j += static_cast<std::size_t>(shape.m))
            book.push_back(all[j]);
        const auto [u, e] = vqcommon::usage(book, shape.k);
        usedPerBook.push_back(u);
        entropyPerBook.push_back(e);
    }
    meta["used_codewords"] = usedPerBook;
    meta["code_entropy_bits"] = entropyPerBook;
    meta["seconds"] = {{"total", clock.seconds()}, {"init", initSeconds}, {"code_search", searchSeconds}, {"codebook_update", updateSeconds}};
    p.metaJson = meta.dump();
    return {};
}

} // namespace

} // namespace pocket::aqlm

POCKET_METHOD_PLUGIN(pocket::aqlm::AqlmMethod)
