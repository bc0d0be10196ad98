#include "pocket/io/hf_writer.h"

#include "pocket/io/atomic_file.h"
#include "pocket/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

namespace fs = std::filesystem;

namespace pocket {

namespace {
Status writeHfFolderUnguarded(const ModelConfig& config, const std::function<Status(const TensorInfo&, std::vector<float>&)>& valuesOf,
                              const std::string& outDir, const HfWriteOptions& options)
{
    if (!isFloatType(options.dtype) || options.dtype == DType::F64)
        return Error::usage(std::string("dtype: cannot write weights as ") + dtypeName(options.dtype) + " (use f32, f16 or bf16)", "dtype");
    std::error_code ec;
    auto folder = TempFolder::create(outDir, options.overwrite);
    if (!folder)
        return folder.error();
    const fs::path tempDir = (*folder)->path();

    ModelConfig stored = config;
    stored.torchDtype = options.dtype == DType::F32 ? "float32" : options.dtype == DType::F16 ? "float16" : "bfloat16";
    if (auto s = writeFileAtomically((tempDir / "config.json").string(), hfConfigJson(stored)); !s)
        return s;

    // Assign tensors to shards in canonical order.
    const auto tensors = expectedTensors(config);
    std::vector<std::vector<std::size_t>> shards(1);
    std::uint64_t shardBytes = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const std::uint64_t bytes = static_cast<std::uint64_t>(elementCount(tensors[i].shape)) * dtypeSize(options.dtype);
        if (options.maxShardBytes > 0 && shardBytes > 0 && shardBytes + bytes > options.maxShardBytes) {
            shards.emplace_back();
            shardBytes = 0;
        }
        shards.back().push_back(i);
        shardBytes += bytes;
    }
    auto shardName = [&](std::size_t s) {
        if (shards.size() == 1)
            return std::string("model.safetensors");
        char name[64];
        std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
        return std::string(name);
    };

    int done = 0;
    nlohmann::ordered_json weightMap = nlohmann::ordered_json::object();
    std::uint64_t totalBytes = 0;
    for (std::size_t s = 0; s < shards.size(); ++s) {
        SafetensorsWriter writer;
        writer.setMetadata("format", "pt");
        for (const std::size_t i : shards[s]) {
            const TensorInfo& info = tensors[i];
            weightMap[info.name] = shardName(s);
            totalBytes += static_cast<std::uint64_t>(elementCount(info.shape)) * dtypeSize(options.dtype);
            writer.add(info.name, options.dtype, info.shape, [&, info](const SafetensorsWriter::Sink& sink) -> Status {
                std::vector<float> values;
                if (auto st = valuesOf(info, values); !st)
                    return st;
                if (values.size() != static_cast<std::size_t>(elementCount(info.shape)))
                    return Error{"tensor '" + info.name + "': got " + std::to_string(values.size()) + " values for shape " + shapeString(info.shape)};
                std::vector<std::uint8_t> bytes(values.size() * dtypeSize(options.dtype));
                convertFromFloat(values.data(), values.size(), options.dtype, bytes.data());
                values = {};
                if (auto st = sink(bytes.data(), bytes.size()); !st)
                    return st;
                if (options.onTensor && !options.onTensor(++done, static_cast<int>(tensors.size())))
                    return Error::cancelled(); // ends writer.write() below, which removes its temporary file
                return {};
            });
        }
        if (auto st = writer.write((tempDir / shardName(s)).string()); !st)
            return st;
    }
    if (shards.size() > 1) {
        nlohmann::ordered_json index;
        index["metadata"] = {{"total_size", totalBytes}};
        index["weight_map"] = weightMap;
        if (auto st = writeFileAtomically((tempDir / "model.safetensors.index.json").string(), index.dump(2) + "\n"); !st)
            return st;
    }
    if (!options.tokenizerPath.empty()) {
        // Stored under the name the folder reader looks for, whatever it was called before.
        const fs::path ext = fs::path(options.tokenizerPath).extension();
        const fs::path target = tempDir / (ext == ".model" ? "tokenizer.model" : ext == ".json" ? "tokenizer.json" : "tokenizer.bin");
        fs::copy_file(options.tokenizerPath, target, fs::copy_options::overwrite_existing, ec);
        if (ec)
            return fileError(options.tokenizerPath, "cannot copy tokenizer: " + ec.message(), ErrorKind::Io);
    }

    return (*folder)->commit();
}

} // namespace

Status writeHfFolder(const ModelConfig& config, const std::function<Status(const TensorInfo&, std::vector<float>&)>& valuesOf,
                     const std::string& outDir, const HfWriteOptions& options)
{
    try {
        return writeHfFolderUnguarded(config, valuesOf, outDir, options);
    } catch (const std::bad_alloc&) {
        return fileError(outDir, "not enough memory to write this model (one tensor at a time must fit)");
    } catch (const std::exception& e) {
        return fileError(outDir, std::string("cannot write: ") + e.what());
    }
}

Status convertToHf(const Checkpoint& checkpoint, const std::string& outDir, const HfWriteOptions& options)
{
    HfWriteOptions opts = options;
    if (opts.tokenizerPath.empty())
        opts.tokenizerPath = checkpoint.tokenizerPath();
    return writeHfFolder(
        checkpoint.config(),
        [&](const TensorInfo& info, std::vector<float>& out) -> Status {
            auto data = checkpoint.load(info.name);
            if (!data)
                return data.error();
            out = data->toFloat();
            return {};
        },
        outDir, opts);
}

namespace {
// splitmix64: a fast, well-mixed generator; Box-Muller turns pairs of uniforms into normals.
struct Random {
    std::uint64_t state;
    std::uint64_t next()
    {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
    void normals(float* out, std::size_t n, float mean, float std)
    {
        for (std::size_t i = 0; i < n; i += 2) {
            const double r = std::sqrt(-2.0 * std::log(uniform()));
            const double a = 6.283185307179586 * uniform();
            out[i] = mean + std * static_cast<float>(r * std::cos(a));
            if (i + 1 < n)
                out[i + 1] = mean + std * static_cast<float>(r * std::sin(a));
        }
    }
};

std::uint64_t hashName(const std::string& s)
{
    std::uint64_t h = 1469598103934665603ull;
    for (const unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}
} // namespace

Status writeRandomCheckpoint(const ModelConfig& config, std::uint64_t seed, const std::string& outDir, const HfWriteOptions& options)
{
    if (auto s = config.validate(outDir); !s)
        return s;
    return writeHfFolder(
        config,
        [&](const TensorInfo& info, std::vector<float>& out) -> Status {
            // Seeded per tensor, so each tensor is the same whatever the sharding or order.
            Random rng{seed ^ hashName(info.name)};
            out.resize(static_cast<std::size_t>(elementCount(info.shape)));
            const bool isNorm = info.name.find("norm") != std::string::npos;
            const bool isBias = info.name.size() > 5 && info.name.compare(info.name.size() - 5, 5, ".bias") == 0;
            rng.normals(out.data(), out.size(), isNorm ? 1.0f : 0.0f, isNorm ? 0.1f : (isBias ? 0.05f : 0.02f));
            return {};
        },
        outDir, options);
}

} // namespace pocket
