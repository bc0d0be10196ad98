// The Llama-family forward pass (RMSNorm, RoPE, grouped-query attention with a causal mask,
// SwiGLU MLP, tied or separate head) in LibTorch, fp32 compute from F32/F16/BF16 weights.
// LibTorch stays behind the pimpl: this header includes no torch headers.
// A loaded model is immutable; its const methods may be called from several threads at once.
#pragma once

#include "pocket/checkpoint.h"
#include "pocket/result.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace pocket {

class LlamaModel {
public:
    // Materialises every tensor of `checkpoint` as fp32, one at a time (the mapping's pages are
    // released after each). `onTensor(done, total)` reports progress; returning false cancels.
    static Result<std::unique_ptr<LlamaModel>> load(const Checkpoint& checkpoint,
                                                    const std::function<bool(int done, int total)>& onTensor = {});
    ~LlamaModel();

    const ModelConfig& config() const;
    // Bytes held by the fp32 weights.
    std::uint64_t weightBytes() const;

    // Logits for one sequence, row-major [tokens.size(), vocab].
    Result<std::vector<float>> logits(const std::vector<std::int32_t>& tokens) const;

    // For each sequence of a batch of equal-length sequences, the negative log-likelihood
    // (natural log) of token t+1 given tokens 0..t, for t = 0 .. length-2.
    Result<std::vector<std::vector<double>>> nextTokenNll(const std::vector<std::vector<std::int32_t>>& batch) const;

private:
    LlamaModel();
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

// Threads LibTorch uses for intra-op work (0: one per core). Call from the main thread before work.
// The first call also tunes glibc's allocator to keep freed tensor memory (process-wide).
void setComputeThreads(int threads);
int computeThreads();
// GFLOP/s of an n x n fp32 matmul through LibTorch (tells whether an optimised BLAS is in use).
double measureMatmulGflops(int n = 1024, int repeats = 10);

} // namespace pocket
