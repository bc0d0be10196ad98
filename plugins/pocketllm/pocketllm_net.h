// The PocketLLM meta-network (method doc section 3), in plain ATen ops. Private to the plugin.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace pocket::pocketllm {

// M(x) = Linear(h -> out)(GELU(Linear(in -> h)(x))), with biases.
struct Mlp {
    at::Tensor w1, b1, w2, b2;
    at::Tensor operator()(const at::Tensor& x) const { return at::linear(at::gelu(at::linear(x, w1, b1)), w2, b2); }
};

// Reshaped LayerNorm: G consecutive rows flattened into one vector of G*L values, normalised with
// affine weights of that length (none when `weight` is undefined), reshaped back. Row counts must be
// multiples of G.
struct Rln {
    at::Tensor weight, bias;
    std::int64_t group = 1;
    at::Tensor operator()(const at::Tensor& x) const
    {
        const std::int64_t rows = x.size(0), width = x.size(1);
        return at::layer_norm(x.reshape({rows / group, group * width}), {group * width}, weight, bias, 1e-5).reshape({rows, width});
    }
};

// Decoder format flags (payload version 2; version 1 = affine RLNs, final RLN, no skip).
struct DecoderFormat {
    bool rlnAffine = true; // RLN affine weights stored
    bool finalNorm = true; // the decoder's last RLN (RLN4')
    bool outSkip = false;  // s_hat = y + D0(y) (latent == d): the decoder can be exactly the identity
};

// Names and shapes of the stored decoder tensors, in storage order.
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> decoderTensorShapes(int d, int latent, int hidden, std::int64_t group,
                                                                                          DecoderFormat f = {})
{
    const std::int64_t L = latent, h = hidden, gl = group * latent;
    std::vector<std::pair<std::string, std::vector<std::int64_t>>> t = {{"D1.w1", {h, L}}, {"D1.b1", {h}}, {"D1.w2", {L, h}}, {"D1.b2", {L}}};
    if (f.rlnAffine)
        t.insert(t.end(), {{"RLN3.weight", {gl}}, {"RLN3.bias", {gl}}});
    t.insert(t.end(), {{"D2.w1", {h, L}}, {"D2.b1", {h}}, {"D2.w2", {L, h}}, {"D2.b2", {L}}});
    if (f.rlnAffine)
        t.insert(t.end(), {{"RLN4.weight", {gl}}, {"RLN4.bias", {gl}}});
    if (f.rlnAffine && f.finalNorm)
        t.insert(t.end(), {{"RLN4p.weight", {gl}}, {"RLN4p.bias", {gl}}});
    t.insert(t.end(), {{"D0.w1", {h, L}}, {"D0.b1", {h}}, {"D0.w2", {d, h}}, {"D0.b2", {d}}});
    return t;
}

//   y = q + D1(RLN3(q));  y = RLN4'(y + D2(RLN4(y)));  s_hat = D0(y)   (+ y with the output skip;
//   RLN4' left out without the final norm)
struct Decoder {
    Mlp d0, d1, d2;
    Rln rln3, rln4, rln4p;
    DecoderFormat format;

    at::Tensor decode(const at::Tensor& q) const
    {
        at::Tensor y = q + d1(rln3(q));
        y = y + d2(rln4(y));
        if (format.finalNorm)
            y = rln4p(y);
        return format.outSkip ? y + d0(y) : d0(y);
    }
    // In the order of decoderTensorShapes().
    std::vector<at::Tensor> tensors() const
    {
        std::vector<at::Tensor> t = {d1.w1, d1.b1, d1.w2, d1.b2};
        if (format.rlnAffine)
            t.insert(t.end(), {rln3.weight, rln3.bias});
        t.insert(t.end(), {d2.w1, d2.b1, d2.w2, d2.b2});
        if (format.rlnAffine)
            t.insert(t.end(), {rln4.weight, rln4.bias});
        if (format.rlnAffine && format.finalNorm)
            t.insert(t.end(), {rln4p.weight, rln4p.bias});
        t.insert(t.end(), {d0.w1, d0.b1, d0.w2, d0.b2});
        return t;
    }
    static Decoder fromTensors(const std::vector<at::Tensor>& t, std::int64_t group, DecoderFormat f = {})
    {
        Decoder dec;
        dec.format = f;
        std::size_t i = 0;
        const auto next = [&] { return t[i++]; };
        dec.d1 = {next(), next(), next(), next()};
        dec.rln3 = f.rlnAffine ? Rln{next(), next(), group} : Rln{at::Tensor(), at::Tensor(), group};
        dec.d2 = {next(), next(), next(), next()};
        dec.rln4 = f.rlnAffine ? Rln{next(), next(), group} : Rln{at::Tensor(), at::Tensor(), group};
        dec.rln4p = f.rlnAffine && f.finalNorm ? Rln{next(), next(), group} : Rln{at::Tensor(), at::Tensor(), group};
        dec.d0 = {next(), next(), next(), next()};
        return dec;
    }
};

//   x = E0(s);  x = x + E1(RLN1(x));  z = RLN2'(x + E2(RLN2(x)))
struct Network {
    Mlp e0, e1, e2;
    Rln rln1, rln2, rln2p;
    Decoder decoder;
    at::Tensor codebook; // [K, latent]

    at::Tensor encode(const at::Tensor& s) const
    {
        at::Tensor x = e0(s);
        x = x + e1(rln1(x));
        return rln2p(x + e2(rln2(x)));
    }
    at::Tensor decode(const at::Tensor& q) const { return decoder.decode(q); }

    std::vector<at::Tensor> decoderParameters() const { return decoder.tensors(); }
    std::vector<at::Tensor> encoderAndDecoderParameters() const
    {
        std::vector<at::Tensor> p = {e0.w1, e0.b1, e0.w2, e0.b2, e1.w1, e1.b1, e1.w2, e1.b2, e2.w1, e2.b1, e2.w2, e2.b2};
        if (decoder.format.rlnAffine)
            p.insert(p.end(), {rln1.weight, rln1.bias, rln2.weight, rln2.bias, rln2p.weight, rln2p.bias});
        for (const at::Tensor& t : decoder.tensors())
            p.push_back(t);
        return p;
    }

    // PyTorch's nn.Linear / nn.LayerNorm initialisation, from `gen`; codebook normal with
    // std 2/sqrt(latent) (the reference code's 2/sqrt(d) when latent = d).
    static Network create(int d, int latent, int hidden, std::int64_t group, std::int64_t codewords, at::Generator& gen,
                          DecoderFormat format = {})
    {
        const auto linear = [&](std::int64_t out, std::int64_t in, at::Tensor& w, at::Tensor& b) {
            const double bound = 1.0 / std::sqrt(static_cast<double>(in));
            w = at::empty({out, in}, at::kFloat).uniform_(-bound, bound, gen);
            b = at::empty({out}, at::kFloat).uniform_(-bound, bound, gen);
        };
        const auto mlp = [&](std::int64_t in, std::int64_t out) {
            Mlp m;
            linear(hidden, in, m.w1, m.b1);
            linear(out, hidden, m.w2, m.b2);
            return m;
        };
        const auto rln = [&] {
            return format.rlnAffine ? Rln{at::ones({group * latent}), at::zeros({group * latent}), group}
                                    : Rln{at::Tensor(), at::Tensor(), group};
        };
        Network net;
        net.e0 = mlp(d, latent);
        net.e1 = mlp(latent, latent);
        net.e2 = mlp(latent, latent);
        net.rln1 = rln();
        net.rln2 = rln();
        net.rln2p = rln();
        net.decoder.d1 = mlp(latent, latent);
        net.decoder.d2 = mlp(latent, latent);
        net.decoder.d0 = mlp(latent, d);
        net.decoder.rln3 = rln();
        net.decoder.rln4 = rln();
        net.decoder.rln4p = rln();
        net.decoder.format = format;
        net.codebook = at::empty({codewords, latent}, at::kFloat).normal_(0, 2.0 / std::sqrt(static_cast<double>(latent)), gen);
        return net;
    }
};

} // namespace pocket::pocketllm
