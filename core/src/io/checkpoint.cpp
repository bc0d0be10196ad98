#include "pocket/io/checkpoint.h"

#include "checkpoint_formats.h"

#include "pocket/io/gguf.h"

#include "pocket/io/mapped_file.h"
#include "pocket/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace pocket {

const char* checkpointFormatName(CheckpointFormat format)
{
    switch (format) {
    case CheckpointFormat::HfSafetensors: return "hf-safetensors";
    case CheckpointFormat::Llama2c: return "llama2.c";
    case CheckpointFormat::Gguf: return "gguf";
    }
    return "?";
}

void interleavedToHalfRows(const float* in, float* out, std::int64_t rows, std::int64_t cols, std::int64_t heads)
{
    const std::int64_t hd = rows / heads;
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < hd / 2; ++i)
            for (std::int64_t pair = 0; pair < 2; ++pair) {
                const std::int64_t from = h * hd + 2 * i + pair;
                const std::int64_t to = h * hd + pair * (hd / 2) + i;
                std::memcpy(out + to * cols, in + from * cols, static_cast<std::size_t>(cols) * sizeof(float));
            }
}

const char* matrixTypeName(MatrixType type)
{
    static const char* const kNames[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    return kNames[static_cast<int>(type)];
}

bool parseMatrixTypeName(const std::string& name, MatrixType& type)
{
    for (const MatrixType t : kMatrixTypes)
        if (name == matrixTypeName(t)) {
            type = t;
            return true;
        }
    return false;
}

std::string matrixTensorName(int layer, MatrixType type)
{
    const bool attention = type == MatrixType::Q || type == MatrixType::K || type == MatrixType::V || type == MatrixType::O;
    return "model.layers." + std::to_string(layer) + (attention ? ".self_attn." : ".mlp.") + matrixTypeName(type) + ".weight";
}

std::vector<TensorInfo> expectedTensors(const ModelConfig& c)
{
    std::vector<TensorInfo> out;
    auto add = [&](std::string name, std::vector<std::int64_t> shape) {
        TensorInfo info;
        info.name = std::move(name);
        info.shape = std::move(shape);
        info.byteSize = static_cast<std::uint64_t>(elementCount(info.shape)) * 4;
        out.push_back(std::move(info));
    };
    const std::int64_t d = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, f = c.intermediateSize;
    add("model.embed_tokens.weight", {c.vocabSize, d});
    for (int l = 0; l < c.numLayers; ++l) {
        const std::string p = "model.layers." + std::to_string(l);
        add(p + ".input_layernorm.weight", {d});
        add(matrixTensorName(l, MatrixType::Q), {q, d});
        add(matrixTensorName(l, MatrixType::K), {kv, d});
        add(matrixTensorName(l, MatrixType::V), {kv, d});
        if (c.attentionBias) {
            add(p + ".self_attn.q_proj.bias", {q});
            add(p + ".self_attn.k_proj.bias", {kv});
            add(p + ".self_attn.v_proj.bias", {kv});
        }
        add(matrixTensorName(l, MatrixType::O), {d, q});
        add(p + ".post_attention_layernorm.weight", {d});
        add(matrixTensorName(l, MatrixType::Gate), {f, d});
        add(matrixTensorName(l, MatrixType::Up), {f, d});
        add(matrixTensorName(l, MatrixType::Down), {d, f});
    }
    add("model.norm.weight", {d});
    if (!c.tieWordEmbeddings)
        add("lm_head.weight", {c.vocabSize, d});
    return out;
}

const TensorInfo* Checkpoint::find(const std::string& name) const
{
    const auto it = m_index.find(name);
    return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

std::uint64_t Checkpoint::totalBytes() const
{
    std::uint64_t total = 0;
    for (const auto& t : m_tensors) total += t.byteSize;
    return total;
}

std::string storedTypeName(const TensorInfo& info)
{
    return info.storedType.empty() ? dtypeName(info.dtype) : info.storedType;
}

double storedBitsPerWeight(const TensorInfo& info)
{
    return info.storedType.empty() ? 8.0 * static_cast<double>(dtypeSize(info.dtype)) : info.storedBitsPerWeight;
}

bool StoredTypes::quantized() const
{
    // Block types are the stored types that are not a plain float format.
    for (const auto& [type, count] : linear)
        if (count > 0 && type != "F32" && type != "F16" && type != "BF16" && type != "F64")
            return true;
    return false;
}

std::string StoredTypes::linearMix() const
{
    std::int64_t total = 0;
    std::vector<std::pair<std::int64_t, std::string>> shares;
    for (const auto& [type, count] : linear) {
        total += count;
        shares.emplace_back(count, type);
    }
    std::sort(shares.begin(), shares.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::string out;
    for (const auto& [count, type] : shares) {
        const double percent = total > 0 ? 100.0 * static_cast<double>(count) / static_cast<double>(total) : 0.0;
        char buffer[32];
        std::snprintf(buffer, sizeof buffer, " %.0f%%", percent);
        out += (out.empty() ? "" : ", ") + type + buffer;
    }
    return out;
}

StoredTypes storedTypes(const Checkpoint& checkpoint)
{
    StoredTypes out;
    std::set<std::string> linearNames;
    for (int layer = 0; layer < checkpoint.config().numLayers; ++layer)
        for (MatrixType type : kMatrixTypes) linearNames.insert(matrixTensorName(layer, type));
    double allBits = 0, linearBits = 0;
    std::int64_t allCount = 0, linearCount = 0;
    for (const TensorInfo& t : checkpoint.tensors()) {
        const std::int64_t n = elementCount(t.shape);
        const std::string type = storedTypeName(t);
        const double bits = storedBitsPerWeight(t) * static_cast<double>(n); // = 8 x the stored bytes for GGUF blocks

        out.all[type] += n;
        allBits += bits;
        allCount += n;
        if (linearNames.count(t.name)) {
            out.linear[type] += n;
            linearBits += bits;
            linearCount += n;
        }
    }
    out.allBitsPerWeight = allCount > 0 ? allBits / static_cast<double>(allCount) : 0.0;
    out.linearBitsPerWeight = linearCount > 0 ? linearBits / static_cast<double>(linearCount) : 0.0;
    return out;
}

void Checkpoint::buildIndex()
{
    m_index.clear();
    for (std::size_t i = 0; i < m_tensors.size(); ++i) m_index[m_tensors[i].name] = i;
}

namespace {

std::string firstExisting(const fs::path& dir, std::initializer_list<std::string> names)
{
    for (const auto& n : names) {
        std::error_code ec;
        if (fs::is_regular_file(dir / n, ec))
            return (dir / n).string();
    }
    return {};
}

// ---------------------------------------------------------------- Hugging Face safetensors
class HfCheckpoint final : public Checkpoint {
public:
    static Result<std::unique_ptr<Checkpoint>> open(const fs::path& dir);
    std::string fileOf(const std::string& name) const override
    {
        const auto it = m_owner.find(name);
        return it == m_owner.end() ? m_path : it->second->path();
    }
    Result<TensorData> load(const std::string& name) const override
    {
        const auto it = m_owner.find(name);
        if (it == m_owner.end())
            return fileError(m_path, "no tensor named '" + name + "'");
        return it->second->load(name);
    }

private:
    std::vector<std::shared_ptr<SafetensorsFile>> m_files;
    std::map<std::string, std::shared_ptr<SafetensorsFile>> m_owner;
};

Result<std::unique_ptr<Checkpoint>> HfCheckpoint::open(const fs::path& dir)
{
    const std::string configPath = (dir / "config.json").string();
    std::error_code ec;
    if (!fs::is_regular_file(configPath, ec))
        return fileError(configPath, "no such file (a Hugging Face model folder needs config.json)");
    auto config = loadHfConfig(configPath);
    if (!config)
        return config.error();

    std::unique_ptr<HfCheckpoint> ckpt(new HfCheckpoint());
    ckpt->m_config = *config;
    ckpt->m_format = CheckpointFormat::HfSafetensors;
    ckpt->m_path = dir.string();

    const fs::path indexPath = dir / "model.safetensors.index.json";
    const fs::path singlePath = dir / "model.safetensors";
    std::map<std::string, std::shared_ptr<SafetensorsFile>> byFile;
    if (fs::exists(indexPath, ec)) {
        std::ifstream in(indexPath);
        nlohmann::json index;
        try {
            index = nlohmann::json::parse(in);
        } catch (const std::exception& e) {
            return fileError(indexPath.string(), std::string("not valid JSON: ") + e.what());
        }
        if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
            return fileError(indexPath.string(), "missing the 'weight_map' object");
        for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
            if (!it.value().is_string())
                return fileError(indexPath.string(), "weight_map entry '" + it.key() + "' is not a file name");
            const std::string shard = it.value().get<std::string>();
            if (shard.find('/') != std::string::npos || shard == "..")
                return fileError(indexPath.string(), "weight_map entry '" + it.key() + "' points outside the folder: " + shard);
            auto& file = byFile[shard];
            if (!file) {
                auto opened = SafetensorsFile::open((dir / shard).string());
                if (!opened)
                    return opened.error();
                file = *opened;
                ckpt->m_files.push_back(file);
            }
            if (!file->find(it.key()))
                return fileError(file->path(), "index says it holds tensor '" + it.key() + "' but it does not");
            ckpt->m_owner[it.key()] = file;
        }
    } else if (fs::exists(singlePath, ec)) {
        auto opened = SafetensorsFile::open(singlePath.string());
        if (!opened)
            return opened.error();
        ckpt->m_files.push_back(*opened);
        for (const auto& t : (*opened)->tensors()) ckpt->m_owner[t.name] = *opened;
    } else {
        return fileError(dir.string(), "no model.safetensors or model.safetensors.index.json in this folder");
    }

    // Every expected tensor must be there, in a float dtype, with the config's shape.
    for (const auto& want : expectedTensors(ckpt->m_config)) {
        const auto it = ckpt->m_owner.find(want.name);
        if (it == ckpt->m_owner.end()) {
            // (A tied model needs no lm_head; one stored anyway is ignored like any extra tensor.)
            return fileError(ckpt->m_files.size() == 1 ? ckpt->m_files[0]->path() : indexPath.string(),
                             "missing tensor '" + want.name + "' required by config.json");
        }
        const TensorInfo* have = it->second->find(want.name);
        if (!isFloatType(have->dtype) || have->dtype == DType::F64)
            return fileError(it->second->path(), "tensor '" + want.name + "' has dtype " + dtypeName(have->dtype) + "; expected F32, F16 or BF16");
        if (have->shape != want.shape)
            return fileError(it->second->path(), "tensor '" + want.name + "' has shape " + shapeString(have->shape) +
                                                     " but config.json implies " + shapeString(want.shape));
        ckpt->m_tensors.push_back(*have);
    }
    ckpt->buildIndex();
    ckpt->m_tokenizerPath = firstExisting(dir, {"tokenizer.model", "tokenizer.json", "tokenizer.bin"});
    return std::unique_ptr<Checkpoint>(std::move(ckpt));
}

// ---------------------------------------------------------------- llama2.c legacy .bin
class Llama2cCheckpoint final : public Checkpoint {
public:
    static Result<std::unique_ptr<Checkpoint>> open(const fs::path& path);
    std::string fileOf(const std::string&) const override { return m_path; }
    Result<TensorData> load(const std::string& name) const override;

private:
    struct Slot {
        std::uint64_t offset; // bytes from the start of the file
        std::int64_t permuteHeads; // > 0: rows are in llama2.c's interleaved RoPE order
    };
    std::shared_ptr<MappedFile> m_file;
    std::map<std::string, Slot> m_slots;
};

Result<std::unique_ptr<Checkpoint>> Llama2cCheckpoint::open(const fs::path& path)
{
    auto mapped = MappedFile::open(path.string());
    if (!mapped)
        return mapped.error();
    const auto& file = *mapped;
    const std::string where = path.string();
    if (file->size() >= 4) {
        std::uint32_t magic;
        std::memcpy(&magic, file->data(), 4);
        if (magic == 0x616b3432u)
            return fileError(where, "llama2.c export format version 1+ (magic 'ak42') is not supported; export with llama2.c's export.py --version 0 (legacy)",
                             ErrorKind::Unsupported);
    }
    if (file->size() < 28)
        return fileError(where, "truncated: " + std::to_string(file->size()) + " bytes is shorter than the 28-byte llama2.c header");
    std::int32_t h[7];
    std::memcpy(h, file->data(), sizeof h);
    const std::int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kvHeads = h[4], seqLen = h[6];
    const bool shared = h[5] > 0;
    const std::int64_t vocab = h[5] > 0 ? h[5] : -static_cast<std::int64_t>(h[5]);
    auto plausible = [](std::int64_t v, std::int64_t max) { return v > 0 && v <= max; };
    if (!plausible(dim, 1 << 16) || !plausible(hidden, 1 << 18) || !plausible(layers, 1024) || !plausible(heads, 1024) ||
        !plausible(kvHeads, 1024) || !plausible(vocab, 1 << 22) || !plausible(seqLen, 1 << 22) || dim % heads != 0)
        return fileError(where, "not a llama2.c checkpoint: implausible header (dim=" + std::to_string(dim) + " hidden=" + std::to_string(hidden) +
                                    " layers=" + std::to_string(layers) + " heads=" + std::to_string(heads) + " kv_heads=" + std::to_string(kvHeads) +
                                    " vocab=" + std::to_string(h[5]) + " seq_len=" + std::to_string(seqLen) + ")");

    std::unique_ptr<Llama2cCheckpoint> ckpt(new Llama2cCheckpoint());
    ModelConfig& c = ckpt->m_config;
    c.architecture = "LlamaForCausalLM";
    c.modelType = "llama";
    c.hiddenSize = dim;
    c.intermediateSize = hidden;
    c.numLayers = layers;
    c.numHeads = heads;
    c.numKvHeads = kvHeads;
    c.headDim = dim / heads;
    c.vocabSize = vocab;
    c.maxPositions = seqLen;
    c.rmsNormEps = 1e-5; // llama2.c's run.c
    c.ropeTheta = 10000.0;
    c.tieWordEmbeddings = shared;
    c.torchDtype = "float32";
    if (auto s = c.validate(where); !s)
        return s.error();
    ckpt->m_format = CheckpointFormat::Llama2c;
    ckpt->m_path = where;
    ckpt->m_file = file;

    // The legacy layout: each kind of tensor for all layers together, in this order.
    const std::int64_t hd = c.headDim, kvDim = kvHeads * hd;
    std::uint64_t offset = 28;
    std::map<std::string, Slot>& slots = ckpt->m_slots;
    auto perLayer = [&](const std::function<std::string(int)>& name, std::int64_t elements, std::int64_t permuteHeads) {
        for (int l = 0; l < layers; ++l) {
            slots[name(l)] = {offset, permuteHeads};
            offset += static_cast<std::uint64_t>(elements) * 4;
        }
    };
    auto layerName = [](const char* suffix) { return [suffix](int l) { return "model.layers." + std::to_string(l) + suffix; }; };
    auto matrixName = [](MatrixType t) { return [t](int l) { return matrixTensorName(l, t); }; };
    slots["model.embed_tokens.weight"] = {offset, 0};
    offset += static_cast<std::uint64_t>(vocab * dim) * 4;
    perLayer(layerName(".input_layernorm.weight"), dim, 0);
    perLayer(matrixName(MatrixType::Q), dim * dim, heads);
    perLayer(matrixName(MatrixType::K), kvDim * dim, kvHeads);
    perLayer(matrixName(MatrixType::V), kvDim * dim, 0);
    perLayer(matrixName(MatrixType::O), dim * dim, 0);
    perLayer(layerName(".post_attention_layernorm.weight"), dim, 0);
    perLayer(matrixName(MatrixType::Gate), hidden * dim, 0); // w1
    perLayer(matrixName(MatrixType::Down), dim * hidden, 0); // w2
    perLayer(matrixName(MatrixType::Up), hidden * dim, 0);   // w3
    slots["model.norm.weight"] = {offset, 0};
    offset += static_cast<std::uint64_t>(dim) * 4;
    offset += static_cast<std::uint64_t>(seqLen * hd) * 4; // freq_cis_real and freq_cis_imag, unused (recomputed)
    if (!shared) {
        slots["lm_head.weight"] = {offset, 0};
        offset += static_cast<std::uint64_t>(vocab * dim) * 4;
    }
    if (file->size() < offset)
        return fileError(where, "truncated: the header (dim=" + std::to_string(dim) + ", layers=" + std::to_string(layers) + ", vocab=" +
                                    std::to_string(h[5]) + ") needs " + std::to_string(offset) + " bytes but the file has " + std::to_string(file->size()));

    for (auto info : expectedTensors(c)) {
        info.dtype = DType::F32;
        ckpt->m_tensors.push_back(info);
    }
    ckpt->buildIndex();
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    ckpt->m_tokenizerPath = firstExisting(dir, {"tokenizer.bin", "tok" + std::to_string(vocab) + ".bin"});
    if (ckpt->m_tokenizerPath.empty() && vocab == 32000)
        ckpt->m_tokenizerPath = firstExisting(dir, {"tokenizer.model"});
    return std::unique_ptr<Checkpoint>(std::move(ckpt));
}

Result<TensorData> Llama2cCheckpoint::load(const std::string& name) const
{
    const auto it = m_slots.find(name);
    const TensorInfo* info = find(name);
    if (it == m_slots.end() || !info)
        return fileError(m_path, "no tensor named '" + name + "'");
    TensorData out;
    out.info = *info;
    const std::uint8_t* src = m_file->data() + it->second.offset;
    if (it->second.permuteHeads == 0) {
        out.data = src;
        out.owner = m_file->lease(it->second.offset, info->byteSize);
        return out;
    }
    // llama2.c rotates interleaved pairs (2i, 2i+1) of each head; the HF layout rotates halves
    // (i, i + hd/2). Reorder the rows of each head so both give the same model.
    const std::int64_t cols = info->shape[1];
    auto buffer = std::make_shared<std::vector<float>>(static_cast<std::size_t>(info->shape[0] * cols));
    interleavedToHalfRows(reinterpret_cast<const float*>(src), buffer->data(), info->shape[0], cols, it->second.permuteHeads);
    m_file->release(it->second.offset, info->byteSize);
    out.data = reinterpret_cast<const std::uint8_t*>(buffer->data());
    out.owner = buffer;
    return out;
}

} // namespace

namespace {
Result<std::unique_ptr<Checkpoint>> openCheckpointUnguarded(const std::string& pathText)
{
    if (pathText.empty())
        return Error{"no model path given"};
    const fs::path path(pathText);
    std::error_code ec;
    if (!fs::exists(path, ec))
        return fileError(pathText, "no such file or folder");
    if (fs::is_directory(path, ec))
        return HfCheckpoint::open(path);
    if (isGgufFile(pathText))
        return openGgufCheckpoint(pathText);
    if (path.extension() == ".safetensors" || path.filename() == "config.json" || path.filename() == "model.safetensors.index.json")
        return HfCheckpoint::open(path.parent_path().empty() ? fs::path(".") : path.parent_path());
    return Llama2cCheckpoint::open(path);
}
} // namespace

Result<std::unique_ptr<Checkpoint>> openCheckpoint(const std::string& path)
{
    try {
        return openCheckpointUnguarded(path);
    } catch (const std::bad_alloc&) {
        return fileError(path, "not enough memory to open this model");
    } catch (const std::exception& e) {
        return fileError(path, std::string("cannot open: ") + e.what());
    }
}

} // namespace pocket
