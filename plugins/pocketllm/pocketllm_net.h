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
// affine weights of that length, reshaped back. Row counts must be multiples of G.
struct Rln {
    at::Tensor weight, bias;
    std::int64_t group = 1;
    at::Tensor operator()(const at::Tensor& x) const
    {
        const std::int64_t rows = x.size(0), width = x.size(1);
        return at::layer_norm(x.reshape({rows / group, group * width}), {group * width}, weight, bias, 1e-5).reshape({rows, width});
    }
};

// Names and shapes of the stored decoder tensors, in storage order.
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> decoderTensorShapes(int d, int latent, int hidden, std::int64_t group)
{
    const std::int64_t L = latent, h = hidden, gl = group * latent;
    return {
        {"D1.w1", {h, L}}, {"D1.b1", {h}}, {"D1.w2", {L, h}}, {"D1.b2", {L}},
        {"RLN3.weight", {gl}}, {"RLN3.bias", {gl}},
        {"D2.w1", {h, L}}, {"D2.b1", {h}}, {"D2.w2", {L, h}}, {"D2.b2", {L}},
        {"RLN4.weight", {gl}}, {"RLN4.bias", {gl}},
        {"RLN4p.weight", {gl}}, {"RLN4p.bias", {gl}},
        {"D0.w1", {h, L}}, {"D0.b1", {h}}, {"D0.w2", {d, h}}, {"D0.b2", {d}},
    };
}

//   y = q + D1(RLN3(q));  y = RLN4'(y + D2(RLN4(y)));  s_hat = D0(y)
struct Decoder {
    Mlp d0, d1, d2;
    Rln rln3, rln4, rln4p;

    at::Tensor decode(const at::Tensor& q) const
    {
        at::Tensor y = q + d1(rln3(q));
        y = rln4p(y + d2(rln4(y)));
        return d0(y);
    }
    // In the order of decoderTensorShapes().
    std::vector<at::Tensor> tensors() const
    {
        return {d1.w1, d1.b1, d1.w2, d1.b2, rln3.weight, rln3.bias, d2.w1, d2.b1, d2.w2, d2.b2,
                rln4.weight, rln4.bias, rln4p.weight, rln4p.bias, d0.w1, d0.b1, d0.w2, d0.b2};
    }
    static Decoder fromTensors(const std::vector<at::Tensor>& t, std::int64_t group)
    {
        Decoder dec;
        dec.d1 = {t[0], t[1], t[2], t[3]};
        dec.rln3 = {t[4], t[5], group};
        dec.d2 = {t[6], t[7], t[8], t[9]};
        dec.rln4 = {t[10], t[11], group};
        dec.rln4p = {t[12], t[13], group};
        dec.d0 = {t[14], t[15], t[16], t[17]};
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
        std::vector<at::Tensor> p = {e0.w1, e0.b1, e0.w2, e0.b2, e1.w1, e1.b1, e1.w2, e1.b2, e2.w1, e2.b1, e2.w2, e2.b2,
                                     rln1.weight, rln1.bias, rln2.weight, rln2.bias, rln2p.weight, rln2p.bias};
        for (const at::Tensor& t : decoder.tensors())
            p.push_back(t);
        return p;
    }

    // PyTorch's nn.Linear / nn.LayerNorm initialisation, from `gen`; codebook normal with
    // std 2/sqrt(latent) (the reference code's 2/sqrt(d) when latent = d).
    static Network create(int d, int latent, int hidden, std::int64_t group, std::int64_t codewords, at::Generator& gen)
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
        const auto rln = [&] { return Rln{at::ones({group * latent}), at::zeros({group * latent}), group}; };
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
        net.codebook = at::empty({codewords, latent}, at::kFloat).normal_(0, 2.0 / std::sqrt(static_cast<double>(latent)), gen);
        return net;
    }
};

} // namespace pocket::pocketllm
