// The only translation unit of core that includes LibTorch headers (they are slow to compile).
#include "pocket/model/llama_model.h"
#include "pocket/support/timing.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstring>
#include <map>
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

// Running sums of X^T X for the four distinct inputs of a block's linear layers.
struct InputStats {
    at::Tensor attnIn, attnOut, mlpIn, mlpAct; // [in, in] float
    std::int64_t rows = 0;                      // tokens seen
    static void add(at::Tensor& sum, const at::Tensor& x)
    {
        const at::Tensor flat = x.reshape({-1, x.size(-1)});
        const at::Tensor xtx = at::matmul(flat.t(), flat);
        sum = sum.defined() ? sum.add_(xtx) : xtx;
    }
};

Status checkTokens(const std::vector<std::int32_t>& tokens, std::int64_t vocab);

// RoPE tables and causal mask for sequences of `len` tokens.
struct Positional {
    at::Tensor cos, sin, mask;
};
} // namespace

struct LlamaModel::Impl {
    ModelConfig config;
    at::Tensor embed, finalNorm, head, invFreq;
    std::vector<Layer> layers;
    std::uint64_t bytes = 0;

    at::Tensor forward(const at::Tensor& tokens) const; // [B, T] int64 -> logits [B, T, V]
    Positional positional(std::int64_t len) const;
    // One decoder block on hidden states [B, T, D]; `stats` (optional) accumulates its linear inputs.
    at::Tensor block(const Layer& layer, const at::Tensor& x, const Positional& pos, InputStats* stats) const;
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
                return Error::cancelled();
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

Positional LlamaModel::Impl::positional(std::int64_t len) const
{
    const at::Tensor positions = at::arange(len, at::kFloat);
    const at::Tensor freqs = at::outer(positions, invFreq); // [T, hd/2]
    const at::Tensor angles = at::cat({freqs, freqs}, -1);  // [T, hd]
    at::Tensor mask = at::ones({len, len}, at::kBool).triu(1); // true = masked
    if (config.slidingWindow > 0 && len > config.slidingWindow)
        mask = mask.logical_or(at::ones({len, len}, at::kBool).tril(-config.slidingWindow));
    return {angles.cos(), angles.sin(), mask};
}

at::Tensor LlamaModel::Impl::block(const Layer& layer, const at::Tensor& input, const Positional& pos, InputStats* stats) const
{
    const ModelConfig& c = config;
    const std::int64_t batch = input.size(0), len = input.size(1);
    const std::int64_t heads = c.numHeads, kvHeads = c.numKvHeads, hd = c.headDim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    at::Tensor x = input;
    const at::Tensor h = rmsNorm(x, layer.inputNorm, c.rmsNormEps);
    at::Tensor q = at::linear(h, layer.wq, layer.bq).view({batch, len, heads, hd}).transpose(1, 2);
    at::Tensor k = at::linear(h, layer.wk, layer.bk).view({batch, len, kvHeads, hd}).transpose(1, 2);
    at::Tensor v = at::linear(h, layer.wv, layer.bv).view({batch, len, kvHeads, hd}).transpose(1, 2);
    q = q * pos.cos + rotateHalf(q) * pos.sin;
    k = k * pos.cos + rotateHalf(k) * pos.sin;
    if (kvHeads != heads) { // each key/value head serves heads/kvHeads consecutive query heads
        k = k.repeat_interleave(heads / kvHeads, 1);
        v = v.repeat_interleave(heads / kvHeads, 1);
    }
    at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
    scores.masked_fill_(pos.mask, -std::numeric_limits<float>::infinity());
    const at::Tensor attn = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({batch, len, heads * hd});
    x = x + at::linear(attn, layer.wo);
    const at::Tensor h2 = rmsNorm(x, layer.postNorm, c.rmsNormEps);
    const at::Tensor act = at::silu(at::linear(h2, layer.wGate)) * at::linear(h2, layer.wUp);
    if (stats) {
        InputStats::add(stats->attnIn, h);
        InputStats::add(stats->attnOut, attn);
        InputStats::add(stats->mlpIn, h2);
        InputStats::add(stats->mlpAct, act);
        stats->rows += batch * len;
    }
    return x + at::linear(act, layer.wDown);
}

at::Tensor LlamaModel::Impl::forward(const at::Tensor& tokens) const
{
    const Positional pos = positional(tokens.size(1));
    at::Tensor x = at::embedding(embed, tokens); // [B, T, D]
    for (const Layer& layer : layers)
        x = block(layer, x, pos, nullptr);
    return at::linear(rmsNorm(x, finalNorm, config.rmsNormEps), head);
}

// ---------------------------------------------------------------------------------------------

struct CalibrationRun::State {
    LlamaModel::Impl* model = nullptr;
    std::vector<at::Tensor> hidden; // per chunk of sequences, [B, T, D]
    Positional pos;
    int nextBlock = 0;
};

CalibrationRun::CalibrationRun() : m_state(std::make_unique<State>()) {}
CalibrationRun::~CalibrationRun() = default;

int CalibrationRun::nextBlock() const { return m_state->nextBlock; }

Result<std::map<MatrixType, std::vector<float>>> CalibrationRun::hessians() const
{
    State& s = *m_state;
    if (s.nextBlock >= static_cast<int>(s.model->layers.size()))
        return Error{"calibration: no block left"};
    try {
        c10::InferenceMode guard;
        InputStats stats;
        for (const at::Tensor& x : s.hidden)
            (void)s.model->block(s.model->layers[static_cast<std::size_t>(s.nextBlock)], x, s.pos, &stats);
        const double factor = 2.0 / static_cast<double>(stats.rows);
        const auto flat = [&](const at::Tensor& sum) {
            const at::Tensor h = (sum * factor).contiguous();
            return std::vector<float>(h.data_ptr<float>(), h.data_ptr<float>() + h.numel());
        };
        std::map<MatrixType, std::vector<float>> out;
        out[MatrixType::Q] = out[MatrixType::K] = out[MatrixType::V] = flat(stats.attnIn);
        out[MatrixType::O] = flat(stats.attnOut);
        out[MatrixType::Gate] = out[MatrixType::Up] = flat(stats.mlpIn);
        out[MatrixType::Down] = flat(stats.mlpAct);
        return out;
    } catch (const c10::Error& e) {
        return Error{"calibration failed: " + describe(e)};
    } catch (const std::exception& e) {
        return Error{std::string("calibration failed: ") + e.what()};
    }
}

Status CalibrationRun::advance()
{
    State& s = *m_state;
    if (s.nextBlock >= static_cast<int>(s.model->layers.size()))
        return Error{"calibration: no block left"};
    try {
        c10::InferenceMode guard;
        for (at::Tensor& x : s.hidden)
            x = s.model->block(s.model->layers[static_cast<std::size_t>(s.nextBlock)], x, s.pos, nullptr);
        ++s.nextBlock;
        return {};
    } catch (const std::exception& e) {
        return Error{std::string("calibration failed: ") + e.what()};
    }
}

Result<std::unique_ptr<CalibrationRun>> LlamaModel::startCalibration(const std::vector<std::vector<std::int32_t>>& sequences)
{
    if (sequences.empty() || sequences[0].size() < 2)
        return Error{"calibration needs at least one sequence of two or more tokens"};
    const std::size_t len = sequences[0].size();
    for (const auto& seq : sequences) {
        if (seq.size() != len)
            return Error{"calibration sequences must have the same length"};
        if (auto st = checkTokens(seq, m_impl->config.vocabSize); !st)
            return st.error();
    }
    try {
        c10::InferenceMode guard;
        std::unique_ptr<CalibrationRun> run(new CalibrationRun());
        run->m_state->model = m_impl.get();
        run->m_state->pos = m_impl->positional(static_cast<std::int64_t>(len));
        const std::size_t chunk = 8; // sequences per forward, bounding activation memory
        for (std::size_t b = 0; b < sequences.size(); b += chunk) {
            std::vector<std::int64_t> flat;
            const std::size_t end = std::min(sequences.size(), b + chunk);
            for (std::size_t i = b; i < end; ++i)
                flat.insert(flat.end(), sequences[i].begin(), sequences[i].end());
            const at::Tensor tokens = at::tensor(flat, at::kLong).view({static_cast<std::int64_t>(end - b), static_cast<std::int64_t>(len)});
            run->m_state->hidden.push_back(at::embedding(m_impl->embed, tokens));
        }
        return run;
    } catch (const std::exception& e) {
        return Error{std::string("calibration failed: ") + e.what()};
    }
}

Status LlamaModel::setWeight(const std::string& name, const std::vector<float>& values)
{
    for (std::size_t l = 0; l < m_impl->layers.size(); ++l) {
        Layer& layer = m_impl->layers[l];
        at::Tensor* slots[] = {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.wGate, &layer.wUp, &layer.wDown};
        for (std::size_t t = 0; t < 7; ++t) {
            if (matrixTensorName(static_cast<int>(l), kMatrixTypes[t]) != name)
                continue;
            at::Tensor& w = *slots[t];
            if (static_cast<std::int64_t>(values.size()) != w.numel())
                return Error{name + ": expected " + std::to_string(w.numel()) + " values, got " + std::to_string(values.size())};
            c10::InferenceMode guard;
            std::memcpy(w.data_ptr<float>(), values.data(), values.size() * sizeof(float));
            return {};
        }
    }
    return Error{"no linear weight " + name + " in the model"};
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
    const double seconds = secondsSince(start);
    return 2.0 * n * static_cast<double>(n) * n * repeats / seconds / 1e9;
}

} // namespace pocket
