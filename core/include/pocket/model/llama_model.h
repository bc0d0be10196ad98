// The Llama-family forward pass (RMSNorm, RoPE, grouped-query attention with a causal mask,
// SwiGLU MLP, tied or separate head) in LibTorch, from F32/F16/BF16 weights: fp32 compute (the
// reference) or bf16 weights and matrix products (fp32 norms, softmax and residual stream).
// Linear weights may stay compressed (CompressedMatrix), decoded into a reusable buffer just before
// they are used, within a memory budget; a KV cache (InferenceSession) serves generation.
// LibTorch stays behind the pimpl: this header includes no torch headers.
// A loaded model is immutable; its const methods may be called from several threads at once.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/support/result.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <memory>
#include <vector>

namespace pocket {

class CalibrationRun;
class InferenceSession;

// A linear weight the model may keep in compressed form (an archive's payload) and decode on
// demand. Implementations must allow decodeInto() from one thread at a time at least.
class CompressedMatrix {
public:
    virtual ~CompressedMatrix() = default;
    // Bytes it holds in memory while compressed (its share of what it shares with others).
    virtual std::uint64_t bytes() const = 0;
    // Writes the matrix, rows*cols fp32 values row-major; `threads` worker threads at most.
    virtual Status decodeInto(float* out, int threads) const = 0;
    // Matrices that decode at the same speed per weight share a class (same method, parameters
    // and shape): load() times one decode per class.
    virtual std::string speedClass() const = 0;
    // Matrices that return the same key share one payload (a codebook, a decoder): its memory is
    // freed only when all of them are kept decoded, so load() decides for all of them at once.
    virtual const void* payloadKey() const { return this; }
};

// A low-rank adapter (LoRA) on one linear weight: y = W x + (alpha / rank) B (A x), with A
// [rank, cols] and B [rows, rank], row-major fp32. Applied in the forward pass, never merged, so
// a model gives the same results whether its weights are decoded or kept compressed.
struct LoraAdapter {
    std::string name; // the weight's tensor name ("model.layers.0.self_attn.q_proj.weight")
    int rank = 0;
    float alpha = 0;
    std::int64_t rows = 0, cols = 0;
    std::vector<float> a, b;
    float scale() const { return rank > 0 ? alpha / static_cast<float>(rank) : 0.0f; }
};

enum class ComputePrecision {
    F32,  // fp32 weights and compute: the reference
    BF16, // bf16 weights and matrix products (oneDNN, AVX-512 BF16 where the CPU has it); fp32
          // embeddings lookups, norms, softmax, residual stream
};
const char* computePrecisionName(ComputePrecision precision); // "fp32" / "bf16"

struct LoadOptions {
    ComputePrecision precision = ComputePrecision::F32;
    // Linear weights to take from here instead of the checkpoint, by tensor name. They stay
    // compressed unless the memory budget lets them be kept decoded.
    std::map<std::string, std::shared_ptr<const CompressedMatrix>> compressed;
    // Bytes all weights may take (resident tensors, compressed payloads, the decode buffer).
    // kUnlimited: every matrix decoded at load; kAuto: as many decoded as the memory available
    // allows (the minimum plus MemAvailable, measured once the minimum is loaded, less 1 GiB for
    // activations). Below the minimum (every matrix compressed
    // plus one decode buffer) load() fails and names the minimum.
    static constexpr std::int64_t kUnlimited = -1;
    static constexpr std::int64_t kAuto = -2;
    static constexpr std::int64_t kMinimum = -3; // every compressed matrix stays compressed
    std::int64_t memoryBudget = kUnlimited;
    // Adapters applied to linear weights (names must be linear weights of the model, shapes must match).
    std::vector<LoraAdapter> adapters;
    // Tensors autograd can use (not inference tensors): for trainAdapters(). fp32 only, every
    // weight decoded.
    bool trainable = false;
    // Calibration only (loadStreamed): the output head is not loaded; running the model to its
    // logits fails with an error that says so.
    bool withoutHead = false;
};

// Training low-rank adapters on a model's linear weights, the weights themselves frozen.
enum class AdapterObjective {
    Nll, // next-token negative log-likelihood of the training text
    Kl,  // KL(teacher || model) per token, the teacher being the original model
};
const char* adapterObjectiveName(AdapterObjective objective); // "nll" / "kl"

struct AdapterTrainingParams {
    int rank = 32;            // the paper's recovery setting
    float alpha = 64;
    int epochs = 1;
    double learningRate = 1e-4;
    int batch = 8;            // sequences per step
    AdapterObjective objective = AdapterObjective::Nll;
    std::uint64_t seed = 1;   // initial A (uniform, +-1/sqrt(cols), as PEFT) and the order of sequences
    std::vector<std::string> matrices; // weights to adapt; empty = every linear weight
};

struct AdapterTrainingProgress {
    int step = 0, steps = 0, epoch = 0;
    double loss = 0;          // this step's batch
    double elapsedSeconds = 0;
};

// The objective on sequences, and optionally its gradient with respect to every adapter value.
struct AdapterLoss {
    double loss = 0;
    std::vector<LoraAdapter> gradients; // same layout as adapters(), a/b holding d loss / d value
};

// Where a model's weight memory goes (load() decides it).
struct WeightMemory {
    std::uint64_t fixedBytes = 0;        // embeddings, norms, head (never compressed)
    std::uint64_t decodedBytes = 0;      // linear weights kept decoded
    std::uint64_t compressedBytes = 0;   // linear weights kept in payload form
    std::uint64_t bufferBytes = 0;       // the reusable decode buffer
    std::uint64_t minimumBytes = 0;      // every compressible matrix compressed, plus the buffer
    std::uint64_t allDecodedBytes = 0;   // every matrix decoded (no buffer)
    int matricesDecoded = 0;
    int matricesCompressed = 0;
    double decodeSecondsPerPass = 0;     // measured decode time of the compressed ones, per forward
    std::uint64_t total() const { return fixedBytes + decodedBytes + compressedBytes + bufferBytes; }
};
// One line: the total and, with compressed matrices, where it went ("12.40 MiB: 3 matrices ...").
std::string describeMemory(const WeightMemory& memory);

class LlamaModel {
public:
    // Materialises every tensor of `checkpoint` (the mapping's pages are released after each),
    // except the linear weights `options.compressed` provides. `onTensor(done, total)` reports
    // progress; returning false cancels.
    // `options` is taken by value: the compressed matrices it hands over are released as soon as
    // they are decoded.
    static Result<std::unique_ptr<LlamaModel>> load(const Checkpoint& checkpoint,
                                                    const std::function<bool(int done, int total)>& onTensor = {},
                                                    LoadOptions options = {});
    // A model for calibration passes over a checkpoint too large to hold in fp32: every linear
    // weight stays in `checkpoint`'s memory map and is converted to fp32 for each use, one matrix
    // at a time (the other tensors are loaded as load() does, but for the output head, which
    // calibration never needs: the logits cannot be computed). The same Hessians as load();
    // `checkpoint` must outlive the model. setWeight() makes a weight resident; releaseBlock()
    // frees a block's weights once the calibration has passed it.
    static Result<std::unique_ptr<LlamaModel>> loadStreamed(const Checkpoint& checkpoint);
    ~LlamaModel();

    const ModelConfig& config() const;
    ComputePrecision precision() const;
    // Bytes held by the weights (all of WeightMemory).
    std::uint64_t weightBytes() const;
    const WeightMemory& memory() const;

    // A sequence with a KV cache of up to `capacity` tokens (0: the model's maximum positions).
    Result<std::unique_ptr<InferenceSession>> startSession(int capacity = 0) const;

    // Logits for one sequence, row-major [tokens.size(), vocab].
    Result<std::vector<float>> logits(const std::vector<std::int32_t>& tokens) const;

    // Log-probabilities (log-softmax of the logits) for a batch of equal-length sequences in one
    // forward pass, row-major [batch, length, vocab]: much faster than one logits() call per
    // sequence for small models, where per-operation overhead dominates.
    Result<std::vector<float>> logProbs(const std::vector<std::vector<std::int32_t>>& batch) const;

    // For each sequence of a batch of equal-length sequences, the negative log-likelihood
    // (natural log) of token t+1 given tokens 0..t, for t = 0 .. length-2.
    Result<std::vector<std::vector<double>>> nextTokenNll(const std::vector<std::vector<std::int32_t>>& batch) const;

    // Replaces a linear weight ("model.layers.3.mlp.up_proj.weight") with `values` (rows*cols
    // floats), e.g. its quantised version, so that later calibration sees it. Not thread-safe.
    // Only for fp32 models whose weights are decoded or streamed (loadStreamed); a streamed weight
    // becomes resident.
    Status setWeight(const std::string& name, const std::vector<float>& values);
    // The same with a weight kept compressed and decoded just before each use (payloadMatrices),
    // so that it costs its payload, not rows*cols floats. Only for models whose linear weights
    // are all streamed or compressed (loadStreamed); `rows` x `cols` is the source's shape (checked).
    // A calibration pass over several chunks of windows decodes it once for the pass.
    Status setWeight(const std::string& name, std::shared_ptr<const CompressedMatrix> source, std::int64_t rows, std::int64_t cols);
    // Frees the linear weights of block `block` (a calibration pass is past it); the block cannot
    // be run afterwards (an error says so).
    void releaseBlock(int block);
    // Frees the embeddings: calibration runs started before keep their hidden states, but no
    // new forward pass or calibration run can start (an error says so).
    void releaseEmbeddings();

    // The adapters the model applies, with their current values (in model order).
    std::vector<LoraAdapter> adapters() const;
    // Replaces adapter values (same names, ranks and shapes as adapters()). Not thread-safe.
    Status setAdapters(const std::vector<LoraAdapter>& adapters);

    // Trains new adapters (replacing any) on `sequences` (equal lengths, BOS included) with Adam,
    // the weights frozen; `teacher` (same vocabulary) is needed for AdapterObjective::Kl. Needs a
    // model loaded with LoadOptions::trainable. At the end the adapter values are rounded to fp16
    // (as an archive stores them). `onStep` after every step; false cancels (adapters then kept
    // as they are). Returns the loss of each step.
    Result<std::vector<double>> trainAdapters(const AdapterTrainingParams& params, const std::vector<std::vector<std::int32_t>>& sequences,
                                              const LlamaModel* teacher = nullptr,
                                              const std::function<bool(const AdapterTrainingProgress&)>& onStep = {});
    // The mean objective over `sequences` in batches of `batch` (with gradients: one batch of all
    // of them, trainable models only).
    Result<AdapterLoss> adapterLoss(const std::vector<std::vector<std::int32_t>>& sequences, AdapterObjective objective,
                                    const LlamaModel* teacher = nullptr, bool gradients = false, int batch = 8) const;

    // Starts carrying calibration sequences (equal lengths, BOS included) through the model block
    // by block. The run uses this model's current weights at each step and must not outlive it.
    Result<std::unique_ptr<CalibrationRun>> startCalibration(const std::vector<std::vector<std::int32_t>>& sequences);

    struct Impl;

private:
    LlamaModel();
    std::unique_ptr<Impl> m_impl;
};

// One sequence run token by token with a KV cache (for generation). Use from one thread; the
// model must outlive it.
class InferenceSession {
public:
    ~InferenceSession();
    // Runs `tokens` after those already fed and returns the logits of the last one (vocabulary
    // floats). Fails when they do not fit the capacity, or with "cancelled" when `cancel` (if set)
    // becomes true between two blocks; the session is then reset.
    Result<std::vector<float>> feed(const std::vector<std::int32_t>& tokens, const std::atomic<bool>* cancel = nullptr);
    int position() const; // tokens fed so far
    int capacity() const;
    void reset();         // forgets every token fed

private:
    friend class LlamaModel;
    InferenceSession();
    struct State;
    std::unique_ptr<State> m_state;
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
    // hessians() and then advance() in one pass through the block (half the forward work), for
    // callers that change no weight of the block in between.
    Result<std::map<MatrixType, std::vector<float>>> hessiansThenAdvance();

private:
    friend class LlamaModel;
    CalibrationRun();
    Result<std::map<MatrixType, std::vector<float>>> measure(bool advance) const;
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
