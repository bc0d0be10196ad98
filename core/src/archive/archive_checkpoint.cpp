// Reading a .pllm archive as a model (see pocket/archive/archive_checkpoint.h).
#include "pocket/archive/archive_checkpoint.h"

#include "pocket/archive/container.h"
#include "pocket/archive/lossless.h"
#include "pocket/archive/model_archive.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

namespace pocket {

namespace fs = std::filesystem;

namespace {

// One matrix of a payload decoder, as the model sees a compressed weight.
class PayloadMatrix final : public CompressedMatrix {
public:
    PayloadMatrix(std::shared_ptr<const PayloadDecoder> decoder, std::size_t index, std::uint64_t bytes, std::string speedClass)
        : m_decoder(std::move(decoder)), m_index(index), m_bytes(bytes), m_class(std::move(speedClass))
    {
    }
    std::uint64_t bytes() const override { return m_bytes; }
    Status decodeInto(float* out, int threads) const override { return m_decoder->decodeMatrix(m_index, out, threads); }
    std::string speedClass() const override { return m_class; }
    const void* payloadKey() const override { return m_decoder.get(); }

private:
    std::shared_ptr<const PayloadDecoder> m_decoder;
    std::size_t m_index;
    std::uint64_t m_bytes;
    std::string m_class;
};

// A one-matrix group whose code streams stay entropy-coded in memory (the lossless stage's
// "speed-adaptive" form): each decode runs the rANS decoder into a scratch payload, then the
// method's decoder. Smallest in memory, slowest to decode; the memory-budget policy measures it
// like any other class and keeps it decoded when the budget allows.
class CodedPayloadMatrix final : public CompressedMatrix {
public:
    CodedPayloadMatrix(ArchiveGroup group, GroupPayload stored, const CompressionMethod* method, std::string file, std::string speedClass)
        : m_group(std::move(group)), m_stored(std::move(stored)), m_method(method), m_file(std::move(file)), m_class(std::move(speedClass))
    {
    }
    std::uint64_t bytes() const override { return payloadBytes(m_stored); }
    Status decodeInto(float* out, int threads) const override
    {
        GroupPayload payload = m_stored;
        POCKET_TRY(decodeLosslessStage(m_group, payload, m_file));
        auto decoder = m_method->prepareDecoder(std::move(payload));
        if (!decoder)
            return decoder.error().prefixed(m_file);
        return (*decoder)->decodeMatrix(0, out, threads);
    }
    std::string speedClass() const override { return m_class; }
    const void* payloadKey() const override { return this; }

private:
    ArchiveGroup m_group; // section coding (payload without bytes)
    GroupPayload m_stored;
    const CompressionMethod* m_method;
    std::string m_file;
    std::string m_class;
};

} // namespace

Result<std::map<std::string, std::shared_ptr<const CompressedMatrix>>> payloadMatrices(const CompressionMethod& method, GroupPayload payload)
{
    const std::string speedPrefix = payload.methodId + " " + payload.paramsJson + " " + payload.metaJson.substr(0, 200);
    auto decoder = method.prepareDecoder(std::move(payload));
    if (!decoder)
        return decoder.error();
    std::shared_ptr<const PayloadDecoder> shared(std::move(*decoder));
    std::int64_t groupWeights = 0;
    for (std::size_t m = 0; m < shared->matrixCount(); ++m)
        groupWeights += shared->matrix(m).weights();
    std::map<std::string, std::shared_ptr<const CompressedMatrix>> out;
    for (std::size_t m = 0; m < shared->matrixCount(); ++m) {
        const MatrixRef& ref = shared->matrix(m);
        const auto share = static_cast<std::uint64_t>(static_cast<double>(shared->bytes()) * static_cast<double>(ref.weights()) /
                                                      static_cast<double>(std::max<std::int64_t>(1, groupWeights)));
        out[ref.name] = std::make_shared<PayloadMatrix>(shared, m, share, speedPrefix + " " + std::to_string(ref.rows) + "x" + std::to_string(ref.cols));
    }
    return out;
}

namespace {

class ArchiveCheckpoint final : public Checkpoint {
public:
    static Result<std::unique_ptr<Checkpoint>> open(const std::string& path, const MethodRegistry& registry)
    {
        auto archive = Archive::open(path);
        if (!archive)
            return archive.error();
        std::unique_ptr<ArchiveCheckpoint> ckpt(new ArchiveCheckpoint);
        ckpt->m_archive = *archive;
        const ArchiveManifest& manifest = ckpt->m_archive->manifest();
        ckpt->m_config = manifest.config;
        ckpt->m_format = CheckpointFormat::HfSafetensors;
        ckpt->m_path = path;

        std::map<std::string, TensorInfo> stored;
        for (const ArchiveTensor& t : manifest.tensors)
            stored[t.name] = {t.name, t.dtype, t.shape, static_cast<std::uint64_t>(elementCount(t.shape)) * dtypeSize(t.dtype), {}, 0};
        std::map<std::string, double> matrixBits; // per matrix: own bits plus its share of its group's
        for (const ArchiveGroup& group : manifest.groups)
            for (const MatrixReport& report : matrixReports(group.payload))
                matrixBits[report.name] = report.bpw;
        for (std::size_t g = 0; g < manifest.groups.size(); ++g) {
            const GroupPayload& payload = manifest.groups[g].payload;
            auto method = registry.find(payload.methodId);
            if (!method)
                return fileError(path, "group " + payload.groupId + " needs method '" + payload.methodId + "': " + method.message(),
                                 ErrorKind::Unsupported);
            if (payload.methodVersion > (*method)->info().version)
                return fileError(path, "group " + payload.groupId + " was written by version " +
                                           std::to_string(payload.methodVersion) + " of method '" + payload.methodId +
                                           "'; this program has version " + std::to_string((*method)->info().version),
                                 ErrorKind::Unsupported);
            ckpt->m_methods.push_back(*method);
            for (std::size_t m = 0; m < payload.matrices.size(); ++m) {
                const MatrixRef& ref = payload.matrices[m].ref;
                // Decoded to float32 on load; stored as the method's payload.
                stored[ref.name] = {ref.name, DType::F32, {ref.rows, ref.cols}, static_cast<std::uint64_t>(ref.weights()) * 4,
                                    payload.methodId, matrixBits[ref.name]};
                ckpt->m_decoded[ref.name] = {g, m};
            }
        }
        for (const TensorInfo& expected : expectedTensors(manifest.config)) {
            const auto it = stored.find(expected.name);
            if (it == stored.end())
                return fileError(path, "the archive holds no tensor " + expected.name);
            if (it->second.shape != expected.shape)
                return fileError(path, expected.name + " has shape " + shapeString(it->second.shape) + ", the config needs " +
                                           shapeString(expected.shape));
            ckpt->m_tensors.push_back(it->second);
        }
        ckpt->buildIndex();
        auto adapters = ckpt->m_archive->adapters();
        if (!adapters)
            return adapters.error();
        for (LoraAdapter& a : *adapters) ckpt->m_adapters[a.name] = std::move(a);
        if (!manifest.tokenizerKind.empty()) {
            auto status = ckpt->extractTokenizer();
            if (!status)
                return status.error();
        }
        return std::unique_ptr<Checkpoint>(std::move(ckpt));
    }

    ~ArchiveCheckpoint() override
    {
        if (!m_tokenizerDir.empty()) {
            std::error_code ec;
            fs::remove_all(m_tokenizerDir, ec);
        }
    }

    std::string fileOf(const std::string&) const override { return m_path; }

    // The archive's LoRA adapters, by matrix name.
    const std::map<std::string, LoraAdapter>& adapters() const { return m_adapters; }
    // Whether load() returns compressed matrices with their adapters merged in (the default: a
    // decompressed or exported model then carries them); a model that applies them itself turns it off.
    void setMergeAdapters(bool merge) { m_mergeAdapters = merge; }

    // The compressed matrices as payload decoders (one per group, by the methods open() found),
    // for a model that keeps them compressed.
    Result<std::map<std::string, std::shared_ptr<const CompressedMatrix>>> payloadMatrices() const
    {
        std::map<std::string, std::shared_ptr<const CompressedMatrix>> out;
        for (std::size_t g = 0; g < m_methods.size(); ++g) {
            const ArchiveGroup& group = m_archive->manifest().groups[g];
            if (group.anyCoded() && group.payload.matrices.size() == 1) {
                auto stored = m_archive->storedPayload(g);
                if (!stored)
                    return stored.error();
                const MatrixRef ref = stored->matrices.front().ref;
                const std::string speedClass = stored->methodId + " " + stored->paramsJson + " " + stored->metaJson.substr(0, 200) +
                                               " rans " + std::to_string(ref.rows) + "x" + std::to_string(ref.cols);
                ArchiveGroup meta = group;
                out[ref.name] = std::make_shared<CodedPayloadMatrix>(std::move(meta), std::move(*stored), &*m_methods[g], m_path, speedClass);
                continue;
            }
            // Several matrices share the group's streams: decoded to their packed form here.
            auto payload = m_archive->groupPayload(g);
            if (!payload)
                return payload.error();
            auto matrices = pocket::payloadMatrices(*m_methods[g], std::move(*payload));
            if (!matrices)
                return matrices.error().prefixed(m_path);
            out.merge(*matrices);
        }
        return out;
    }

    Result<TensorData> load(const std::string& name) const override
    {
        const TensorInfo* info = find(name);
        if (!info)
            return fileError(m_path, "no tensor " + name);
        const auto decodedAt = m_decoded.find(name);
        if (decodedAt == m_decoded.end()) {
            auto data = m_archive->tensor(name);
            if (!data)
                return data.error();
            return data;
        }
        const auto [groupIndex, matrixIndex] = decodedAt->second;
        std::lock_guard<std::mutex> lock(m_mutex);
        auto& cache = m_cache[groupIndex];
        if (!cache.matrices) {
            auto payload = m_archive->groupPayload(groupIndex);
            if (!payload)
                return payload.error();
            auto decoded = m_methods[groupIndex]->decode(*payload);
            if (!decoded)
                return decoded.error().prefixed(m_path);
            cache.matrices = std::make_shared<std::vector<std::vector<float>>>(std::move(*decoded));
            cache.served.assign(cache.matrices->size(), false);
        }
        auto matrices = cache.matrices;
        const std::vector<float>& values = (*matrices)[matrixIndex];
        TensorData data;
        data.info = *info;
        data.data = reinterpret_cast<const std::uint8_t*>(values.data());
        data.owner = matrices;
        if (const auto adapter = m_adapters.find(name); m_mergeAdapters && adapter != m_adapters.end()) {
            // W + (alpha / rank) B A, in fp32 (a model run from the archive applies it unmerged).
            const LoraAdapter& a = adapter->second;
            auto merged = std::make_shared<std::vector<float>>(values);
            const float scale = a.scale();
            for (std::int64_t r = 0; r < a.rows; ++r) {
                float* row = merged->data() + r * a.cols;
                for (int k = 0; k < a.rank; ++k) {
                    const float bk = scale * a.b[static_cast<std::size_t>(r * a.rank + k)];
                    const float* ak = a.a.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(a.cols);
                    for (std::int64_t c = 0; c < a.cols; ++c) row[c] += bk * ak[c];
                }
            }
            data.data = reinterpret_cast<const std::uint8_t*>(merged->data());
            data.owner = merged;
        }
        // Drop the decoded group once each of its matrices was handed out (callers hold their copies).
        cache.served[matrixIndex] = true;
        if (std::all_of(cache.served.begin(), cache.served.end(), [](bool b) { return b; }))
            m_cache.erase(groupIndex);
        return data;
    }

private:
    // The embedded tokenizer goes to a private temporary file, so tokenizerPath() works as for
    // any checkpoint; it is removed with the checkpoint.
    Status extractTokenizer()
    {
        auto bytes = m_archive->tokenizerBytes();
        if (!bytes)
            return bytes.error();
        static std::atomic<int> counter{0};
        std::error_code ec;
        const fs::path dir = fs::temp_directory_path(ec) /
                             ("pocketllm-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::create_directories(dir, ec);
        const std::string file = (dir / m_archive->manifest().tokenizerFileName).string();
        std::ofstream out(file, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes->data()), static_cast<std::streamsize>(bytes->size()));
        out.close();
        if (ec || !out) {
            fs::remove_all(dir, ec);
            return fileError(file, "cannot write the archive's tokenizer to a temporary file", ErrorKind::Io);
        }
        m_tokenizerDir = dir.string();
        m_tokenizerPath = file;
        return {};
    }

    std::string m_tokenizerDir;
    struct DecodedGroup {
        std::shared_ptr<std::vector<std::vector<float>>> matrices;
        std::vector<bool> served;
    };
    std::shared_ptr<Archive> m_archive;
    std::vector<const CompressionMethod*> m_methods; // per group
    std::map<std::string, std::pair<std::size_t, std::size_t>> m_decoded; // name -> (group, matrix)
    std::map<std::string, LoraAdapter> m_adapters;
    bool m_mergeAdapters = true;
    mutable std::mutex m_mutex;
    mutable std::map<std::size_t, DecodedGroup> m_cache;
};

} // namespace

Result<RunnableModel> loadRunnableModel(std::unique_ptr<Checkpoint> checkpoint, const RunOptions& options,
                                        const std::function<bool(int done, int total)>& onTensor)
{
    RunnableModel out;
    out.checkpoint = std::move(checkpoint);
    LoadOptions load;
    load.precision = options.precision;
    load.memoryBudget = options.memoryBudget;
    load.trainable = options.trainable;
    auto* archive = dynamic_cast<ArchiveCheckpoint*>(out.checkpoint.get());
    if (archive && !archive->adapters().empty()) {
        // Applied in the forward pass, the same way whether a matrix is decoded or not.
        archive->setMergeAdapters(false);
        if (!options.trainable) // training replaces them, starting from the decoded weights alone
            for (const auto& [name, adapter] : archive->adapters()) load.adapters.push_back(adapter);
    }
    if (options.memoryBudget != LoadOptions::kUnlimited) {
        if (!archive)
            return Error::usage(out.checkpoint->path() + ": a memory budget applies to .pllm archives (their matrices can stay " +
                                    "compressed); this model is loaded whole",
                                "memory budget");
        auto matrices = archive->payloadMatrices();
        if (!matrices)
            return matrices.error();
        load.compressed = std::move(*matrices);
    }
    auto model = LlamaModel::load(*out.checkpoint, onTensor, std::move(load));
    if (!model)
        return model.error();
    out.model = std::move(*model);
    return out;
}

Result<RunnableModel> loadRunnableModel(const std::string& path, const MethodRegistry& registry, const RunOptions& options,
                                        const std::function<bool(int done, int total)>& onTensor)
{
    auto checkpoint = openModelOrArchive(path, registry);
    if (!checkpoint)
        return checkpoint.error();
    return loadRunnableModel(std::move(*checkpoint), options, onTensor);
}

std::optional<std::int64_t> parseMemoryBudget(const std::string& text)
{
    if (text == "auto")
        return LoadOptions::kAuto;
    if (text == "unlimited" || text == "all")
        return LoadOptions::kUnlimited;
    try {
        std::size_t used = 0;
        const double mib = std::stod(text, &used);
        if (used != text.size() || !(mib > 0) || mib > 1e9)
            return std::nullopt;
        return static_cast<std::int64_t>(mib * 1024 * 1024);
    } catch (...) {
        return std::nullopt;
    }
}

Result<std::unique_ptr<Checkpoint>> openArchiveCheckpoint(const std::string& path, const MethodRegistry& registry)
{
    return ArchiveCheckpoint::open(path, registry);
}

Result<std::unique_ptr<Checkpoint>> openModelOrArchive(const std::string& path, const MethodRegistry& registry)
{
    if (isPllmFile(path))
        return openArchiveCheckpoint(path, registry);
    return openCheckpoint(path);
}

Status decompressArchive(const std::string& archivePath, const MethodRegistry& registry, const std::string& outDir,
                         HfWriteOptions options)
{
    auto checkpoint = openArchiveCheckpoint(archivePath, registry);
    if (!checkpoint)
        return checkpoint.error();
    return convertToHf(**checkpoint, outDir, options);
}

} // namespace pocket
