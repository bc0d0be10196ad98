// The only translation unit of core that includes LibTorch headers (they are slow to compile).
#include "pocket/model/llama_model.h"
#include "pocket/support/timing.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <malloc.h>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <thread>

namespace pocket {

namespace {
// A linear weight: decoded (`resident`, fp32 or bf16) or kept compressed (`source`).
struct Weight {
    at::Tensor resident;
    std::shared_ptr<const CompressedMatrix> source;
    std::int64_t rows = 0, cols = 0;
    // A low-rank adapter: + scale * (x A^T) B^T (fp32; undefined when none).
    at::Tensor loraA, loraB;
    int loraRank = 0;
    float loraAlpha = 0;
};

struct Layer {
    at::Tensor inputNorm, bq, bk, bv, postNorm;
    Weight wq, wk, wv, wo, wGate, wUp, wDown;
    Weight* weights[7] = {&wq, &wk, &wv, &wo, &wGate, &wUp, &wDown}; // kMatrixTypes order
    Layer() = default;
    Layer(const Layer&) = delete;
    Layer& operator=(const Layer&) = delete;
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
    // Accumulated in place (addmm_): no [in, in] temporary per chunk.
    static void add(at::Tensor& sum, const at::Tensor& x)
    {
        const at::Tensor flat = x.reshape({-1, x.size(-1)});
        if (sum.defined())
            sum.addmm_(flat.t(), flat);
        else
            sum = at::matmul(flat.t(), flat);
    }
};

Status checkTokens(const std::vector<std::int32_t>& tokens, std::int64_t vocab);

// RoPE tables and causal mask for `len` tokens at positions start .. start+len-1 attending to keys
// at positions 0 .. start+len-1 (mask undefined when nothing is masked).
struct Positional {
    at::Tensor cos, sin, mask;
};

// Keys and values of the tokens fed so far, per layer: [1, kvHeads, capacity, headDim].
struct KvCache {
    std::vector<at::Tensor> k, v;
    std::int64_t length = 0;
};
} // namespace

struct LlamaModel::Impl {
    ModelConfig config;
    ComputePrecision precision = ComputePrecision::F32;
    at::Tensor embed, finalNorm, head, invFreq;
    std::vector<std::unique_ptr<Layer>> layers;
    WeightMemory memory;
    // The decode buffer of compressed weights (fp32, and bf16 for bf16 compute), used by one
    // forward pass at a time.
    at::Tensor bufferF32, bufferBf16;
    mutable std::mutex bufferMutex;

    // [B, T] int64 -> logits [B, T, V]; with a cache, the tokens follow the cached ones.
    at::Tensor forward(const at::Tensor& tokens, KvCache* cache = nullptr, const std::atomic<bool>* cancel = nullptr) const;
    Positional positional(std::int64_t start, std::int64_t len) const;
    // One decoder block on hidden states [B, T, D]; `stats` (optional) accumulates its linear inputs.
    at::Tensor block(std::size_t index, const at::Tensor& x, const Positional& pos, InputStats* stats, KvCache* cache = nullptr) const;
    // x W^T (+ bias) at the model's precision, decoding W first if it is kept compressed.
    at::Tensor linear(const at::Tensor& x, const Weight& w, const at::Tensor& bias = {}) const;
    at::Tensor matrix(const Weight& w) const; // the decoded weight (in the buffer if compressed)
    at::Tensor embedTokens(const at::Tensor& tokens) const; // [B, T] ids -> [B, T, D] fp32 (an error once released)
    bool anyCompressed() const { return memory.matricesCompressed > 0; }
};

LlamaModel::LlamaModel() : m_impl(std::make_unique<Impl>()) {}
LlamaModel::~LlamaModel() = default;

const ModelConfig& LlamaModel::config() const { return m_impl->config; }
ComputePrecision LlamaModel::precision() const { return m_impl->precision; }
std::uint64_t LlamaModel::weightBytes() const { return m_impl->memory.total(); }
const WeightMemory& LlamaModel::memory() const { return m_impl->memory; }

const char* computePrecisionName(ComputePrecision precision) { return precision == ComputePrecision::BF16 ? "bf16" : "fp32"; }

namespace {
// Thrown by the forward pass when its cancel flag is raised between blocks.
struct ForwardCancelled {};

std::uint64_t tensorBytes(const at::Tensor& t) { return t.defined() ? static_cast<std::uint64_t>(t.numel() * t.element_size()) : 0; }

// MemAvailable of /proc/meminfo in bytes (0 when unknown).
std::uint64_t memAvailableBytes()
{
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    std::fclose(f);
    return static_cast<std::uint64_t>(kb) * 1024;
}

std::string mib(std::uint64_t bytes)
{
    char text[32];
    const double m = static_cast<double>(bytes) / (1 << 20);
    std::snprintf(text, sizeof text, m < 100 ? "%.2f MiB" : "%.0f MiB", m);
    return text;
}
} // namespace

std::string describeMemory(const WeightMemory& m)
{
    std::string text = mib(m.total());
    if (m.matricesCompressed + m.matricesDecoded > 0) {
        text += ": " + std::to_string(m.matricesCompressed) + " matrices compressed (" + mib(m.compressedBytes) + " + buffer " +
                mib(m.bufferBytes) + "), " + std::to_string(m.matricesDecoded) + " decoded (" + mib(m.decodedBytes) + "), other tensors " +
                mib(m.fixedBytes) + "; minimum " + mib(m.minimumBytes) + ", all decoded " + mib(m.allDecodedBytes);
        char decode[64];
        std::snprintf(decode, sizeof decode, "; decoding %.3f s per forward pass", m.decodeSecondsPerPass);
        text += decode;
    }
    return text;
}

// Decides which compressed matrices are kept decoded within the budget (the ones whose decoding
// costs the most time per byte of memory it saves go first), decodes those, and fills `memory`.
static Status placeCompressed(LlamaModel::Impl& m, std::int64_t budget)
{
    std::vector<Weight*> compressed;
    std::int64_t maxWeights = 0;
    for (auto& layer : m.layers)
        for (Weight* w : layer->weights)
            if (w->source) {
                compressed.push_back(w);
                maxWeights = std::max(maxWeights, w->rows * w->cols);
            }
    WeightMemory& mem = m.memory;
    const std::uint64_t residentPerWeight = m.precision == ComputePrecision::BF16 ? 2 : 4;
    const auto residentBytes = [&](const Weight* w) { return static_cast<std::uint64_t>(w->rows * w->cols) * residentPerWeight; };
    std::uint64_t allCompressed = 0, allResident = 0;
    for (const Weight* w : compressed) {
        allCompressed += w->source->bytes();
        allResident += residentBytes(w);
    }
    const std::uint64_t buffer = static_cast<std::uint64_t>(maxWeights) * (4 + (m.precision == ComputePrecision::BF16 ? 2 : 0));
    mem.minimumBytes = mem.fixedBytes + allCompressed + (compressed.empty() ? 0 : buffer);
    mem.allDecodedBytes = mem.fixedBytes + allResident;
    if (budget == LoadOptions::kMinimum)
        budget = static_cast<std::int64_t>(mem.minimumBytes);
    if (budget == LoadOptions::kAuto) { // the minimum is in memory already: what is left, less 1 GiB
        const std::uint64_t available = memAvailableBytes();
        const std::uint64_t extra = available > (1ull << 30) ? available - (1ull << 30) : 0;
        budget = static_cast<std::int64_t>(std::min(mem.allDecodedBytes, mem.minimumBytes + extra));
    }
    if (budget != LoadOptions::kUnlimited && static_cast<std::uint64_t>(budget) < mem.minimumBytes)
        return Error::usage("a memory budget of " + mib(static_cast<std::uint64_t>(budget)) + " is below this model's minimum of " +
                                mib(mem.minimumBytes) + " (uncompressed tensors " + mib(mem.fixedBytes) + ", every matrix compressed " +
                                mib(allCompressed) + ", one decode buffer " + mib(buffer) + ")",
                            "memory budget");
    if (compressed.empty())
        return {};
    // Decode time per weight, measured once per speed class (a decode of its first matrix).
    m.bufferF32 = at::empty({maxWeights}, at::kFloat);
    std::map<std::string, double> secondsPerWeight;
    std::vector<double> seconds(compressed.size());
    for (std::size_t i = 0; i < compressed.size(); ++i) {
        const Weight* w = compressed[i];
        const std::string cls = w->source->speedClass();
        if (!secondsPerWeight.count(cls)) {
            const auto start = std::chrono::steady_clock::now();
            POCKET_TRY(w->source->decodeInto(m.bufferF32.data_ptr<float>(), at::get_num_threads()));
            secondsPerWeight[cls] = std::max(1e-12, secondsSince(start) / static_cast<double>(w->rows * w->cols));
        }
        seconds[i] = secondsPerWeight[cls] * static_cast<double>(w->rows * w->cols);
    }
    // Matrices sharing a payload are kept decoded together (its memory is freed only then), in
    // order of decode time per byte saved.
    std::map<const void*, std::vector<std::size_t>> byPayload;
    for (std::size_t i = 0; i < compressed.size(); ++i)
        byPayload[compressed[i]->source->payloadKey()].push_back(i);
    struct Candidate {
        std::vector<std::size_t> members;
        double seconds = 0;
        std::int64_t saved = 0; // bytes freed minus bytes added by keeping them decoded
    };
    std::vector<Candidate> candidates;
    for (const auto& [key, members] : byPayload) {
        Candidate c;
        c.members = members;
        for (std::size_t i : members) {
            c.seconds += seconds[i];
            c.saved += static_cast<std::int64_t>(compressed[i]->source->bytes()) - static_cast<std::int64_t>(residentBytes(compressed[i]));
        }
        candidates.push_back(std::move(c));
    }
    const auto priority = [](const Candidate& c) {
        return c.saved >= 0 ? std::numeric_limits<double>::infinity() : c.seconds / static_cast<double>(-c.saved);
    };
    std::stable_sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) { return priority(a) > priority(b); });
    std::int64_t total = static_cast<std::int64_t>(mem.minimumBytes);
    std::vector<bool> keep(compressed.size(), false);
    const bool everything = budget == LoadOptions::kUnlimited || mem.allDecodedBytes <= static_cast<std::uint64_t>(budget); // no buffer then
    for (const Candidate& c : candidates) {
        if (everything || total - c.saved <= budget) {
            for (std::size_t i : c.members)
                keep[i] = true;
            total -= c.saved;
        }
    }
    for (std::size_t i = 0; i < compressed.size(); ++i) {
        Weight* w = compressed[i];
        if (!keep[i]) {
            mem.compressedBytes += w->source->bytes();
            mem.decodeSecondsPerPass += seconds[i];
            ++mem.matricesCompressed;
            continue;
        }
        POCKET_TRY(w->source->decodeInto(m.bufferF32.data_ptr<float>(), at::get_num_threads()));
        const at::Tensor decoded = m.bufferF32.narrow(0, 0, w->rows * w->cols).view({w->rows, w->cols});
        w->resident = m.precision == ComputePrecision::BF16 ? decoded.to(at::kBFloat16) : decoded.clone();
        w->source.reset();
        mem.decodedBytes += residentBytes(w);
        ++mem.matricesDecoded;
    }
    if (mem.matricesCompressed == 0) {
        m.bufferF32 = at::Tensor();
    } else {
        if (m.precision == ComputePrecision::BF16)
            m.bufferBf16 = at::empty({maxWeights}, at::kBFloat16);
        mem.bufferBytes = buffer;
    }
    return {};
}

// Long: one step per tensor of the checkpoint, in the model's order (one macro call each).
Result<std::unique_ptr<LlamaModel>> LlamaModel::load(const Checkpoint& checkpoint, const std::function<bool(int, int)>& onTensor,
                                                     LoadOptions options)
{
    if (options.trainable && (options.precision != ComputePrecision::F32 || !options.compressed.empty()))
        return Error::usage("a model to train adapters on is loaded in fp32 with every weight decoded", "precision");
    try {
        c10::InferenceMode guard(!options.trainable);
        std::unique_ptr<LlamaModel> model(new LlamaModel());
        Impl& m = *model->m_impl;
        m.config = checkpoint.config();
        m.precision = options.precision;
        const ModelConfig& c = m.config;
        const int total = static_cast<int>(checkpoint.tensors().size() - std::min(checkpoint.tensors().size(), options.compressed.size()));
        const std::int64_t budget = options.memoryBudget;
        int done = 0;
        // `low`: stored at the compute precision (bf16 for bf16 compute); otherwise fp32.
        auto get = [&](const std::string& name, bool low) -> Result<at::Tensor> {
            auto data = checkpoint.load(name);
            if (!data)
                return data.error();
            at::Tensor t = at::empty(data->info.shape, at::kFloat);
            convertToFloat(data->info.dtype, data->data, static_cast<std::size_t>(t.numel()), t.data_ptr<float>());
            if (low && m.precision == ComputePrecision::BF16)
                t = t.to(at::kBFloat16);
            m.memory.fixedBytes += tensorBytes(t);
            if (onTensor && !onTensor(++done, total))
                return Error::cancelled();
            return t;
        };
        auto getWeight = [&](const std::string& name, Weight& w) -> Status {
            const TensorInfo* info = checkpoint.find(name);
            if (!info || info->shape.size() != 2)
                return fileError(checkpoint.path(), "no matrix " + name);
            w.rows = info->shape[0];
            w.cols = info->shape[1];
            const auto it = options.compressed.find(name);
            if (it != options.compressed.end()) {
                w.source = std::move(it->second); // the model holds the only reference from now on
                options.compressed.erase(it);
                return {};
            }
            auto t = get(name, true);
            if (!t)
                return t.error();
            w.resident = std::move(*t);
            return {};
        };
#define POCKET_GET(dst, name, low)     \
    do {                               \
        auto r = get(name, low);       \
        if (!r)                        \
            return r.error();          \
        dst = std::move(r).value();    \
    } while (0)
        POCKET_GET(m.embed, "model.embed_tokens.weight", true);
        for (int l = 0; l < c.numLayers; ++l) {
            const std::string p = "model.layers." + std::to_string(l);
            auto layer = std::make_unique<Layer>();
            POCKET_GET(layer->inputNorm, p + ".input_layernorm.weight", false);
            for (std::size_t t = 0; t < 7; ++t)
                POCKET_TRY(getWeight(matrixTensorName(l, kMatrixTypes[t]), *layer->weights[t]));
            if (c.attentionBias) {
                POCKET_GET(layer->bq, p + ".self_attn.q_proj.bias", false);
                POCKET_GET(layer->bk, p + ".self_attn.k_proj.bias", false);
                POCKET_GET(layer->bv, p + ".self_attn.v_proj.bias", false);
            }
            POCKET_GET(layer->postNorm, p + ".post_attention_layernorm.weight", false);
            m.layers.push_back(std::move(layer));
        }
        POCKET_GET(m.finalNorm, "model.norm.weight", false);
        if (options.withoutHead)
            ; // calibration only: no head, tied or not (releaseEmbeddings then frees the embeddings)
        else if (c.tieWordEmbeddings)
            m.head = m.embed;
        else
            POCKET_GET(m.head, "lm_head.weight", true);
#undef POCKET_GET
        // inv_freq[i] = theta^(-2i/head_dim), computed in double as transformers does in fp32 from int64.
        m.invFreq = at::pow(c.ropeTheta, -at::arange(0, c.headDim, 2, at::kDouble) / static_cast<double>(c.headDim)).to(at::kFloat);
        options.compressed.clear(); // any not used by this model
        POCKET_TRY(placeCompressed(m, budget));
        if (!options.adapters.empty())
            if (auto st = model->setAdapters(options.adapters); !st)
                return st.error().prefixed(checkpoint.path());
        return model;
    } catch (const c10::Error& e) {
        return fileError(checkpoint.path(), "cannot load weights: " + describe(e));
    } catch (const std::exception& e) {
        return fileError(checkpoint.path(), std::string("cannot load weights: ") + e.what());
    }
}

Positional LlamaModel::Impl::positional(std::int64_t start, std::int64_t len) const
{
    const at::Tensor positions = at::arange(start, start + len, at::kLong).to(at::kFloat);
    const at::Tensor freqs = at::outer(positions, invFreq); // [T, hd/2]
    const at::Tensor angles = at::cat({freqs, freqs}, -1);  // [T, hd]
    Positional pos{angles.cos(), angles.sin(), at::Tensor()};
    const std::int64_t keys = start + len;
    const bool windowed = config.slidingWindow > 0 && keys > config.slidingWindow;
    if (len > 1 || windowed) {
        const at::Tensor q = at::arange(start, keys, at::kLong).unsqueeze(1); // query positions
        const at::Tensor k = at::arange(0, keys, at::kLong).unsqueeze(0);     // key positions
        pos.mask = k > q; // true = masked
        if (windowed)
            pos.mask = pos.mask.logical_or(q - k >= config.slidingWindow);
    }
    return pos;
}

at::Tensor LlamaModel::Impl::embedTokens(const at::Tensor& tokens) const
{
    if (!embed.defined())
        throw std::runtime_error("the model's embeddings were released (after its calibration run started)");
    return at::embedding(embed, tokens).to(at::kFloat);
}

at::Tensor LlamaModel::Impl::matrix(const Weight& w) const
{
    if (w.resident.defined())
        return w.resident;
    if (!w.source)
        throw std::runtime_error("a linear weight of a block the calibration has passed was used (released)");
    const Status status = w.source->decodeInto(bufferF32.data_ptr<float>(), at::get_num_threads());
    if (!status)
        throw std::runtime_error(status.message());
    const at::Tensor decoded = bufferF32.narrow(0, 0, w.rows * w.cols).view({w.rows, w.cols});
    if (precision != ComputePrecision::BF16)
        return decoded;
    return bufferBf16.narrow(0, 0, w.rows * w.cols).view({w.rows, w.cols}).copy_(decoded);
}

namespace {
// x W^T (+ bias): fp32, or bf16 products accumulated by oneDNN and returned as fp32.
at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias)
{
    if (w.scalar_type() != at::kBFloat16)
        return at::linear(x, w, bias);
    at::Tensor y = at::linear(x.to(at::kBFloat16), w).to(at::kFloat);
    return bias.defined() ? y.add_(bias) : y;
}
} // namespace

at::Tensor LlamaModel::Impl::linear(const at::Tensor& x, const Weight& w, const at::Tensor& bias) const
{
    at::Tensor y = project(x, matrix(w), bias);
    if (w.loraA.defined())
        y = y + at::linear(at::linear(x, w.loraA), w.loraB) * (static_cast<double>(w.loraAlpha) / w.loraRank);
    return y;
}

at::Tensor LlamaModel::Impl::block(std::size_t index, const at::Tensor& input, const Positional& pos, InputStats* stats, KvCache* cache) const
{
    const Layer& layer = *layers[index];
    const ModelConfig& c = config;
    const std::int64_t batch = input.size(0), len = input.size(1);
    const std::int64_t heads = c.numHeads, kvHeads = c.numKvHeads, hd = c.headDim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    at::Tensor x = input;
    const at::Tensor h = rmsNorm(x, layer.inputNorm, c.rmsNormEps);
    at::Tensor q = linear(h, layer.wq, layer.bq).view({batch, len, heads, hd}).transpose(1, 2);
    at::Tensor k = linear(h, layer.wk, layer.bk).view({batch, len, kvHeads, hd}).transpose(1, 2);
    at::Tensor v = linear(h, layer.wv, layer.bv).view({batch, len, kvHeads, hd}).transpose(1, 2);
    q = q * pos.cos + rotateHalf(q) * pos.sin;
    k = k * pos.cos + rotateHalf(k) * pos.sin;
    if (cache) { // append to the cache, attend to everything in it
        cache->k[index].narrow(2, cache->length, len).copy_(k);
        cache->v[index].narrow(2, cache->length, len).copy_(v);
        k = cache->k[index].narrow(2, 0, cache->length + len);
        v = cache->v[index].narrow(2, 0, cache->length + len);
    }
    if (kvHeads != heads) { // each key/value head serves heads/kvHeads consecutive query heads
        k = k.repeat_interleave(heads / kvHeads, 1);
        v = v.repeat_interleave(heads / kvHeads, 1);
    }
    at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
    if (pos.mask.defined())
        scores.masked_fill_(pos.mask, -std::numeric_limits<float>::infinity());
    const at::Tensor attn = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({batch, len, heads * hd});
    x = x + linear(attn, layer.wo);
    const at::Tensor h2 = rmsNorm(x, layer.postNorm, c.rmsNormEps);
    const at::Tensor act = at::silu(linear(h2, layer.wGate)) * linear(h2, layer.wUp);
    if (stats) {
        InputStats::add(stats->attnIn, h);
        InputStats::add(stats->attnOut, attn);
        InputStats::add(stats->mlpIn, h2);
        InputStats::add(stats->mlpAct, act);
        stats->rows += batch * len;
    }
    return x + linear(act, layer.wDown);
}

at::Tensor LlamaModel::Impl::forward(const at::Tensor& tokens, KvCache* cache, const std::atomic<bool>* cancel) const
{
    // One forward pass at a time uses the decode buffer.
    std::unique_lock<std::mutex> lock(bufferMutex, std::defer_lock);
    if (anyCompressed())
        lock.lock();
    const std::int64_t start = cache ? cache->length : 0;
    const Positional pos = positional(start, tokens.size(1));
    at::Tensor x = embedTokens(tokens); // [B, T, D]
    for (std::size_t i = 0; i < layers.size(); ++i) {
        if (cancel && cancel->load())
            throw ForwardCancelled{};
        x = block(i, x, pos, nullptr, cache);
    }
    if (cache) {
        cache->length += tokens.size(1);
        x = x.narrow(1, tokens.size(1) - 1, 1); // generation needs the last token's logits only
    }
    if (!head.defined())
        throw std::runtime_error("this model was loaded for calibration only (no output head)");
    return project(rmsNorm(x, finalNorm, config.rmsNormEps), head, at::Tensor());
}

// --------------------------------------------------------------------------------- adapters

const char* adapterObjectiveName(AdapterObjective objective) { return objective == AdapterObjective::Kl ? "kl" : "nll"; }

namespace {

// The linear weights by tensor name, in model order.
std::vector<std::pair<std::string, Weight*>> namedWeights(const LlamaModel::Impl& m)
{
    std::vector<std::pair<std::string, Weight*>> out;
    for (std::size_t l = 0; l < m.layers.size(); ++l)
        for (std::size_t t = 0; t < 7; ++t) out.emplace_back(matrixTensorName(static_cast<int>(l), kMatrixTypes[t]), m.layers[l]->weights[t]);
    return out;
}

// The linear weight called `name` ("model.layers.3.mlp.up_proj.weight"); nullptr when none is.
Weight* findWeight(const LlamaModel::Impl& m, const std::string& name)
{
    for (const auto& [n, w] : namedWeights(m))
        if (n == name)
            return w;
    return nullptr;
}

std::vector<float> tensorValues(const at::Tensor& t)
{
    const at::Tensor c = t.detach().to(at::kFloat).contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// [B, T] int64 tokens of equal-length sequences.
at::Tensor tokenTensor(const std::vector<std::vector<std::int32_t>>& batch)
{
    std::vector<std::int64_t> flat;
    for (const auto& s : batch) flat.insert(flat.end(), s.begin(), s.end());
    return at::tensor(flat, at::kLong).view({static_cast<std::int64_t>(batch.size()), static_cast<std::int64_t>(batch.front().size())});
}

} // namespace

std::vector<LoraAdapter> LlamaModel::adapters() const
{
    std::vector<LoraAdapter> out;
    for (const auto& [name, w] : namedWeights(*m_impl)) {
        if (!w->loraA.defined())
            continue;
        LoraAdapter a;
        a.name = name;
        a.rank = w->loraRank;
        a.alpha = w->loraAlpha;
        a.rows = w->rows;
        a.cols = w->cols;
        a.a = tensorValues(w->loraA);
        a.b = tensorValues(w->loraB);
        out.push_back(std::move(a));
    }
    return out;
}

Status LlamaModel::setAdapters(const std::vector<LoraAdapter>& adapters)
{
    std::map<std::string, Weight*> byName;
    for (const auto& [name, w] : namedWeights(*m_impl)) byName[name] = w;
    for (const LoraAdapter& a : adapters) {
        const auto it = byName.find(a.name);
        if (it == byName.end())
            return Error{"adapter '" + a.name + "': the model has no such linear weight"};
        const Weight& w = *it->second;
        if (a.rank < 1 || a.rows != w.rows || a.cols != w.cols || a.a.size() != static_cast<std::size_t>(a.rank * a.cols) ||
            a.b.size() != static_cast<std::size_t>(a.rows * a.rank))
            return Error{"adapter '" + a.name + "': rank " + std::to_string(a.rank) + " on " + std::to_string(a.rows) + "x" + std::to_string(a.cols) +
                         " does not fit the " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " weight (or its values are missing)"};
        if (!std::isfinite(a.alpha))
            return Error{"adapter '" + a.name + "': alpha is not finite"};
    }
    for (const LoraAdapter& a : adapters) {
        Weight& w = *byName[a.name];
        w.loraA = at::from_blob(const_cast<float*>(a.a.data()), {a.rank, a.cols}, at::kFloat).clone();
        w.loraB = at::from_blob(const_cast<float*>(a.b.data()), {a.rows, a.rank}, at::kFloat).clone();
        w.loraRank = a.rank;
        w.loraAlpha = a.alpha;
    }
    return {};
}

namespace {

// The objective of one batch, differentiable with respect to the adapters. `teacher`: the
// reference log-probabilities [B, T-1, V] for the KL objective.
at::Tensor batchObjective(const LlamaModel::Impl& m, const at::Tensor& tokens, AdapterObjective objective, const at::Tensor& teacher)
{
    const std::int64_t t = tokens.size(1);
    const at::Tensor logProbs = at::log_softmax(m.forward(tokens).narrow(1, 0, t - 1), -1);
    if (objective == AdapterObjective::Nll)
        return -logProbs.gather(-1, tokens.narrow(1, 1, t - 1).unsqueeze(-1)).mean();
    return (teacher.exp() * (teacher - logProbs)).sum(-1).mean();
}

at::Tensor teacherLogProbs(const LlamaModel::Impl* teacher, const at::Tensor& tokens)
{
    if (!teacher)
        return {};
    at::Tensor out;
    {
        c10::InferenceMode guard;
        out = at::log_softmax(teacher->forward(tokens).narrow(1, 0, tokens.size(1) - 1), -1);
    }
    return out.clone(); // outside inference mode: a normal tensor autograd may save
}

Status checkSequences(const std::vector<std::vector<std::int32_t>>& sequences, std::int64_t vocab)
{
    if (sequences.empty() || sequences.front().size() < 2)
        return Error{"no training sequences of at least two tokens"};
    for (const auto& s : sequences) {
        if (s.size() != sequences.front().size())
            return Error{"training sequences must have equal lengths"};
        POCKET_TRY(checkTokens(s, vocab));
    }
    return {};
}

} // namespace

// Long: checks, the teacher, batches, and the gradient copy-out.
Result<AdapterLoss> LlamaModel::adapterLoss(const std::vector<std::vector<std::int32_t>>& sequences, AdapterObjective objective,
                                            const LlamaModel* teacher, bool gradients, int batch) const
{
    const Impl& m = *m_impl;
    POCKET_TRY(checkSequences(sequences, m.config.vocabSize));
    if (objective == AdapterObjective::Kl && !teacher)
        return Error::usage("the KL objective needs the original model as teacher", "teacher");
    if (teacher && teacher->config().vocabSize != m.config.vocabSize)
        return Error::usage("the teacher's vocabulary differs from the model's", "teacher");
    try {
        AdapterLoss out;
        if (!gradients) {
            c10::InferenceMode guard;
            double sum = 0;
            const std::size_t step = static_cast<std::size_t>(std::max(1, batch));
            for (std::size_t b = 0; b < sequences.size(); b += step) {
                const std::vector<std::vector<std::int32_t>> part(sequences.begin() + static_cast<std::ptrdiff_t>(b),
                                                                  sequences.begin() + static_cast<std::ptrdiff_t>(std::min(sequences.size(), b + step)));
                const at::Tensor tokens = tokenTensor(part);
                const at::Tensor ref = objective == AdapterObjective::Kl ? teacherLogProbs(teacher->m_impl.get(), tokens) : at::Tensor();
                sum += batchObjective(m, tokens, objective, ref).item<double>() * static_cast<double>(part.size());
            }
            out.loss = sum / static_cast<double>(sequences.size());
            return out;
        }
        std::vector<Weight*> adapted;
        for (const auto& [name, w] : namedWeights(m))
            if (w->loraA.defined()) {
                if (w->loraA.is_inference())
                    return Error::usage("gradients need a model loaded with trainable tensors", "trainable");
                w->loraA.requires_grad_(true);
                w->loraB.requires_grad_(true);
                w->loraA.mutable_grad() = at::Tensor();
                w->loraB.mutable_grad() = at::Tensor();
                adapted.push_back(w);
            }
        const at::Tensor tokens = tokenTensor(sequences);
        const at::Tensor ref = objective == AdapterObjective::Kl ? teacherLogProbs(teacher->m_impl.get(), tokens) : at::Tensor();
        at::Tensor loss = batchObjective(m, tokens, objective, ref);
        loss.backward();
        out.loss = loss.item<double>();
        out.gradients = adapters();
        for (std::size_t i = 0; i < adapted.size(); ++i) {
            Weight* w = adapted[i];
            out.gradients[i].a = w->loraA.grad().defined() ? tensorValues(w->loraA.grad()) : std::vector<float>(out.gradients[i].a.size(), 0.0f);
            out.gradients[i].b = w->loraB.grad().defined() ? tensorValues(w->loraB.grad()) : std::vector<float>(out.gradients[i].b.size(), 0.0f);
            w->loraA.requires_grad_(false);
            w->loraB.requires_grad_(false);
            w->loraA.mutable_grad() = at::Tensor();
            w->loraB.mutable_grad() = at::Tensor();
        }
        return out;
    } catch (const c10::Error& e) {
        return Error{"adapter objective failed: " + describe(e)};
    } catch (const std::exception& e) {
        return Error{std::string("adapter objective failed: ") + e.what()};
    }
}

// Long: set-up (fresh adapters), the epoch/batch loop with Adam written out, fp16 rounding.
Result<std::vector<double>> LlamaModel::trainAdapters(const AdapterTrainingParams& p, const std::vector<std::vector<std::int32_t>>& sequences,
                                                      const LlamaModel* teacher, const std::function<bool(const AdapterTrainingProgress&)>& onStep)
{
    Impl& m = *m_impl;
    POCKET_TRY(checkSequences(sequences, m.config.vocabSize));
    if (p.rank < 1)
        return Error::usage("rank must be at least 1", "rank");
    if (p.epochs < 1 || p.batch < 1 || !(p.learningRate > 0))
        return Error::usage("epochs and batch must be at least 1 and the learning rate positive", "epochs");
    if (p.objective == AdapterObjective::Kl && !teacher)
        return Error::usage("the KL objective needs the original model as teacher", "teacher");
    if (teacher && teacher->config().vocabSize != m.config.vocabSize)
        return Error::usage("the teacher's vocabulary differs from the model's", "teacher");
    if (m.embed.is_inference())
        return Error::usage("training adapters needs a model loaded with trainable tensors", "trainable");
    const std::set<std::string> chosen(p.matrices.begin(), p.matrices.end());
    {
        std::set<std::string> known;
        for (const auto& [name, w] : namedWeights(m)) known.insert(name);
        for (const auto& name : chosen)
            if (!known.count(name))
                return Error::usage("'" + name + "' is not a linear weight of this model", "matrices");
    }
    std::mt19937_64 rng(p.seed);
    std::vector<at::Tensor> params;
    // On any way out, the adapters are left as plain tensors (no autograd state), as stored.
    struct Detach {
        Impl& m;
        ~Detach()
        {
            try {
                for (const auto& [name, w] : namedWeights(m))
                    if (w->loraA.defined()) {
                        w->loraA = w->loraA.detach().to(at::kHalf).to(at::kFloat);
                        w->loraB = w->loraB.detach().to(at::kHalf).to(at::kFloat);
                    }
            } catch (...) { // out of memory at worst: the adapters stay as they were
            }
        }
    } detach{m};
    try {
        for (const auto& [name, w] : namedWeights(m)) {
            w->loraA = at::Tensor();
            w->loraB = at::Tensor();
            if (!chosen.empty() && !chosen.count(name))
                continue;
            const int rank = static_cast<int>(std::min<std::int64_t>(p.rank, std::min(w->rows, w->cols)));
            std::vector<float> a(static_cast<std::size_t>(rank * w->cols));
            std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
            const float bound = 1.0f / std::sqrt(static_cast<float>(w->cols));
            for (float& v : a) v = bound * uniform(rng);
            w->loraA = at::from_blob(a.data(), {rank, w->cols}, at::kFloat).clone().requires_grad_(true);
            w->loraB = at::zeros({w->rows, rank}, at::kFloat).requires_grad_(true);
            w->loraRank = rank;
            w->loraAlpha = p.alpha;
            params.push_back(w->loraA);
            params.push_back(w->loraB);
        }
        std::vector<at::Tensor> moment1, moment2;
        for (const auto& t : params) {
            moment1.push_back(at::zeros_like(t).detach());
            moment2.push_back(at::zeros_like(t).detach());
        }
        const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
        std::vector<std::size_t> order(sequences.size());
        std::iota(order.begin(), order.end(), 0);
        const std::size_t batch = static_cast<std::size_t>(p.batch);
        AdapterTrainingProgress progress;
        progress.steps = p.epochs * static_cast<int>((sequences.size() + batch - 1) / batch);
        std::vector<double> losses;
        const auto start = std::chrono::steady_clock::now();
        for (int epoch = 0; epoch < p.epochs; ++epoch) {
            std::shuffle(order.begin(), order.end(), rng);
            for (std::size_t b = 0; b < order.size(); b += batch) {
                std::vector<std::vector<std::int32_t>> part;
                for (std::size_t k = b; k < std::min(order.size(), b + batch); ++k) part.push_back(sequences[order[k]]);
                const at::Tensor tokens = tokenTensor(part);
                const at::Tensor ref = p.objective == AdapterObjective::Kl ? teacherLogProbs(teacher->m_impl.get(), tokens) : at::Tensor();
                at::Tensor loss = batchObjective(m, tokens, p.objective, ref);
                for (auto& t : params) t.mutable_grad() = at::Tensor();
                loss.backward();
                ++progress.step;
                {
                    at::NoGradGuard noGrad;
                    const double c1 = 1 - std::pow(beta1, progress.step), c2 = 1 - std::pow(beta2, progress.step);
                    for (std::size_t i = 0; i < params.size(); ++i) {
                        const at::Tensor g = params[i].grad();
                        if (!g.defined())
                            continue;
                        moment1[i].mul_(beta1).add_(g, 1 - beta1);
                        moment2[i].mul_(beta2).addcmul_(g, g, 1 - beta2);
                        params[i].sub_((moment1[i] / c1) / ((moment2[i] / c2).sqrt() + eps) * p.learningRate);
                    }
                }
                progress.epoch = epoch;
                progress.loss = loss.item<double>();
                progress.elapsedSeconds = secondsSince(start);
                losses.push_back(progress.loss);
                if (!std::isfinite(progress.loss))
                    return Error{"training diverged (loss " + std::to_string(progress.loss) + " at step " + std::to_string(progress.step) +
                                 "): lower the learning rate"};
                if (onStep && !onStep(progress))
                    return Error::cancelled();
            }
        }
        return losses; // `detach` rounds the adapters to fp16, as an archive stores them

    } catch (const c10::Error& e) {
        return Error{"adapter training failed: " + describe(e)};
    } catch (const std::exception& e) {
        return Error{std::string("adapter training failed: ") + e.what()};
    }
}

// ---------------------------------------------------------------------------------------------

namespace {

// A linear weight read from the checkpoint's memory map for each use (loadStreamed).
class CheckpointMatrix final : public CompressedMatrix {
public:
    CheckpointMatrix(const Checkpoint& checkpoint, std::string name, DType dtype) : m_checkpoint(checkpoint), m_name(std::move(name)), m_dtype(dtype) {}
    std::uint64_t bytes() const override { return 0; } // pages of the map, not the model's memory
    Status decodeInto(float* out, int) const override
    {
        auto data = m_checkpoint.load(m_name);
        if (!data)
            return data.error();
        convertToFloat(data->info.dtype, data->data, static_cast<std::size_t>(elementCount(data->info.shape)), out);
        return {};
    }
    std::string speedClass() const override { return std::string("checkpoint ") + dtypeName(m_dtype); }

private:
    const Checkpoint& m_checkpoint;
    std::string m_name;
    DType m_dtype;
};

// A block's weights kept as payloads (finished groups, setWeight with a source) decoded once for a
// pass of several chunks of windows, not once per chunk; weights streamed from the checkpoint (a
// cheap conversion) stay streamed. The decoded copies go when the pass ends.
class DecodedForPass {
public:
    DecodedForPass(const LlamaModel::Impl& model, std::size_t block, std::size_t chunks)
    {
        if (chunks < 2)
            return;
        for (Weight* w : model.layers[block]->weights) {
            if (w->resident.defined() || !w->source || dynamic_cast<const CheckpointMatrix*>(w->source.get()))
                continue;
            at::Tensor t = at::empty({w->rows, w->cols}, at::kFloat);
            const Status status = w->source->decodeInto(t.data_ptr<float>(), at::get_num_threads());
            if (!status)
                throw std::runtime_error(status.message());
            w->resident = model.precision == ComputePrecision::BF16 ? t.to(at::kBFloat16) : t;
            m_decoded.push_back(w);
        }
    }
    ~DecodedForPass()
    {
        for (Weight* w : m_decoded)
            w->resident = at::Tensor();
    }
    DecodedForPass(const DecodedForPass&) = delete;
    DecodedForPass& operator=(const DecodedForPass&) = delete;

private:
    std::vector<Weight*> m_decoded;
};

} // namespace

struct CalibrationRun::State {
    LlamaModel::Impl* model = nullptr;
    std::vector<at::Tensor> hidden; // per chunk of sequences, [B, T, D]
    Positional pos;
    int nextBlock = 0;
};

CalibrationRun::CalibrationRun() : m_state(std::make_unique<State>()) {}
CalibrationRun::~CalibrationRun() = default;

int CalibrationRun::nextBlock() const { return m_state->nextBlock; }

Result<std::map<MatrixType, std::vector<float>>> CalibrationRun::hessians() const { return measure(false); }

Result<std::map<MatrixType, std::vector<float>>> CalibrationRun::hessiansThenAdvance() { return measure(true); }

Result<std::map<MatrixType, std::vector<float>>> CalibrationRun::measure(bool advance) const
{
    State& s = *m_state;
    if (s.nextBlock >= static_cast<int>(s.model->layers.size()))
        return Error{"calibration: no block left"};
    try {
        c10::InferenceMode guard;
        InputStats stats;
        const DecodedForPass decoded(*s.model, static_cast<std::size_t>(s.nextBlock), s.hidden.size());
        for (at::Tensor& x : s.hidden) {
            at::Tensor out = s.model->block(static_cast<std::size_t>(s.nextBlock), x, s.pos, &stats);
            if (advance)
                x = std::move(out);
        }
        if (advance)
            ++s.nextBlock;
        const double factor = 2.0 / static_cast<double>(stats.rows);
        const auto flat = [&](at::Tensor& sum) { // scaled in place, copied once, then freed
            sum.mul_(factor);
            std::vector<float> h(static_cast<std::size_t>(sum.numel()));
            at::from_blob(h.data(), sum.sizes(), at::kFloat).copy_(sum);
            sum = at::Tensor();
            return h;
        };
        std::map<MatrixType, std::vector<float>> out;
        out[MatrixType::Down] = flat(stats.mlpAct); // the largest first: one sum and its copy at a time
        out[MatrixType::Q] = out[MatrixType::K] = out[MatrixType::V] = flat(stats.attnIn);
        out[MatrixType::O] = flat(stats.attnOut);
        out[MatrixType::Gate] = out[MatrixType::Up] = flat(stats.mlpIn);
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
        const DecodedForPass decoded(*s.model, static_cast<std::size_t>(s.nextBlock), s.hidden.size());
        for (at::Tensor& x : s.hidden)
            x = s.model->block(static_cast<std::size_t>(s.nextBlock), x, s.pos, nullptr);
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
        run->m_state->pos = m_impl->positional(0, static_cast<std::int64_t>(len));
        const std::size_t chunk = 8; // sequences per forward, bounding activation memory
        for (std::size_t b = 0; b < sequences.size(); b += chunk) {
            std::vector<std::int64_t> flat;
            const std::size_t end = std::min(sequences.size(), b + chunk);
            for (std::size_t i = b; i < end; ++i)
                flat.insert(flat.end(), sequences[i].begin(), sequences[i].end());
            const at::Tensor tokens = at::tensor(flat, at::kLong).view({static_cast<std::int64_t>(end - b), static_cast<std::int64_t>(len)});
            run->m_state->hidden.push_back(m_impl->embedTokens(tokens));
        }
        return run;
    } catch (const std::exception& e) {
        return Error{std::string("calibration failed: ") + e.what()};
    }
}

Status LlamaModel::setWeight(const std::string& name, const std::vector<float>& values)
{
    Weight* found = findWeight(*m_impl, name);
    if (!found)
        return Error{"no linear weight " + name + " in the model"};
    Weight& weight = *found;
    if (!weight.resident.defined() && weight.source && m_impl->precision == ComputePrecision::F32) { // streamed: becomes resident
        if (static_cast<std::int64_t>(values.size()) != weight.rows * weight.cols)
            return Error{name + ": expected " + std::to_string(weight.rows * weight.cols) + " values, got " + std::to_string(values.size())};
        c10::InferenceMode guard;
        weight.resident = at::empty({weight.rows, weight.cols}, at::kFloat);
        weight.source.reset();
    }
    if (!weight.resident.defined() || weight.resident.scalar_type() != at::kFloat)
        return Error::internal(name + " is not an fp32 decoded weight (setWeight needs a fp32 model with every weight decoded or streamed)");
    at::Tensor& w = weight.resident;
    if (static_cast<std::int64_t>(values.size()) != w.numel())
        return Error{name + ": expected " + std::to_string(w.numel()) + " values, got " + std::to_string(values.size())};
    c10::InferenceMode guard;
    std::memcpy(w.data_ptr<float>(), values.data(), values.size() * sizeof(float));
    return {};
}

Status LlamaModel::setWeight(const std::string& name, std::shared_ptr<const CompressedMatrix> source, std::int64_t rows, std::int64_t cols)
{
    if (!source)
        return Error::internal("setWeight: no source for " + name);
    Weight* found = findWeight(*m_impl, name);
    if (!found)
        return Error{"no linear weight " + name + " in the model"};
    Weight& weight = *found;
    if (rows != weight.rows || cols != weight.cols)
        return Error{name + ": expected " + std::to_string(weight.rows) + "x" + std::to_string(weight.cols) + ", got " + std::to_string(rows) +
                     "x" + std::to_string(cols)};
    // The decode buffer was sized at load for the largest weight kept compressed; a model with
    // resident weights may have none.
    if (weight.resident.defined() || !m_impl->bufferF32.defined() || m_impl->bufferF32.numel() < weight.rows * weight.cols)
        return Error::internal(name + " is not a streamed or compressed weight (setWeight with a source needs loadStreamed)");
    weight.source = std::move(source);
    return {};
}

void LlamaModel::releaseEmbeddings()
{
    m_impl->embed = at::Tensor();
}

void LlamaModel::releaseBlock(int block)
{
    if (block < 0 || block >= static_cast<int>(m_impl->layers.size()))
        return;
    for (Weight* w : m_impl->layers[static_cast<std::size_t>(block)]->weights) {
        w->resident = at::Tensor();
        w->source.reset();
    }
}


Result<std::unique_ptr<LlamaModel>> LlamaModel::loadStreamed(const Checkpoint& checkpoint)
{
    LoadOptions options;
    options.memoryBudget = LoadOptions::kMinimum;
    options.withoutHead = true; // calibration never reaches the logits
    const ModelConfig& c = checkpoint.config();
    for (int l = 0; l < c.numLayers; ++l)
        for (MatrixType t : kMatrixTypes) {
            const std::string name = matrixTensorName(l, t);
            const TensorInfo* info = checkpoint.find(name);
            if (!info)
                return fileError(checkpoint.path(), "no matrix " + name);
            options.compressed[name] = std::make_shared<CheckpointMatrix>(checkpoint, name, info->dtype);
        }
    return load(checkpoint, {}, std::move(options));
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

// The tokens of a batch of equal-length sequences, one after another (checked against the vocabulary).
static Status flattenBatch(const std::vector<std::vector<std::int32_t>>& batch, std::int64_t vocab, std::vector<std::int64_t>& flat)
{
    const std::size_t len = batch[0].size();
    flat.reserve(batch.size() * len);
    for (const auto& seq : batch) {
        if (seq.size() != len)
            return Error{"sequences of one batch must have the same length"};
        if (auto s = checkTokens(seq, vocab); !s)
            return s.error();
        flat.insert(flat.end(), seq.begin(), seq.end());
    }
    return {};
}

Result<std::vector<float>> LlamaModel::logProbs(const std::vector<std::vector<std::int32_t>>& batch) const
{
    if (batch.empty() || batch[0].empty())
        return Error{"no tokens to run"};
    std::vector<std::int64_t> flat;
    POCKET_TRY(flattenBatch(batch, m_impl->config.vocabSize, flat));
    try {
        c10::InferenceMode guard;
        const at::Tensor input = at::tensor(flat, at::kLong).view({static_cast<std::int64_t>(batch.size()), -1});
        const at::Tensor out = at::log_softmax(m_impl->forward(input).to(at::kFloat), -1).contiguous();
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
    POCKET_TRY(flattenBatch(batch, m_impl->config.vocabSize, flat));
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

// ---------------------------------------------------------------------------------------------

struct InferenceSession::State {
    const LlamaModel::Impl* model = nullptr;
    KvCache cache;
    int capacity = 0;
};

InferenceSession::InferenceSession() : m_state(std::make_unique<State>()) {}
InferenceSession::~InferenceSession() = default;

int InferenceSession::position() const { return static_cast<int>(m_state->cache.length); }
int InferenceSession::capacity() const { return m_state->capacity; }
void InferenceSession::reset() { m_state->cache.length = 0; }

Result<std::vector<float>> InferenceSession::feed(const std::vector<std::int32_t>& tokens, const std::atomic<bool>* cancel)
{
    State& s = *m_state;
    if (tokens.empty())
        return Error{"no tokens to run"};
    if (auto st = checkTokens(tokens, s.model->config.vocabSize); !st)
        return st.error();
    if (s.cache.length + static_cast<std::int64_t>(tokens.size()) > s.capacity)
        return Error::usage(std::to_string(s.cache.length + static_cast<std::int64_t>(tokens.size())) +
                                " tokens do not fit the context of " + std::to_string(s.capacity) + " tokens",
                            "context");
    try {
        c10::InferenceMode guard;
        const at::Tensor input = at::tensor(std::vector<std::int64_t>(tokens.begin(), tokens.end()), at::kLong).view({1, -1});
        const at::Tensor out = s.model->forward(input, &s.cache, cancel).contiguous();
        return std::vector<float>(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
    } catch (const ForwardCancelled&) {
        s.cache.length = 0;
        return Error::cancelled();
    } catch (const std::exception& e) {
        s.cache.length = 0;
        return Error{std::string("forward pass failed: ") + e.what()};
    }
}

Result<std::unique_ptr<InferenceSession>> LlamaModel::startSession(int capacity) const
{
    const ModelConfig& c = m_impl->config;
    const int maxPositions = static_cast<int>(std::min<std::int64_t>(c.maxPositions, std::numeric_limits<int>::max()));
    const int cap = capacity > 0 ? std::min(capacity, maxPositions) : maxPositions;
    if (cap < 1)
        return Error{"the model allows no positions"};
    try {
        c10::InferenceMode guard;
        std::unique_ptr<InferenceSession> session(new InferenceSession());
        InferenceSession::State& s = *session->m_state;
        s.model = m_impl.get();
        s.capacity = cap;
        for (std::size_t l = 0; l < m_impl->layers.size(); ++l) {
            s.cache.k.push_back(at::empty({1, c.numKvHeads, cap, c.headDim}, at::kFloat));
            s.cache.v.push_back(at::empty({1, c.numKvHeads, cap, c.headDim}, at::kFloat));
        }
        return session;
    } catch (const std::exception& e) {
        return Error::io(std::string("cannot allocate the KV cache of ") + std::to_string(cap) + " tokens: " + e.what());
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
