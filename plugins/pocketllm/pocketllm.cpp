// PocketLLM (arXiv 2511.17637) as a method plugin: sub-vectors of the weights are encoded by a small
// meta-network into a latent space, quantised against a learnt codebook, and decoded back. The
// archive keeps the decoder, the codebook and the bit-packed indices; the encoder is thrown away.
// ../shared/docs/pocketllm-method.md is the specification; where the paper and the reference code
// differ both are offered, the reference code's choice being the default.
#include "pocketllm_net.h"

#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/vq_kernels.h"

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
        P::integer("epochs", 50, 1, 100000, "training epochs per group"),
        P::real("lr", "0.016", 1e-7, 10, "Adam learning rate", true),
        P::choice("schedule", "step", {"step", "cosine", "constant"}, "learning-rate schedule"),
        P::integer("lr_step", 15, 1, 100000, "step schedule: epochs between decays"),
        P::real("lr_gamma", "0.1", 0, 1, "step schedule: decay factor"),
        P::integer("batch", 16384, 1, 1 << 24, "sub-vectors per step (rounded down to a multiple of G)", true),
        P::choice("loss", "reference", {"reference", "paper"},
                  "reference: MSE + lambda*codebook term; paper: RMSE + lambda*codebook term"),
        P::real("lambda", "0.4", 0, 1000, "weight of the codebook term mean((C_k - sg(z))^2)"),
        P::real("beta", "0.25", 0, 1000,
                "weight of the commitment term mean((z - sg(C_k))^2); 0 = the reference code (no commitment)"),
        P::choice("init", "normal", {"normal", "kmeans"},
                  "codebook init: normal (std 2/sqrt(latent)) or k-means on the initial latents"),
        P::integer("kmeans_iters", 10, 1, 1000, "k-means iterations for init=kmeans"),
        P::choice("update", "grad", {"grad", "ema"}, "codebook update: grad (the loss) or ema (moving averages)"),
        P::real("ema_decay", "0.99", 0, 0.99999, "update=ema: decay"),
        P::boolean("shuffle", false, "shuffle whole RLN groups every epoch (the reference code does not shuffle)"),
        P::choice("sharing", "matrix", {"matrix", "type", "model"},
                  "one meta-network per matrix (paper), per matrix type across blocks, or one for the whole model"),
        P::boolean("normalize", true,
                   "train on weights divided by their RMS over the group (one fp32 scale stored), so the loss terms "
                   "are balanced whatever the weights' magnitude"),
        P::integer("seed", 1, 0, 2147483647, "random seed (combined with the group id)"),
    };
}

const MethodInfo& methodInfo()
{
    static const MethodInfo info = [] {
        MethodInfo m;
        m.id = "pocketllm";
        m.displayName = "PocketLLM (meta-network VQ)";
        m.version = 1;
        m.description = "Sub-vectors encoded by a small meta-network, vector-quantised in its latent space, decoded "
                        "by the stored decoder (Tian et al., AAAI 2026).";
        m.lossy = true;
        m.bitsFormula = "(rows*cols/d)*ceil(log2 K) + 16*K*latent + 16*decoder_params + 32 (scale), shared bits split over the group";
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
    return l;
}

std::int64_t decoderParameterCount(const Layout& l)
{
    std::int64_t n = 0;
    for (const auto& t : decoderTensorShapes(l.d, l.latent, l.hidden, l.group))
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
void kmeans(const at::Tensor& points, at::Tensor& codebook, int iterations)
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

    // Seeded from the group id so a group's result does not depend on which other groups run.
    at::Generator gen = at::detail::createCPUGenerator(groupSeed(params.getInt("seed"), group.id));
    at::NoGradGuard outerNoGrad; // gradients only where enabled below

    std::vector<at::Tensor> parts;
    std::vector<std::int64_t> counts;
    for (const WeightMatrix& m : group.matrices) {
        parts.push_back(subvectors(m, l.d));
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

    Network net = Network::create(l.d, l.latent, l.hidden, l.group, l.codewords, gen);
    if (params.getText("init") == "kmeans") {
        at::Tensor z = encodeChunked(net, data, l.group);
        // Starting points: K distinct latents chosen by the seeded generator (normal init keeps any excess).
        const std::int64_t take = std::min<std::int64_t>(l.codewords, n);
        const at::Tensor pick = at::randperm(n, gen, at::kLong).narrow(0, 0, take);
        at::Tensor cb = net.codebook.detach().clone();
        cb.narrow(0, 0, take).copy_(z.index_select(0, pick));
        kmeans(z, cb, static_cast<int>(params.getInt("kmeans_iters")));
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
    const at::Tensor codebook16 = roundFp16(net.codebook);
    const std::vector<at::Tensor> decoderTensors = net.decoderParameters();
    std::vector<std::uint8_t> decoderBytes;
    for (const at::Tensor& t : decoderTensors) {
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
    json decoderJson = json::array();
    for (const auto& [name, shape] : decoderTensorShapes(l.d, l.latent, l.hidden, l.group))
        decoderJson.push_back({{"name", name}, {"shape", shape}});
    meta["decoder_tensors"] = decoderJson;
    payload.metaJson = meta.dump();
    payload.sections.push_back({"decoder", std::move(decoderBytes)});
    payload.sections.push_back({"codebook", fp16Bytes(codebook16)});
    std::vector<std::uint8_t> scaleBytes(sizeof scale);
    std::memcpy(scaleBytes.data(), &scale, sizeof scale);
    payload.sections.push_back({"scale", std::move(scaleBytes)});
    payload.sharedBits.scaleBits = 8 * sizeof scale;
    payload.sharedBits.codebookBits = 16ull * l.codewords * l.latent;
    payload.sharedBits.decoderBits = 16ull * decoderParameterCount(l);

    std::int64_t offset = 0;
    for (std::size_t i = 0; i < group.matrices.size(); ++i) {
        const at::Tensor z = encodeChunked(net, data.narrow(0, offset, counts[i]), l.group);
        const at::Tensor idx = nearest(z, codebook16).to(at::kInt).contiguous();
        offset += counts[i];
        MatrixResult result;
        result.ref = group.matrices[i].ref;
        result.bits.indexBits = static_cast<std::uint64_t>(counts[i]) * l.bits;
        payload.matrices.push_back(result);
        payload.sections.push_back({"indices/" + result.ref.name, packBits(idx.data_ptr<std::int32_t>(), idx.numel(), l.bits)});
    }

    // Errors measured on what decompression will produce, through the same decoder code.
    if (auto measured = measureByDecoding(*this, group, payload); !measured)
        return measured.error();
    return payload;
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
    } catch (const std::exception& e) {
        return Error{"pocketllm: group " + payload.groupId + ": bad metadata: " + e.what()};
    }
    if (l.d < 1 || l.d > 64 || l.latent < 1 || l.latent > 1024 || l.hidden < 1 || l.hidden > 4096 || l.codewords < 2 ||
        l.codewords > (1 << 20) || l.bits != indexBits(l.codewords) || l.group < 1 || l.group > (1 << 24))
        return Error{"pocketllm: group " + payload.groupId + ": metadata out of range"};

    const auto shapes = decoderTensorShapes(l.d, l.latent, l.hidden, l.group);
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
    const Decoder decoder = Decoder::fromTensors(decoderTensors, l.group);
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
        const at::Tensor w = roundFp16(weightsFromSubvectors(s, m.ref.rows, m.ref.cols, l.d)).contiguous();
        out.emplace_back(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
    }
    return out;
}

} // namespace

} // namespace pocket::pocketllm

POCKET_METHOD_PLUGIN(pocket::pocketllm::PocketLlmMethod)
