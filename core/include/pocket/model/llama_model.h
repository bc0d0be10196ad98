// The Llama-family forward pass (RMSNorm, RoPE, grouped-query attention with a causal mask,
// SwiGLU MLP, tied or separate head) in LibTorch, fp32 compute from F32/F16/BF16 weights.
// LibTorch stays behind the pimpl: this header includes no torch headers.
// A loaded model is immutable; its const methods may be called from several threads at once.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <memory>
#include <vector>

namespace pocket {

class CalibrationRun;

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

    // Replaces a linear weight ("model.layers.3.mlp.up_proj.weight") with `values` (rows*cols
    // floats), e.g. its quantised version, so that later calibration sees it. Not thread-safe.
    Status setWeight(const std::string& name, const std::vector<float>& values);

    // Starts carrying calibration sequences (equal lengths, BOS included) through the model block
    // by block. The run uses this model's current weights at each step and must not outlive it.
    Result<std::unique_ptr<CalibrationRun>> startCalibration(const std::vector<std::vector<std::int32_t>>& sequences);

    struct Impl;

private:
    LlamaModel();
    std::unique_ptr<Impl> m_impl;
};

// Calibration statistics for methods like GPTQ: the hidden states of calibration sequences,
// moved through the model one block at a time. Use from one thread.
class CalibrationRun {
public:
    ~CalibrationRun();
    // The block whose inputs hessians() measures and advance() runs next (0-based).
    int nextBlock() const;
    // Input Hessians H = 2/n X^T X (n calibration tokens) of the next block's seven matrices,
    // [in, in] row-major, under the model's current weights (q/k/v share one, gate/up another).
    Result<std::map<MatrixType, std::vector<float>>> hessians() const;
    // Runs the hidden states through the next block with the model's current weights.
    Status advance();

private:
    friend class LlamaModel;
    CalibrationRun();
    struct State;
    std::unique_ptr<State> m_state;
};

// Threads LibTorch uses for intra-op work (0: one per core). Call from the main thread before work.
// The first call also tunes glibc's allocator to keep freed tensor memory (process-wide).
void setComputeThreads(int threads);
int computeThreads();
// GFLOP/s of an n x n fp32 matmul through LibTorch (tells whether an optimised BLAS is in use).
double measureMatmulGflops(int n = 1024, int repeats = 10);

} // namespace pocket
