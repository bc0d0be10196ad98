// PocketLLM (arXiv 2511.17637) as a method plugin: sub-vectors of the weights are encoded by a small
// meta-network into a latent space, quantised against a learnt codebook, and decoded back. The
// archive keeps the decoder, the codebook and the bit-packed indices; the encoder is thrown away.
// ../shared/docs/pocketllm-method.md is the specification; where the paper and the reference code
// differ both are offered, the reference code's choice being the default.
#include "pocketllm_net.h"

#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/vq_kernels.h"
#include "../vq/vq_common.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>
#include <map>
#include <numeric>

namespace pocket::pocketllm {

namespace {

using json = nlohmann::ordered_json;

std::vector<ParamSpec> schema()
{
    using P = ParamSpec;
    return {
        P::integer("d", 4, 1, 64, "sub-vector length (weights per code)"),
        P::integer("K", 32768, 2, 1 << 20, "codebook size (index bits = ceil(log2 K))", true),
        P::integer("hidden", 16, 1, 4096, "hidden width h of every MLP block"),
        P::integer("latent", 0, 0, 1024, "latent size (0 = d, as the reference code)"),
        P::integer("rln_group", 0, 0, 1 << 24,
                   "sub-vectors per RLN group G (0 = auto: in/d, one weight row, when all matrices share `in`)"),
        P::choice("encoder", "assign", {"assign", "trained"},
                  "assign: no encoder, each sub-vector takes the nearest decoded codeword (decoded once per RLN group); "
                  "trained: the reference code's straight-through encoder"),
        P::integer("epochs", 200, 0, 100000,
                   "training epochs per group (encoder=assign: full-batch steps; 0 = keep the initialisation)"),
        P::real("lr", "0.001", 1e-7, 10, "Adam learning rate (the reference code: 0.016 with encoder=trained)", true),
        P::choice("schedule", "cosine", {"step", "cosine", "constant"}, "learning-rate schedule (reference: step)"),
        P::integer("lr_step", 15, 1, 100000, "step schedule: epochs between decays"),
        P::real("lr_gamma", "0.1", 0, 1, "step schedule: decay factor"),
        P::integer("batch", 16384, 1, 1 << 24, "encoder=trained: sub-vectors per step (rounded down to a multiple of G)", true),
        P::choice("loss", "reference", {"reference", "paper"},
                  "encoder=trained: reference: MSE + lambda*codebook term; paper: RMSE + lambda*codebook term"),
        P::real("lambda", "0.4", 0, 1000, "encoder=trained: weight of the codebook term mean((C_k - sg(z))^2)"),
        P::real("beta", "0.25", 0, 1000,
                "encoder=trained: weight of the commitment term mean((z - sg(C_k))^2); 0 = the reference code (no commitment)"),
        P::choice("init", "vq", {"vq", "normal", "kmeans"},
                  "codebook init: vq (k-means in weight space exactly as the vq method, decoder = identity; needs "
                  "encoder=assign), normal (std 2/sqrt(latent), the reference code) or k-means on the initial latents"),
        P::integer("kmeans_iters", 25, 0, 1000, "k-means iterations for init=vq / init=kmeans"),
        P::integer("init_sample", 65536, 1, 1 << 30, "init=vq: sub-vectors sampled for k-means++ seeding", true),
        P::choice("update", "grad", {"grad", "ema"}, "encoder=trained: codebook update: grad (the loss) or ema (moving averages)"),
        P::real("ema_decay", "0.99", 0, 0.99999, "update=ema: decay"),
        P::boolean("shuffle", false, "encoder=trained: shuffle whole RLN groups every epoch (the reference code does not shuffle)"),
        P::choice("sharing", "matrix", {"matrix", "type", "model"},
                  "one meta-network per matrix (paper), per matrix type across blocks, or one for the whole model"),
        P::boolean("normalize", true,
                   "train on weights divided by their RMS over the group (one fp32 scale stored), so the loss terms "
                   "are balanced whatever the weights' magnitude"),
        P::boolean("row_scale", true, "divide each output row by its RMS first; fp16 scales stored (16 bits per row, counted)"),
        P::boolean("rln_affine", false, "RLN layers with affine weights (G*latent values each, stored); encoder=assign needs false"),
        P::boolean("final_norm", false, "the decoder's final RLN (the reference code has it; init=vq needs false)"),
        P::boolean("train_decoder", true, "encoder=assign: train the decoder with the codebook (false: codebook only, an ablation)"),
        P::integer("assign_every", 10, 1, 100000, "encoder=assign: full-batch steps between re-assignments of the codes"),
        P::boolean("reset_dead", true, "encoder=assign: move unused codewords onto the worst-served sub-vectors at each re-assignment"),
        P::choice("weighting", "none", {"none", "hessian_diag"},
                  "encoder=assign: weight the loss and k-means per input column by the calibration inputs' second "
                  "moments (Hessian diagonal; needs --calib-text)"),
        P::boolean("feedback", false,
                   "encoder=assign: final codes chosen GPTVQ-style, column block by column block over the decoded "
                   "codewords with each matrix's Hessian, errors pushed onto later columns (needs --calib-text)"),
        P::real("damp", "0.01", 0, 1, "feedback: dampening, as a fraction of the mean Hessian diagonal"),
        P::integer("finetune", 0, 0, 100000,
                   "encoder=assign: full-batch steps fine-tuning decoder and codebook on the layers' output error "
                   "tr(E H E^T) with the codes fixed (needs --calib-text)"),
        P::real("finetune_lr", "0.002", 1e-7, 10, "finetune: Adam learning rate (cosine decay)", true),
        P::boolean("finetune_scales", true, "finetune: train the per-row scales too (with row_scale)"),
        P::integer("seed", 1, 0, 2147483647, "random seed (combined with the group id)"),
    };
}

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "pocketllm";
        m.displayName = "PocketLLM (meta-network VQ)";
        m.version = 2; // 2: decoder format flags, output skip, row scales (version 1 payloads still decode)
        m.description = "Sub-vectors encoded by a small meta-network, vector-quantised in its latent space, decoded "
                        "by the stored decoder (Tian et al., AAAI 2026).";
        m.lossy = true;
        m.bitsFormula = "(rows*cols/d)*ceil(log2 K) + 16*rows (row_scale) per matrix; 16*K*latent + 16*decoder_params + 32 (scale) "
                        "per group, shared bits split over the group";
        m.params = schema();
        return m;
    }();
    return info;
}

double secondsSince(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Float values rounded through fp16, as the archive stores them.
at::Tensor roundFp16(const at::Tensor& t)
{
    return t.to(at::kHalf).to(at::kFloat);
}

// The values the archive will hold: codebook and decoder rounded to fp16, in place.
void roundNetworkToFp16(Network& net)
{
    net.codebook.copy_(roundFp16(net.codebook));
    for (const at::Tensor& t : net.decoderParameters())
        const_cast<at::Tensor&>(t).copy_(roundFp16(t));
}

std::vector<std::uint8_t> fp16Bytes(const at::Tensor& t)
{
    const at::Tensor h = t.contiguous().to(at::kHalf);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(h.numel()) * 2);
    std::memcpy(bytes.data(), h.data_ptr(), bytes.size());
    return bytes;
}

at::Tensor fromFp16Bytes(const std::vector<std::uint8_t>& bytes, std::size_t offsetElems, std::vector<std::int64_t> shape)
{
    std::int64_t n = 1;
    for (auto s : shape)
        n *= s;
    at::Tensor h = at::empty(shape, at::kHalf);
    std::memcpy(h.data_ptr(), bytes.data() + offsetElems * 2, static_cast<std::size_t>(n) * 2);
    return h.to(at::kFloat);
}

// The sub-vector matrix S of one weight matrix: column blocks of width d stacked ([(in/d)*out, d]).
at::Tensor subvectors(const WeightMatrix& m, int d)
{
    const std::int64_t rows = m.ref.rows, cols = m.ref.cols;
    const std::int64_t padded = (cols + d - 1) / d * d;
    at::Tensor w = at::from_blob(const_cast<float*>(m.values.data()), {rows, cols}, at::kFloat);
    if (padded != cols)
        w = at::constant_pad_nd(w, {0, padded - cols});
    // [rows, blocks, d] -> [blocks, rows, d]
    return w.view({rows, padded / d, d}).transpose(0, 1).contiguous().view({-1, d});
}

// Inverse of subvectors(): [(padded/d)*rows, d] -> [rows, cols].
at::Tensor weightsFromSubvectors(const at::Tensor& s, std::int64_t rows, std::int64_t cols, int d)
{
    const std::int64_t padded = (cols + d - 1) / d * d;
    at::Tensor w = s.view({padded / d, rows, d}).transpose(0, 1).contiguous().view({rows, padded});
    return padded == cols ? w : w.narrow(1, 0, cols).contiguous();
}

std::int64_t subvectorCount(const MatrixRef& ref, int d)
{
    return (ref.cols + d - 1) / d * ref.rows;
}

// The RLN group size G for a group of matrices (see the `rln_group` parameter), or an error.
Result<std::int64_t> rlnGroup(const std::vector<MatrixRef>& matrices, const ParamSet& params)
{
    const int d = static_cast<int>(params.getInt("d"));
    const std::int64_t requested = params.getInt("rln_group");
    if (requested > 0) {
        for (const MatrixRef& m : matrices)
            if (subvectorCount(m, d) % requested != 0)
                return Error{"parameter 'rln_group': " + std::to_string(requested) + " does not divide the " +
                             std::to_string(subvectorCount(m, d)) + " sub-vectors of " + m.name +
                             " (use a divisor, or 0 for automatic)"};
        return requested;
    }
    const std::int64_t rowBlocks = (matrices.front().cols + d - 1) / d;
    bool sameIn = true;
    for (const MatrixRef& m : matrices)
        sameIn = sameIn && (m.cols + d - 1) / d == rowBlocks;
    if (sameIn)
        return rowBlocks; // the reference code: one weight row's worth of values
    // Mixed shapes: the largest divisor of every matrix's sub-vector count, at most 4096 values.
    std::int64_t g = 0;
    for (const MatrixRef& m : matrices)
        g = std::gcd(g, subvectorCount(m, d));
    const std::int64_t cap = std::max<std::int64_t>(1, 4096 / d);
    std::int64_t best = 1;
    for (std::int64_t c = 1; c <= std::min(g, cap); ++c)
        if (g % c == 0)
            best = c;
    return best;
}

struct Layout {
    int d = 0;
    int latent = 0;
    int hidden = 0;
    std::int64_t codewords = 0;
    std::int64_t group = 0; // G
    int bits = 0;           // index bits
    DecoderFormat format;
    bool rowScale = false;
};

Result<Layout> layoutFor(const std::vector<MatrixRef>& matrices, const ParamSet& params)
{
    if (matrices.empty())
        return Error{"pocketllm: empty group"};
    Layout l;
    l.d = static_cast<int>(params.getInt("d"));
    l.latent = params.getInt("latent") > 0 ? static_cast<int>(params.getInt("latent")) : l.d;
    l.hidden = static_cast<int>(params.getInt("hidden"));
    l.codewords = params.getInt("K");
    l.bits = indexBits(l.codewords);
    auto g = rlnGroup(matrices, params);
    if (!g)
        return g.error();
    l.group = *g;
    const bool assign = params.getText("encoder") == "assign";
    const std::string init = params.getText("init");
    l.format.rlnAffine = params.getBool("rln_affine");
    l.format.finalNorm = params.getBool("final_norm");
    l.format.outSkip = init == "vq";
    l.rowScale = params.getBool("row_scale");
    if (init == "vq" && !assign)
        return Error{"pocketllm: init=vq needs encoder=assign (the trained encoder has no weight-space start)"};
    if (init == "kmeans" && assign)
        return Error{"pocketllm: init=kmeans (k-means on encoder latents) needs encoder=trained; use init=vq"};
    if (init == "vq" && l.latent != l.d)
        return Error{"pocketllm: init=vq needs latent = d (the decoder starts as the identity)"};
    if (init == "vq" && l.format.finalNorm)
        return Error{"pocketllm: init=vq needs final_norm=false (a final LayerNorm cannot start as the identity)"};
    if (assign && l.format.rlnAffine)
        return Error{"pocketllm: encoder=assign needs rln_affine=false (codewords are decoded once per RLN group)"};
    if (!assign && (params.getText("weighting") != "none" || params.getBool("feedback") || params.getInt("finetune") > 0))
        return Error{"pocketllm: weighting, feedback and finetune need encoder=assign"};
    return l;
}

std::int64_t decoderParameterCount(const Layout& l)
{
    std::int64_t n = 0;
    for (const auto& t : decoderTensorShapes(l.d, l.latent, l.hidden, l.group, l.format))
        n += t.second[0] * (t.second.size() > 1 ? t.second[1] : 1);
    return n;
}

class PocketLlmMethod final : public CompressionMethod {
public:
    const MethodInfo& info() const override { return methodInfo(); }

    Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>& matrices, const ParamSet& params) const override
    {
        return groupsBySharing(matrices, params.getText("sharing"));
    }

    bool needsCalibration(const ParamSet& params) const override
    {
        return params.getText("weighting") != "none" || params.getBool("feedback") || params.getInt("finetune") > 0;
    }

    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params,
                                   std::vector<BitCounts>& perMatrix) const override
    {
        auto layout = layoutFor(group, params);
        if (!layout)
            return layout.error();
        perMatrix.clear();
        for (const MatrixRef& m : group) {
            BitCounts b;
            b.indexBits = static_cast<std::uint64_t>(subvectorCount(m, layout->d)) * layout->bits;
            if (layout->rowScale)
                b.scaleBits = 16ull * static_cast<std::uint64_t>(m.rows);
            perMatrix.push_back(b);
        }
        BitCounts shared;
        shared.codebookBits = 16ull * layout->codewords * layout->latent;
        shared.decoderBits = 16ull * decoderParameterCount(*layout);
        shared.scaleBits = 32; // the group's fp32 scale
        return shared;
    }

    Result<GroupPayload> compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context) override
    {
        try {
            return compressImpl(group, params, context);
        } catch (const std::exception& e) {
            return Error{"pocketllm: compressing " + group.id + " failed: " + e.what()};
        }
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& payload) const override
    {
        try {
            return decodeImpl(payload);
        } catch (const std::exception& e) {
            return Error{"pocketllm: decoding group " + payload.groupId + " failed: " + e.what()};
        }
    }

private:
    Result<GroupPayload> compressImpl(const MatrixGroup& group, const ParamSet& params, const CompressContext& context);
    Result<GroupPayload> compressAssign(const MatrixGroup& group, const ParamSet& params, const CompressContext& context,
                                        const Layout& l);
    Result<GroupPayload> finishPayload(const MatrixGroup& group, const ParamSet& params, const Layout& l, const Network& net,
                                       float scale, const std::vector<std::vector<float>>& rowScales,
                                       const std::vector<at::Tensor>& indices, const json& extraMeta);
    Result<std::vector<std::vector<float>>> decodeImpl(const GroupPayload& payload) const;
};

// Nearest codeword of each latent row, by the bounded-memory kernel.
at::Tensor nearest(const at::Tensor& z, const at::Tensor& codebook)
{
    const at::Tensor zc = z.contiguous();
    const at::Tensor cc = codebook.contiguous();
    at::Tensor idx = at::empty({zc.size(0)}, at::kInt);
    nearestCodewords(zc.data_ptr<float>(), zc.size(0), cc.data_ptr<float>(), cc.size(0), static_cast<int>(zc.size(1)),
                     idx.data_ptr<std::int32_t>(), nullptr, at::get_num_threads());
    return idx.to(at::kLong);
}

// The encoder over many sub-vectors in fixed chunks of whole RLN groups: bounded memory, and the
// same chunks on every run, so results stay reproducible.
at::Tensor encodeChunked(const Network& net, const at::Tensor& data, std::int64_t group)
{
    const std::int64_t chunk = std::max<std::int64_t>(1, 65536 / group) * group;
    if (data.size(0) <= chunk)
        return net.encode(data);
    std::vector<at::Tensor> parts;
    for (std::int64_t b = 0; b < data.size(0); b += chunk)
        parts.push_back(net.encode(data.narrow(0, b, std::min(chunk, data.size(0) - b))));
    return at::cat(parts, 0);
}

// Lloyd's k-means on `points` starting from `codebook` (updated in place); empty clusters keep
// their codeword.
void kmeansLatent(const at::Tensor& points, at::Tensor& codebook, int iterations)
{
    for (int it = 0; it < iterations; ++it) {
        const at::Tensor idx = nearest(points, codebook);
        at::Tensor sums = at::zeros_like(codebook).index_add_(0, idx, points);
        at::Tensor counts = at::bincount(idx, {}, codebook.size(0)).to(at::kFloat);
        const at::Tensor used = counts > 0;
        codebook = at::where(used.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), codebook);
    }
}

Result<GroupPayload> PocketLlmMethod::compressImpl(const MatrixGroup& group, const ParamSet& params, const CompressContext& context)
{
    const auto start = std::chrono::steady_clock::now();
    std::vector<MatrixRef> refs;
    for (const WeightMatrix& m : group.matrices) {
        if (static_cast<std::int64_t>(m.values.size()) != m.ref.weights())
            return Error{"pocketllm: " + m.ref.name + ": expected " + std::to_string(m.ref.weights()) + " values"};
        refs.push_back(m.ref);
    }
    auto layoutResult = layoutFor(refs, params);
    if (!layoutResult)
        return layoutResult.error();
    const Layout l = *layoutResult;
    if (params.getText("encoder") == "assign")
        return compressAssign(group, params, context, l);

    // Seeded from the group id so a group's result does not depend on which other groups run.
    at::Generator gen = at::detail::createCPUGenerator(groupSeed(params.getInt("seed"), group.id));
    at::NoGradGuard outerNoGrad; // gradients only where enabled below

    std::vector<at::Tensor> parts;
    std::vector<std::int64_t> counts;
    std::vector<std::vector<float>> rowScales(group.matrices.size());
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const WeightMatrix& m = group.matrices[i];
        if (l.rowScale) {
            rowScales[i] = vqcommon::rowScales(m);
            WeightMatrix scaled = m;
            for (std::int64_t r = 0; r < m.ref.rows; ++r)
                for (std::int64_t c = 0; c < m.ref.cols; ++c)
                    scaled.values[r * m.ref.cols + c] /= rowScales[i][static_cast<std::size_t>(r)];
            parts.push_back(subvectors(scaled, l.d));
        } else {
            parts.push_back(subvectors(m, l.d));
        }
        counts.push_back(parts.back().size(0));
    }
    at::Tensor data = at::cat(parts, 0); // [N, d]
    parts.clear();
    // One scale for the group; the training sees unit-RMS weights (decoding multiplies back).
    float scale = 1.0f;
    if (params.getBool("normalize")) {
        const double rms = data.pow(2).mean().sqrt().item<double>();
        scale = rms > 0 ? static_cast<float>(rms) : 1.0f;
        data = data / scale;
    }
    const std::int64_t n = data.size(0);

    Network net = Network::create(l.d, l.latent, l.hidden, l.group, l.codewords, gen, l.format);
    if (params.getText("init") == "kmeans") {
        at::Tensor z = encodeChunked(net, data, l.group);
        // Starting points: K distinct latents chosen by the seeded generator (normal init keeps any excess).
        const std::int64_t take = std::min<std::int64_t>(l.codewords, n);
        const at::Tensor pick = at::randperm(n, gen, at::kLong).narrow(0, 0, take);
        at::Tensor cb = net.codebook.detach().clone();
        cb.narrow(0, 0, take).copy_(z.index_select(0, pick));
        kmeansLatent(z, cb, static_cast<int>(params.getInt("kmeans_iters")));
        net.codebook.copy_(cb);
    }

    const bool ema = params.getText("update") == "ema";
    const double emaDecay = params.getFloat("ema_decay");
    const bool paperLoss = params.getText("loss") == "paper";
    const double lambda = params.getFloat("lambda");
    const double beta = params.getFloat("beta");
    const int epochs = static_cast<int>(params.getInt("epochs"));
    const double lr0 = params.getFloat("lr");
    const std::string schedule = params.getText("schedule");
    const int lrStep = static_cast<int>(params.getInt("lr_step"));
    const double lrGamma = params.getFloat("lr_gamma");
    const bool shuffle = params.getBool("shuffle");
    std::int64_t batch = std::max<std::int64_t>(l.group, params.getInt("batch") / l.group * l.group);
    batch = std::min(batch, n);
    const std::int64_t stepsPerEpoch = (n + batch - 1) / batch;
    const int totalSteps = static_cast<int>(stepsPerEpoch * epochs);

    std::vector<at::Tensor> trainable = net.encoderAndDecoderParameters();
    if (!ema)
        trainable.push_back(net.codebook);
    for (at::Tensor& t : trainable)
        t.set_requires_grad(true);
    torch::optim::Adam optimizer(trainable, torch::optim::AdamOptions(lr0));

    at::Tensor emaCounts, emaSums;
    if (ema) {
        emaCounts = at::ones({l.codewords}, at::kFloat);
        emaSums = net.codebook.detach().clone();
    }

    TrainProgress progress;
    progress.groupId = group.id;
    progress.totalSteps = totalSteps;
    progress.epochs = epochs;
    std::vector<std::int64_t> epochHistogram(static_cast<std::size_t>(l.codewords), 0);
    int step = 0;
    for (int epoch = 0; epoch < epochs; ++epoch) {
        double lr = lr0;
        if (schedule == "step")
            lr = lr0 * std::pow(lrGamma, epoch / lrStep);
        else if (schedule == "cosine")
            lr = lr0 * 0.5 * (1 + std::cos(M_PI * epoch / epochs));
        for (auto& group : optimizer.param_groups())
            static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);

        // Shuffled in whole RLN groups, so training normalises the same groups decoding will.
        const at::Tensor order = shuffle ? (at::randperm(n / l.group, gen, at::kLong).unsqueeze(1) * l.group +
                                            at::arange(l.group, at::kLong).unsqueeze(0)).view({-1})
                                         : at::Tensor();
        std::fill(epochHistogram.begin(), epochHistogram.end(), 0);
        std::int64_t usedSoFar = 0;
        for (std::int64_t begin = 0; begin < n; begin += batch) {
            const std::int64_t size = std::min(batch, n - begin);
            const at::Tensor s = shuffle ? data.index_select(0, order.narrow(0, begin, size)) : data.narrow(0, begin, size);
            at::Tensor loss, rec, cbTerm, commit, mse;
            at::Tensor idx;
            {
                at::AutoGradMode gradMode(true);
                const at::Tensor z = net.encode(s);
                idx = nearest(z.detach(), net.codebook.detach());
                const at::Tensor q = net.codebook.index_select(0, idx);
                const at::Tensor qst = z + (q - z).detach(); // straight-through
                const at::Tensor sHat = net.decode(qst);
                mse = (sHat - s).pow(2).mean();
                rec = paperLoss ? mse.sqrt() : mse;
                cbTerm = (q - z.detach()).pow(2).mean();
                commit = (z - q.detach()).pow(2).mean();
                loss = rec + beta * commit;
                if (!ema)
                    loss = loss + lambda * cbTerm;
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                if (ema) {
                    const at::Tensor zd = z.detach();
                    const at::Tensor c = at::bincount(idx, {}, l.codewords).to(at::kFloat);
                    const at::Tensor sums = at::zeros_like(emaSums).index_add_(0, idx, zd);
                    emaCounts.mul_(emaDecay).add_(c, 1 - emaDecay);
                    emaSums.mul_(emaDecay).add_(sums, 1 - emaDecay);
                    // Laplace smoothing keeps rarely used codewords finite.
                    const double total = emaCounts.sum().item<double>();
                    const at::Tensor smoothed = (emaCounts + 1e-5) / (total + l.codewords * 1e-5) * total;
                    net.codebook.detach().copy_(emaSums / smoothed.unsqueeze(1));
                }
            }
            ++step;
            const at::Tensor hist = at::bincount(idx, {}, l.codewords);
            const auto* h = hist.data_ptr<std::int64_t>();
            for (std::int64_t k = 0; k < l.codewords; ++k) {
                if (h[k] > 0 && epochHistogram[static_cast<std::size_t>(k)] == 0)
                    ++usedSoFar;
                epochHistogram[static_cast<std::size_t>(k)] += h[k];
            }
            const double mseValue = mse.item<double>();
            const double signal = s.pow(2).mean().item<double>();
            progress.step = step;
            progress.epoch = epoch + 1;
            progress.loss = loss.item<double>();
            progress.reconstruction = rec.item<double>();
            progress.codebookTerm = cbTerm.item<double>();
            progress.commitmentTerm = commit.item<double>();
            progress.snrDb = mseValue > 0 ? 10 * std::log10(signal / mseValue) : 99;
            progress.codebookUsage = static_cast<double>(usedSoFar) / static_cast<double>(l.codewords);
            progress.lr = lr;
            progress.elapsedSeconds = secondsSince(start);
            progress.etaSeconds = progress.elapsedSeconds / step * (totalSteps - step);
            if (context.onProgress && !context.onProgress(progress))
                return Error{"cancelled"};
        }
        // Whole-epoch codebook statistics.
        double entropy = 0;
        int dead = 0;
        for (std::int64_t c : epochHistogram) {
            if (c == 0) {
                ++dead;
                continue;
            }
            const double p = static_cast<double>(c) / static_cast<double>(n);
            entropy -= p * std::log(p);
        }
        progress.deadCodewords = dead;
        progress.indexPerplexity = std::exp(entropy);
    }
    for (at::Tensor& t : trainable)
        t.set_requires_grad(false);

    // What the archive stores: fp16 decoder and codebook; indices found against the fp16 codebook.
    net.codebook.copy_(roundFp16(net.codebook));
    std::vector<at::Tensor> indices;
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const at::Tensor z = encodeChunked(net, data.narrow(0, offset, counts[i]), l.group);
        indices.push_back(nearest(z, net.codebook).to(at::kInt).contiguous());
        offset += counts[i];
    }
    return finishPayload(group, params, l, net, scale, rowScales, indices, json::object());
}

Result<GroupPayload> PocketLlmMethod::finishPayload(const MatrixGroup& group, const ParamSet& params, const Layout& l, const Network& net,
                                                   float scale, const std::vector<std::vector<float>>& rowScales,
                                                   const std::vector<at::Tensor>& indices, const json& extraMeta)
{
    const at::Tensor codebook16 = roundFp16(net.codebook);
    std::vector<std::uint8_t> decoderBytes;
    for (const at::Tensor& t : net.decoderParameters()) {
        const auto bytes = fp16Bytes(t);
        decoderBytes.insert(decoderBytes.end(), bytes.begin(), bytes.end());
    }

    GroupPayload payload;
    payload.groupId = group.id;
    payload.methodId = methodInfo().id;
    payload.methodVersion = methodInfo().version;
    payload.paramsJson = params.toJson(methodInfo().params);
    json meta;
    meta["layout"] = "column-blocks";
    meta["d"] = l.d;
    meta["latent"] = l.latent;
    meta["hidden"] = l.hidden;
    meta["K"] = l.codewords;
    meta["index_bits"] = l.bits;
    meta["rln_group"] = l.group;
    meta["rln_affine"] = l.format.rlnAffine;
    meta["final_norm"] = l.format.finalNorm;
    meta["out_skip"] = l.format.outSkip;
    meta["row_scale"] = l.rowScale;
    json decoderJson = json::array();
    for (const auto& [name, shape] : decoderTensorShapes(l.d, l.latent, l.hidden, l.group, l.format))
        decoderJson.push_back({{"name", name}, {"shape", shape}});
    meta["decoder_tensors"] = decoderJson;
    std::vector<std::int32_t> all;
    for (const at::Tensor& idx : indices)
        all.insert(all.end(), idx.data_ptr<std::int32_t>(), idx.data_ptr<std::int32_t>() + idx.numel());
    const auto [used, entropy] = vqcommon::usage(all, l.codewords);
    meta["used_codewords"] = used;
    meta["index_entropy_bits"] = entropy;
    for (auto it = extraMeta.begin(); it != extraMeta.end(); ++it)
        meta[it.key()] = it.value();
    payload.metaJson = meta.dump();
    payload.sections.push_back({"decoder", std::move(decoderBytes)});
    payload.sections.push_back({"codebook", fp16Bytes(codebook16)});
    std::vector<std::uint8_t> scaleBytes(sizeof scale);
    std::memcpy(scaleBytes.data(), &scale, sizeof scale);
    payload.sections.push_back({"scale", std::move(scaleBytes)});
    payload.sharedBits.scaleBits = 8 * sizeof scale;
    payload.sharedBits.codebookBits = 16ull * l.codewords * l.latent;
    payload.sharedBits.decoderBits = 16ull * decoderParameterCount(l);

    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        MatrixResult result;
        result.ref = group.matrices[i].ref;
        result.bits.indexBits = static_cast<std::uint64_t>(indices[i].numel()) * l.bits;
        payload.sections.push_back({"indices/" + result.ref.name, packBits(indices[i].data_ptr<std::int32_t>(), indices[i].numel(), l.bits)});
        if (l.rowScale) {
            payload.sections.push_back({"row_scales/" + result.ref.name, vqcommon::halfBytes(rowScales[i])});
            result.bits.scaleBits = 16ull * static_cast<std::uint64_t>(result.ref.rows);
        }
        payload.matrices.push_back(result);
    }

    // Errors measured on what decompression will produce, through the same decoder code.
    if (auto measured = measureByDecoding(*this, group, payload); !measured)
        return measured.error();
    return payload;
}

// ---- encoder=assign: no encoder; codes are the nearest decoded codewords -------------------------

// Per-RLN-group mean and 1/std of the decoder's normalisations under the current codes (no affine
// weights in this mode), so candidates can be decoded "in the context" of a group.
struct ContextStats {
    at::Tensor m3, r3, m4, r4, m5, r5; // [groups]
};

at::Tensor normaliseGroups(const at::Tensor& x, std::int64_t group, at::Tensor& mean, at::Tensor& rstd)
{
    const std::int64_t rows = x.size(0), width = x.size(1);
    const at::Tensor v = x.reshape({rows / group, group * width});
    mean = v.mean(1);
    rstd = (v.var(1, /*unbiased=*/false) + 1e-5).rsqrt();
    return ((v - mean.unsqueeze(1)) * rstd.unsqueeze(1)).reshape({rows, width});
}

ContextStats contextStats(const Decoder& dec, const at::Tensor& q, std::int64_t group)
{
    ContextStats st;
    const at::Tensor y1 = q + dec.d1(normaliseGroups(q, group, st.m3, st.r3));
    const at::Tensor y2 = y1 + dec.d2(normaliseGroups(y1, group, st.m4, st.r4));
    if (dec.format.finalNorm)
        normaliseGroups(y2, group, st.m5, st.r5);
    return st;
}

// Every codeword decoded in the context of groups [g0, g0 + count): [count, K, d].
at::Tensor decodeCandidates(const Decoder& dec, const at::Tensor& codebook, const ContextStats& st, std::int64_t g0, std::int64_t count)
{
    const auto col = [&](const at::Tensor& t) { return t.narrow(0, g0, count).view({count, 1, 1}); };
    const at::Tensor x = codebook.unsqueeze(0).expand({count, codebook.size(0), codebook.size(1)});
    const at::Tensor y1 = x + dec.d1((x - col(st.m3)) * col(st.r3));
    at::Tensor y2 = y1 + dec.d2((y1 - col(st.m4)) * col(st.r4));
    if (dec.format.finalNorm)
        y2 = (y2 - col(st.m5)) * col(st.r5);
    return dec.format.outSkip ? y2 + dec.d0(y2) : dec.d0(y2);
}

// Nearest decoded codeword (weighted distance) of every sub-vector, candidates decoded with the
// statistics of the codes `current`; `error` (optional) gets each sub-vector's weighted squared error.
at::Tensor assignNearestDecoded(const Decoder& dec, const at::Tensor& codebook, const at::Tensor& current, const at::Tensor& x,
                                const at::Tensor& w, std::int64_t group, at::Tensor* error = nullptr)
{
    const std::int64_t n = x.size(0), d = x.size(1), k = codebook.size(0), groups = n / group;
    const ContextStats st = contextStats(dec, codebook.index_select(0, current), group);
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 22) / (group * k));
    std::vector<at::Tensor> idxParts, errParts;
    for (std::int64_t g0 = 0; g0 < groups; g0 += chunk) {
        const std::int64_t nb = std::min(chunk, groups - g0);
        const at::Tensor cand = decodeCandidates(dec, codebook, st, g0, nb);      // [nb, K, d]
        const at::Tensor xs = x.narrow(0, g0 * group, nb * group).view({nb, group, d});
        const at::Tensor ws = w.narrow(0, g0 * group, nb * group).view({nb, group, d});
        const at::Tensor candT = cand.transpose(1, 2);                             // [nb, d, K]
        const at::Tensor dist = at::bmm(ws, candT.pow(2)) - 2 * at::bmm(ws * xs, candT); // [nb, G, K] (+ const)
        const auto [best, arg] = dist.min(2);
        idxParts.push_back(arg.reshape({-1}));
        if (error)
            errParts.push_back((best + (ws * xs.pow(2)).sum(2)).reshape({-1}));
    }
    if (error)
        *error = at::cat(errParts, 0);
    return at::cat(idxParts, 0);
}

// Weighted MSE of the real decode (RLN over the actual groups), full batch, gradients accumulated
// chunk by chunk (whole RLN groups); returns the loss value. Backward only when `backward`.
double reconstructionLoss(const Network& net, const at::Tensor& idx, const at::Tensor& x, const at::Tensor& w, double wSum,
                          std::int64_t group, bool backward)
{
    const std::int64_t n = x.size(0);
    const std::int64_t chunk = std::max<std::int64_t>(1, 65536 / group) * group;
    double total = 0;
    for (std::int64_t b = 0; b < n; b += chunk) {
        const std::int64_t size = std::min(chunk, n - b);
        at::AutoGradMode gradMode(backward);
        const at::Tensor q = net.codebook.index_select(0, idx.narrow(0, b, size));
        const at::Tensor sHat = net.decode(q);
        const at::Tensor loss = (w.narrow(0, b, size) * (sHat - x.narrow(0, b, size)).pow(2)).sum() / wSum;
        if (backward)
            loss.backward();
        total += loss.item<double>();
    }
    return total;
}

double scheduledLr(const ParamSet& params, double lr0, int step, int steps)
{
    const std::string schedule = params.getText("schedule");
    if (schedule == "step")
        return lr0 * std::pow(params.getFloat("lr_gamma"), step / static_cast<int>(params.getInt("lr_step")));
    if (schedule == "cosine")
        return lr0 * 0.5 * (1 + std::cos(M_PI * step / std::max(1, steps)));
    return lr0;
}

void setLr(torch::optim::Adam& optimizer, double lr)
{
    for (auto& g : optimizer.param_groups())
        static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
}

Result<GroupPayload> PocketLlmMethod::compressAssign(const MatrixGroup& group, const ParamSet& params, const CompressContext& context,
                                                     const Layout& l)
{
    const auto start = std::chrono::steady_clock::now();
    const int threads = at::get_num_threads();
    const bool weighted = params.getText("weighting") != "none";
    const bool feedback = params.getBool("feedback");
    const int finetune = static_cast<int>(params.getInt("finetune"));
    const int epochs = static_cast<int>(params.getInt("epochs"));
    const bool trainDecoder = params.getBool("train_decoder");
    for (const WeightMatrix& m : group.matrices)
        if ((weighted || feedback || finetune > 0) && m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
            return Error{"pocketllm: " + m.ref.name + ": weighting, feedback and finetune need calibration (pass --calib-text)"};

    // Sub-vectors of the row-scaled weights, then one group scale.
    std::vector<MatrixRef> refs;
    std::vector<std::vector<float>> rowScales(group.matrices.size()), rowFactors(group.matrices.size()), colWeights(group.matrices.size());
    std::vector<at::Tensor> parts;
    std::vector<std::int64_t> counts, offsets;
    std::int64_t n = 0;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const WeightMatrix& m = group.matrices[i];
        refs.push_back(m.ref);
        if (l.rowScale) {
            rowScales[i] = vqcommon::rowScales(m);
            WeightMatrix scaled = m;
            for (std::int64_t r = 0; r < m.ref.rows; ++r)
                for (std::int64_t c = 0; c < m.ref.cols; ++c)
                    scaled.values[r * m.ref.cols + c] /= rowScales[i][static_cast<std::size_t>(r)];
            parts.push_back(subvectors(scaled, l.d));
            rowFactors[i] = rowScales[i];
            for (float& f : rowFactors[i])
                f *= f;
        } else {
            parts.push_back(subvectors(m, l.d));
        }
        if (weighted)
            colWeights[i] = vqcommon::columnWeights(m);
        offsets.push_back(n);
        counts.push_back(parts.back().size(0));
        n += counts.back();
    }
    at::Tensor data = at::cat(parts, 0).contiguous(); // [N, d]
    parts.clear();
    float scale = 1.0f;
    if (params.getBool("normalize")) {
        const double rms = data.pow(2).mean().sqrt().item<double>();
        scale = rms > 0 ? static_cast<float>(rms) : 1.0f;
        data = (data / scale).contiguous();
    }
    vqcommon::Weighting weighting;
    if (l.rowScale || weighted)
        weighting = vqcommon::makeWeighting(refs, l.d, colWeights, rowFactors);
    at::Tensor w = at::ones({n, l.d}, at::kFloat);
    if (!weighting.empty()) {
        float* wp = w.data_ptr<float>();
        for (std::size_t p = 0; p + 1 < weighting.runStart.size(); ++p)
            for (std::int64_t i = weighting.runStart[p]; i < weighting.runStart[p + 1]; ++i)
                for (int j = 0; j < l.d; ++j)
                    wp[i * l.d + j] = weighting.pattern[p * l.d + j] * weighting.pointFactor[static_cast<std::size_t>(i)];
    }
    const double wSum = w.sum().item<double>();

    TrainProgress progress;
    progress.groupId = group.id;
    const int kmIters = params.getText("init") == "vq" ? static_cast<int>(params.getInt("kmeans_iters")) : 0;
    progress.totalSteps = kmIters + epochs + finetune;
    progress.epochs = progress.totalSteps;
    const auto report = [&](int step, double loss) {
        progress.step = progress.epoch = step;
        progress.loss = progress.reconstruction = loss;
        progress.codebookUsage = 1.0 - static_cast<double>(progress.deadCodewords) / static_cast<double>(l.codewords);
        progress.elapsedSeconds = secondsSince(start);
        progress.etaSeconds = step > 0 ? progress.elapsedSeconds / step * (progress.totalSteps - step) : 0;
        return !context.onProgress || context.onProgress(progress);
    };

    at::Generator gen = at::detail::createCPUGenerator(groupSeed(params.getInt("seed"), group.id));
    Network net = Network::create(l.d, l.latent, l.hidden, l.group, l.codewords, gen, l.format);
    at::Tensor idx;
    if (params.getText("init") == "vq") {
        // Exactly the vq method: same seed, same k-means, fp16 codebook, nearest codes; decoder = identity.
        std::vector<float> points(data.data_ptr<float>(), data.data_ptr<float>() + data.numel());
        std::mt19937_64 gen64(groupSeed(params.getInt("seed"), group.id));
        std::vector<float> codebook;
        const bool finished = vqcommon::kmeans(points, n, l.d, l.codewords, kmIters, "kmeans++", params.getInt("init_sample"), gen64,
                                               weighting, threads, codebook, [&](int it, const vqcommon::KmeansStats& st) {
                                                   progress.deadCodewords = st.dead;
                                                   return report(it + 1, st.loss);
                                               });
        if (!finished)
            return Error{"cancelled"};
        std::vector<std::uint8_t> half(codebook.size() * 2);
        convertFromFloat(codebook.data(), codebook.size(), DType::F16, half.data());
        convertToFloat(DType::F16, half.data(), codebook.size(), codebook.data());
        std::vector<std::int32_t> codes(static_cast<std::size_t>(n));
        if (weighting.empty())
            nearestCodewords(points.data(), n, codebook.data(), l.codewords, l.d, codes.data(), nullptr, threads);
        else
            vqcommon::nearestWeighted(points, n, codebook, l.codewords, l.d, weighting, codes.data(), nullptr, threads);
        idx = at::from_blob(codes.data(), {n}, at::kInt).to(at::kLong);
        net.codebook = at::from_blob(codebook.data(), {l.codewords, l.d}, at::kFloat).clone();
        for (Mlp* m : {&net.decoder.d0, &net.decoder.d1, &net.decoder.d2}) {
            m->w2.zero_();
            m->b2.zero_();
        }
    } else {
        idx = assignNearestDecoded(net.decoder, net.codebook, at::zeros({n}, at::kLong), data, w, l.group);
    }

    json extra;
    const auto resetDead = [&](const at::Tensor& err) {
        const at::Tensor counts = at::bincount(idx, {}, l.codewords);
        const at::Tensor dead = (counts == 0).nonzero().view({-1});
        const std::int64_t nd = std::min<std::int64_t>(dead.numel(), n);
        if (nd == 0)
            return 0;
        const at::Tensor worst = std::get<1>(err.topk(nd));
        net.codebook.detach().index_copy_(0, dead.narrow(0, 0, nd), data.index_select(0, worst));
        idx.index_copy_(0, worst, dead.narrow(0, 0, nd));
        return static_cast<int>(nd);
    };

    // Weight-space training: full batch, the codes re-assigned every `assign_every` steps.
    if (epochs > 0) {
        std::vector<at::Tensor> trainable{net.codebook};
        if (trainDecoder)
            for (const at::Tensor& t : net.decoderParameters())
                trainable.push_back(t);
        for (at::Tensor& t : trainable)
            t.set_requires_grad(true);
        torch::optim::Adam optimizer(trainable, torch::optim::AdamOptions(params.getFloat("lr")));
        const int every = static_cast<int>(params.getInt("assign_every"));
        for (int step = 0; step < epochs; ++step) {
            if (step > 0 && step % every == 0) {
                at::Tensor err;
                idx = assignNearestDecoded(net.decoder, net.codebook.detach(), idx, data, w, l.group, &err);
                if (params.getBool("reset_dead"))
                    progress.deadCodewords = resetDead(err);
            }
            progress.lr = scheduledLr(params, params.getFloat("lr"), step, epochs);
            setLr(optimizer, progress.lr);
            optimizer.zero_grad();
            const double loss = reconstructionLoss(net, idx, data, w, wSum, l.group, true);
            if (step == 0)
                extra["train_loss_start"] = loss;
            optimizer.step();
            if (!report(kmIters + step + 1, loss))
                return Error{"cancelled"};
        }
        for (at::Tensor& t : trainable)
            t.set_requires_grad(false);
    }
    // The archive's fp16 values; then the final codes against them.
    roundNetworkToFp16(net);
    if (epochs > 0)
        idx = assignNearestDecoded(net.decoder, net.codebook, idx, data, w, l.group);
    extra["train_loss_end"] = reconstructionLoss(net, idx, data, w, wSum, l.group, false);

    if (feedback) {
        const ContextStats st = contextStats(net.decoder, net.codebook.index_select(0, idx), l.group);
        at::Tensor newIdx = idx.clone();
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            const std::int64_t rows = group.matrices[i].ref.rows;
            const vqcommon::BlockBooks books = [&](std::int64_t block, std::vector<float>& b, std::vector<std::int32_t>& bookOfRow) {
                const std::int64_t first = offsets[i] + block * rows;
                const std::int64_t g0 = first / l.group, g1 = (first + rows - 1) / l.group;
                const at::Tensor cand = (decodeCandidates(net.decoder, net.codebook, st, g0, g1 - g0 + 1) * scale).contiguous();
                b.assign(cand.data_ptr<float>(), cand.data_ptr<float>() + cand.numel());
                bookOfRow.resize(static_cast<std::size_t>(rows));
                for (std::int64_t r = 0; r < rows; ++r)
                    bookOfRow[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((first + r) / l.group - g0);
            };
            std::vector<std::int32_t> codes(static_cast<std::size_t>(counts[i]));
            auto fed = vqcommon::assignWithFeedback(group.matrices[i], l.codewords, l.d, params.getFloat("damp"), rowScales[i], books,
                                                    codes.data(), threads, "pocketllm");
            if (!fed)
                return fed.error();
            newIdx.narrow(0, offsets[i], counts[i]).copy_(at::from_blob(codes.data(), {counts[i]}, at::kInt).to(at::kLong));
        }
        idx = newIdx;
    }

    // Fine-tune decoder and codebook on the layers' output error tr(E H E^T) (H normalised to a
    // mean diagonal of 1 per matrix), codes fixed.
    if (finetune > 0) {
        std::vector<at::Tensor> hessians, targets, scalesT;
        double weightsTotal = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            const WeightMatrix& m = group.matrices[i];
            at::Tensor h = at::from_blob(const_cast<float*>(m.hessian.data()), {m.ref.cols, m.ref.cols}, at::kFloat).clone();
            const double meanDiag = h.diagonal().mean().item<double>();
            hessians.push_back(meanDiag > 0 ? h / meanDiag : h);
            targets.push_back(at::from_blob(const_cast<float*>(m.values.data()), {m.ref.rows, m.ref.cols}, at::kFloat));
            scalesT.push_back(l.rowScale ? at::from_blob(rowScales[i].data(), {m.ref.rows, 1}, at::kFloat).clone()
                                         : at::ones({m.ref.rows, 1}, at::kFloat));
            weightsTotal += static_cast<double>(m.ref.weights());
        }
        std::vector<at::Tensor> trainable{net.codebook};
        if (trainDecoder)
            for (const at::Tensor& t : net.decoderParameters())
                trainable.push_back(t);
        for (at::Tensor& t : trainable)
            t.set_requires_grad(true);
        // Row scales tuned as multipliers of their start (so one learning rate suits any magnitude).
        const bool tuneScales = l.rowScale && params.getBool("finetune_scales");
        std::vector<at::Tensor> multipliers;
        for (const at::Tensor& t : scalesT)
            multipliers.push_back(at::ones_like(t));
        if (tuneScales)
            for (const at::Tensor& t : multipliers)
                trainable.push_back(t);
        for (at::Tensor& t : trainable)
            t.set_requires_grad(true);
        torch::optim::Adam optimizer(trainable, torch::optim::AdamOptions(params.getFloat("finetune_lr")));
        for (int step = 0; step < finetune; ++step) {
            progress.lr = params.getFloat("finetune_lr") * 0.5 * (1 + std::cos(M_PI * step / finetune));
            setLr(optimizer, progress.lr);
            optimizer.zero_grad();
            double total = 0;
            for (std::size_t i = 0; i < group.matrices.size(); ++i) {
                at::AutoGradMode gradMode(true);
                const MatrixRef& ref = group.matrices[i].ref;
                const at::Tensor s = net.decode(net.codebook.index_select(0, idx.narrow(0, offsets[i], counts[i]))) * scale;
                const at::Tensor wHat = weightsFromSubvectors(s, ref.rows, ref.cols, l.d) * (scalesT[i] * multipliers[i]);
                const at::Tensor e = targets[i] - wHat;
                const at::Tensor loss = (e.mm(hessians[i]) * e).sum() / weightsTotal;
                loss.backward();
                total += loss.item<double>();
            }
            if (step == 0)
                extra["finetune_loss_start"] = total;
            optimizer.step();
            if (!report(kmIters + epochs + step + 1, total))
                return Error{"cancelled"};
        }
        for (at::Tensor& t : trainable)
            t.set_requires_grad(false);
        roundNetworkToFp16(net);
        if (tuneScales)
            for (std::size_t i = 0; i < group.matrices.size(); ++i) {
                const at::Tensor r = roundFp16((scalesT[i] * multipliers[i].detach()).abs().clamp_min(1e-6)).contiguous();
                rowScales[i].assign(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
            }
    }

    std::vector<at::Tensor> indices;
    for (std::size_t i = 0; i < group.matrices.size(); ++i)
        indices.push_back(idx.narrow(0, offsets[i], counts[i]).to(at::kInt).contiguous());
    return finishPayload(group, params, l, net, scale, rowScales, indices, extra);
}

Result<std::vector<std::vector<float>>> PocketLlmMethod::decodeImpl(const GroupPayload& payload) const
{
    at::NoGradGuard noGrad;
    json meta = json::parse(payload.metaJson, nullptr, false);
    if (meta.is_discarded() || !meta.is_object())
        return Error{"pocketllm: group " + payload.groupId + ": metadata is not a JSON object"};
    Layout l;
    try {
        l.d = meta.at("d").get<int>();
        l.latent = meta.at("latent").get<int>();
        l.hidden = meta.at("hidden").get<int>();
        l.codewords = meta.at("K").get<std::int64_t>();
        l.bits = meta.at("index_bits").get<int>();
        l.group = meta.at("rln_group").get<std::int64_t>();
        // Version 1 payloads have none of these flags: affine RLNs, a final RLN, no skip, no row scales.
        if (payload.methodVersion >= 2) {
            l.format.rlnAffine = meta.at("rln_affine").get<bool>();
            l.format.finalNorm = meta.at("final_norm").get<bool>();
            l.format.outSkip = meta.at("out_skip").get<bool>();
            l.rowScale = meta.at("row_scale").get<bool>();
        } else if (meta.contains("out_skip") || meta.contains("row_scale")) {
            return Error{"pocketllm: group " + payload.groupId + ": version 1 payload with version 2 metadata"};
        }
    } catch (const std::exception& e) {
        return Error{"pocketllm: group " + payload.groupId + ": bad metadata: " + e.what()};
    }
    if (payload.methodVersion < 1 || payload.methodVersion > methodInfo().version)
        return Error{"pocketllm: group " + payload.groupId + ": payload version " + std::to_string(payload.methodVersion) +
                     " is not one this plugin reads (1 to " + std::to_string(methodInfo().version) + ")"};
    if (l.format.outSkip && l.latent != l.d)
        return Error{"pocketllm: group " + payload.groupId + ": the output skip needs latent = d"};
    if (l.d < 1 || l.d > 64 || l.latent < 1 || l.latent > 1024 || l.hidden < 1 || l.hidden > 4096 || l.codewords < 2 ||
        l.codewords > (1 << 20) || l.bits != indexBits(l.codewords) || l.group < 1 || l.group > (1 << 24))
        return Error{"pocketllm: group " + payload.groupId + ": metadata out of range"};

    const auto shapes = decoderTensorShapes(l.d, l.latent, l.hidden, l.group, l.format);
    const PayloadSection* decoderSection = payload.section("decoder");
    const PayloadSection* codebookSection = payload.section("codebook");
    const std::size_t decoderElems = static_cast<std::size_t>(decoderParameterCount(l));
    if (!decoderSection || decoderSection->bytes.size() != decoderElems * 2)
        return Error{"pocketllm: group " + payload.groupId + ": decoder section missing or of the wrong size"};
    if (!codebookSection || codebookSection->bytes.size() != static_cast<std::size_t>(l.codewords * l.latent) * 2)
        return Error{"pocketllm: group " + payload.groupId + ": codebook section missing or of the wrong size"};

    std::vector<at::Tensor> decoderTensors;
    std::size_t offset = 0;
    for (const auto& [name, shape] : shapes) {
        decoderTensors.push_back(fromFp16Bytes(decoderSection->bytes, offset, shape));
        offset += static_cast<std::size_t>(decoderTensors.back().numel());
    }
    const Decoder decoder = Decoder::fromTensors(decoderTensors, l.group, l.format);
    const at::Tensor codebook = fromFp16Bytes(codebookSection->bytes, 0, {l.codewords, l.latent});
    const PayloadSection* scaleSection = payload.section("scale");
    float scale = 0;
    if (!scaleSection || scaleSection->bytes.size() != sizeof scale)
        return Error{"pocketllm: group " + payload.groupId + ": scale section missing or of the wrong size"};
    std::memcpy(&scale, scaleSection->bytes.data(), sizeof scale);
    if (!std::isfinite(scale) || scale <= 0)
        return Error{"pocketllm: group " + payload.groupId + ": scale is not a positive number"};

    std::vector<std::vector<float>> out;
    for (const MatrixResult& m : payload.matrices) {
        const PayloadSection* section = payload.section("indices/" + m.ref.name);
        const std::int64_t count = subvectorCount(m.ref, l.d);
        if (m.ref.rows < 1 || m.ref.cols < 1 || count % l.group != 0)
            return Error{"pocketllm: " + m.ref.name + ": shape does not fit the RLN group"};
        at::Tensor idx = at::empty({count}, at::kInt);
        if (!section || !unpackBits(section->bytes.data(), section->bytes.size(), count, l.bits, idx.data_ptr<std::int32_t>()))
            return Error{"pocketllm: " + m.ref.name + ": index section missing or too short"};
        if (idx.max().item<std::int32_t>() >= l.codewords)
            return Error{"pocketllm: " + m.ref.name + ": index out of the codebook's range"};
        // Fixed chunks (a multiple of G) keep the result independent of the thread count.
        const std::int64_t chunk = std::max<std::int64_t>(1, 65536 / l.group) * l.group;
        std::vector<at::Tensor> pieces;
        for (std::int64_t b = 0; b < count; b += chunk) {
            const std::int64_t size = std::min(chunk, count - b);
            pieces.push_back(decoder.decode(codebook.index_select(0, idx.narrow(0, b, size).to(at::kLong))));
        }
        const at::Tensor s = at::cat(pieces, 0) * scale;
        at::Tensor w = weightsFromSubvectors(s, m.ref.rows, m.ref.cols, l.d);
        if (l.rowScale) {
            const PayloadSection* scales = payload.section("row_scales/" + m.ref.name);
            if (!scales || scales->bytes.size() != static_cast<std::size_t>(m.ref.rows) * 2)
                return Error{"pocketllm: " + m.ref.name + ": row scale section missing or of the wrong size"};
            w = w * fromFp16Bytes(scales->bytes, 0, {m.ref.rows, 1});
        }
        w = roundFp16(w).contiguous();
        out.emplace_back(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
    }
    return out;
}

} // namespace

} // namespace pocket::pocketllm

POCKET_METHOD_PLUGIN(pocket::pocketllm::PocketLlmMethod)
