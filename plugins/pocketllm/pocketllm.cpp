// PocketLLM (arXiv 2511.17637) as a method plugin: sub-vectors of the weights are encoded by a small
// meta-network into a latent space, quantised against a learnt codebook, and decoded back. The
// archive keeps the decoder, the codebook and the bit-packed indices; the encoder is thrown away.
// ../shared/docs/pocketllm-method.md is the specification; where the paper and the reference code
// differ both are offered, the reference code's choice being the default.
#include "fused_decoder.h"
#include "pocketllm_net.h"

#include "pocket/io/dtype.h"
#include "pocket/support/phases.h"
#include "pocket/methods/method_base.h"
#include "pocket/methods/feedback.h"
#include "pocket/methods/kmeans.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/timing.h"

#include "pocket/methods/additive_search.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
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
                  "moments (Hessian diagonal; needs calibration text)"),
        P::boolean("feedback", false,
                   "encoder=assign: final codes chosen GPTVQ-style, column block by column block over the decoded "
                   "codewords with each matrix's Hessian, errors pushed onto later columns (needs calibration text)"),
        P::real("damp", "0.01", 0, 1, "feedback: dampening, as a fraction of the mean Hessian diagonal"),
        P::integer("finetune", 0, 0, 100000,
                   "encoder=assign: full-batch steps fine-tuning decoder and codebook on the layers' output error "
                   "tr(E H E^T) with the codes fixed (needs calibration text)"),
        P::real("finetune_lr", "0.002", 1e-7, 10, "finetune: Adam learning rate (cosine decay)", true),
        P::boolean("finetune_scales", true, "finetune: train the per-row scales too (with row_scale)"),
        P::integer("codebooks", 1, 1, 8,
                   "additive codebooks M: each latent is the sum of one codeword from each of M codebooks of K entries, "
                   "codes found by beam search over the decoded candidates (M>1 needs encoder=assign, init=vq, feedback=false)"),
        P::integer("beam", 8, 1, 4096, "codebooks > 1: beam width of the code search", true),
        P::integer("rounds", 1, 1, 1000,
                   "codebooks > 1 with feedback: rounds of code search followed by `finetune` steps on codebooks and row "
                   "scales (the decoder joins in the last round's fine-tune), as AQLM alternates"),
        P::integer("sweeps", 2, 1, 1000,
                   "codebooks > 1 with feedback: sweeps of AQLM's output-error code search (each column group's codes "
                   "chosen for tr(E H E^T) with the others fixed)"),
        P::integer("seed", 1, 0, 2147483647, "random seed (combined with the group id)"),
    };
}

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "pocketllm";
        m.displayName = "PocketLLM (meta-network VQ)";
        m.version = 3; // 2: decoder format flags, output skip, row scales; 3: additive codebooks (older payloads still decode)
        m.description = "Sub-vectors encoded by a small meta-network, vector-quantised in its latent space, decoded "
                        "by the stored decoder (Tian et al., AAAI 2026).";
        m.lossy = true;
        m.bitsFormula = "(rows*cols/d)*M*ceil(log2 K) + 16*rows (row_scale) per matrix; 16*M*K*latent + 16*decoder_params + 32 "
                        "(scale) per group, shared bits split over the group (M = codebooks)";
        m.params = schema();
        return m;
    }();
    return info;
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

using vqcommon::subvectorCount;

// The RLN group size G for a group of matrices (see the `rln_group` parameter), or an error.
Result<std::int64_t> rlnGroup(const std::vector<MatrixRef>& matrices, const ParamSet& params)
{
    const int d = static_cast<int>(params.getInt("d"));
    const std::int64_t requested = params.getInt("rln_group");
    if (requested > 0) {
        for (const MatrixRef& m : matrices)
            if (subvectorCount(m, d) % requested != 0)
                return Error::usage("parameter 'rln_group': " + std::to_string(requested) + " does not divide the " +
                             std::to_string(subvectorCount(m, d)) + " sub-vectors of " + m.name +
                             " (use a divisor, or 0 for automatic)", "settings");
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
    int books = 1;          // M additive codebooks of `codewords` entries each
    DecoderFormat format;
    bool rowScale = false;
};

Result<Layout> layoutFor(const std::vector<MatrixRef>& matrices, const ParamSet& params)
{
    if (matrices.empty())
        return Error::usage("pocketllm: empty group", "settings");
    Layout l;
    l.d = static_cast<int>(params.getInt("d"));
    l.latent = params.getInt("latent") > 0 ? static_cast<int>(params.getInt("latent")) : l.d;
    l.hidden = static_cast<int>(params.getInt("hidden"));
    l.codewords = params.getInt("K");
    l.bits = indexBits(l.codewords);
    l.books = static_cast<int>(params.getInt("codebooks"));
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
        return Error::usage("pocketllm: init=vq needs encoder=assign (the trained encoder has no weight-space start)", "settings");
    if (init == "kmeans" && assign)
        return Error::usage("pocketllm: init=kmeans (k-means on encoder latents) needs encoder=trained; use init=vq", "settings");
    if (init == "vq" && l.latent != l.d)
        return Error::usage("pocketllm: init=vq needs latent = d (the decoder starts as the identity)", "settings");
    if (init == "vq" && l.format.finalNorm)
        return Error::usage("pocketllm: init=vq needs final_norm=false (a final LayerNorm cannot start as the identity)", "settings");
    if (assign && l.format.rlnAffine)
        return Error::usage("pocketllm: encoder=assign needs rln_affine=false (codewords are decoded once per RLN group)", "settings");
    if (!assign && (params.getText("weighting") != "none" || params.getBool("feedback") || params.getInt("finetune") > 0))
        return Error::usage("pocketllm: weighting, feedback and finetune need encoder=assign", "settings");
    if (l.books > 1 && (!assign || init != "vq" || (params.getBool("feedback") && params.getInt("epochs") > 0)))
        return Error::usage("pocketllm: codebooks > 1 needs encoder=assign and init=vq, and with feedback=true epochs=0 (the "
                            "output-error search assumes the identity decoder the codebooks start with)", "settings");
    return l;
}

std::int64_t decoderParameterCount(const Layout& l)
{
    std::int64_t n = 0;
    for (const auto& t : decoderTensorShapes(l.d, l.latent, l.hidden, l.group, l.format))
        n += t.second[0] * (t.second.size() > 1 ? t.second[1] : 1);
    return n;
}


class PocketLlmMethod final : public MethodBase {
public:
    PocketLlmMethod() : MethodBase(methodInfo()) {}

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
            b.indexBits = static_cast<std::uint64_t>(subvectorCount(m, layout->d)) * layout->bits * layout->books;
            if (layout->rowScale)
                b.scaleBits = 16ull * static_cast<std::uint64_t>(m.rows);
            perMatrix.push_back(b);
        }
        BitCounts shared;
        shared.codebookBits = 16ull * layout->codewords * layout->latent * layout->books;
        shared.decoderBits = 16ull * decoderParameterCount(*layout);
        shared.scaleBits = 32; // the group's fp32 scale
        return shared;
    }

    Result<std::vector<std::vector<float>>> decode(const GroupPayload& payload) const override
    {
        try {
            return decodeImpl(payload);
        } catch (const std::exception& e) {
            return Error{"pocketllm: decoding group " + payload.groupId + " failed: " + e.what()};
        }
    }

protected:
    Status compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& payload) override
    {
        std::vector<MatrixRef> refs;
        for (const WeightMatrix& m : group.matrices)
            refs.push_back(m.ref);
        auto layout = layoutFor(refs, params);
        if (!layout)
            return layout.error();
        if (params.getText("encoder") == "assign")
            return compressAssign(group, params, context, *layout, payload);
        return compressTrained(group, params, context, *layout, payload);
    }

private:
    // encoder=trained: the reference code's VQ-VAE (encoder, decoder and codebook trained together).
    Status compressTrained(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, const Layout& l,
                           GroupPayload& payload) const;
    // encoder=assign: no encoder; codes are the nearest decoded codewords, trained in weight space.
    Status compressAssign(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, const Layout& l,
                          GroupPayload& payload) const;
    Result<std::vector<std::vector<float>>> decodeImpl(const GroupPayload& payload) const;

public:
    Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload payload) const override;
};

// ---- shared by both encoders -------------------------------------------------------------------

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

// The group's sub-vectors, stacked matrix after matrix: each row divided by its fp16 RMS
// (row_scale), then the whole group by one RMS (normalize), so that training sees unit-RMS
// weights whatever their magnitude (decoding multiplies back).
struct GroupData {
    at::Tensor x;                              // [N, d]
    std::vector<std::int64_t> counts, offsets; // per matrix
    std::vector<std::vector<float>> rowScales; // per matrix, with row_scale
    float scale = 1.0f;
};

GroupData stackGroup(const MatrixGroup& group, const Layout& l, bool normalize)
{
    GroupData g;
    std::vector<at::Tensor> parts;
    g.rowScales.resize(group.matrices.size());
    std::int64_t n = 0;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const WeightMatrix& m = group.matrices[i];
        if (l.rowScale) {
            g.rowScales[i] = vqcommon::rowScales(m);
            WeightMatrix scaled = m;
            for (std::int64_t r = 0; r < m.ref.rows; ++r)
                for (std::int64_t c = 0; c < m.ref.cols; ++c)
                    scaled.values[r * m.ref.cols + c] /= g.rowScales[i][static_cast<std::size_t>(r)];
            parts.push_back(subvectors(scaled, l.d));
        } else {
            parts.push_back(subvectors(m, l.d));
        }
        g.offsets.push_back(n);
        g.counts.push_back(parts.back().size(0));
        n += g.counts.back();
    }
    g.x = at::cat(parts, 0).contiguous(); // [N, d]
    parts.clear();
    if (normalize) {
        const double rms = g.x.pow(2).mean().sqrt().item<double>();
        g.scale = rms > 0 ? static_cast<float>(rms) : 1.0f;
        g.x = (g.x / g.scale).contiguous();
    }
    return g;
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

// ---- encoder=trained: the reference code's straight-through VQ-VAE ------------------------------

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

// init=kmeans: K distinct initial latents chosen by the seeded generator (normal init keeps any
// excess), refined by k-means on the latents.
void initLatentCodebook(Network& net, const at::Tensor& data, const Layout& l, int iterations, at::Generator& gen)
{
    const std::int64_t n = data.size(0);
    at::Tensor z = encodeChunked(net, data, l.group);
    const std::int64_t take = std::min<std::int64_t>(l.codewords, n);
    const at::Tensor pick = at::randperm(n, gen, at::kLong).narrow(0, 0, take);
    at::Tensor cb = net.codebook.detach().clone();
    cb.narrow(0, 0, take).copy_(z.index_select(0, pick));
    kmeansLatent(z, cb, iterations);
    net.codebook.copy_(cb);
}

// The loss settings of the trained encoder, and the codebook's moving averages (update=ema).
struct EncoderTraining {
    bool ema = false;
    double emaDecay = 0.99;
    bool paperLoss = false;
    double lambda = 0.4;
    double beta = 0.25;
    at::Tensor emaCounts, emaSums;
};

// The terms of one optimiser step, for the live metrics.
struct StepTerms {
    at::Tensor loss, rec, cbTerm, commit, mse, idx;
};

// One straight-through step on the batch `s`: encode, quantise, decode, loss, Adam step, and with
// update=ema the codebook's moving-average update.
StepTerms encoderStep(Network& net, const at::Tensor& s, torch::optim::Adam& optimizer, EncoderTraining& t, std::int64_t codewords)
{
    StepTerms r;
    at::AutoGradMode gradMode(true);
    const at::Tensor z = net.encode(s);
    r.idx = nearest(z.detach(), net.codebook.detach());
    const at::Tensor q = net.codebook.index_select(0, r.idx);
    const at::Tensor qst = z + (q - z).detach(); // straight-through
    const at::Tensor sHat = net.decode(qst);
    r.mse = (sHat - s).pow(2).mean();
    r.rec = t.paperLoss ? r.mse.sqrt() : r.mse;
    r.cbTerm = (q - z.detach()).pow(2).mean();
    r.commit = (z - q.detach()).pow(2).mean();
    r.loss = r.rec + t.beta * r.commit;
    if (!t.ema)
        r.loss = r.loss + t.lambda * r.cbTerm;
    optimizer.zero_grad();
    r.loss.backward();
    optimizer.step();
    if (t.ema) {
        const at::Tensor zd = z.detach();
        const at::Tensor c = at::bincount(r.idx, {}, codewords).to(at::kFloat);
        const at::Tensor sums = at::zeros_like(t.emaSums).index_add_(0, r.idx, zd);
        t.emaCounts.mul_(t.emaDecay).add_(c, 1 - t.emaDecay);
        t.emaSums.mul_(t.emaDecay).add_(sums, 1 - t.emaDecay);
        // Laplace smoothing keeps rarely used codewords finite.
        const double total = t.emaCounts.sum().item<double>();
        const at::Tensor smoothed = (t.emaCounts + 1e-5) / (total + codewords * 1e-5) * total;
        net.codebook.detach().copy_(t.emaSums / smoothed.unsqueeze(1));
    }
    return r;
}

// Codebook statistics over one epoch: codewords used so far, and at the end the dead codewords and
// the index perplexity.
class EpochUsage {
public:
    explicit EpochUsage(std::int64_t codewords) : m_histogram(static_cast<std::size_t>(codewords), 0) {}
    void reset()
    {
        std::fill(m_histogram.begin(), m_histogram.end(), 0);
        m_used = 0;
    }
    void add(const at::Tensor& idx)
    {
        const at::Tensor hist = at::bincount(idx, {}, static_cast<std::int64_t>(m_histogram.size()));
        const auto* h = hist.data_ptr<std::int64_t>();
        for (std::size_t k = 0; k < m_histogram.size(); ++k) {
            if (h[k] > 0 && m_histogram[k] == 0)
                ++m_used;
            m_histogram[k] += h[k];
        }
    }
    double usedFraction() const { return static_cast<double>(m_used) / static_cast<double>(m_histogram.size()); }
    void finishEpoch(std::int64_t n, TrainProgress& progress) const
    {
        double entropy = 0;
        int dead = 0;
        for (std::int64_t c : m_histogram) {
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

private:
    std::vector<std::int64_t> m_histogram;
    std::int64_t m_used = 0;
};

// Trains encoder, decoder and codebook epoch by epoch over batches of whole RLN groups (shuffled
// in whole groups when asked, so training normalises the same groups decoding will). False when
// cancelled.
bool trainEncoder(Network& net, const at::Tensor& data, const Layout& l, const ParamSet& params, at::Generator& gen,
                  const std::string& groupId, const CompressContext& context, const Stopwatch& clock)
{
    const ScopedPhase phase("training");
    EncoderTraining t;
    t.ema = params.getText("update") == "ema";
    t.emaDecay = params.getFloat("ema_decay");
    t.paperLoss = params.getText("loss") == "paper";
    t.lambda = params.getFloat("lambda");
    t.beta = params.getFloat("beta");
    const std::int64_t n = data.size(0);
    const int epochs = static_cast<int>(params.getInt("epochs"));
    const double lr0 = params.getFloat("lr");
    const bool shuffle = params.getBool("shuffle");
    std::int64_t batch = std::max<std::int64_t>(l.group, params.getInt("batch") / l.group * l.group);
    batch = std::min(batch, n);
    const int totalSteps = static_cast<int>((n + batch - 1) / batch * epochs);

    std::vector<at::Tensor> trainable = net.encoderAndDecoderParameters();
    if (!t.ema)
        trainable.push_back(net.codebook);
    for (at::Tensor& p : trainable)
        p.set_requires_grad(true);
    torch::optim::Adam optimizer(trainable, torch::optim::AdamOptions(lr0));
    if (t.ema) {
        t.emaCounts = at::ones({l.codewords}, at::kFloat);
        t.emaSums = net.codebook.detach().clone();
    }

    TrainProgress progress;
    progress.groupId = groupId;
    progress.totalSteps = totalSteps;
    progress.epochs = epochs;
    EpochUsage usage(l.codewords);
    int step = 0;
    for (int epoch = 0; epoch < epochs; ++epoch) {
        const double lr = scheduledLr(params, lr0, epoch, epochs);
        setLr(optimizer, lr);
        const at::Tensor order = shuffle ? (at::randperm(n / l.group, gen, at::kLong).unsqueeze(1) * l.group +
                                            at::arange(l.group, at::kLong).unsqueeze(0)).view({-1})
                                         : at::Tensor();
        usage.reset();
        for (std::int64_t begin = 0; begin < n; begin += batch) {
            const std::int64_t size = std::min(batch, n - begin);
            const at::Tensor s = shuffle ? data.index_select(0, order.narrow(0, begin, size)) : data.narrow(0, begin, size);
            const StepTerms r = encoderStep(net, s, optimizer, t, l.codewords);
            ++step;
            usage.add(r.idx);
            const double mseValue = r.mse.item<double>();
            const double signal = s.pow(2).mean().item<double>();
            progress.step = step;
            progress.epoch = epoch + 1;
            progress.loss = r.loss.item<double>();
            progress.reconstruction = r.rec.item<double>();
            progress.codebookTerm = r.cbTerm.item<double>();
            progress.commitmentTerm = r.commit.item<double>();
            progress.snrDb = mseValue > 0 ? 10 * std::log10(signal / mseValue) : 99;
            progress.codebookUsage = usage.usedFraction();
            progress.lr = lr;
            progress.elapsedSeconds = clock.seconds();
            progress.etaSeconds = progress.elapsedSeconds / step * (totalSteps - step);
            if (context.onProgress && !context.onProgress(progress))
                return false;
        }
        usage.finishEpoch(n, progress);
    }
    for (at::Tensor& p : trainable)
        p.set_requires_grad(false);
    return true;
}

// The archive's form of a trained group: fp16 decoder and codebook, the fp32 group scale,
// bit-packed indices and fp16 row scales, with the bits each costs.
void writePayload(const Layout& l, const Network& net, float scale, const std::vector<std::vector<float>>& rowScales,
                  const std::vector<at::Tensor>& indices, const json& extraMeta, const MatrixGroup& group, GroupPayload& payload)
{
    const at::Tensor codebook16 = roundFp16(net.codebook);
    std::vector<std::uint8_t> decoderBytes;
    for (const at::Tensor& t : net.decoderParameters()) {
        const auto bytes = fp16Bytes(t);
        decoderBytes.insert(decoderBytes.end(), bytes.begin(), bytes.end());
    }
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
    if (l.books > 1)
        meta["codebooks"] = l.books;
    json decoderJson = json::array();
    for (const auto& [name, shape] : decoderTensorShapes(l.d, l.latent, l.hidden, l.group, l.format))
        decoderJson.push_back({{"name", name}, {"shape", shape}});
    meta["decoder_tensors"] = decoderJson;
    std::vector<std::int32_t> all;
    for (const at::Tensor& idx : indices)
        all.insert(all.end(), idx.data_ptr<std::int32_t>(), idx.data_ptr<std::int32_t>() + idx.numel());
    if (l.books > 1) // code m of a sub-vector indexes codebook m: count them as distinct symbols
        for (std::size_t j = 0; j < all.size(); ++j)
            all[j] += static_cast<std::int32_t>(static_cast<std::int64_t>(j % static_cast<std::size_t>(l.books)) * l.codewords);
    const auto [used, entropy] = vqcommon::usage(all, l.codewords * l.books);
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
    payload.sharedBits.codebookBits = 16ull * l.codewords * l.latent * l.books;
    payload.methodVersion = l.books > 1 ? 3 : 2; // version 2 programs decode everything but additive codebooks
    payload.sharedBits.decoderBits = 16ull * decoderParameterCount(l);

    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        MatrixResult result;
        result.ref = group.matrices[i].ref;
        result.bits.indexBits = static_cast<std::uint64_t>(indices[i].numel()) * l.bits;
        payload.sections.push_back(codeSection("indices/" + result.ref.name, indices[i].data_ptr<std::int32_t>(), indices[i].numel(), l.bits));
        if (l.rowScale) {
            payload.sections.push_back({"row_scales/" + result.ref.name, vqcommon::halfBytes(rowScales[i])});
            result.bits.scaleBits = 16ull * static_cast<std::uint64_t>(result.ref.rows);
        }
        payload.matrices.push_back(result);
    }
}

Status PocketLlmMethod::compressTrained(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, const Layout& l,
                                        GroupPayload& payload) const
{
    const Stopwatch clock;
    // Seeded from the group id so a group's result does not depend on which other groups run.
    at::Generator gen = at::detail::createCPUGenerator(groupSeed(params.getInt("seed"), group.id));
    at::NoGradGuard outerNoGrad; // gradients only where enabled in encoderStep
    const GroupData g = stackGroup(group, l, params.getBool("normalize"));
    Network net = Network::create(l.d, l.latent, l.hidden, l.group, l.codewords, gen, l.format);
    if (params.getText("init") == "kmeans")
        initLatentCodebook(net, g.x, l, static_cast<int>(params.getInt("kmeans_iters")), gen);
    if (!trainEncoder(net, g.x, l, params, gen, group.id, context, clock))
        return Error::cancelled();
    // What the archive stores: fp16 decoder and codebook; indices found against the fp16 codebook.
    net.codebook.copy_(roundFp16(net.codebook));
    std::vector<at::Tensor> indices;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const at::Tensor z = encodeChunked(net, g.x.narrow(0, g.offsets[i], g.counts[i]), l.group);
        indices.push_back(nearest(z, net.codebook).to(at::kInt).contiguous());
    }
    writePayload(l, net, g.scale, g.rowScales, indices, json::object(), group, payload);
    return {};
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

// Sub-vectors per piece of work over a whole matrix, in whole RLN groups: the training steps'
// loss and gradients, and the decoder's statistics under the current codes. On a 2048 x 2048
// matrix (d 4) 8 training steps took 6.3 s against 9.9 s in pieces of 65536, for ~220 MB more at
// the peak; the whole matrix at once saved only 0.3 s more for 830 MB more (docs/benchmarks.md,
// issue 20).
std::int64_t wholeGroupsPiece(std::int64_t group)
{
    return std::max<std::int64_t>(1, 262144 / group) * group;
}

// The latents of codes `idx`: [N] codes into one codebook, or [N, M] codes into M additive
// codebooks stacked in `codebook` ([M*K, latent]), summed.
at::Tensor latentsOf(const at::Tensor& codebook, const at::Tensor& idx)
{
    return idx.dim() == 1 ? codebook.index_select(0, idx) : additive::sumCodewords(codebook, idx);
}

// The statistics under codes `codes` (see latentsOf), in pieces (wholeGroupsPiece): the decoder's
// [N, hidden] intermediates for a whole matrix at once were the assignment's peak (a 2048 x 5632
// matrix at d 4 and hidden 16: 2 x 176 MiB).
ContextStats contextStats(const Decoder& dec, const at::Tensor& codebook, const at::Tensor& codes, std::int64_t group)
{
    const std::int64_t n = codes.size(0), piece = wholeGroupsPiece(group);
    std::vector<at::Tensor> m3, r3, m4, r4, m5, r5;
    for (std::int64_t b = 0; b < n; b += piece) {
        const at::Tensor q = latentsOf(codebook, codes.narrow(0, b, std::min(piece, n - b)));
        ContextStats st;
        const at::Tensor y1 = q + dec.d1(normaliseGroups(q, group, st.m3, st.r3));
        const at::Tensor y2 = y1 + dec.d2(normaliseGroups(y1, group, st.m4, st.r4));
        if (dec.format.finalNorm)
            normaliseGroups(y2, group, st.m5, st.r5);
        m3.push_back(st.m3), r3.push_back(st.r3), m4.push_back(st.m4), r4.push_back(st.r4);
        if (dec.format.finalNorm)
            m5.push_back(st.m5), r5.push_back(st.r5);
    }
    ContextStats st;
    st.m3 = at::cat(m3), st.r3 = at::cat(r3), st.m4 = at::cat(m4), st.r4 = at::cat(r4);
    if (dec.format.finalNorm)
        st.m5 = at::cat(m5), st.r5 = at::cat(r5);
    return st;
}

// Latents x [..., latent] decoded with the RLN statistics `col` picks (broadcast against x).
at::Tensor decodeWithStats(const Decoder& dec, const at::Tensor& x, const ContextStats& st, const std::function<at::Tensor(const at::Tensor&)>& col)
{
    const at::Tensor y1 = x + dec.d1((x - col(st.m3)) * col(st.r3));
    at::Tensor y2 = y1 + dec.d2((y1 - col(st.m4)) * col(st.r4));
    if (dec.format.finalNorm)
        y2 = (y2 - col(st.m5)) * col(st.r5);
    return dec.format.outSkip ? y2 + dec.d0(y2) : dec.d0(y2);
}

// Every codeword decoded in the context of groups [g0, g0 + count): [count, K, d].
at::Tensor decodeCandidates(const Decoder& dec, const at::Tensor& codebook, const ContextStats& st, std::int64_t g0, std::int64_t count)
{
    const ScopedPhase phase("decoding candidates");
    const at::Tensor x = codebook.unsqueeze(0).expand({count, codebook.size(0), codebook.size(1)});
    return decodeWithStats(dec, x, st, [&](const at::Tensor& t) { return t.narrow(0, g0, count).view({count, 1, 1}); });
}

// codebooks > 1: the codes of every sub-vector by beam search over the M codebooks in order, each
// partial sum's candidates decoded in the context of its RLN group (statistics of the codes
// `current`) and ranked by the weighted distance to x; a sub-vector keeps its current codes unless
// the search found a closer decode. `error` (optional) gets each sub-vector's weighted squared error.
at::Tensor assignAdditive(const Decoder& dec, const at::Tensor& codebook, const at::Tensor& current, const at::Tensor& x, const at::Tensor& w,
                          std::int64_t group, std::int64_t beam, at::Tensor* error = nullptr)
{
    const ScopedPhase phase("assignment");
    at::NoGradGuard noGrad; // never differentiated (see assignNearestDecoded)
    const std::int64_t n = x.size(0), m = current.size(1), k = codebook.size(0) / m, latent = codebook.size(1), groups = n / group;
    const ContextStats st = contextStats(dec, codebook, current, group);
    const std::int64_t width = std::min(beam, k);
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 20) / (group * width * k * std::max<std::int64_t>(latent, 8)));
    std::vector<at::Tensor> idxParts, errParts;
    for (std::int64_t g0 = 0; g0 < groups; g0 += chunk) {
        const std::int64_t nb = std::min(chunk, groups - g0), rows = nb * group;
        const auto col = [&](const at::Tensor& t) { return t.narrow(0, g0, nb).repeat_interleave(group).view({rows, 1, 1, 1}); };
        const at::Tensor xs = x.narrow(0, g0 * group, rows).view({rows, 1, 1, -1});
        const at::Tensor ws = w.narrow(0, g0 * group, rows).view({rows, 1, 1, -1});
        const auto distance = [&](const at::Tensor& latents) { return (ws * (decodeWithStats(dec, latents, st, col) - xs).pow(2)).sum(3); };
        at::Tensor partial = at::zeros({rows, 1, latent}, at::kFloat), paths = at::zeros({rows, 1, 0}, at::kLong), cost;
        for (std::int64_t b = 0; b < m; ++b) {
            const at::Tensor book = codebook.narrow(0, b * k, k);
            const at::Tensor scores = distance(partial.unsqueeze(2) + book.view({1, 1, k, latent})); // [rows, W, K]
            cost = additive::beamStep(scores, book, beam, partial, paths);
        }
        const at::Tensor now = current.narrow(0, g0 * group, rows);
        const at::Tensor costNow = distance(latentsOf(codebook, now).view({rows, 1, 1, latent})).view({rows});
        const at::Tensor better = cost.select(1, 0) < costNow;
        idxParts.push_back(at::where(better.unsqueeze(1), paths.select(1, 0), now));
        if (error)
            errParts.push_back(at::minimum(cost.select(1, 0), costNow));
    }
    if (error)
        *error = at::cat(errParts, 0);
    return at::cat(idxParts, 0);
}

// Nearest decoded codeword (weighted distance) of every sub-vector, candidates decoded with the
// statistics of the codes `current`; `error` (optional) gets each sub-vector's weighted squared error.
at::Tensor assignNearestDecoded(const Decoder& dec, const at::Tensor& codebook, const at::Tensor& current, const at::Tensor& x,
                                const at::Tensor& w, std::int64_t group, at::Tensor* error = nullptr)
{
    const ScopedPhase phase("assignment");
    // Never differentiated: without this guard, a re-assignment during training recorded the
    // graph of every chunk's decoded candidates (tens of GB for a 2048 x 5632 matrix at K 4096).
    at::NoGradGuard noGrad;
    const std::int64_t n = x.size(0), d = x.size(1), k = codebook.size(0), groups = n / group;
    const ContextStats st = contextStats(dec, codebook, current, group);
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 22) / (group * k));
    // Weights that differ only between sub-vectors (no per-coordinate weighting, the default)
    // scale all of a sub-vector's candidate distances alike, so its choice is the plain nearest
    // decoded codeword: found group by group by the bounded-memory SIMD kernel instead of two
    // [G, K] matrix products per group (the kernel never writes the G x K distances out).
    if (at::equal(w, w.narrow(1, 0, 1).expand_as(w))) {
        const at::Tensor xc = x.contiguous();
        const int threads = at::get_num_threads();
        std::vector<std::int32_t> codes(static_cast<std::size_t>(n));
        at::Tensor chosen = error ? at::empty({n, d}, at::kFloat) : at::Tensor();
        for (std::int64_t g0 = 0; g0 < groups; g0 += chunk) {
            const std::int64_t nb = std::min(chunk, groups - g0);
            const at::Tensor cand = decodeCandidates(dec, codebook, st, g0, nb).contiguous(); // [nb, K, d]
            for (std::int64_t g = 0; g < nb; ++g) {
                const std::int64_t first = (g0 + g) * group;
                nearestCodewords(xc.data_ptr<float>() + first * d, group, cand.data_ptr<float>() + g * k * d, k, static_cast<int>(d),
                                 codes.data() + first, nullptr, threads);
                if (error)
                    chosen.narrow(0, first, group)
                        .copy_(cand[g].index_select(0, at::from_blob(codes.data() + first, {group}, at::kInt).to(at::kLong)));
            }
        }
        if (error)
            *error = (w * (chosen - x).pow(2)).sum(1);
        return at::from_blob(codes.data(), {n}, at::kInt).to(at::kLong);
    }
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
    const std::int64_t chunk = wholeGroupsPiece(group);
    double total = 0;
    for (std::int64_t b = 0; b < n; b += chunk) {
        const std::int64_t size = std::min(chunk, n - b);
        at::AutoGradMode gradMode(backward);
        const at::Tensor q = latentsOf(net.codebook, idx.narrow(0, b, size));
        const at::Tensor sHat = net.decode(q);
        const at::Tensor loss = (w.narrow(0, b, size) * (sHat - x.narrow(0, b, size)).pow(2)).sum() / wSum;
        if (backward)
            loss.backward();
        total += loss.item<double>();
    }
    return total;
}

// Per-element weights of the assign path's distance and loss ([N, d], ones without weighting):
// row scales squared (row_scale) times the inputs' second moments (weighting=hessian_diag).
vqcommon::Weighting assignWeighting(const MatrixGroup& group, const Layout& l, const GroupData& g, bool weighted)
{
    std::vector<MatrixRef> refs;
    std::vector<std::vector<float>> rowFactors(group.matrices.size()), colWeights(group.matrices.size());
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        refs.push_back(group.matrices[i].ref);
        if (l.rowScale) {
            rowFactors[i] = g.rowScales[i];
            for (float& f : rowFactors[i])
                f *= f;
        }
        if (weighted)
            colWeights[i] = vqcommon::columnWeights(group.matrices[i]);
    }
    if (l.rowScale || weighted)
        return vqcommon::makeWeighting(refs, l.d, colWeights, rowFactors);
    return {};
}

at::Tensor elementWeights(const vqcommon::Weighting& weighting, std::int64_t n, int d)
{
    at::Tensor w = at::ones({n, d}, at::kFloat);
    if (!weighting.empty()) {
        float* wp = w.data_ptr<float>();
        for (std::size_t p = 0; p + 1 < weighting.runStart.size(); ++p)
            for (std::int64_t i = weighting.runStart[p]; i < weighting.runStart[p + 1]; ++i)
                for (int j = 0; j < d; ++j)
                    wp[i * d + j] = weighting.pattern[p * d + j] * weighting.pointFactor[static_cast<std::size_t>(i)];
    }
    return w;
}

// Live metrics of the assign path: one step per k-means iteration, training step and fine-tune step.
class AssignProgress {
public:
    // `clock` started with the group.
    AssignProgress(const std::string& groupId, int totalSteps, std::int64_t codewords, const CompressContext& context, Stopwatch clock)
        : m_codewords(codewords), m_context(context), m_clock(clock)
    {
        progress.groupId = groupId;
        progress.totalSteps = totalSteps;
        progress.epochs = totalSteps;
    }
    // Reports step `step` with its loss; false when the caller asked to stop.
    bool operator()(int step, double loss)
    {
        progress.step = progress.epoch = step;
        progress.loss = progress.reconstruction = loss;
        progress.codebookUsage = 1.0 - static_cast<double>(progress.deadCodewords) / static_cast<double>(m_codewords);
        // The loss is a mean squared error in the units of `signal` (k-means, weight-space training);
        // the fine-tune's output error is not, and leaves the SNR unknown (signal 0).
        progress.snrDb = signal <= 0 ? std::numeric_limits<double>::quiet_NaN() : loss > 0 ? 10 * std::log10(signal / loss) : 99;
        progress.elapsedSeconds = m_clock.seconds();
        progress.etaSeconds = step > 0 ? progress.elapsedSeconds / step * (progress.totalSteps - step) : 0;
        return !m_context.onProgress || m_context.onProgress(progress);
    }
    TrainProgress progress; // lr and dead codewords are set by the steps
    double signal = 0;      // mean (weighted) square of the data, in the loss's units; 0 = SNR unknown

private:
    std::int64_t m_codewords;
    const CompressContext& m_context;
    Stopwatch m_clock;
};

// The codes and network being trained by the assign path.
struct AssignState {
    Network net;
    at::Tensor idx; // [N] codes
};

// init=vq: exactly the vq method (same seed, same k-means, fp16 codebook, nearest codes) with the
// decoder started as the identity (its last layers zeroed, the output skip on). With codebooks > 1,
// residual k-means: codebook m is fitted to what the codebooks before it left. False when cancelled.
bool initFromVq(AssignState& s, const GroupData& g, const Layout& l, const ParamSet& params, const vqcommon::Weighting& weighting,
                const std::string& groupId, int threads, AssignProgress& report)
{
    const std::int64_t n = g.x.size(0);
    const int kmIters = static_cast<int>(params.getInt("kmeans_iters"));
    std::vector<float> residual(g.x.data_ptr<float>(), g.x.data_ptr<float>() + g.x.numel());
    std::mt19937_64 gen64(groupSeed(params.getInt("seed"), groupId));
    std::vector<at::Tensor> books, codes;
    for (int b = 0; b < l.books; ++b) {
        std::vector<float> codebook;
        const bool finished = vqcommon::kmeans(residual, n, l.d, l.codewords, kmIters, "kmeans++", params.getInt("init_sample"), gen64,
                                               weighting, threads, codebook, [&](int it, const vqcommon::KmeansStats& st) {
                                                   report.progress.deadCodewords = st.dead;
                                                   return report(b * kmIters + it + 1, st.loss);
                                               });
        if (!finished)
            return false;
        std::vector<std::uint8_t> half(codebook.size() * 2);
        convertFromFloat(codebook.data(), codebook.size(), DType::F16, half.data());
        convertToFloat(DType::F16, half.data(), codebook.size(), codebook.data());
        std::vector<std::int32_t> idx(static_cast<std::size_t>(n));
        if (weighting.empty())
            nearestCodewords(residual.data(), n, codebook.data(), l.codewords, l.d, idx.data(), nullptr, threads);
        else
            vqcommon::nearestWeighted(residual, n, codebook, l.codewords, l.d, weighting, idx.data(), nullptr, threads);
        for (std::int64_t i = 0; l.books > 1 && i < n; ++i)
            for (int j = 0; j < l.d; ++j)
                residual[static_cast<std::size_t>(i * l.d + j)] -= codebook[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)] * l.d + j)];
        codes.push_back(at::from_blob(idx.data(), {n}, at::kInt).to(at::kLong));
        books.push_back(at::from_blob(codebook.data(), {l.codewords, l.d}, at::kFloat).clone());
    }
    s.idx = l.books == 1 ? codes.front() : at::stack(codes, 1);
    s.net.codebook = at::cat(books, 0);
    for (Mlp* m : {&s.net.decoder.d0, &s.net.decoder.d1, &s.net.decoder.d2}) {
        m->w2.zero_();
        m->b2.zero_();
    }
    return true;
}

// Codewords nobody uses take the worst-served sub-vectors (reset_dead); returns how many.
int resetDeadCodewords(AssignState& s, const at::Tensor& data, const at::Tensor& err, std::int64_t codewords)
{
    const std::int64_t n = data.size(0);
    const at::Tensor counts = at::bincount(s.idx, {}, codewords);
    const at::Tensor dead = (counts == 0).nonzero().view({-1});
    const std::int64_t nd = std::min<std::int64_t>(dead.numel(), n);
    if (nd == 0)
        return 0;
    const at::Tensor worst = std::get<1>(err.topk(nd));
    s.net.codebook.detach().index_copy_(0, dead.narrow(0, 0, nd), data.index_select(0, worst));
    s.idx.index_copy_(0, worst, dead.narrow(0, 0, nd));
    return static_cast<int>(nd);
}

// The assign path's trainable tensors: the codebook and, unless train_decoder=false, the decoder;
// gradients switched on.
std::vector<at::Tensor> codebookAndDecoder(const Network& net, bool trainDecoder)
{
    std::vector<at::Tensor> trainable{net.codebook};
    if (trainDecoder)
        for (const at::Tensor& t : net.decoderParameters())
            trainable.push_back(t);
    for (at::Tensor& t : trainable)
        t.set_requires_grad(true);
    return trainable;
}

// Weight-space training: codebook (and decoder) by Adam on the weighted reconstruction error, full
// batch, the codes re-assigned every `assign_every` steps. False when cancelled.
bool trainWeightSpace(AssignState& s, const at::Tensor& data, const at::Tensor& w, double wSum, const Layout& l, const ParamSet& params,
                      int firstStep, AssignProgress& report, json& extra)
{
    const ScopedPhase phase("training");
    const int epochs = static_cast<int>(params.getInt("epochs"));
    std::vector<at::Tensor> trainable = codebookAndDecoder(s.net, params.getBool("train_decoder"));
    torch::optim::Adam optimizer(trainable, torch::optim::AdamOptions(params.getFloat("lr")));
    const int every = static_cast<int>(params.getInt("assign_every"));
    for (int step = 0; step < epochs; ++step) {
        if (step > 0 && step % every == 0 && l.books > 1) {
            at::NoGradGuard noGrad;
            s.idx = assignAdditive(s.net.decoder, s.net.codebook.detach(), s.idx, data, w, l.group, params.getInt("beam"));
        } else if (step > 0 && step % every == 0) {
            at::Tensor err;
            s.idx = assignNearestDecoded(s.net.decoder, s.net.codebook.detach(), s.idx, data, w, l.group, &err);
            if (params.getBool("reset_dead"))
                report.progress.deadCodewords = resetDeadCodewords(s, data, err, l.codewords);
        }
        report.progress.lr = scheduledLr(params, params.getFloat("lr"), step, epochs);
        setLr(optimizer, report.progress.lr);
        optimizer.zero_grad();
        const double loss = reconstructionLoss(s.net, s.idx, data, w, wSum, l.group, true);
        if (step == 0)
            extra["train_loss_start"] = loss;
        optimizer.step();
        if (!report(firstStep + step + 1, loss))
            return false;
    }
    for (at::Tensor& t : trainable)
        t.set_requires_grad(false);
    return true;
}

// feedback=true: each matrix's codes chosen again column block by column block with its Hessian,
// every codeword decoded in the context of its RLN group, the error pushed onto later columns.
Status feedbackAssign(AssignState& s, const MatrixGroup& group, const GroupData& g, const Layout& l, const ParamSet& params, int threads)
{
    const ContextStats st = contextStats(s.net.decoder, s.net.codebook, s.idx, l.group);
    at::Tensor newIdx = s.idx.clone();
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const std::int64_t rows = group.matrices[i].ref.rows;
        const vqcommon::BlockBooks books = [&](std::int64_t block, std::vector<float>& b, std::vector<std::int32_t>& bookOfRow) {
            const std::int64_t first = g.offsets[i] + block * rows;
            const std::int64_t g0 = first / l.group, g1 = (first + rows - 1) / l.group;
            const at::Tensor cand = (decodeCandidates(s.net.decoder, s.net.codebook, st, g0, g1 - g0 + 1) * g.scale).contiguous();
            b.assign(cand.data_ptr<float>(), cand.data_ptr<float>() + cand.numel());
            bookOfRow.resize(static_cast<std::size_t>(rows));
            for (std::int64_t r = 0; r < rows; ++r)
                bookOfRow[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((first + r) / l.group - g0);
        };
        std::vector<std::int32_t> codes(static_cast<std::size_t>(g.counts[i]));
        POCKET_TRY(vqcommon::assignWithFeedback(group.matrices[i], l.codewords, l.d, params.getFloat("damp"), g.rowScales[i], books,
                                                codes.data(), threads, "pocketllm"));
        newIdx.narrow(0, g.offsets[i], g.counts[i]).copy_(at::from_blob(codes.data(), {g.counts[i]}, at::kInt).to(at::kLong));
    }
    s.idx = newIdx;
    return {};
}

// feedback=true with codebooks > 1 (and epochs=0, so the decoder is still the identity and a sub-vector
// decodes to its latent sum times its scales): each matrix's codes by AQLM's search on its output
// error tr(E H E^T), `sweeps` times over the column blocks, starting from the current codes.
void additiveFeedback(AssignState& s, const MatrixGroup& group, const GroupData& g, const Layout& l, const ParamSet& params)
{
    at::NoGradGuard noGrad;
    const at::Tensor books = s.net.codebook.view({l.books, l.codewords, l.latent});
    at::Tensor codes = s.idx.clone();
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const WeightMatrix& m = group.matrices[i];
        additive::MatrixState st = additive::matrixState(m, l.d, true, params.getFloat("damp"));
        st.scale = l.rowScale ? at::from_blob(const_cast<float*>(g.rowScales[i].data()), {st.rows}, at::kFloat) * g.scale
                              : at::full({st.rows}, g.scale, at::kFloat);
        st.codes = s.idx.narrow(0, g.offsets[i], g.counts[i]).view({st.groups, st.rows, l.books}).clone();
        for (std::int64_t sweep = 0; sweep < params.getInt("sweeps"); ++sweep)
            additive::searchCodes(st, books, params.getInt("beam"));
        codes.narrow(0, g.offsets[i], g.counts[i]).copy_(st.codes.view({g.counts[i], l.books}));
    }
    s.idx = codes;
}

// finetune > 0: decoder and codebook (and, with finetune_scales, the row scales as multipliers of
// their start) tuned on the layers' output error tr(E H E^T), H normalised to a mean diagonal of 1
// per matrix, codes fixed. False when cancelled.
bool finetuneOutputError(AssignState& s, const MatrixGroup& group, GroupData& g, const Layout& l, const ParamSet& params, int finetune,
                         bool trainDecoder, int firstStep,
                         AssignProgress& report, json& extra)
{
    const ScopedPhase phase("fine-tune");
    std::vector<at::Tensor> hessians, targets, scalesT;
    double weightsTotal = 0;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const WeightMatrix& m = group.matrices[i];
        at::Tensor h = at::from_blob(const_cast<float*>(m.hessian.data()), {m.ref.cols, m.ref.cols}, at::kFloat).clone();
        const double meanDiag = h.diagonal().mean().item<double>();
        hessians.push_back(meanDiag > 0 ? h / meanDiag : h);
        targets.push_back(at::from_blob(const_cast<float*>(m.values.data()), {m.ref.rows, m.ref.cols}, at::kFloat));
        scalesT.push_back(l.rowScale ? at::from_blob(g.rowScales[i].data(), {m.ref.rows, 1}, at::kFloat).clone()
                                     : at::ones({m.ref.rows, 1}, at::kFloat));
        weightsTotal += static_cast<double>(m.ref.weights());
    }
    std::vector<at::Tensor> trainable = codebookAndDecoder(s.net, trainDecoder);
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
        report.progress.lr = params.getFloat("finetune_lr") * 0.5 * (1 + std::cos(M_PI * step / finetune));
        setLr(optimizer, report.progress.lr);
        optimizer.zero_grad();
        double total = 0;
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            at::AutoGradMode gradMode(true);
            const MatrixRef& ref = group.matrices[i].ref;
            const at::Tensor sub = s.net.decode(latentsOf(s.net.codebook, s.idx.narrow(0, g.offsets[i], g.counts[i]))) * g.scale;
            const at::Tensor wHat = weightsFromSubvectors(sub, ref.rows, ref.cols, l.d) * (scalesT[i] * multipliers[i]);
            const at::Tensor e = targets[i] - wHat;
            const at::Tensor loss = (e.mm(hessians[i]) * e).sum() / weightsTotal;
            loss.backward();
            total += loss.item<double>();
        }
        if (step == 0)
            extra["finetune_loss_start"] = total;
        optimizer.step();
        if (!report(firstStep + step + 1, total))
            return false;
    }
    for (at::Tensor& t : trainable)
        t.set_requires_grad(false);
    roundNetworkToFp16(s.net);
    if (tuneScales)
        for (std::size_t i = 0; i < group.matrices.size(); ++i) {
            const at::Tensor r = roundFp16((scalesT[i] * multipliers[i].detach()).abs().clamp_min(1e-6)).contiguous();
            g.rowScales[i].assign(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
        }
    return true;
}

Status PocketLlmMethod::compressAssign(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, const Layout& l,
                                       GroupPayload& payload) const
{
    const Stopwatch clock;
    const int threads = at::get_num_threads();
    const bool weighted = params.getText("weighting") != "none";
    const bool feedback = params.getBool("feedback");
    const int finetune = static_cast<int>(params.getInt("finetune"));
    const int epochs = static_cast<int>(params.getInt("epochs"));
    const int rounds = feedback && l.books > 1 ? static_cast<int>(params.getInt("rounds")) : 1;
    for (const WeightMatrix& m : group.matrices)
        if ((weighted || feedback || finetune > 0) && m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
            return Error{"pocketllm: " + m.ref.name + ": weighting, feedback and finetune need calibration data", ErrorKind::Usage,
                         "calibration text"};

    GroupData g = stackGroup(group, l, params.getBool("normalize"));
    const std::int64_t n = g.x.size(0);
    const vqcommon::Weighting weighting = assignWeighting(group, l, g, weighted);
    const at::Tensor w = elementWeights(weighting, n, l.d);
    const double wSum = w.sum().item<double>();
    const int kmIters = params.getText("init") == "vq" ? static_cast<int>(params.getInt("kmeans_iters")) * l.books : 0;
    AssignProgress report(group.id, kmIters + epochs + finetune * rounds, l.codewords, context, clock);

    at::Generator gen = at::detail::createCPUGenerator(groupSeed(params.getInt("seed"), group.id));
    AssignState s{Network::create(l.d, l.latent, l.hidden, l.group, l.codewords * l.books, gen, l.format), at::Tensor()};
    const double weightedSquares = (w * g.x.pow(2)).sum().item<double>();
    report.signal = weightedSquares / static_cast<double>(g.x.numel()); // k-means: per value
    if (params.getText("init") == "vq") {
        if (!initFromVq(s, g, l, params, weighting, group.id, threads, report))
            return Error::cancelled();
    } else {
        s.idx = assignNearestDecoded(s.net.decoder, s.net.codebook, at::zeros({n}, at::kLong), g.x, w, l.group);
    }
    if (l.books > 1) { // residual k-means codes are greedy: the beam search improves on them
        at::NoGradGuard noGrad;
        roundNetworkToFp16(s.net);
        s.idx = assignAdditive(s.net.decoder, s.net.codebook, s.idx, g.x, w, l.group, params.getInt("beam"));
    }
    json extra;
    report.signal = wSum > 0 ? weightedSquares / wSum : 0; // training: weighted mean
    if (epochs > 0 && !trainWeightSpace(s, g.x, w, wSum, l, params, kmIters, report, extra))
        return Error::cancelled();
    // The archive's fp16 values; then the final codes against them.
    roundNetworkToFp16(s.net);
    if (epochs > 0 && l.books > 1) {
        at::NoGradGuard noGrad;
        s.idx = assignAdditive(s.net.decoder, s.net.codebook, s.idx, g.x, w, l.group, params.getInt("beam"));
    } else if (epochs > 0) {
        s.idx = assignNearestDecoded(s.net.decoder, s.net.codebook, s.idx, g.x, w, l.group);
    }
    extra["train_loss_end"] = reconstructionLoss(s.net, s.idx, g.x, w, wSum, l.group, false);
    int step = kmIters + epochs;
    report.signal = 0; // fine-tune steps report the output error
    if (feedback && l.books > 1) // AQLM's alternation, the decoder kept the identity until the last round
        for (int round = 0; round < rounds; ++round) {
            additiveFeedback(s, group, g, l, params);
            if (round + 1 < rounds && finetune > 0 && !finetuneOutputError(s, group, g, l, params, finetune, false, step, report, extra))
                return Error::cancelled();
            step += round + 1 < rounds ? finetune : 0;
        }
    else if (feedback)
        POCKET_TRY(feedbackAssign(s, group, g, l, params, threads));
    if (finetune > 0 && !finetuneOutputError(s, group, g, l, params, finetune, params.getBool("train_decoder"), step, report, extra))
        return Error::cancelled();

    std::vector<at::Tensor> indices;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) // [count] or [count, M] codes, sub-vector major
        indices.push_back(s.idx.narrow(0, g.offsets[i], g.counts[i]).to(at::kInt).contiguous());
    writePayload(l, s.net, g.scale, g.rowScales, indices, extra, group, payload);
    return {};
}

namespace {
// The payload decoder: the fused decoder over each RLN group, groups split over threads.
class PocketDecoder final : public PayloadDecoder {
public:
    GroupPayload payload;
    FusedDecoder dec;
    int bits = 0;
    std::vector<const PayloadSection*> indices;   // per matrix
    std::vector<std::vector<float>> rowScales;    // per matrix, with row_scale

    std::size_t matrixCount() const override { return payload.matrices.size(); }
    const MatrixRef& matrix(std::size_t index) const override { return payload.matrices.at(index).ref; }
    std::uint64_t bytes() const override
    {
        std::uint64_t n = payloadBytes(payload) + 4 * (dec.codebook.size() + dec.d0.w1.size() + dec.d0.w2.size() + dec.d1.w1.size() +
                                                       dec.d1.w2.size() + dec.d2.w1.size() + dec.d2.w2.size());
        for (const auto& rs : rowScales)
            n += rs.size() * 4;
        return n;
    }
    Status decodeMatrix(std::size_t index, float* out, int threads) const override
    {
        if (index >= payload.matrices.size())
            return Error::internal("decodeMatrix: no matrix " + std::to_string(index) + " in group " + payload.groupId);
        const MatrixRef& ref = payload.matrices[index].ref;
        const std::int64_t count = subvectorCount(ref, dec.d), g = dec.group;
        const PayloadSection& section = *indices[index];
        const std::vector<float>& rs = rowScales[index];
        std::atomic<bool> outOfRange{false};
        parallelFor(count / g, threads, std::max<std::int64_t>(1, 16384 / g), [&](std::int64_t g0, std::int64_t g1) {
            const std::int64_t perGroup = g * dec.books; // codes of one RLN group: [G][books]
            std::vector<std::int32_t> codes(static_cast<std::size_t>(perGroup));
            std::vector<float> sub(static_cast<std::size_t>(g * dec.d)), scratch;
            for (std::int64_t grp = g0; grp < g1; ++grp) {
                for (std::int64_t i = 0; i < perGroup; ++i) {
                    const std::uint32_t c = packedValue(section.bytes.data(), section.bytes.size(), static_cast<std::uint64_t>(grp * perGroup + i), bits);
                    if (c >= static_cast<std::uint64_t>(dec.codewords)) {
                        outOfRange = true;
                        return;
                    }
                    codes[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(c);
                }
                decodeRlnGroup(dec, codes.data(), sub.data(), scratch);
                // Sub-vector i holds row i % rows, columns [(i / rows) * d, + d): scale rows, round to fp16.
                if (!rs.empty())
                    for (std::int64_t i = 0; i < g; ++i) {
                        const float r = rs[static_cast<std::size_t>((grp * g + i) % ref.rows)];
                        for (int j = 0; j < dec.d; ++j)
                            sub[static_cast<std::size_t>(i * dec.d + j)] *= r;
                    }
                roundThroughHalf(sub.data(), sub.size());
                for (std::int64_t i = 0; i < g; ++i) {
                    const std::int64_t v = grp * g + i, row = v % ref.rows, col = (v / ref.rows) * dec.d;
                    const std::int64_t width = std::min<std::int64_t>(dec.d, ref.cols - col);
                    std::memcpy(out + row * ref.cols + col, &sub[static_cast<std::size_t>(i * dec.d)], sizeof(float) * static_cast<std::size_t>(width));
                }
            }
        });
        if (outOfRange)
            return Error{"pocketllm: " + ref.name + ": index out of the codebook's range"};
        return {};
    }
};

std::vector<float> halfValues(const std::vector<std::uint8_t>& bytes, std::size_t offset, std::size_t count)
{
    std::vector<float> v(count);
    convertToFloat(DType::F16, bytes.data() + offset * 2, count, v.data());
    return v;
}

// [G*latent] (RLN order: G rows of latent values) to [latent][G].
std::vector<float> transposedRln(const std::vector<float>& w, std::int64_t group, int latent)
{
    std::vector<float> t(w.size());
    for (std::int64_t i = 0; i < group; ++i)
        for (int k = 0; k < latent; ++k)
            t[static_cast<std::size_t>(k * group + i)] = w[static_cast<std::size_t>(i * latent + k)];
    return t;
}
} // namespace

// Long: checks every field and section of the payload before anything is decoded.
Result<std::unique_ptr<PayloadDecoder>> PocketLlmMethod::prepareDecoder(GroupPayload payload) const
{
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
        l.books = meta.contains("codebooks") ? meta.at("codebooks").get<int>() : 1;
        if (l.books != 1 && payload.methodVersion < 3)
            return Error{"pocketllm: group " + payload.groupId + ": additive codebooks in a payload of version " +
                         std::to_string(payload.methodVersion)};
    } catch (const std::exception& e) {
        return Error{"pocketllm: group " + payload.groupId + ": bad metadata: " + e.what()};
    }
    if (payload.methodVersion < 1 || payload.methodVersion > methodInfo().version)
        return Error{"pocketllm: group " + payload.groupId + ": payload version " + std::to_string(payload.methodVersion) +
                     " is not one this plugin reads (1 to " + std::to_string(methodInfo().version) + ")"};
    if (l.format.outSkip && l.latent != l.d)
        return Error{"pocketllm: group " + payload.groupId + ": the output skip needs latent = d"};
    if (l.d < 1 || l.d > 64 || l.latent < 1 || l.latent > 1024 || l.hidden < 1 || l.hidden > 4096 || l.codewords < 2 ||
        l.codewords > (1 << 20) || l.bits != indexBits(l.codewords) || l.group < 1 || l.group > (1 << 24) || l.books < 1 || l.books > 8)
        return Error{"pocketllm: group " + payload.groupId + ": metadata out of range"};

    const PayloadSection* decoderSection = payload.section("decoder");
    const PayloadSection* codebookSection = payload.section("codebook");
    const std::size_t decoderElems = static_cast<std::size_t>(decoderParameterCount(l));
    if (!decoderSection || decoderSection->bytes.size() != decoderElems * 2)
        return Error{"pocketllm: group " + payload.groupId + ": decoder section missing or of the wrong size"};
    if (!codebookSection || codebookSection->bytes.size() != static_cast<std::size_t>(l.codewords * l.latent * l.books) * 2)
        return Error{"pocketllm: group " + payload.groupId + ": codebook section missing or of the wrong size"};
    const PayloadSection* scaleSection = payload.section("scale");
    float scale = 0;
    if (!scaleSection || scaleSection->bytes.size() != sizeof scale)
        return Error{"pocketllm: group " + payload.groupId + ": scale section missing or of the wrong size"};
    std::memcpy(&scale, scaleSection->bytes.data(), sizeof scale);
    if (!std::isfinite(scale) || scale <= 0)
        return Error{"pocketllm: group " + payload.groupId + ": scale is not a positive number"};

    auto out = std::make_unique<PocketDecoder>();
    FusedDecoder& dec = out->dec;
    dec.d = l.d;
    dec.latent = l.latent;
    dec.hidden = l.hidden;
    dec.group = l.group;
    dec.rlnAffine = l.format.rlnAffine;
    dec.finalNorm = l.format.finalNorm;
    dec.outSkip = l.format.outSkip;
    dec.codewords = l.codewords;
    dec.books = l.books;
    dec.scale = scale;
    dec.codebook = halfValues(codebookSection->bytes, 0, static_cast<std::size_t>(l.codewords * l.latent * l.books));
    // The decoder tensors in storage order (decoderTensorShapes).
    std::map<std::string, std::vector<float>> tensors;
    std::size_t offset = 0;
    for (const auto& [name, shape] : decoderTensorShapes(l.d, l.latent, l.hidden, l.group, l.format)) {
        std::size_t n = 1;
        for (auto v : shape)
            n *= static_cast<std::size_t>(v);
        tensors[name] = halfValues(decoderSection->bytes, offset, n);
        offset += n;
    }
    const auto mlpOf = [&](const std::string& prefix, int in, int outWidth) {
        FusedMlp m;
        m.in = in;
        m.hidden = l.hidden;
        m.out = outWidth;
        m.w1 = tensors[prefix + ".w1"];
        m.b1 = tensors[prefix + ".b1"];
        m.w2 = tensors[prefix + ".w2"];
        m.b2 = tensors[prefix + ".b2"];
        return m;
    };
    dec.d1 = mlpOf("D1", l.latent, l.latent);
    dec.d2 = mlpOf("D2", l.latent, l.latent);
    dec.d0 = mlpOf("D0", l.latent, l.d);
    if (l.format.rlnAffine) {
        dec.rln3w = transposedRln(tensors["RLN3.weight"], l.group, l.latent);
        dec.rln3b = transposedRln(tensors["RLN3.bias"], l.group, l.latent);
        dec.rln4w = transposedRln(tensors["RLN4.weight"], l.group, l.latent);
        dec.rln4b = transposedRln(tensors["RLN4.bias"], l.group, l.latent);
        if (l.format.finalNorm) {
            dec.rln4pw = transposedRln(tensors["RLN4p.weight"], l.group, l.latent);
            dec.rln4pb = transposedRln(tensors["RLN4p.bias"], l.group, l.latent);
        }
    }
    out->bits = l.bits;
    for (const MatrixResult& m : payload.matrices) {
        const PayloadSection* section = payload.section("indices/" + m.ref.name);
        const std::int64_t count = subvectorCount(m.ref, l.d);
        if (m.ref.rows < 1 || m.ref.cols < 1 || count % l.group != 0)
            return Error{"pocketllm: " + m.ref.name + ": shape does not fit the RLN group"};
        if (!section || section->bytes.size() < (static_cast<std::uint64_t>(count * l.books) * static_cast<std::uint64_t>(l.bits) + 7) / 8)
            return Error{"pocketllm: " + m.ref.name + ": index section missing or too short"};
        out->indices.push_back(section);
        out->rowScales.emplace_back();
        if (l.rowScale) {
            const PayloadSection* scales = payload.section("row_scales/" + m.ref.name);
            if (!scales || scales->bytes.size() != static_cast<std::size_t>(m.ref.rows) * 2)
                return Error{"pocketllm: " + m.ref.name + ": row scale section missing or of the wrong size"};
            out->rowScales.back() = halfValues(scales->bytes, 0, static_cast<std::size_t>(m.ref.rows));
        }
    }
    // The section pointers stay valid: moving the payload moves its sections' buffer, not the sections.
    out->payload = std::move(payload);
    return std::unique_ptr<PayloadDecoder>(std::move(out));
}

Result<std::vector<std::vector<float>>> PocketLlmMethod::decodeImpl(const GroupPayload& payload) const
{
    auto decoder = prepareDecoder(payload);
    if (!decoder)
        return decoder.error();
    std::vector<std::vector<float>> out;
    for (std::size_t m = 0; m < (*decoder)->matrixCount(); ++m) {
        std::vector<float> w(static_cast<std::size_t>((*decoder)->matrix(m).weights()));
        POCKET_TRY((*decoder)->decodeMatrix(m, w.data(), 0));
        out.push_back(std::move(w));
    }
    return out;
}

} // namespace

} // namespace pocket::pocketllm

POCKET_METHOD_PLUGIN(pocket::pocketllm::PocketLlmMethod)
