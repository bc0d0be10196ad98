// Lazy, memory-mapped access to a model's tensors, whatever the file format. Tensor names are
// always the Hugging Face Llama names ("model.layers.0.self_attn.q_proj.weight"), whichever
// format the checkpoint is in. Opening validates the config and every tensor's presence, dtype
// and shape, and reads no weights; load() materialises one tensor at a time.
// A Checkpoint is safe to read from several threads once opened.
#pragma once

#include "pocket/io/model_config.h"
#include "pocket/support/result.h"
#include "pocket/io/tensor_data.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

enum class CheckpointFormat { HfSafetensors, Llama2c, Gguf };

// "hf-safetensors", "llama2.c", "gguf".
const char* checkpointFormatName(CheckpointFormat format);

// The seven linear matrices of a decoder block, in HF naming order.
enum class MatrixType { Q, K, V, O, Gate, Up, Down };
constexpr MatrixType kMatrixTypes[] = {MatrixType::Q, MatrixType::K, MatrixType::V, MatrixType::O,
                                       MatrixType::Gate, MatrixType::Up, MatrixType::Down};
// "q_proj", ..., "down_proj".
const char* matrixTypeName(MatrixType type);
// The inverse of matrixTypeName (exact spelling only); false for anything else.
bool parseMatrixTypeName(const std::string& name, MatrixType& type);
// "model.layers.3.self_attn.q_proj.weight"
std::string matrixTensorName(int layer, MatrixType type);

// Every tensor (name and shape, dtype left F32) that a checkpoint of `config` must hold, in
// canonical order: embedding, then per block norms/attention/MLP, final norm, output head.
std::vector<TensorInfo> expectedTensors(const ModelConfig& config);

class Checkpoint {
public:
    virtual ~Checkpoint() = default;

    const ModelConfig& config() const { return m_config; }
    CheckpointFormat format() const { return m_format; }
    // The folder (HF) or file (llama2.c) the checkpoint was opened from.
    const std::string& path() const { return m_path; }
    // The model's tensors in canonical order (see expectedTensors()), with their stored dtypes.
    const std::vector<TensorInfo>& tensors() const { return m_tensors; }
    const TensorInfo* find(const std::string& name) const;
    // The file a tensor lives in (for messages).
    virtual std::string fileOf(const std::string& name) const = 0;
    // Reads one tensor. The result may be a view of the mapping; drop it when done.
    virtual Result<TensorData> load(const std::string& name) const = 0;
    // A tokenizer file found beside the model (tokenizer.model or tokenizer.bin), or "".
    const std::string& tokenizerPath() const { return m_tokenizerPath; }
    // Sum of the stored byte sizes of tensors().
    std::uint64_t totalBytes() const;
    // The quantisation the file declares as a whole (a GGUF's general.file_type: "Q4_K_M",
    // "F16", ...), or "" when it declares none.
    const std::string& fileType() const { return m_fileType; }

protected:
    Checkpoint() = default;
    ModelConfig m_config;
    CheckpointFormat m_format = CheckpointFormat::HfSafetensors;
    std::string m_path;
    std::vector<TensorInfo> m_tensors;
    std::map<std::string, std::size_t> m_index;
    std::string m_tokenizerPath;
    std::string m_fileType;
    void buildIndex();
};

// A tensor's stored type: a GGUF block type ("Q4_K") or its dtype ("F16").
std::string storedTypeName(const TensorInfo& info);
// Bits per weight of a tensor as stored (4.5 for Q4_K, 16 for F16).
double storedBitsPerWeight(const TensorInfo& info);

// What a checkpoint's weights are stored as, over every tensor and over the block linear matrices
// (the ones compression methods replace): element counts by stored type and bits per weight,
// counted as the experiment store counts a compressed run's (bits of the matrices' stored bytes
// over their weights). A quantised GGUF's starting point.
struct StoredTypes {
    std::map<std::string, std::int64_t> all;     // stored type -> elements
    std::map<std::string, std::int64_t> linear;  // the same over the block linear matrices
    double allBitsPerWeight = 0;
    double linearBitsPerWeight = 0;
    // Some block linear matrix is stored in a block type below 16 bits.
    bool quantized() const;
    // "Q4_K 81%, Q6_K 19%" over the linear matrices, largest share first.
    std::string linearMix() const;
};
StoredTypes storedTypes(const Checkpoint& checkpoint);

// Opens a Hugging Face folder (config.json + model.safetensors or a sharded
// model.safetensors.index.json), a .safetensors file inside such a folder, a GGUF file (llama and
// qwen2 architectures, any block type of ggml_types.h dequantised on load), or a llama2.c legacy
// .bin file. Errors name the file and the problem.
Result<std::unique_ptr<Checkpoint>> openCheckpoint(const std::string& path);

} // namespace pocket
