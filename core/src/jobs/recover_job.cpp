#include "pocket/jobs/recover_job.h"

#include "pocket/archive/model_archive.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "pocket/support/timing.h"

#include <filesystem>
#include <set>
#include <sstream>

namespace pocket {

namespace fs = std::filesystem;

std::string defaultRecoverPath(const std::string& archivePath)
{
    const fs::path p(archivePath);
    return (p.parent_path() / (p.stem().string() + "-lora.pllm")).string();
}

namespace {

// The compressed matrices to adapt: all, or those of the listed types.
Result<std::vector<std::string>> chosenMatrices(const ArchiveManifest& m, const std::string& types)
{
    std::set<std::string> wanted;
    std::stringstream list(types);
    for (std::string t; std::getline(list, t, ',');)
        if (!t.empty()) {
            MatrixType type;
            if (!parseMatrixTypeName(t, type))
                return Error::usage("'" + t + "' is not a matrix type (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", "types");
            wanted.insert(t);
        }
    std::vector<std::string> out;
    for (const ArchiveGroup& g : m.groups)
        for (const MatrixResult& r : g.payload.matrices)
            if (wanted.empty() || wanted.count(matrixTypeName(r.ref.type)))
                out.push_back(r.ref.name);
    if (out.empty())
        return Error::usage("no compressed matrix of the archive is of the types '" + types + "'", "types");
    return out;
}

} // namespace

// Long: checks, tokenise, load the model (and the teacher), measure, train, measure, write.
Result<RecoverJobResult> runRecoverJob(const RecoverJobParams& params, const MethodRegistry& registry,
                                       const std::function<bool(const RecoverJobProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    if (!isPllmFile(params.archivePath))
        return Error::usage(params.archivePath + ": recovery trains adapters on a .pllm archive's compressed matrices; compress the model first",
                            "archive");
    if (params.calibration.textPath.empty())
        return Error::usage("recovery needs a calibration text to train on", "calibration text");
    if (params.training.objective == AdapterObjective::Kl && params.originalPath.empty())
        return Error::usage("the KL objective needs the original model", "original model");
    RecoverJobResult out;
    out.outPath = params.outPath.empty() ? defaultRecoverPath(params.archivePath) : params.outPath;
    std::error_code ec;
    if (fs::equivalent(out.outPath, params.archivePath, ec))
        return Error::usage(out.outPath + ": the output must not be the input archive", "output");
    if (!params.overwrite && fs::exists(out.outPath, ec))
        return Error::usage(out.outPath + ": exists (choose another output, or overwrite it)", "output");
    auto archive = Archive::open(params.archivePath, ContainerReader::Verify::ManifestOnly);
    if (!archive)
        return archive.error();
    auto matrices = chosenMatrices((*archive)->manifest(), params.types);
    if (!matrices)
        return matrices.error();
    AdapterTrainingParams training = params.training;
    training.matrices = *matrices;

    auto ckpt = openModelOrArchive(params.archivePath, registry);
    if (!ckpt)
        return ckpt.error();
    const std::string tokenizerPath = params.tokenizerPath.empty() ? (*ckpt)->tokenizerPath() : params.tokenizerPath;
    if (tokenizerPath.empty())
        return Error{params.archivePath + ": the archive embeds no tokenizer and none was given", ErrorKind::Input, "tokenizer"};
    auto tokenizer = loadTokenizer(tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    auto text = readTextFile(params.calibration.textPath);
    if (!text)
        return text.error();
    auto windows = calibrationWindows((*tokenizer)->encode(*text), (*tokenizer)->bosId(), params.calibration);
    if (!windows)
        return windows.error();

    RecoverJobProgress progress;
    const auto onTensor = [&](int done, int total) {
        progress.tensorsLoaded = done;
        progress.tensorsTotal = total;
        return !onProgress || onProgress(progress);
    };
    RunOptions run;
    run.trainable = true;
    auto model = loadRunnableModel(std::move(*ckpt), run, onTensor);
    if (!model)
        return model.error();
    std::optional<RunnableModel> teacher;
    if (!params.originalPath.empty()) {
        auto loaded = loadRunnableModel(params.originalPath, registry, RunOptions{}, onTensor);
        if (!loaded)
            return loaded.error();
        if (loaded->model->config().vocabSize != model->model->config().vocabSize)
            return Error::usage(params.originalPath + ": its vocabulary differs from the archive's model", "original model");
        teacher = std::move(*loaded);
    }
    const LlamaModel* teacherModel = teacher ? teacher->model.get() : nullptr;
    progress.phase = RecoverJobProgress::Phase::Measuring;
    if (onProgress && !onProgress(progress))
        return Error::cancelled();
    auto before = model->model->adapterLoss(*windows, training.objective, teacherModel, false, training.batch);
    if (!before)
        return before.error();
    out.objectiveBefore = before->loss;

    progress.phase = RecoverJobProgress::Phase::Training;
    const auto trainStart = std::chrono::steady_clock::now();
    auto losses = model->model->trainAdapters(training, *windows, teacherModel, [&](const AdapterTrainingProgress& p) {
        progress.step = p;
        return !onProgress || onProgress(progress);
    });
    if (!losses)
        return losses.error();
    out.trainSeconds = secondsSince(trainStart);
    out.losses = std::move(*losses);
    auto after = model->model->adapterLoss(*windows, training.objective, teacherModel, false, training.batch);
    if (!after)
        return after.error();
    out.objectiveAfter = after->loss;

    progress.phase = RecoverJobProgress::Phase::Writing;
    if (onProgress && !onProgress(progress))
        return Error::cancelled();
    const std::vector<LoraAdapter> adapters = model->model->adapters();
    POCKET_TRY(writeArchiveWithAdapters(params.archivePath, out.outPath, adapters));
    ArchiveManifest withAdapters = (*archive)->manifest();
    const ArchiveBits bitsBefore = accountBits(withAdapters);
    withAdapters.adapters.clear();
    for (const LoraAdapter& a : adapters) withAdapters.adapters.push_back(archiveAdapter(a));
    const ArchiveBits bitsAfter = accountBits(withAdapters);
    out.adapters = static_cast<int>(adapters.size());
    out.adapterBits = bitsAfter.adapterBits;
    out.bpwBefore = bitsBefore.bpwCompressed() - bitsBefore.bpwAdapters();
    out.bpwAfter = bitsAfter.bpwCompressed();
    out.adapterBpw = bitsAfter.bpwAdapters();
    out.totalSeconds = secondsSince(start);
    return out;
}

} // namespace pocket
