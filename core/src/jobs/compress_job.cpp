// A compression run, as a list of named steps (runCompressJob at the end of this file):
//   openJob           open the model, find the method, plan (compress_plan.cpp)
//   readTokenizer     the bytes the archive will embed
//   checkOutput       the output's folder exists
//   CalibrationFeed   calibration windows and Hessians, if the method needs them
//   WorkFolder        open or resume the work folder
//   compressGroups    every group: resumed from the work folder, or compressed and saved there
//   assembleArchive   write the .pllm archive from the groups and the uncompressed tensors
#include "pocket/jobs/compress_job.h"

#include "calibration_feed.h"
#include "recorders.h"
#include "work_folder.h"

#include "pocket/archive/lossless.h"
#include "pocket/archive/model_archive.h"
#include "pocket/io/model_config.h"
#include "pocket/io/tokenizer.h"
#include "pocket/jobs/cluster.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/timing.h"
#include "pocket/version.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <malloc.h>
#include <set>
#include <thread>

namespace pocket {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// What a run works with once its request has been checked.
struct OpenJob {
    std::unique_ptr<Checkpoint> checkpoint;
    CompressionMethod* method = nullptr;
    JobPlan plan;
    ParamSet resolved;
    std::string tokenizerPath;
    EmbeddableTokenizer tokenizer; // bytes empty: none embedded
    fs::path outPath; // absolute
};

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
            {"selection", json::parse(layerSelectionJson(params.selection))},
            {"keep_dtype", dtypeName(params.keepDtype)},
            {"calibration", method.needsCalibration(resolved)
                                ? json{{"text", params.calibration.textPath}, {"samples", params.calibration.samples},
                                       {"length", params.calibration.length}, {"seed", params.calibration.seed}}
                                : json()},
            {"groups", groupIds}};
    if (!params.matrixSettings.empty()) // only then, so older work folders keep their identity
        identity["matrix_settings"] = params.matrixSettings;
    if (!params.matrixMethods.empty())
        identity["matrix_methods"] = params.matrixMethods;
    return identity;
}

Status openJob(const CompressJobParams& params, MethodRegistry& registry, OpenJob& job)
{
    if (params.outPath.empty())
        return Error::usage("no output archive given", "output");
    auto checkpoint = openCheckpoint(params.modelPath);
    if (!checkpoint)
        return checkpoint.error();
    job.checkpoint = std::move(*checkpoint);
    if (const StoredTypes stored = storedTypes(*job.checkpoint); stored.quantized())
        spdlog::warn("{}: the input is already quantised ({}{}: {:.2f} bits per weight in the linear matrices); this run compresses its "
                     "dequantised weights, so both errors add up, and its bits are counted afresh from them",
                     job.checkpoint->path(), job.checkpoint->fileType().empty() ? "" : job.checkpoint->fileType() + ", ", stored.linearMix(),
                     stored.linearBitsPerWeight);
    auto method = registry.find(params.methodId);
    if (!method)
        return method.error();
    job.method = *method;
    auto plan = planCompressJob(params, *job.checkpoint, *job.method, &registry);
    if (!plan)
        return plan.error();
    job.plan = std::move(*plan);
    job.resolved = *ParamSet::resolve(job.method->info().params, params.settings);
    return {};
}

// The tokenizer the archive embeds: the one given, else the one beside the model (none: a warning).
Status readTokenizer(const CompressJobParams& params, OpenJob& job)
{
    job.tokenizerPath = params.tokenizerPath.empty() ? job.checkpoint->tokenizerPath() : params.tokenizerPath;
    if (job.tokenizerPath.empty()) {
        spdlog::warn("{}: no tokenizer found beside the model; the archive will not embed one", job.checkpoint->path());
        return {};
    }
    auto tokenizer = embeddableTokenizer(job.tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    job.tokenizer = std::move(*tokenizer);
    return {};
}

Status checkOutput(const CompressJobParams& params, OpenJob& job)
{
    std::error_code ec;
    job.outPath = fs::absolute(params.outPath, ec);
    if (!fs::is_directory(job.outPath.parent_path(), ec))
        return fileError(params.outPath, "the folder " + job.outPath.parent_path().string() + " does not exist");
    return {};
}

// Progress and ETA of the training phase: time per weight so far in this run (groups resumed
// from the work folder cost nothing).
class GroupProgress {
public:
    GroupProgress(const JobPlan& plan, std::function<bool(const JobProgress&)> onProgress, Stopwatch jobClock)
        : m_onProgress(std::move(onProgress)), m_jobClock(jobClock)
    {
        for (const auto& group : plan.groups)
            for (const MatrixRef& m : group)
                m_totalWeights += static_cast<std::uint64_t>(m.weights());
        m_progress.groupCount = static_cast<int>(plan.groups.size());
    }
    void startGroup(std::size_t index, const std::vector<MatrixRef>& group, int groupsResumed)
    {
        m_groupWeights = weightsOf(group);
        m_progress.phase = JobProgress::Phase::Training;
        m_progress.groupIndex = static_cast<int>(index);
        m_progress.groupsResumed = groupsResumed;
        m_progress.rank = 0;
        m_loggedEpoch = 0;
        m_stopRequested = false;
    }
    void groupResumed()
    {
        m_weightsDone += m_groupWeights;
        ++m_progress.groupsDone;
    }
    void groupCompressed() { groupFinished(m_groupWeights); }
    // A group finished by any rank of a distributed run.
    void groupFinished(std::uint64_t weights)
    {
        m_weightsDone += weights;
        m_weightsTrainedHere += weights;
        ++m_progress.groupsDone;
    }
    void setRanks(int ranks) { m_progress.ranks = ranks; }
    // Another rank's report on group `index` of `weights` weights; false cancels.
    bool onRemote(int rank, std::size_t index, const TrainProgress& train)
    {
        m_progress.train = train;
        m_progress.rank = rank;
        m_progress.groupIndex = static_cast<int>(index);
        m_progress.elapsedSeconds = m_jobClock.seconds();
        const double remaining = static_cast<double>(m_totalWeights - m_weightsDone);
        m_progress.etaSeconds = m_weightsTrainedHere > 0 ? m_trainingClock.seconds() / static_cast<double>(m_weightsTrainedHere) * remaining : 0;
        return !m_onProgress || m_onProgress(m_progress);
    }
    static std::uint64_t weightsOf(const std::vector<MatrixRef>& group)
    {
        std::uint64_t w = 0;
        for (const MatrixRef& m : group)
            w += static_cast<std::uint64_t>(m.weights());
        return w;
    }
    // The method's report of a training step; false cancels.
    bool onTrain(const TrainProgress& train)
    {
        if (train.epoch != m_loggedEpoch) {
            m_loggedEpoch = train.epoch;
            spdlog::debug("{} epoch {}/{}: loss {:.4g} (reconstruction {:.4g}, codebook {:.4g}, commitment {:.4g}), SNR {:.2f} dB, "
                          "{} dead codewords, lr {:.3g}",
                          train.groupId, train.epoch, train.epochs, train.loss, train.reconstruction, train.codebookTerm,
                          train.commitmentTerm, train.snrDb, train.deadCodewords, train.lr);
        }
        m_progress.train = train;
        m_progress.rank = 0;
        m_progress.elapsedSeconds = m_jobClock.seconds();
        const double groupFraction = train.totalSteps > 0 ? static_cast<double>(train.step) / train.totalSteps : 0;
        const double doneHere = static_cast<double>(m_weightsTrainedHere) + groupFraction * static_cast<double>(m_groupWeights);
        const double remaining = static_cast<double>(m_totalWeights - m_weightsDone) - groupFraction * static_cast<double>(m_groupWeights);
        m_progress.etaSeconds = doneHere > 0 ? m_trainingClock.seconds() / doneHere * remaining : 0;
        m_stopRequested = m_onProgress && !m_onProgress(m_progress);
        return !m_stopRequested;
    }
    // Whether the caller asked to stop (a method's error after that is a cancellation).
    bool stopRequested() const { return m_stopRequested; }
    // The writing phase begins; false cancels.
    bool onWriting()
    {
        m_progress.phase = JobProgress::Phase::Writing;
        m_progress.elapsedSeconds = m_jobClock.seconds();
        m_progress.etaSeconds = 0;
        return !m_onProgress || m_onProgress(m_progress);
    }

private:
    std::function<bool(const JobProgress&)> m_onProgress;
    Stopwatch m_jobClock;
    Stopwatch m_trainingClock;
    JobProgress m_progress;
    std::uint64_t m_totalWeights = 0, m_weightsDone = 0, m_weightsTrainedHere = 0, m_groupWeights = 0;
    int m_loggedEpoch = 0;
    bool m_stopRequested = false;
};

// A matrix's calibration Hessian; empty function: the run does not calibrate.
using HessianOf = std::function<Result<std::vector<float>>(const MatrixRef&)>;

// Loads a group's matrices (and their Hessians when calibrating) and compresses it.
Result<GroupPayload> compressGroup(const OpenJob& job, std::size_t index, const HessianOf& hessianOf,
                                   const std::function<bool(const TrainProgress&)>& onTrain)
{
    const ScopedPhase phase("compress");
    MatrixGroup group;
    group.id = job.plan.groupIds[index];
    for (const MatrixRef& ref : job.plan.groups[index]) {
        auto data = job.checkpoint->load(ref.name);
        if (!data)
            return data.error();
        std::vector<float> hessian;
        if (hessianOf) {
            auto h = hessianOf(ref);
            if (!h)
                return h.error();
            hessian = std::move(*h);
        }
        group.matrices.push_back({ref, data->toFloat(), std::move(hessian)});
    }
    CompressContext context;
    context.threads = computeThreads(); // the kernels that take a thread count (VQ's) honour --threads, and ranks sharing a host
    context.onProgress = onTrain;
    context.phases = &processPhaseLog();
    auto payload = job.plan.groupMethods[index]->compress(group, job.plan.groupParams[index], context);
    group.matrices.clear();
    // setComputeThreads keeps up to 1 GiB of freed heap in the process (fast forward passes); a
    // finished group's working set is handed back, so the next group's peak is its own.
    malloc_trim(0);
    return payload;
}

// Group `index` compressed here and saved in the work folder at once (its seconds in
// `groupSeconds`); both the single-process loop and rank 0 of a distributed run.
Result<GroupPayload> compressAndSave(const OpenJob& job, std::size_t index, const HessianOf& hessianOf, const WorkFolder& work,
                                     GroupProgress& progress, const std::function<bool(const TrainProgress&)>& onTrain,
                                     std::vector<double>& groupSeconds)
{
    const Stopwatch clock;
    auto payload = compressGroup(job, index, hessianOf, onTrain);
    if (!payload)
        return progress.stopRequested() ? Error::cancelled() : payload.error();
    POCKET_TRY(work.saveGroup(index, *payload));
    groupSeconds[index] = clock.seconds();
    return payload;
}

HessianOf hessiansFrom(CalibrationFeed* calibration, const WorkFolder& work)
{
    if (!calibration)
        return {};
    return [calibration, &work](const MatrixRef& ref) { return calibration->hessian(ref, work); };
}

// Every group in plan order: taken from the work folder when finished earlier, else compressed
// and saved there at once.
Result<std::vector<GroupPayload>> compressGroups(const OpenJob& job, CalibrationFeed* calibration, const WorkFolder& work,
                                                 GroupProgress& progress, int& groupsResumed, std::vector<double>& groupSeconds)
{
    std::vector<GroupPayload> payloads;
    for (std::size_t i = 0; i < job.plan.groups.size(); ++i) {
        if (calibration)
            POCKET_TRY(calibration->beforeGroup(job.plan.groups[i]));
        progress.startGroup(i, job.plan.groups[i], groupsResumed);
        if (auto saved = work.finishedGroup(i, job.plan.groupIds[i])) {
            if (calibration)
                POCKET_TRY(calibration->afterGroup(*saved, *job.plan.groupMethods[i]));
            payloads.push_back(std::move(*saved));
            ++groupsResumed;
            progress.groupResumed();
            continue;
        }
        auto payload = compressAndSave(job, i, hessiansFrom(calibration, work), work, progress,
                                       [&](const TrainProgress& t) { return progress.onTrain(t); }, groupSeconds);
        if (!payload)
            return payload.error();
        if (calibration)
            POCKET_TRY(calibration->afterGroup(*payload, *job.plan.groupMethods[i]));
        payloads.push_back(std::move(*payload));
        progress.groupCompressed();
    }
    return payloads;
}

// The groups of a calibrated plan that may run at the same time: block by block when each
// block's Hessians follow the compressed blocks before it, else all at once. [begin, end) pairs.
std::vector<std::pair<std::size_t, std::size_t>> groupWaves(const JobPlan& plan, const CalibrationFeed* calibration)
{
    std::vector<std::pair<std::size_t, std::size_t>> waves;
    const std::size_t n = plan.groups.size();
    if (!calibration || calibration->upFront()) {
        if (n > 0)
            waves.push_back({0, n});
        return waves;
    }
    for (std::size_t b = 0; b < n;) {
        std::size_t e = b + 1;
        while (e < n && plan.groups[e].front().layer == plan.groups[b].front().layer)
            ++e;
        waves.push_back({b, e});
        b = e;
    }
    return waves;
}

// A distributed run (params.cluster, pocket/jobs/cluster.h): wave by wave, the groups not in the
// work folder yet are compressed across the ranks, each saved into the work folder; the payloads
// are then read back from there in plan order (what a resumed single-process run reads).
Result<std::vector<GroupPayload>> distributeGroups(const OpenJob& job, CalibrationFeed* calibration, const WorkFolder& work,
                                                   GroupProgress& progress, int& groupsResumed, std::vector<double>& groupSeconds,
                                                   ClusterChannel& channel)
{
    ClusterCoordinator coordinator(channel);
    POCKET_TRY(coordinator.start(work.path(), job.plan.groupIds));
    progress.setRanks(channel.size());
    const HessianOf hessianOf = hessiansFrom(calibration, work);
    ClusterCoordinator::Hooks hooks;
    hooks.workHere = [&](std::size_t i) -> Status {
        progress.startGroup(i, job.plan.groups[i], groupsResumed);
        auto payload = compressAndSave(job, i, hessianOf, work, progress,
                                       [&](const TrainProgress& t) { return progress.onTrain(t) && coordinator.service(); }, groupSeconds);
        if (!payload)
            return payload.error();
        progress.groupCompressed();
        return {};
    };
    hooks.itemDone = [&](int, std::size_t i, const nlohmann::json& done) -> Status {
        progress.groupFinished(GroupProgress::weightsOf(job.plan.groups[i]));
        groupSeconds[i] = done.value("seconds", 0.0);
        return {};
    };
    hooks.remoteProgress = [&](int rank, std::size_t i, const TrainProgress& t) { return progress.onRemote(rank, i, t); };

    std::vector<GroupPayload> payloads(job.plan.groups.size());
    for (const auto& [begin, end] : groupWaves(job.plan, calibration)) {
        if (calibration)
            POCKET_TRY(calibration->beforeGroup(job.plan.groups[begin]));
        std::vector<std::size_t> todo;
        for (std::size_t i = begin; i < end; ++i) {
            if (auto saved = work.finishedGroup(i, job.plan.groupIds[i])) {
                progress.startGroup(i, job.plan.groups[i], groupsResumed);
                progress.groupResumed();
                ++groupsResumed;
                payloads[i] = std::move(*saved);
            } else {
                todo.push_back(i);
            }
        }
        if (calibration && !todo.empty() && channel.size() > 1) // only other ranks read them from the folder
            POCKET_TRY(calibration->shareBlockHessians(work));
        POCKET_TRY(coordinator.runWave(todo, hooks));
        for (std::size_t i : todo) {
            // A network filesystem may show another host's new file late (NFS caches a name's
            // absence for up to a minute): look again for a while before giving up.
            std::optional<GroupPayload> saved = work.finishedGroup(i, job.plan.groupIds[i]);
            for (const Stopwatch waited; !saved && waited.seconds() < 90;) {
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
                saved = work.finishedGroup(i, job.plan.groupIds[i]);
            }
            if (!saved)
                return fileError(work.groupFile(i), "missing 90 s after its rank reported it finished (is the work folder on a "
                                                    "filesystem every rank shares?)");
            payloads[i] = std::move(*saved);
        }
        if (calibration) {
            for (std::size_t i = begin; i < end; ++i)
                POCKET_TRY(calibration->afterGroup(payloads[i], *job.plan.groupMethods[i]));
            POCKET_TRY(calibration->forgetBlockHessians(work));
        }
    }
    return payloads;
}

// A tensor's elements as `keep` (a float type), passed to `sink` in pieces of 1M elements (the
// embeddings of a 7B model are 131M) or as they are when stored as `keep` already.
Status convertedBytes(const TensorData& data, DType keep, const ContainerWriter::Sink& sink)
{
    const std::size_t count = static_cast<std::size_t>(elementCount(data.info.shape));
    if (data.info.dtype == keep)
        return sink(data.data, count * dtypeSize(keep));
    if (!isFloatType(data.info.dtype))
        return Error{data.info.name + " is stored as " + dtypeName(data.info.dtype) + ", not a float type"};
    constexpr std::size_t kPiece = 1 << 20;
    std::vector<float> values(std::min(count, kPiece));
    std::vector<std::uint8_t> bytes(values.size() * dtypeSize(keep));
    const std::size_t inSize = dtypeSize(data.info.dtype);
    for (std::size_t begin = 0; begin < count; begin += kPiece) {
        const std::size_t n = std::min(kPiece, count - begin);
        convertToFloat(data.info.dtype, data.data + begin * inSize, n, values.data());
        convertFromFloat(values.data(), n, keep, bytes.data());
        POCKET_TRY(sink(bytes.data(), n * dtypeSize(keep)));
    }
    return {};
}

// Writes the archive: the groups' payloads, the uncompressed tensors at the kept dtype, the
// tokenizer. Fills the result's archive facts and per-group summaries.
Status assembleArchive(const CompressJobParams& params, OpenJob& job, std::vector<GroupPayload> payloads, CompressJobResult& result)
{
    const Checkpoint& ckpt = *job.checkpoint;
    ArchiveInput input;
    ArchiveManifest& manifest = input.manifest;
    manifest.config = ckpt.config();
    manifest.sourceName = fs::path(ckpt.path()).filename().string();
    manifest.creator = std::string("pocketllm-workbench ") + POCKET_VERSION;
    if (!job.tokenizer.bytes.empty()) {
        manifest.tokenizerKind = job.tokenizer.kind;
        manifest.tokenizerFileName = job.tokenizer.fileName;
        input.tokenizerBytes = std::move(job.tokenizer.bytes);
    }
    manifest.selectionJson = layerSelectionJson(params.selection);
    std::set<std::string> compressed;
    for (const auto& group : job.plan.groups)
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
        return convertedBytes(*data, keep, sink);
    };
    POCKET_TRY(applyLosslessStage(manifest.groups, params.entropy));
    for (const ArchiveGroup& g : manifest.groups) {
        GroupPayload summary = g.payload;
        summary.sections.clear();
        result.groups.push_back(std::move(summary));
    }
    result.matrices = matrixReports(result.groups);
    result.bits = accountBits(manifest);
    POCKET_TRY(writeArchive(job.outPath.string(), std::move(input)));
    std::error_code ec;
    result.archivePath = job.outPath.string();
    result.archiveBytes = fs::file_size(job.outPath, ec);
    return {};
}

Result<CompressJobResult> runSteps(const CompressJobParams& params, MethodRegistry& registry, CompressRecorder* recorder,
                                   const std::function<bool(const JobProgress&)>& onProgress)
{
    const Stopwatch clock;
    resetPhases();
    OpenJob job;
    {
        const ScopedPhase phase("open");
        POCKET_TRY(openJob(params, registry, job));
        // The tokenizer and the output folder are checked before hours of training.
        POCKET_TRY(readTokenizer(params, job));
        POCKET_TRY(checkOutput(params, job));
    }
    auto calibration = CalibrationFeed::start(params, *job.checkpoint, *job.method, job.plan, job.tokenizerPath);
    if (!calibration)
        return calibration.error();

    const std::string workDir = params.workDir.empty() ? defaultWorkFolder(job.outPath.string()) : params.workDir;
    auto work = WorkFolder::open(workDir, jobIdentity(params, *job.checkpoint, *job.method, job.resolved, job.plan.groupIds), params.resume);
    if (!work)
        return work.error();
    if (*calibration)
        POCKET_TRY((*calibration)->measureUpFront(job.plan, static_cast<int>(job.checkpoint->config().numLayers), **work));

    const auto reported = [&](const JobProgress& p) {
        if (recorder)
            recorder->begin();
        return !onProgress || onProgress(p);
    };
    GroupProgress progress(job.plan, reported, clock);
    CompressJobResult result;
    result.groupSeconds.assign(job.plan.groups.size(), 0.0);
    auto payloads = params.cluster ? distributeGroups(job, calibration->get(), **work, progress, result.groupsResumed, result.groupSeconds,
                                                      *params.cluster)
                                   : compressGroups(job, calibration->get(), **work, progress, result.groupsResumed, result.groupSeconds);
    if (params.cluster) {
        stopClusterWorkers(*params.cluster);
        result.ranks = params.cluster->size();
    }
    if (!payloads)
        return payloads.error();
    calibration->reset(); // its model and windows are not needed for writing
    if (!progress.onWriting())
        return Error::cancelled();
    {
        const ScopedPhase phase("writing");
        POCKET_TRY(assembleArchive(params, job, std::move(*payloads), result));
    }
    if (!params.keepWorkDir)
        (*work)->remove();
    result.seconds = clock.seconds();
    result.phases = phaseTimes();
    return result;
}

} // namespace

Result<CompressJobResult> runCompressJob(const CompressJobParams& params, MethodRegistry& registry, const RecorderOptions* recording,
                                         const std::function<bool(const JobProgress&)>& onProgress)
{
    std::unique_ptr<CompressRecorder> recorder;
    if (recording && recording->enabled)
        recorder = std::make_unique<CompressRecorder>(*recording, params);
    auto result = runSteps(params, registry, recorder.get(), onProgress);
    if (params.cluster) // every path ends the workers, the refusals before the first group too
        stopClusterWorkers(*params.cluster);
    if (!recorder)
        return result;
    if (!result)
        recorder->failed(result.error());
    else
        result->runId = recorder->done(*result);
    return result;
}

namespace {

// Opens the job this worker is given: the same model, method and plan as rank 0, and rank 0's
// work folder (which must be visible here and hold the same job).
Result<std::unique_ptr<WorkFolder>> openWorkerJob(const CompressJobParams& params, MethodRegistry& registry, const nlohmann::json& start,
                                                  OpenJob& job)
{
    POCKET_TRY(openJob(params, registry, job));
    if (start["ids"] != nlohmann::json(job.plan.groupIds))
        return Error{"plans other groups than rank 0 (" + std::to_string(job.plan.groupIds.size()) + " against " +
                     std::to_string(start["ids"].size()) + "): every rank must be given the same command line and model"};
    const std::string dir = start.value("work", std::string());
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        return fileError(dir, "rank 0's work folder is not visible here; it must be on a filesystem every rank shares");
    const ParamSet resolved = *ParamSet::resolve(job.method->info().params, params.settings);
    return WorkFolder::open(dir, jobIdentity(params, *job.checkpoint, *job.method, resolved, job.plan.groupIds), true);
}

} // namespace

Status runCompressWorker(const CompressJobParams& params, MethodRegistry& registry, ClusterChannel& channel)
{
    OpenJob job;
    std::unique_ptr<WorkFolder> folder;
    HessianOf hessianOf;
    ClusterWorker worker;
    worker.open = [&](const nlohmann::json& start) -> Status {
        auto work = openWorkerJob(params, registry, start, job);
        if (!work)
            return work.error();
        folder = std::move(*work);
        bool calibrated = false;
        for (std::size_t i = 0; i < job.plan.groups.size(); ++i)
            calibrated = calibrated || job.plan.groupMethods[i]->needsCalibration(job.plan.groupParams[i]);
        if (calibrated) // rank 0 measured them: up front, or its block's before handing the block out
            hessianOf = [&](const MatrixRef& ref) { return folder->loadHessian(ref); };
        return {};
    };
    worker.work = [&](std::size_t index, const std::function<bool()>& stopArrived) -> Result<nlohmann::json> {
        if (index >= job.plan.groups.size())
            return Error::internal("rank 0 handed out group " + std::to_string(index) + " of " + std::to_string(job.plan.groups.size()));
        const Stopwatch clock;
        Stopwatch lastReport;
        auto payload = compressGroup(job, index, hessianOf, [&](const TrainProgress& t) {
            if (lastReport.seconds() > 0.5) {
                lastReport = Stopwatch();
                nlohmann::json report = trainProgressJson(t);
                report["kind"] = "progress";
                report["index"] = index;
                report["host"] = channel.host();
                (void)channel.send(0, report.dump());
            }
            return !stopArrived();
        });
        if (!payload)
            return payload.error().prefixed("group " + job.plan.groupIds[index]);
        POCKET_TRY(folder->saveGroup(index, *payload));
        return nlohmann::json{{"seconds", clock.seconds()}};
    };
    return serveCluster(channel, worker);
}

} // namespace pocket
