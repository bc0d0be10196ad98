// A .pllm archive written in the GPTQ (or AQLM, below) checkpoint format that transformers, vLLM and GPTQModel load
// (AutoGPTQ's "gptq" v1 layout): for each linear matrix of each block, `qweight` (int32 [in*bits/32,
// out], codes of W^T packed LSB-first along the input dimension), `qzeros` (int32 [groups,
// out*bits/32], the zero point minus one, packed the same way along the output dimension),
// `scales` (fp16 [groups, out]) and `g_idx` (int32 [in], i / group_size); everything else fp16;
// `quantize_config.json` and the `quantization_config` of config.json. Dequantised as AutoGPTQ
// does, w = scale * (q - (qzero + 1)), the weights are the archive's exactly. Only archives whose
// every block matrix is rtn or gptq with zero=int, one bit width (2, 4 or 8) and one group width
// that divides the rows can be written; anything else is refused with the reason.
#pragma once

#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <string>

namespace pocket {

struct GptqExportOptions {
    bool overwrite = false;
    std::function<bool(int done, int total)> onTensor; // false cancels; nothing is left behind
};

struct GptqExportReport {
    int bits = 0;
    std::int64_t groupSize = 0;
    int quantized = 0;        // matrices written as qweight/qzeros/scales/g_idx
    std::uint64_t bytes = 0;  // model.safetensors
    double bpwLinear = 0;     // bits of qweight + qzeros + scales + g_idx over the matrices' weights
};

Result<GptqExportReport> exportGptq(const std::string& archivePath, const std::string& outDir, const MethodRegistry& registry,
                                    const GptqExportOptions& options);

// The AQLM checkpoint format (transformers / vLLM's "aqlm") for k-means VQ archives: one codebook a
// matrix (num_codebooks 1, out_group_size 1, in_group_size d), `codes` [out, in/d, 1] int8 (<= 8
// bits) or int16 stored signed, `codebooks` fp16 [1, 2^nbits, 1, d] (the codebook padded with zero
// entries to 2^nbits), `scales` fp16 [out, 1, 1, 1] (the row scales, or 1); the embedding and head
// listed in linear_weights_not_to_quantize. A codebook shared by several matrices (sharing=type or
// model) is copied into each. W[o, g*d:(g+1)*d] = scales[o] * codebooks[0, codes[o, g, 0] mod 2^nbits, 0, :].
// aqlm archives (M codebooks of 2^B entries, groups of g) keep their shape: codes [out, in/g, M],
// codebooks [M, 2^B, 1, g], W[o, g*i:(g+1)*i] = scales[o] * sum_m codebooks[m, codes[o, i, m] mod 2^B, 0, :].
struct AqlmExportReport {
    int numCodebooks = 0;     // 1 for vq archives, M for aqlm archives
    int nbits = 0;
    int inGroupSize = 0;
    int quantized = 0;
    bool sharedCodebooksCopied = false;
    std::uint64_t bytes = 0;
    double bpwLinear = 0;     // codes + codebooks + scales over the matrices' weights
};
Result<AqlmExportReport> exportAqlm(const std::string& archivePath, const std::string& outDir, const MethodRegistry& registry,
                                    const GptqExportOptions& options);

} // namespace pocket
