// A .pllm archive written in the GPTQ checkpoint format that transformers, vLLM and GPTQModel load
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

} // namespace pocket
