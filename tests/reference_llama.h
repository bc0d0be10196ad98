// A slow, plainly written Llama forward pass for tests: explicit loops in double precision, no
// torch. Weights come from a callback in [out, in] row-major layout.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace reference {

enum class Rope { Halves, Interleaved }; // Hugging Face rotate_half, or llama2.c's (2i, 2i+1) pairs

struct Config {
    int dim, hidden, layers, heads, kvHeads, headDim, vocab;
    double eps, theta;
    bool tied, bias;
    int slidingWindow = 0;
};

using Weights = std::function<std::vector<float>(const std::string& name)>;

inline void matvec(const std::vector<float>& w, const std::vector<double>& x, int out, int in, std::vector<double>& y)
{
    y.assign(static_cast<std::size_t>(out), 0.0);
    for (int o = 0; o < out; ++o) {
        double s = 0;
        for (int i = 0; i < in; ++i) s += static_cast<double>(w[static_cast<std::size_t>(o) * in + i]) * x[static_cast<std::size_t>(i)];
        y[static_cast<std::size_t>(o)] = s;
    }
}

inline std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<float>& w, double eps)
{
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
    std::vector<double> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = x[i] * scale * w[i];
    return out;
}

inline void rope(std::vector<double>& v, int heads, int hd, int pos, double theta, Rope style)
{
    for (int h = 0; h < heads; ++h) {
        double* x = v.data() + static_cast<std::size_t>(h) * hd;
        for (int i = 0; i < hd / 2; ++i) {
            const double freq = std::pow(theta, -2.0 * i / hd);
            const double c = std::cos(pos * freq), s = std::sin(pos * freq);
            const int a = style == Rope::Halves ? i : 2 * i;
            const int b = style == Rope::Halves ? i + hd / 2 : 2 * i + 1;
            const double x0 = x[a], x1 = x[b];
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

// Logits [tokens.size() * vocab], position by position with a key/value cache (as llama2.c's run.c).
inline std::vector<double> logits(const Config& c, const Weights& weight, const std::vector<int>& tokens, Rope style)
{
    const int T = static_cast<int>(tokens.size());
    const int qDim = c.heads * c.headDim, kvDim = c.kvHeads * c.headDim;
    const auto embed = weight("model.embed_tokens.weight");
    struct L {
        std::vector<float> in, q, k, v, o, bq, bk, bv, post, gate, up, down;
    };
    std::vector<L> layers(static_cast<std::size_t>(c.layers));
    for (int l = 0; l < c.layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l);
        L& x = layers[static_cast<std::size_t>(l)];
        x.in = weight(p + ".input_layernorm.weight");
        x.q = weight(p + ".self_attn.q_proj.weight");
        x.k = weight(p + ".self_attn.k_proj.weight");
        x.v = weight(p + ".self_attn.v_proj.weight");
        x.o = weight(p + ".self_attn.o_proj.weight");
        if (c.bias) {
            x.bq = weight(p + ".self_attn.q_proj.bias");
            x.bk = weight(p + ".self_attn.k_proj.bias");
            x.bv = weight(p + ".self_attn.v_proj.bias");
        }
        x.post = weight(p + ".post_attention_layernorm.weight");
        x.gate = weight(p + ".mlp.gate_proj.weight");
        x.up = weight(p + ".mlp.up_proj.weight");
        x.down = weight(p + ".mlp.down_proj.weight");
    }
    const auto finalNorm = weight("model.norm.weight");
    const auto head = c.tied ? embed : weight("lm_head.weight");

    std::vector<std::vector<std::vector<double>>> keyCache(static_cast<std::size_t>(c.layers)), valueCache(static_cast<std::size_t>(c.layers));
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(T) * c.vocab);
    for (int pos = 0; pos < T; ++pos) {
        std::vector<double> x(static_cast<std::size_t>(c.dim));
        for (int i = 0; i < c.dim; ++i) x[static_cast<std::size_t>(i)] = embed[static_cast<std::size_t>(tokens[static_cast<std::size_t>(pos)]) * c.dim + i];
        for (int l = 0; l < c.layers; ++l) {
            const L& w = layers[static_cast<std::size_t>(l)];
            const auto h = rmsnorm(x, w.in, c.eps);
            std::vector<double> q, k, v;
            matvec(w.q, h, qDim, c.dim, q);
            matvec(w.k, h, kvDim, c.dim, k);
            matvec(w.v, h, kvDim, c.dim, v);
            if (c.bias) {
                for (int i = 0; i < qDim; ++i) q[static_cast<std::size_t>(i)] += w.bq[static_cast<std::size_t>(i)];
                for (int i = 0; i < kvDim; ++i) k[static_cast<std::size_t>(i)] += w.bk[static_cast<std::size_t>(i)];
                for (int i = 0; i < kvDim; ++i) v[static_cast<std::size_t>(i)] += w.bv[static_cast<std::size_t>(i)];
            }
            rope(q, c.heads, c.headDim, pos, c.theta, style);
            rope(k, c.kvHeads, c.headDim, pos, c.theta, style);
            keyCache[static_cast<std::size_t>(l)].push_back(k);
            valueCache[static_cast<std::size_t>(l)].push_back(v);
            std::vector<double> attn(static_cast<std::size_t>(qDim), 0.0);
            for (int hIdx = 0; hIdx < c.heads; ++hIdx) {
                const int kvh = hIdx / (c.heads / c.kvHeads);
                const int first = c.slidingWindow > 0 ? std::max(0, pos - c.slidingWindow + 1) : 0;
                std::vector<double> scores;
                double maxScore = -1e300;
                for (int t = first; t <= pos; ++t) {
                    double s = 0;
                    for (int i = 0; i < c.headDim; ++i)
                        s += q[static_cast<std::size_t>(hIdx * c.headDim + i)] * keyCache[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)][static_cast<std::size_t>(kvh * c.headDim + i)];
                    s /= std::sqrt(static_cast<double>(c.headDim));
                    scores.push_back(s);
                    maxScore = std::max(maxScore, s);
                }
                double sum = 0;
                for (double& s : scores) sum += (s = std::exp(s - maxScore));
                for (int t = first; t <= pos; ++t) {
                    const double a = scores[static_cast<std::size_t>(t - first)] / sum;
                    for (int i = 0; i < c.headDim; ++i)
                        attn[static_cast<std::size_t>(hIdx * c.headDim + i)] += a * valueCache[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)][static_cast<std::size_t>(kvh * c.headDim + i)];
                }
            }
            std::vector<double> o;
            matvec(w.o, attn, c.dim, qDim, o);
            for (int i = 0; i < c.dim; ++i) x[static_cast<std::size_t>(i)] += o[static_cast<std::size_t>(i)];
            const auto h2 = rmsnorm(x, w.post, c.eps);
            std::vector<double> g, u, d;
            matvec(w.gate, h2, c.hidden, c.dim, g);
            matvec(w.up, h2, c.hidden, c.dim, u);
            for (int i = 0; i < c.hidden; ++i) {
                const double gi = g[static_cast<std::size_t>(i)];
                g[static_cast<std::size_t>(i)] = gi / (1.0 + std::exp(-gi)) * u[static_cast<std::size_t>(i)];
            }
            matvec(w.down, g, c.dim, c.hidden, d);
            for (int i = 0; i < c.dim; ++i) x[static_cast<std::size_t>(i)] += d[static_cast<std::size_t>(i)];
        }
        const auto xn = rmsnorm(x, finalNorm, c.eps);
        std::vector<double> row;
        matvec(head, xn, c.vocab, c.dim, row);
        out.insert(out.end(), row.begin(), row.end());
    }
    return out;
}

} // namespace reference
