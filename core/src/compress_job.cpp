#include "pocket/compress_job.h"

#include "pocket/atomic_file.h"
#include "pocket/llama_model.h"
#include "pocket/text.h"
#include "pocket/tokenizer.h"
#include "pocket/model_config.h"
#include "pocket/version.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

namespace pocket {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

double secondsSince(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A readable, stable id for a group: the matrix name, "type:<name>", "model", or "group<i>".
std::string groupId(const std::vector<MatrixRef>& group, std::size_t index, std::size_t selectedCount)
{
    if (group.size() == 1)
        return group.front().name;
    bool sameType = true;
    for (const MatrixRef& m : group)
        sameType = sameType && m.type == group.front().type;
    if (sameType)
        return std::string("type:") + matrixTypeName(group.front().type);
    if (group.size() == selectedCount)
        return "model";
    return "group" + std::to_string(index);
}

json selectionJsonObject(const LayerSelection& s)
{
    json blocks = json::array();
    for (const auto& [first, last] : s.blocks)
        blocks.push_back({first, last});
    json types = json::array();
    for (MatrixType t : s.types)
        types.push_back(matrixTypeName(t));
    json j{{"blocks", blocks}, {"types", types},  {"include", s.include},
           {"exclude", s.exclude}, {"skip_first", s.skipFirst}, {"skip_last", s.skipLast}};
    if (!s.names.empty()) // only when used, so the identity of older work folders is unchanged
        j["names"] = s.names;
    return j;
}

std::string groupFileName(std::size_t index)
{
    char name[32];
    std::snprintf(name, sizeof name, "group-%05zu.pllm", index);
    return name;
}

Result<std::vector<std::uint8_t>> readWholeFile(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "cannot open");
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad())
        return fileError(path, "read error");
    return bytes;
}

// What identifies a job: a work folder may only be resumed by the same model, method, parameters
// and selection. The model is identified by its config and its files' sizes and times.
json jobIdentity(const CompressJobParams& params, const Checkpoint& checkpoint, const CompressionMethod& method,
                 const ParamSet& resolved, const std::vector<std::string>& groupIds)
{
    json files = json::array();
    std::error_code ec;
    const fs::path root = checkpoint.path();
    std::vector<fs::path> paths;
    if (fs::is_directory(root, ec)) {
        for (const auto& item : fs::directory_iterator(root, ec))
            if (item.is_regular_file(ec))
                paths.push_back(item.path());
    } else {
        paths.push_back(root);
    }
    std::sort(paths.begin(), paths.end());
    for (const fs::path& p : paths) {
        const auto size = fs::file_size(p, ec);
        const auto time = fs::last_write_time(p, ec).time_since_epoch().count();
        files.push_back({{"name", p.filename().string()}, {"size", ec ? 0 : size}, {"mtime", static_cast<std::int64_t>(time)}});
    }
    json identity{{"model", fs::absolute(root, ec).string()},
            {"model_files", files},
            {"config", json::parse(hfConfigJson(checkpoint.config()))},
            {"method", method.info().id},
            {"method_version", method.info().version},
            {"params", json::parse(resolved.toJson(method.info().params))},
            {"selection", selectionJsonObject(params.selection)},
            {"keep_dtype", dtypeName(params.keepDtype)},
            {"calibration", method.needsCalibration(resolved)
                                ? json{{"text", params.calibration.textPath}, {"samples", params.calibration.samples},
                                       {"length", params.calibration.length}, {"seed", params.calibration.seed}}
                                : json()},
            {"groups", groupIds}};
    if (!params.matrixSettings.empty()) // only then, so older work folders keep their identity
        identity["matrix_settings"] = params.matrixSettings;
    return identity;
}

// Names the first top-level key on which two identities differ.
std::string firstDifference(const json& a, const json& b)
{
    for (auto it = a.begin(); it != a.end(); ++it)
        if (!b.contains(it.key()) || b.at(it.key()) != it.value())
            return it.key();
    return "format";
}

} // namespace

Result<std::vector<std::vector<std::int32_t>>> calibrationWindows(const std::vector<std::int32_t>& tokens, std::int32_t bosId,
                                                                  const CalibrationParams& params)
{
    if (params.samples < 1 || params.length < 2)
        return Error{"--calib-samples must be at least 1 and --calib-len at least 2"};
    const std::size_t text = static_cast<std::size_t>(params.length - 1);
    if (tokens.size() < text)
        return fileError(params.textPath, "too short for calibration: " + std::to_string(tokens.size()) + " tokens, windows need " +
                                              std::to_string(text));
    std::mt19937_64 gen(params.seed);
    std::uniform_int_distribution<std::size_t> start(0, tokens.size() - text);
    std::vector<std::vector<std::int32_t>> windows;
    for (int i = 0; i < params.samples; ++i) {
        const std::size_t s = start(gen);
        std::vector<std::int32_t> w{bosId};
        w.insert(w.end(), tokens.begin() + static_cast<std::ptrdiff_t>(s), tokens.begin() + static_cast<std::ptrdiff_t>(s + text));
        windows.push_back(std::move(w));
    }
    return windows;
}

std::string layerSelectionJson(const LayerSelection& selection) { return selectionJsonObject(selection).dump(); }

Result<std::vector<MatrixRef>> selectedMatrices(const Checkpoint& checkpoint, const LayerSelection& selection)
{
    auto names = selection.select(checkpoint.config());
    if (!names)
        return names.error();
    const std::set<std::string> wanted(names->begin(), names->end());
    std::vector<MatrixRef> refs;
    for (int layer = 0; layer < checkpoint.config().numLayers; ++layer) {
        for (MatrixType type : kMatrixTypes) {
            const std::string name = matrixTensorName(layer, type);
            if (!wanted.count(name))
                continue;
            const TensorInfo* info = checkpoint.find(name);
            if (!info || info->shape.size() != 2)
                return fileError(checkpoint.path(), "no 2-D tensor " + name);
            refs.push_back({name, layer, type, info->shape[0], info->shape[1]});
        }
    }
    return refs;
}

Result<JobPlan> planCompressJob(const CompressJobParams& params, const Checkpoint& checkpoint, const CompressionMethod& method)
{
    if (params.keepDtype != DType::F16 && params.keepDtype != DType::BF16 && params.keepDtype != DType::F32)
        return Error{"--keep-dtype: uncompressed tensors can be kept as f16, bf16 or f32"};
    auto resolved = ParamSet::resolve(method.info().params, params.settings);
    if (!resolved)
        return Error{method.info().id + ": " + resolved.message()};
    auto refs = selectedMatrices(checkpoint, params.selection);
    if (!refs)
        return refs.error();
    if (refs->empty())
        return Error{"the layer selection matches no matrix of " + checkpoint.path()};
    for (const auto& [name, extra] : params.matrixSettings)
        if (std::none_of(refs->begin(), refs->end(), [&](const MatrixRef& r) { return r.name == name; }))
            return Error{"per-matrix settings name " + name + ", which is not a selected matrix of " + checkpoint.path()};

    // Matrices with equal effective settings form one partition, planned by the method together.
    std::vector<std::pair<ParamSet, std::vector<MatrixRef>>> partitions;
    std::map<std::string, std::size_t> partitionOf; // canonical parameters -> partition
    for (const MatrixRef& ref : *refs) {
        ParamSet effective = *resolved;
        if (auto it = params.matrixSettings.find(ref.name); it != params.matrixSettings.end()) {
            std::vector<std::string> merged = params.settings;
            merged.insert(merged.end(), it->second.begin(), it->second.end());
            auto r = ParamSet::resolve(method.info().params, merged);
            if (!r)
                return Error{method.info().id + ": " + ref.name + ": " + r.message()};
            effective = *r;
        }
        const std::string key = effective.toJson(method.info().params);
        auto [it, inserted] = partitionOf.emplace(key, partitions.size());
        if (inserted)
            partitions.push_back({effective, {}});
        partitions[it->second].second.push_back(ref);
    }

    JobPlan plan;
    std::set<std::string> compressed;
    std::set<std::string> ids;
    for (std::size_t p = 0; p < partitions.size(); ++p) {
        const ParamSet& ps = partitions[p].first;
        auto groups = method.planGroups(partitions[p].second, ps);
        if (!groups)
            return groups.error();
        for (auto& g : *groups) {
            const std::size_t i = plan.groups.size();
            std::string id = groupId(g, i, refs->size());
            if (partitions.size() > 1 && g.size() > 1) // "type:q_proj" may recur in another partition
                id += "#" + std::to_string(p);
            while (!ids.insert(id).second)
                id += "'";
            std::vector<BitCounts> perMatrix;
            auto shared = method.estimateBits(g, ps, perMatrix);
            if (!shared)
                return Error{method.info().id + ": " + shared.message()};
            plan.estimatedBits.compressed += *shared;
            for (std::size_t j = 0; j < g.size(); ++j) {
                plan.estimatedBits.compressed += perMatrix[j];
                plan.estimatedBits.compressedWeights += static_cast<std::uint64_t>(g[j].weights());
                compressed.insert(g[j].name);
            }
            plan.groupIds.push_back(id);
            plan.groupParams.push_back(ps);
            plan.groups.push_back(std::move(g));
        }
    }
    for (const TensorInfo& t : expectedTensors(checkpoint.config())) {
        const auto n = static_cast<std::uint64_t>(elementCount(t.shape));
        plan.estimatedBits.totalWeights += n;
        if (!compressed.count(t.name))
            plan.estimatedBits.uncompressedBits += n * 8 * dtypeSize(params.keepDtype);
    }
    return plan;
}

Result<CompressJobResult> runCompressJob(const CompressJobParams& params, MethodRegistry& registry,
                                         const std::function<bool(const JobProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    if (params.outPath.empty())
        return Error{"no output archive given (-o OUT.pllm)"};
    auto checkpoint = openCheckpoint(params.modelPath);
    if (!checkpoint)
        return checkpoint.error();
    const Checkpoint& ckpt = **checkpoint;
    auto methodResult = registry.find(params.methodId);
    if (!methodResult)
        return methodResult.error();
    CompressionMethod& method = **methodResult;
    auto plan = planCompressJob(params, ckpt, method);
    if (!plan)
        return plan.error();
    const ParamSet resolved = *ParamSet::resolve(method.info().params, params.settings);

    // Check the tokenizer and the output folder before hours of training.
    const std::string tokenizerPath = params.tokenizerPath.empty() ? ckpt.tokenizerPath() : params.tokenizerPath;
    std::vector<std::uint8_t> tokenizerBytes;
    if (!tokenizerPath.empty()) {
        auto bytes = readWholeFile(tokenizerPath);
        if (!bytes)
            return bytes.error();
        tokenizerBytes = std::move(*bytes);
    } else {
        spdlog::warn("{}: no tokenizer found beside the model; the archive will not embed one", ckpt.path());
    }
    std::error_code ec;
    const fs::path outPath = fs::absolute(params.outPath, ec);
    if (!fs::is_directory(outPath.parent_path(), ec))
        return fileError(params.outPath, "the folder " + outPath.parent_path().string() + " does not exist");

    // Calibration (GPTQ-like methods): the model runs on calibration windows block by block, with
    // the already-compressed blocks feeding the later ones.
    std::unique_ptr<LlamaModel> model;
    std::unique_ptr<CalibrationRun> calibration;
    std::map<MatrixType, std::vector<float>> blockHessians;
    int hessianBlock = -1;
    // Groups spanning blocks (sharing by type or model) cannot follow the block-by-block
    // calibration: every block's Hessians are then measured up front on the uncompressed model and
    // kept on disk in the work folder, so memory holds only the Hessians of the group in progress.
    bool groupsSpanBlocks = false;
    const bool needsCalibration = std::any_of(plan->groupParams.begin(), plan->groupParams.end(),
                                              [&](const ParamSet& ps) { return method.needsCalibration(ps); });
    if (needsCalibration) {
        const CalibrationParams& cp = params.calibration;
        if (cp.textPath.empty())
            return Error{"method '" + method.info().id + "' needs calibration text: pass --calib-text FILE"};
        for (const auto& group : plan->groups)
            for (const MatrixRef& m : group)
                if (m.layer != group.front().layer)
                    groupsSpanBlocks = true;
        if (tokenizerPath.empty())
            return fileError(ckpt.path(), "calibration needs a tokenizer; pass --tokenizer");
        auto tokenizer = loadTokenizer(tokenizerPath);
        if (!tokenizer)
            return tokenizer.error();
        auto text = readTextFile(cp.textPath);
        if (!text)
            return text.error();
        CalibrationParams capped = cp;
        capped.length = static_cast<int>(std::min<std::int64_t>(cp.length, ckpt.config().maxPositions));
        auto windows = calibrationWindows((*tokenizer)->encode(*text), (*tokenizer)->bosId(), capped);
        if (!windows)
            return windows.error();
        auto loaded = LlamaModel::load(ckpt);
        if (!loaded)
            return loaded.error();
        model = std::move(*loaded);
        auto run = model->startCalibration(*windows);
        if (!run)
            return run.error();
        calibration = std::move(*run);
    }

    // The work folder.
    const std::string workDir = params.workDir.empty() ? outPath.string() + ".work" : params.workDir;
    const json identity = jobIdentity(params, ckpt, method, resolved, plan->groupIds);
    const std::string jobFile = workDir + "/job.json";
    // A work folder this run created is removed again if the run ends before finishing any group,
    // so a failed start never demands --resume.
    struct EmptyWorkDirCleanup {
        std::string dir;
        ~EmptyWorkDirCleanup()
        {
            std::error_code ec;
            if (dir.empty() || !fs::is_directory(dir, ec))
                return;
            for (const auto& item : fs::directory_iterator(dir, ec))
                if (item.path().filename().string().rfind("group-", 0) == 0)
                    return;
            fs::remove_all(dir, ec);
        }
    } cleanup;
    if (fs::exists(workDir, ec)) {
        if (!params.resume)
            return fileError(workDir, "a work folder from an earlier run exists; pass --resume to continue it, or delete it");
        auto text = readWholeFile(jobFile);
        json previous = text ? json::parse(text->begin(), text->end(), nullptr, false) : json();
        if (!text || previous.is_discarded())
            return fileError(jobFile, "unreadable; delete the work folder " + workDir + " to start afresh");
        if (previous != identity)
            return fileError(workDir, "belongs to a different job (" + firstDifference(identity, previous) +
                                          " differs); delete it or choose another output");
    } else {
        if (params.resume)
            spdlog::info("{}: nothing to resume, starting afresh", workDir);
        cleanup.dir = workDir;
        fs::create_directories(workDir, ec);
        if (ec)
            return fileError(workDir, "cannot create the work folder: " + ec.message());
        auto written = writeFileAtomically(jobFile, identity.dump(2) + "\n");
        if (!written)
            return written.error();
    }

    const std::string hessianDir = workDir + "/hessians";
    const auto hessianFile = [&](int layer, MatrixType type) {
        return hessianDir + "/layer" + std::to_string(layer) + "-" + matrixTypeName(type) + ".f32";
    };
    if (calibration && groupsSpanBlocks) {
        fs::create_directories(hessianDir, ec);
        std::set<std::pair<int, MatrixType>> needed;
        for (const auto& group : plan->groups)
            for (const MatrixRef& m : group)
                needed.insert({m.layer, m.type});
        for (int block = 0; block < ckpt.config().numLayers; ++block) {
            bool wanted = false;
            for (MatrixType t : kMatrixTypes)
                wanted = wanted || needed.count({block, t}) > 0;
            if (wanted) {
                auto h = calibration->hessians();
                if (!h)
                    return h.error();
                for (auto& [type, values] : *h) {
                    if (!needed.count({block, type}))
                        continue;
                    const std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
                    auto written = writeFileAtomically(hessianFile(block, type), bytes);
                    if (!written)
                        return written.error();
                }
            }
            if (block + 1 < ckpt.config().numLayers) {
                auto advanced = calibration->advance();
                if (!advanced)
                    return advanced.error();
            }
        }
    }
    const auto loadHessian = [&](const MatrixRef& ref) -> Result<std::vector<float>> {
        auto bytes = readWholeFile(hessianFile(ref.layer, ref.type));
        if (!bytes)
            return bytes.error();
        if (bytes->size() != static_cast<std::size_t>(ref.cols * ref.cols) * sizeof(float))
            return fileError(hessianFile(ref.layer, ref.type), "wrong size for the Hessian of " + ref.name);
        std::vector<float> h(static_cast<std::size_t>(ref.cols * ref.cols));
        std::memcpy(h.data(), bytes->data(), bytes->size());
        return h;
    };

    // Train group by group; each finished group goes to disk at once.
    CompressJobResult result;
    std::vector<GroupPayload> payloads;
    std::uint64_t totalWeights = 0, weightsDone = 0, weightsTrainedHere = 0;
    for (const auto& group : plan->groups)
        for (const MatrixRef& m : group)
            totalWeights += static_cast<std::uint64_t>(m.weights());
    const auto trainingStart = std::chrono::steady_clock::now();
    JobProgress progress;
    progress.groupCount = static_cast<int>(plan->groups.size());
    // Replaces a compressed group's weights in the calibration model by their decoded values.
    const auto feedForward = [&](const GroupPayload& payload) -> Status {
        auto decoded = method.decode(payload);
        if (!decoded)
            return decoded.error();
        for (std::size_t m = 0; m < payload.matrices.size(); ++m) {
            auto set = model->setWeight(payload.matrices[m].ref.name, (*decoded)[m]);
            if (!set)
                return set.error();
        }
        return {};
    };
    for (std::size_t i = 0; i < plan->groups.size(); ++i) {
        const std::string file = workDir + "/" + groupFileName(i);
        if (calibration && !groupsSpanBlocks) {
            const int block = plan->groups[i].front().layer;
            while (calibration->nextBlock() < block) {
                auto advanced = calibration->advance();
                if (!advanced)
                    return advanced.error();
            }
            if (hessianBlock != block) {
                auto h = calibration->hessians();
                if (!h)
                    return h.error();
                blockHessians = std::move(*h);
                hessianBlock = block;
            }
        }
        std::uint64_t groupWeights = 0;
        for (const MatrixRef& m : plan->groups[i])
            groupWeights += static_cast<std::uint64_t>(m.weights());
        if (fs::exists(file, ec)) {
            auto saved = readGroupFile(file);
            if (saved && saved->groupId == plan->groupIds[i]) {
                if (calibration && !groupsSpanBlocks) { // later blocks must see exactly what an uninterrupted run saw
                    auto fed = feedForward(*saved);
                    if (!fed)
                        return fed.error();
                }
                payloads.push_back(std::move(*saved));
                ++result.groupsResumed;
                weightsDone += groupWeights;
                continue;
            }
            spdlog::warn("{}: {}; compressing the group again", file, saved ? "holds another group" : saved.message());
            fs::remove(file, ec);
        }

        MatrixGroup group;
        group.id = plan->groupIds[i];
        for (const MatrixRef& ref : plan->groups[i]) {
            auto data = ckpt.load(ref.name);
            if (!data)
                return data.error();
            std::vector<float> hessian;
            if (calibration && groupsSpanBlocks) {
                auto h = loadHessian(ref);
                if (!h)
                    return h.error();
                hessian = std::move(*h);
            } else if (calibration) {
                hessian = blockHessians[ref.type];
            }
            group.matrices.push_back({ref, data->toFloat(), std::move(hessian)});
        }
        progress.phase = JobProgress::Phase::Training;
        progress.groupIndex = static_cast<int>(i);
        progress.groupsResumed = result.groupsResumed;
        CompressContext context;
        int loggedEpoch = 0;
        context.onProgress = [&](const TrainProgress& train) {
            if (train.epoch != loggedEpoch) {
                loggedEpoch = train.epoch;
                spdlog::debug("{} epoch {}/{}: loss {:.4g} (reconstruction {:.4g}, codebook {:.4g}, commitment {:.4g}), SNR {:.2f} dB, "
                              "{} dead codewords, lr {:.3g}",
                              train.groupId, train.epoch, train.epochs, train.loss, train.reconstruction, train.codebookTerm,
                              train.commitmentTerm, train.snrDb, train.deadCodewords, train.lr);
            }
            progress.train = train;
            progress.elapsedSeconds = secondsSince(start);
            // Time per weight so far in this run (groups resumed cost nothing).
            const double groupFraction = train.totalSteps > 0 ? static_cast<double>(train.step) / train.totalSteps : 0;
            const double doneHere = static_cast<double>(weightsTrainedHere) + groupFraction * static_cast<double>(groupWeights);
            const double remaining = static_cast<double>(totalWeights - weightsDone) - groupFraction * static_cast<double>(groupWeights);
            progress.etaSeconds = doneHere > 0 ? secondsSince(trainingStart) / doneHere * remaining : 0;
            return !onProgress || onProgress(progress);
        };
        auto payload = method.compress(group, plan->groupParams[i], context);
        if (!payload)
            return payload.error();
        auto written = writeGroupFile(file, *payload);
        if (!written)
            return written.error();
        if (calibration && !groupsSpanBlocks) {
            auto fed = feedForward(*payload);
            if (!fed)
                return fed.error();
        }
        payloads.push_back(std::move(*payload));
        weightsDone += groupWeights;
        weightsTrainedHere += groupWeights;
    }

    // Assemble the archive.
    progress.phase = JobProgress::Phase::Writing;
    progress.elapsedSeconds = secondsSince(start);
    progress.etaSeconds = 0;
    if (onProgress && !onProgress(progress))
        return Error{"cancelled"};
    ArchiveInput input;
    ArchiveManifest& manifest = input.manifest;
    manifest.config = ckpt.config();
    manifest.sourceName = fs::path(ckpt.path()).filename().string();
    manifest.creator = std::string("pocketllm-workbench ") + POCKET_VERSION;
    if (!tokenizerBytes.empty()) {
        const bool sentencePiece = fs::path(tokenizerPath).extension() == ".model";
        manifest.tokenizerKind = sentencePiece ? "sentencepiece" : "llama2c";
        manifest.tokenizerFileName = sentencePiece ? "tokenizer.model" : "tokenizer.bin";
        input.tokenizerBytes = std::move(tokenizerBytes);
    }
    manifest.selectionJson = selectionJsonObject(params.selection).dump();
    std::set<std::string> compressed;
    for (const auto& group : plan->groups)
        for (const MatrixRef& m : group)
            compressed.insert(m.name);
    for (const TensorInfo& t : expectedTensors(ckpt.config()))
        if (!compressed.count(t.name))
            manifest.tensors.push_back({t.name, params.keepDtype, t.shape, "tensor/" + t.name});
    for (GroupPayload& p : payloads) {
        ArchiveGroup g;
        g.payload = std::move(p);
        manifest.groups.push_back(std::move(g));
    }
    const DType keep = params.keepDtype;
    input.tensorBytes = [&](const ArchiveTensor& tensor, const ContainerWriter::Sink& sink) -> Status {
        auto data = ckpt.load(tensor.name);
        if (!data)
            return data.error();
        const std::vector<float> values = data->toFloat();
        std::vector<std::uint8_t> bytes(values.size() * dtypeSize(keep));
        convertFromFloat(values.data(), values.size(), keep, bytes.data());
        return sink(bytes.data(), bytes.size());
    };
    for (const ArchiveGroup& g : manifest.groups) {
        GroupPayload summary = g.payload;
        summary.sections.clear();
        result.groups.push_back(std::move(summary));
    }
    result.bits = accountBits(manifest);
    auto written = writeArchive(outPath.string(), std::move(input));
    if (!written)
        return written.error();
    result.archivePath = outPath.string();
    result.archiveBytes = fs::file_size(outPath, ec);
    if (!params.keepWorkDir)
        fs::remove_all(workDir, ec);
    result.seconds = secondsSince(start);
    return result;
}

// ---------------------------------------------------------------------------------------------

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
            stored[t.name] = {t.name, t.dtype, t.shape, static_cast<std::uint64_t>(elementCount(t.shape)) * dtypeSize(t.dtype)};
        for (std::size_t g = 0; g < manifest.groups.size(); ++g) {
            const GroupPayload& payload = manifest.groups[g].payload;
            auto method = registry.find(payload.methodId);
            if (!method)
                return fileError(path, "group " + payload.groupId + " needs method '" + payload.methodId + "': " + method.message());
            if (payload.methodVersion > (*method)->info().version)
                return fileError(path, "group " + payload.groupId + " was written by version " +
                                           std::to_string(payload.methodVersion) + " of method '" + payload.methodId +
                                           "'; this program has version " + std::to_string((*method)->info().version));
            ckpt->m_methods.push_back(*method);
            for (std::size_t m = 0; m < payload.matrices.size(); ++m) {
                const MatrixRef& ref = payload.matrices[m].ref;
                stored[ref.name] = {ref.name, DType::F32, {ref.rows, ref.cols},
                                    static_cast<std::uint64_t>(ref.weights()) * 4};
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
                return fileError(m_path, decoded.message());
            cache.matrices = std::make_shared<std::vector<std::vector<float>>>(std::move(*decoded));
            cache.served.assign(cache.matrices->size(), false);
        }
        auto matrices = cache.matrices;
        const std::vector<float>& values = (*matrices)[matrixIndex];
        TensorData data;
        data.info = *info;
        data.data = reinterpret_cast<const std::uint8_t*>(values.data());
        data.owner = matrices;
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
            return fileError(file, "cannot write the archive's tokenizer to a temporary file");
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
    mutable std::mutex m_mutex;
    mutable std::map<std::size_t, DecodedGroup> m_cache;
};

} // namespace

Result<std::unique_ptr<Checkpoint>> openArchiveCheckpoint(const std::string& path, const MethodRegistry& registry)
{
    return ArchiveCheckpoint::open(path, registry);
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
