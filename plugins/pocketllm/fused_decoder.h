// PocketLLM's decoder (pocketllm_net.h's Decoder) fused into one pass over each RLN group, in plain
// C++ that the compiler vectorises (AVX-512, AVX2+FMA or SSE2, picked at run time): the codebook
// gather, the reshaped LayerNorms, the three MLPs with GELU and the output skip, with no per-op
// tensors. Its numbers follow the ATen decoder's to float rounding (erf and exp by polynomials as
// ATen's vectorised kernels do). Private to the plugin; no LibTorch.
#pragma once

#include <cstdint>
#include <vector>

namespace pocket::pocketllm {

// One MLP block: out = W2 gelu(W1 x + b1) + b2; w1 [hidden][in], w2 [out][hidden], row-major.
struct FusedMlp {
    int in = 0, hidden = 0, out = 0;
    std::vector<float> w1, b1, w2, b2;
};

// The decoder of one payload, as floats.
struct FusedDecoder {
    int d = 0, latent = 0, hidden = 0;
    std::int64_t group = 1; // G: sub-vectors per RLN group
    bool rlnAffine = false, finalNorm = false, outSkip = false;
    FusedMlp d1, d2, d0;
    // RLN affine weights (G*latent each when rlnAffine), stored transposed: [latent][G].
    std::vector<float> rln3w, rln3b, rln4w, rln4b, rln4pw, rln4pb;
    std::vector<float> codebook; // [books * K][latent]: codebook m holds rows [m*K, (m+1)*K)
    std::int64_t codewords = 0;  // K, per codebook
    int books = 1;               // M: a latent is the sum of one codeword of each codebook
    float scale = 1;             // the group's scale, applied to the decoder's output
};

// Decodes G sub-vectors (one RLN group) from their codes ([G][books], all < codewords) into out [G][d],
// multiplied by the scale. `scratch` is reused between calls.
void decodeRlnGroup(const FusedDecoder& dec, const std::int32_t* codes, float* out, std::vector<float>& scratch);

} // namespace pocket::pocketllm
