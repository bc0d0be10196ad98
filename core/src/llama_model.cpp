// The only translation unit of core that includes LibTorch headers (they are slow to compile).
#include "pocket/llama_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <malloc.h>
#include <cmath>
#include <thread>

namespace pocket {

namespace {
struct Layer {
    at::Tensor inputNorm, wq, wk, wv, wo, bq, bk, bv, postNorm, wGate, wUp, wDown;
};

at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps)
{
    return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

at::Tensor rotateHalf(const at::Tensor& x)
{
    const auto half = x.size(-1) / 2;
    return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

std::string describe(const c10::Error& e)
{
    return e.what_without_backtrace();
}
} // namespace

struct LlamaModel::Impl {
    ModelConfig config;
    at::Tensor embed, finalNorm, head, invFreq;
    std::vector<Layer> layers;
    std::uint64_t bytes = 0;

    at::Tensor forward(const at::Tensor& tokens) const; // [B, T] int64 -> logits [B, T, V]
};

LlamaModel::LlamaModel() : m_impl(std::make_unique<Impl>()) {}
LlamaModel::~LlamaModel() = default;

const ModelConfig& LlamaModel::config() const { return m_impl->config; }
std::uint64_t LlamaModel::weightBytes() const { return m_impl->bytes; }

Result<std::unique_ptr<LlamaModel>> LlamaModel::load(const Checkpoint& checkpoint, const std::function<bool(int, int)>& onTensor)
{
    try {
        c10::InferenceMode guard;
        std::unique_ptr<LlamaModel> model(new LlamaModel());
        Impl& m = *model->m_impl;
        m.config = checkpoint.config();
        const ModelConfig& c = m.config;
        const auto& infos = checkpoint.tensors();
        int done = 0;
        auto get = [&](const std::string& name) -> Result<at::Tensor> {
            auto data = checkpoint.load(name);
            if (!data)
                return data.error();
            at::Tensor t = at::empty(data->info.shape, at::kFloat);
            convertToFloat(data->info.dtype, data->data, static_cast<std::size_t>(t.numel()), t.data_ptr<float>());
            m.bytes += static_cast<std::uint64_t>(t.numel()) * 4;
            if (onTensor && !onTensor(++done, static_cast<int>(infos.size())))
                return Error{"cancelled"};
            return t;
        };
#define POCKET_GET(dst, name)          \
    do {                               \
        auto r = get(name);            \
        if (!r)                        \
            return r.error();          \
        dst = std::move(r).value();    \
    } while (0)
        POCKET_GET(m.embed, "model.embed_tokens.weight");
        for (int l = 0; l < c.numLayers; ++l) {
            const std::string p = "model.layers." + std::to_string(l);
            Layer layer;
            POCKET_GET(layer.inputNorm, p + ".input_layernorm.weight");
            POCKET_GET(layer.wq, matrixTensorName(l, MatrixType::Q));
            POCKET_GET(layer.wk, matrixTensorName(l, MatrixType::K));
            POCKET_GET(layer.wv, matrixTensorName(l, MatrixType::V));
            if (c.attentionBias) {
                POCKET_GET(layer.bq, p + ".self_attn.q_proj.bias");
                POCKET_GET(layer.bk, p + ".self_attn.k_proj.bias");
                POCKET_GET(layer.bv, p + ".self_attn.v_proj.bias");
            }
            POCKET_GET(layer.wo, matrixTensorName(l, MatrixType::O));
            POCKET_GET(layer.postNorm, p + ".post_attention_layernorm.weight");
            POCKET_GET(layer.wGate, matrixTensorName(l, MatrixType::Gate));
            POCKET_GET(layer.wUp, matrixTensorName(l, MatrixType::Up));
            POCKET_GET(layer.wDown, matrixTensorName(l, MatrixType::Down));
            m.layers.push_back(std::move(layer));
        }
        POCKET_GET(m.finalNorm, "model.norm.weight");
        if (c.tieWordEmbeddings)
            m.head = m.embed;
        else
            POCKET_GET(m.head, "lm_head.weight");
#undef POCKET_GET
        // inv_freq[i] = theta^(-2i/head_dim), computed in double as transformers does in fp32 from int64.
        m.invFreq = at::pow(c.ropeTheta, -at::arange(0, c.headDim, 2, at::kDouble) / static_cast<double>(c.headDim)).to(at::kFloat);
        return model;
    } catch (const c10::Error& e) {
        return fileError(checkpoint.path(), "cannot load weights: " + describe(e));
    } catch (const std::exception& e) {
        return fileError(checkpoint.path(), std::string("cannot load weights: ") + e.what());
    }
}

at::Tensor LlamaModel::Impl::forward(const at::Tensor& tokens) const
{
    const ModelConfig& c = config;
    const std::int64_t batch = tokens.size(0), len = tokens.size(1);
    const std::int64_t heads = c.numHeads, kvHeads = c.numKvHeads, hd = c.headDim;

    at::Tensor x = at::embedding(embed, tokens); // [B, T, D]
    const at::Tensor positions = at::arange(len, at::kFloat);
    const at::Tensor freqs = at::outer(positions, invFreq);             // [T, hd/2]
    const at::Tensor angles = at::cat({freqs, freqs}, -1);              // [T, hd]
    const at::Tensor cos = angles.cos(), sin = angles.sin();
    at::Tensor mask = at::ones({len, len}, at::kBool).triu(1);          // true = masked
    if (c.slidingWindow > 0 && len > c.slidingWindow)
        mask = mask.logical_or(at::ones({len, len}, at::kBool).tril(-c.slidingWindow));
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

    for (const Layer& layer : layers) {
        const at::Tensor h = rmsNorm(x, layer.inputNorm, c.rmsNormEps);
        at::Tensor q = at::linear(h, layer.wq, layer.bq).view({batch, len, heads, hd}).transpose(1, 2);
        at::Tensor k = at::linear(h, layer.wk, layer.bk).view({batch, len, kvHeads, hd}).transpose(1, 2);
        at::Tensor v = at::linear(h, layer.wv, layer.bv).view({batch, len, kvHeads, hd}).transpose(1, 2);
        q = q * cos + rotateHalf(q) * sin;
        k = k * cos + rotateHalf(k) * sin;
        if (kvHeads != heads) { // each key/value head serves heads/kvHeads consecutive query heads
            k = k.repeat_interleave(heads / kvHeads, 1);
            v = v.repeat_interleave(heads / kvHeads, 1);
        }
        at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
        scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
        const at::Tensor attn = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({batch, len, heads * hd});
        x = x + at::linear(attn, layer.wo);
        const at::Tensor h2 = rmsNorm(x, layer.postNorm, c.rmsNormEps);
        x = x + at::linear(at::silu(at::linear(h2, layer.wGate)) * at::linear(h2, layer.wUp), layer.wDown);
    }
    return at::linear(rmsNorm(x, finalNorm, c.rmsNormEps), head);
}

namespace {
Status checkTokens(const std::vector<std::int32_t>& tokens, std::int64_t vocab)
{
    for (const auto t : tokens)
        if (t < 0 || t >= vocab)
            return Error{"token id " + std::to_string(t) + " is outside the model's vocabulary of " + std::to_string(vocab)};
    return {};
}
} // namespace

Result<std::vector<float>> LlamaModel::logits(const std::vector<std::int32_t>& tokens) const
{
    if (tokens.empty())
        return Error{"no tokens to run"};
    if (auto s = checkTokens(tokens, m_impl->config.vocabSize); !s)
        return s.error();
    try {
        c10::InferenceMode guard;
        const at::Tensor input = at::tensor(std::vector<std::int64_t>(tokens.begin(), tokens.end()), at::kLong).view({1, -1});
        const at::Tensor out = m_impl->forward(input).contiguous();
        return std::vector<float>(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
    } catch (const c10::Error& e) {
        return Error{"forward pass failed: " + describe(e)};
    } catch (const std::exception& e) {
        return Error{std::string("forward pass failed: ") + e.what()};
    }
}

Result<std::vector<std::vector<double>>> LlamaModel::nextTokenNll(const std::vector<std::vector<std::int32_t>>& batch) const
{
    if (batch.empty() || batch[0].size() < 2)
        return Error{"each sequence needs at least two tokens"};
    const std::size_t len = batch[0].size();
    std::vector<std::int64_t> flat;
    flat.reserve(batch.size() * len);
    for (const auto& seq : batch) {
        if (seq.size() != len)
            return Error{"sequences of one batch must have the same length"};
        if (auto s = checkTokens(seq, m_impl->config.vocabSize); !s)
            return s.error();
        flat.insert(flat.end(), seq.begin(), seq.end());
    }
    try {
        c10::InferenceMode guard;
        const auto b = static_cast<std::int64_t>(batch.size());
        const auto t = static_cast<std::int64_t>(len);
        const at::Tensor input = at::tensor(flat, at::kLong).view({b, t});
        const at::Tensor logProbs = at::log_softmax(m_impl->forward(input).narrow(1, 0, t - 1), -1);
        const at::Tensor targets = input.narrow(1, 1, t - 1).unsqueeze(-1);
        const at::Tensor nll = (-logProbs.gather(-1, targets).squeeze(-1)).to(at::kDouble).contiguous();
        std::vector<std::vector<double>> out(batch.size());
        const double* p = nll.data_ptr<double>();
        for (std::size_t i = 0; i < batch.size(); ++i) out[i].assign(p + i * (len - 1), p + (i + 1) * (len - 1));
        return out;
    } catch (const c10::Error& e) {
        return Error{"forward pass failed: " + describe(e)};
    } catch (const std::exception& e) {
        return Error{std::string("forward pass failed: ") + e.what()};
    }
}

void setComputeThreads(int threads)
{
    // glibc returns large freed blocks to the OS at once (mmap threshold, heap trimming), so every
    // activation tensor of a forward pass is page-faulted in anew; that cost 3-4x the compute on
    // small models. Keep freed memory in the process instead (measured: 3.3k -> 9-12k tokens/s).
    static const bool tuned = [] {
        mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
        mallopt(M_TOP_PAD, 64 * 1024 * 1024);
        return true;
    }();
    (void)tuned;
    const int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(n);
}

int computeThreads() { return at::get_num_threads(); }

double measureMatmulGflops(int n, int repeats)
{
    c10::InferenceMode guard;
    const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
    at::Tensor c = at::matmul(a, b); // warm-up
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) c = at::matmul(a, b);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return 2.0 * n * static_cast<double>(n) * n * repeats / seconds / 1e9;
}

} // namespace pocket
