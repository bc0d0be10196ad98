#include "workbench.h"

#include "pocket/archive/model_archive.h"
#include "pocket/jobs/run_recorder.h"
#include "pocket/store/experiment_store.h"
#include "pocket/support/app_paths.h"
#include "pocket/support/timing.h"

#include <QCoreApplication>
#include <QDateTime>
#include <QDir>
#include <QEventLoop>
#include <QElapsedTimer>
#include <QFile>
#include <QFileInfo>
#include <QThread>

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <map>

namespace pocket::ui {

namespace {

QString formatName(const Checkpoint& c)
{
    switch (c.format()) {
    case CheckpointFormat::Llama2c: return QStringLiteral("llama2.c");
    case CheckpointFormat::HfSafetensors: return QStringLiteral("Hugging Face safetensors");
    case CheckpointFormat::Gguf: {
        QString name = QStringLiteral("GGUF");
        if (!c.fileType().empty())
            name += QStringLiteral(" ") + QString::fromStdString(c.fileType());
        if (const StoredTypes stored = storedTypes(c); stored.quantized())
            name += QStringLiteral(" (%1 bits per weight in the linear matrices)").arg(stored.linearBitsPerWeight, 0, 'f', 2);
        return name;
    }
    }
    return QStringLiteral("?");
}

QString workFolderOf(const QString& archivePath) { return QString::fromStdString(defaultWorkFolder(archivePath.toStdString())); }

double fractionFromEta(double elapsed, double eta, double fallback)
{
    if (eta >= 0 && elapsed > 0 && elapsed + eta > 0)
        return elapsed / (elapsed + eta);
    return fallback;
}

} // namespace

QString formatBytes(quint64 bytes)
{
    const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    return u == 0 ? QStringLiteral("%1 bytes").arg(bytes) : QStringLiteral("%1 %2").arg(v, 0, 'f', v < 10 ? 2 : 1).arg(units[u]);
}

QString formatSeconds(double seconds) { return QString::fromStdString(formatDuration(seconds)); }

Workbench::Workbench(QObject* parent, const QString& extraPluginFolder) : QObject(parent), m_registry(std::make_unique<MethodRegistry>())
{
    qRegisterMetaType<JobStatus>();
    qRegisterMetaType<CompressOutcome>();
    qRegisterMetaType<EvalOutcome>();
    qRegisterMetaType<ExportOutcome>();
    qRegisterMetaType<TrainPoint>();
    qRegisterMetaType<PlaygroundToken>();
    qRegisterMetaType<PlaygroundOutcome>();
    qRegisterMetaType<ZeroShotOutcome>();
    qRegisterMetaType<RecoverOutcome>();
    qRegisterMetaType<SensitivityOutcome>();
    qRegisterMetaType<UnitSensitivity>();
    qRegisterMetaType<QVector<UnitSensitivity>>();
    qRegisterMetaType<QVector<TrainPoint>>();
    if (!extraPluginFolder.isEmpty()) {
        const QString wanted = QFileInfo(extraPluginFolder).canonicalFilePath();
        bool isDefault = false;
        for (const std::string& folder : defaultPluginFolders())
            isDefault = isDefault || QFileInfo(QString::fromStdString(folder)).canonicalFilePath() == wanted;
        if (!isDefault)
            m_registry->loadFolder(extraPluginFolder.toStdString());
    }
    m_registry->loadDefaultFolders();
    for (const PluginRecord& r : m_registry->records())
        if (!r.loaded)
            spdlog::warn("method plugin {} refused: {}", r.path, r.problem);
    m_storePath = QString::fromStdString(defaultStorePath());
    m_drainTimer.setInterval(33); // about 30 Hz
    connect(&m_drainTimer, &QTimer::timeout, this, &Workbench::drainMetrics);
}

Workbench::~Workbench()
{
    if (m_thread) {
        cancel();
        m_thread->wait();
        delete m_thread;
        m_thread = nullptr;
    }
}

bool Workbench::openModel(const QString& path, QString* error)
{
    if (busy()) {
        *error = tr("A job is running; cancel it or wait before opening another model.");
        return false;
    }
    auto opened = openModelOrArchive(path.toStdString(), *m_registry);
    if (!opened) {
        *error = QString::fromStdString(opened.message());
        return false;
    }
    m_checkpoint = std::move(*opened);
    const Checkpoint& c = *m_checkpoint;
    ModelSummary s;
    s.path = QFileInfo(path).absoluteFilePath();
    s.name = QString::fromStdString(displayName(path.toStdString()));
    s.isArchive = isPllmFile(path.toStdString());
    s.format = s.isArchive ? tr(".pllm archive") : formatName(c);
    s.architecture = QString::fromStdString(c.config().architecture);
    s.layers = static_cast<int>(c.config().numLayers);
    s.hidden = c.config().hiddenSize;
    s.vocab = c.config().vocabSize;
    s.tokenizerPath = QString::fromStdString(c.tokenizerPath());
    std::map<std::string, int> dtypes;
    for (const TensorInfo& t : c.tensors()) {
        s.parameters += elementCount(t.shape);
        if (t.shape.size() == 2)
            ++dtypes[storedTypeName(t)]; // a GGUF's block types (Q4_K, ...) as stored
    }
    s.dtype = dtypes.size() == 1 ? QString::fromLatin1(dtypes.begin()->first.c_str()) : tr("mixed");
    s.bytes = c.totalBytes();
    if (s.isArchive) {
        s.bytes = static_cast<quint64>(QFileInfo(path).size());
        if (auto archive = Archive::open(path.toStdString(), ContainerReader::Verify::ManifestOnly)) {
            const ArchiveManifest& m = (*archive)->manifest();
            if (!m.groups.empty())
                s.archiveMethod = QString::fromStdString(m.groups.front().payload.methodId);
            const ArchiveBits bits = accountBits(m);
            s.archiveBpw = bits.compressedWeights > 0 ? bits.bpwCompressed() : 0;
            s.dtype = s.archiveMethod.isEmpty() ? s.dtype : tr("compressed (%1)").arg(s.archiveMethod);
        }
    }
    m_summary = s;
    spdlog::info("opened {} ({}, {} parameters)", path.toStdString(), s.architecture.toStdString(), s.parameters);
    Q_EMIT modelChanged();
    return true;
}

Result<CompressionMethod*> Workbench::methodToPlan(const CompressJobParams& params) const
{
    if (!m_checkpoint)
        return Error{"no model is open"};
    return m_registry->find(params.methodId);
}

Result<JobPlan> Workbench::plan(const CompressJobParams& params) const
{
    auto method = methodToPlan(params);
    if (!method)
        return method.error();
    return planCompressJob(params, *m_checkpoint, **method);
}

PlanCheck Workbench::checkPlan(const JobPlan& plan) const
{
    return m_checkpoint ? pocket::checkPlan(plan, *m_checkpoint) : PlanCheck{};
}

Result<SettingsSuggestion> Workbench::suggest(const CompressJobParams& params) const
{
    auto method = methodToPlan(params);
    if (!method)
        return method.error();
    return suggestSettings(params, *m_checkpoint, **method, m_registry.get());
}

QString Workbench::defaultArchivePath(const QString& methodId) const
{
    const QString dir = QString::fromStdString(userDataDir()) + QStringLiteral("/archives");
    QString base = m_summary.name;
    if (base.endsWith(QStringLiteral(".bin")) || base.endsWith(QStringLiteral(".pllm")))
        base = QFileInfo(base).completeBaseName();
    return QStringLiteral("%1/%2-%3-%4.pllm").arg(dir, base.isEmpty() ? QStringLiteral("model") : base, methodId,
                                                 QDateTime::currentDateTime().toString(QStringLiteral("yyyyMMdd-HHmmss")));
}

bool Workbench::hasWorkFolder(const QString& archivePath)
{
    return !archivePath.isEmpty() && QFileInfo(workFolderOf(archivePath)).isDir();
}

bool Workbench::discardWorkFolder(const QString& archivePath, QString* error)
{
    QDir dir(workFolderOf(archivePath));
    if (!dir.exists())
        return true;
    if (!dir.removeRecursively()) {
        *error = tr("Could not delete %1.").arg(dir.path());
        return false;
    }
    return true;
}

void Workbench::launch(JobStatus::Kind kind, std::function<void()> work)
{
    m_stop = std::make_shared<std::atomic<bool>>(false);
    m_runningKind = kind;
    {
        std::lock_guard<std::mutex> lock(m_bufferMutex);
        m_pending.clear();
        m_pendingUnits.clear();
        m_pendingTokens.clear();
        m_pendingStatus.reset();
    }
    m_thread = QThread::create(std::move(work));
    connect(m_thread, &QThread::finished, this, &Workbench::finishJob, Qt::QueuedConnection);
    m_drainTimer.start();
    m_thread->start();
    Q_EMIT jobStarted(kind);
}

void Workbench::finishJob()
{
    if (!m_thread)
        return;
    m_thread->wait();
    delete m_thread;
    m_thread = nullptr;
    m_drainTimer.stop();
    drainMetrics();
    m_runningKind = JobStatus::Kind::None;
    std::function<void()> deliver;
    {
        std::lock_guard<std::mutex> lock(m_bufferMutex);
        deliver.swap(m_delivery);
    }
    if (deliver)
        deliver();
}

void Workbench::setDelivery(std::function<void()> deliver)
{
    std::lock_guard<std::mutex> lock(m_bufferMutex);
    m_delivery = std::move(deliver);
}

void Workbench::postStatus(const JobStatus& status)
{
    std::lock_guard<std::mutex> lock(m_bufferMutex);
    m_pendingStatus = status;
}

void Workbench::drainMetrics()
{
    std::vector<TrainPoint> points;
    std::vector<UnitSensitivity> units;
    std::vector<PlaygroundToken> tokens;
    std::optional<JobStatus> status;
    {
        std::lock_guard<std::mutex> lock(m_bufferMutex);
        points.swap(m_pending);
        units.swap(m_pendingUnits);
        tokens.swap(m_pendingTokens);
        status.swap(m_pendingStatus);
    }
    if (!points.empty()) {
        if (m_runningKind == JobStatus::Kind::Recover)
            Q_EMIT recoverSteps(QVector<TrainPoint>(points.begin(), points.end()));
        else
            Q_EMIT trainMetrics(QVector<TrainPoint>(points.begin(), points.end()));
    }
    if (!units.empty())
        Q_EMIT sensitivityUnits(QVector<UnitSensitivity>(units.begin(), units.end()));
    if (!tokens.empty())
        Q_EMIT playgroundTokens(QVector<PlaygroundToken>(tokens.begin(), tokens.end()));
    if (status)
        Q_EMIT jobProgress(*status);
}

bool Workbench::startPlayground(const PlaygroundRequest& request, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running; the playground runs one thing at a time.");
        return false;
    }
    if (request.originalPath.empty() || request.compressedPath.empty()) {
        *error = tr("Choose both an original and a compressed model.");
        return false;
    }
    launch(JobStatus::Kind::Playground, [this, request] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        const auto onPhase = [&](PlaygroundPhase phase) {
            JobStatus st;
            st.kind = JobStatus::Kind::Playground;
            st.text = phase == PlaygroundPhase::LoadingOriginal     ? tr("loading the original")
                      : phase == PlaygroundPhase::LoadingCompressed ? tr("loading the compressed model")
                                                                    : tr("generating");
            st.fraction = phase == PlaygroundPhase::Generating ? 0.5 : 0.1;
            postStatus(st);
        };
        auto result = runPlayground(
            request, *m_registry,
            [&](const PlaygroundToken& t) {
                std::lock_guard<std::mutex> lock(m_bufferMutex);
                m_pendingTokens.push_back(t);
            },
            onPhase, stopFlag.get());
        PlaygroundOutcome o;
        if (result) {
            o.ok = true;
            o.result = std::move(*result);
            const PlaygroundResult& r = o.result;
            o.message = tr("Original %1 tokens/s, compressed %2 tokens/s (weights %3). Mean KL %4 nats/token; %5.")
                            .arg(r.originalTokensPerSecond, 0, 'f', 1)
                            .arg(r.compressedTokensPerSecond, 0, 'f', 1)
                            .arg(formatBytes(r.compressedMemory.total()))
                            .arg(r.meanKl, 0, 'f', 3)
                            .arg(r.divergenceAt < 0 ? tr("the texts agree") : tr("first divergence at token %1").arg(r.divergenceAt + 1));
        } else {
            o.cancelled = result.cancelled();
            o.errorKind = result.kind();
            o.message = o.cancelled ? tr("Stopped.") : QString::fromStdString(result.message());
        }
        setDelivery([this, o] { Q_EMIT playgroundFinished(o); });
    });
    return true;
}

void Workbench::cancel()
{
    if (m_stop)
        m_stop->store(true);
}

bool Workbench::waitForIdle(int timeoutMs)
{
    QElapsedTimer timer;
    timer.start();
    while (busy() && timer.elapsed() < timeoutMs)
        QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    return !busy();
}

bool Workbench::startCompress(const CompressJobParams& params, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (!m_checkpoint || m_summary.isArchive) {
        *error = tr("Open a model (not an archive) to compress.");
        return false;
    }
    auto planned = plan(params);
    if (!planned) {
        *error = QString::fromStdString(planned.message());
        return false;
    }
    if (!params.resume && hasWorkFolder(QString::fromStdString(params.outPath))) {
        *error = tr("%1 holds an interrupted run. Resume it, or discard it first.").arg(workFolderOf(QString::fromStdString(params.outPath)));
        return false;
    }
    if (const auto dir = std::filesystem::path(params.outPath).parent_path(); !dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) {
            *error = tr("Cannot create the folder %1: %2").arg(QString::fromStdString(dir.string()), QString::fromStdString(ec.message()));
            return false;
        }
    }
    QStringList ids;
    for (const std::string& id : planned->groupIds)
        ids << QString::fromStdString(id);
    Q_EMIT compressPlanned(ids);

    const RecorderOptions recording{m_storePath.toStdString(), true, "pocketllm workbench"};
    launch(JobStatus::Kind::Compress, [this, params, recording, ids] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        auto result = runCompressJob(params, *m_registry, &recording, [&](const JobProgress& p) {
            JobStatus st;
            st.kind = JobStatus::Kind::Compress;
            st.etaSeconds = p.etaSeconds;
            st.fraction = fractionFromEta(p.elapsedSeconds, p.etaSeconds, p.groupCount ? double(p.groupIndex) / p.groupCount : 0);
            if (p.phase == JobProgress::Phase::Writing) {
                st.text = tr("writing the archive");
                st.fraction = 1;
                st.groupFraction = 1;
            } else {
                const TrainProgress& t = p.train;
                st.groupFraction = t.totalSteps > 0 ? double(t.step) / t.totalSteps : 0;
                st.groupEtaSeconds = t.etaSeconds;
                st.text = tr("group %1/%2: %3   epoch %4/%5   loss %6")
                              .arg(p.groupIndex + 1)
                              .arg(p.groupCount)
                              .arg(QString::fromStdString(t.groupId))
                              .arg(t.epoch)
                              .arg(t.epochs)
                              .arg(t.loss, 0, 'g', 4);
                if (std::isfinite(t.snrDb)) // unknown until the method reports it (fine-tune steps: never)
                    st.text += tr("   SNR %1 dB").arg(t.snrDb, 0, 'f', 1);
                if (t.step > 0) {
                    TrainPoint pt{p.groupIndex,         QString::fromStdString(t.groupId), t.step,       t.totalSteps,
                                  t.loss,               t.reconstruction,                  t.codebookTerm, t.commitmentTerm,
                                  t.snrDb,              t.codebookUsage,                   t.indexPerplexity, t.deadCodewords,
                                  t.lr};
                    std::lock_guard<std::mutex> lock(m_bufferMutex);
                    m_pending.push_back(pt);
                }
            }
            postStatus(st);
            return !stopFlag->load();
        });
        CompressOutcome o;
        if (result) {
            o.ok = true;
            o.archivePath = QString::fromStdString(result->archivePath);
            o.archiveBytes = result->archiveBytes;
            o.bpwCompressed = result->bits.bpwCompressed();
            o.bpwAllIn = result->bits.bpwAllIn();
            o.seconds = result->seconds;
            o.groupsResumed = result->groupsResumed;
            o.matrices = result->matrices;
            o.runId = result->runId;
            o.message = tr("Wrote %1 (%2): %3 bits per compressed weight, %4 all-in, in %5.")
                            .arg(o.archivePath, formatBytes(o.archiveBytes))
                            .arg(o.bpwCompressed, 0, 'f', 3)
                            .arg(o.bpwAllIn, 0, 'f', 3)
                            .arg(formatSeconds(o.seconds));
        } else {
            o.cancelled = result.cancelled();
            o.errorKind = result.kind();
            o.message = o.cancelled ? tr("Cancelled. Finished groups are kept; Resume continues from them.")
                                    : QString::fromStdString(result.message());
            o.archivePath = QString::fromStdString(params.outPath);
        }
        setDelivery([this, o] {
            if (o.ok)
                spdlog::info("{}", o.message.toStdString());
            else
                spdlog::log(o.cancelled ? spdlog::level::info : spdlog::level::err, "compress: {}", o.message.toStdString());
            Q_EMIT compressFinished(o);
            Q_EMIT storeChanged();
        });
    });
    return true;
}

bool Workbench::startEval(const EvalJobParams& params, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (params.textPath.empty() || !QFileInfo(QString::fromStdString(params.textPath)).isFile()) {
        *error = tr("Choose a text file to evaluate on (%1 is not a file).").arg(QString::fromStdString(params.textPath));
        return false;
    }
    const RecorderOptions recording{m_storePath.toStdString(), true, "pocketllm workbench"};
    launch(JobStatus::Kind::Eval, [this, params, recording] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        auto result = runEvalJob(params, *m_registry, &recording, [&](const EvalJobProgress& p) {
            JobStatus st;
            st.kind = JobStatus::Kind::Eval;
            if (p.phase == EvalJobProgress::Phase::Loading) {
                st.text = tr("loading weights %1/%2").arg(p.tensorsLoaded).arg(p.tensorsTotal);
                st.fraction = p.tensorsTotal ? 0.1 * p.tensorsLoaded / p.tensorsTotal : 0;
            } else {
                const EvalProgress& e = p.eval;
                const double rate = e.elapsedSeconds > 0 ? e.windowsDone / e.elapsedSeconds : 0;
                st.etaSeconds = rate > 0 ? (e.windowsTotal - e.windowsDone) / rate : -1;
                st.fraction = e.windowsTotal ? 0.1 + 0.9 * e.windowsDone / e.windowsTotal : 0.1;
                st.text = tr("evaluating: window %1/%2, perplexity so far %3").arg(e.windowsDone).arg(e.windowsTotal).arg(e.perplexitySoFar, 0, 'f', 4);
            }
            postStatus(st);
            return !stopFlag->load();
        });
        EvalOutcome o;
        o.modelPath = QString::fromStdString(params.modelPath);
        o.textPath = QString::fromStdString(params.textPath);
        if (result) {
            o.ok = true;
            o.perplexity = result->result.perplexity;
            o.tokens = result->result.tokensScored;
            o.ctx = result->result.ctx;
            o.seconds = result->totalSeconds;
            o.runId = result->runId;
            o.divergence = result->result.divergence;
            o.message = tr("Perplexity %1 over %2 tokens (ctx %3) in %4.")
                            .arg(o.perplexity, 0, 'f', 4)
                            .arg(o.tokens)
                            .arg(o.ctx)
                            .arg(formatSeconds(o.seconds));
            if (o.divergence)
                o.message += tr(" Against the original: KL %1 nats/token (99th percentile %2), same top-1 for %3% of tokens.")
                                 .arg(o.divergence->meanKl, 0, 'f', 4)
                                 .arg(o.divergence->klP99, 0, 'f', 3)
                                 .arg(100 * o.divergence->top1Agreement, 0, 'f', 1);
        } else {
            o.cancelled = result.cancelled();
            o.errorKind = result.kind();
            o.message = o.cancelled ? tr("Evaluation cancelled.") : QString::fromStdString(result.message());
        }
        setDelivery([this, o] {
            spdlog::log(o.ok || o.cancelled ? spdlog::level::info : spdlog::level::err, "eval {}: {}", o.modelPath.toStdString(),
                        o.message.toStdString());
            Q_EMIT evalFinished(o);
            if (o.runId > 0)
                Q_EMIT storeChanged();
        });
    });
    return true;
}

std::function<bool(int, int)> Workbench::exportProgress(const QString& text, std::shared_ptr<std::atomic<bool>> stop)
{
    return [this, text, stop](int done, int total) {
        JobStatus st;
        st.kind = JobStatus::Kind::Export;
        st.fraction = total ? double(done) / total : 0;
        st.text = text.arg(done).arg(total);
        postStatus(st);
        return !stop->load();
    };
}

void Workbench::exportFailed(ExportOutcome& outcome, const Error& error)
{
    outcome.ok = false;
    outcome.cancelled = error.kind == ErrorKind::Cancelled;
    outcome.errorKind = error.kind;
    outcome.message = outcome.cancelled ? tr("Export cancelled; nothing was left behind.") : QString::fromStdString(error.message);
}

void Workbench::listWrittenFiles(ExportOutcome& outcome, const QString& folder)
{
    for (const QFileInfo& f : QDir(folder).entryInfoList(QDir::Files, QDir::Name)) {
        outcome.bytes += static_cast<quint64>(f.size());
        outcome.files << QStringLiteral("%1 (%2)").arg(f.fileName(), formatBytes(static_cast<quint64>(f.size())));
    }
}

void Workbench::deliverExport(const ExportOutcome& outcome)
{
    setDelivery([this, outcome] {
        spdlog::log(outcome.ok || outcome.cancelled ? spdlog::level::info : spdlog::level::err, "export: {}", outcome.message.toStdString());
        Q_EMIT exportFinished(outcome);
    });
}

bool Workbench::startExportGguf(const QString& source, const QString& outFile, const ArchiveGgufOptions& options, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (!QFileInfo::exists(source)) {
        *error = tr("There is nothing at %1 to export.").arg(source);
        return false;
    }
    launch(JobStatus::Kind::Export, [this, source, outFile, options] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        ArchiveGgufOptions o = options;
        o.overwrite = true; // the user confirmed replacing an existing file
        o.onTensor = exportProgress(tr("writing tensor %1/%2"), stopFlag);
        auto report = exportGguf(source.toStdString(), outFile.toStdString(), *m_registry, o);
        ExportOutcome out;
        out.path = outFile;
        if (report) {
            out.ok = true;
            out.bytes = report->fileBytes;
            std::map<QString, int> decodedWhy;
            double worst = 0;
            for (const ArchiveGgufTensor& t : report->tensors) {
                if (t.how == "exact")
                    worst = std::max(worst, t.maxDeviation);
                if (t.how == "decoded")
                    ++decodedWhy[QString::fromStdString(t.reason)];
            }
            out.message = tr("Wrote the GGUF %1 (%2): %3 matrices re-encoded exactly (largest deviation %4), %5 decoded; "
                             "%6 bits per weight over the linear matrices, %7 all-in.")
                              .arg(outFile, formatBytes(report->fileBytes))
                              .arg(report->exact)
                              .arg(worst, 0, 'g', 3)
                              .arg(report->decoded)
                              .arg(report->bpwLinear, 0, 'f', 3)
                              .arg(report->bpwAllIn, 0, 'f', 3);
            for (const auto& [why, n] : decodedWhy)
                out.files << tr("decoded (%1): %2").arg(n).arg(why);
        } else {
            exportFailed(out, report.error());
        }
        deliverExport(out);
    });
    return true;
}

bool Workbench::startExportQuantisedFolder(const QString& archivePath, const QString& outDir, const QString& format, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (!QFileInfo(archivePath).isFile()) {
        *error = tr("There is no archive at %1 to export.").arg(archivePath);
        return false;
    }
    if (format != QLatin1String("gptq") && format != QLatin1String("aqlm")) {
        *error = tr("Unknown export format %1.").arg(format);
        return false;
    }
    launch(JobStatus::Kind::Export, [this, archivePath, outDir, format] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        GptqExportOptions options;
        options.overwrite = true; // the user confirmed replacing an existing folder
        options.onTensor = exportProgress(tr("writing tensor %1/%2"), stopFlag);
        ExportOutcome out;
        out.path = outDir;
        Error failure;
        if (format == QLatin1String("gptq")) {
            auto r = exportGptq(archivePath.toStdString(), outDir.toStdString(), *m_registry, options);
            if (r)
                out.message = tr("Wrote the GPTQ folder %1: %2 matrices, %3-bit in groups of %4, %5 bits per weight with scales and zeros.")
                                  .arg(outDir).arg(r->quantized).arg(r->bits).arg(r->groupSize).arg(r->bpwLinear, 0, 'f', 3);
            else
                failure = r.error();
        } else {
            auto r = exportAqlm(archivePath.toStdString(), outDir.toStdString(), *m_registry, options);
            if (r)
                out.message = tr("Wrote the AQLM folder %1: %2 matrices, one codebook of 2^%3 entries each (%4), %5 bits per weight.")
                                  .arg(outDir).arg(r->quantized).arg(r->nbits)
                                  .arg(r->sharedCodebooksCopied ? tr("the archive's shared codebooks copied into each") : tr("as in the archive"))
                                  .arg(r->bpwLinear, 0, 'f', 3);
            else
                failure = r.error();
        }
        out.ok = out.message.size() > 0;
        if (out.ok)
            listWrittenFiles(out, outDir);
        else
            exportFailed(out, failure);
        deliverExport(out);
    });
    return true;
}

bool Workbench::startExportHf(const QString& archivePath, const QString& outDir, DType dtype, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (!QFileInfo(archivePath).isFile()) {
        *error = tr("There is no archive at %1 to export.").arg(archivePath);
        return false;
    }
    launch(JobStatus::Kind::Export, [this, archivePath, outDir, dtype] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        HfWriteOptions options;
        options.dtype = dtype;
        options.overwrite = true; // the user confirmed replacing an existing folder
        options.onTensor = exportProgress(tr("decoding and writing tensor %1/%2"), stopFlag);
        const Status status = decompressArchive(archivePath.toStdString(), *m_registry, outDir.toStdString(), options);
        ExportOutcome o;
        o.path = outDir;
        if (status) {
            o.ok = true;
            listWrittenFiles(o, outDir);
            o.message = tr("Wrote the Hugging Face folder %1: %2 files, %3.").arg(outDir).arg(o.files.size()).arg(formatBytes(o.bytes));
        } else {
            exportFailed(o, status.error());
        }
        deliverExport(o);
    });
    return true;
}

bool Workbench::startExportArchive(const QString& archivePath, const QString& destination, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (QFileInfo(archivePath).absoluteFilePath() == QFileInfo(destination).absoluteFilePath()) {
        *error = tr("The archive is already at %1.").arg(destination);
        return false;
    }
    launch(JobStatus::Kind::Export, [this, archivePath, destination] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        ExportOutcome o;
        o.path = destination;
        const auto fail = [&](const QString& message, ErrorKind kind = ErrorKind::Io) {
            o.message = message;
            o.errorKind = kind;
            QFile::remove(destination + QStringLiteral(".part"));
        };
        JobStatus st;
        st.kind = JobStatus::Kind::Export;
        st.text = tr("verifying %1").arg(archivePath);
        postStatus(st);
        if (auto verified = Archive::open(archivePath.toStdString(), ContainerReader::Verify::All); !verified) {
            fail(QString::fromStdString(verified.message()), verified.kind());
        } else {
            QFile in(archivePath);
            QFile out(destination + QStringLiteral(".part"));
            if (!in.open(QIODevice::ReadOnly)) {
                fail(tr("Cannot read %1: %2").arg(archivePath, in.errorString()));
            } else if (!out.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
                fail(tr("Cannot write %1: %2").arg(out.fileName(), out.errorString()));
            } else {
                const qint64 total = in.size();
                qint64 done = 0;
                bool ok = true;
                while (ok && done < total) {
                    const QByteArray chunk = in.read(4 << 20);
                    if (chunk.isEmpty() || out.write(chunk) != chunk.size()) {
                        fail(tr("Cannot write %1: %2 (disk full?)").arg(out.fileName(), out.errorString()));
                        ok = false;
                        break;
                    }
                    done += chunk.size();
                    st.fraction = total ? double(done) / total : 1;
                    st.text = tr("copying %1 of %2").arg(formatBytes(static_cast<quint64>(done)), formatBytes(static_cast<quint64>(total)));
                    postStatus(st);
                    if (stopFlag->load()) {
                        o.cancelled = true;
                        fail(tr("Export cancelled; nothing was left behind."), ErrorKind::Cancelled);
                        ok = false;
                    }
                }
                if (ok && !out.flush()) {
                    fail(tr("Cannot write %1: %2 (disk full?)").arg(out.fileName(), out.errorString()));
                    ok = false;
                }
                out.close();
                if (ok) {
                    QFile::remove(destination);
                    if (!QFile::rename(out.fileName(), destination)) {
                        fail(tr("Cannot rename %1 to %2").arg(out.fileName(), destination));
                    } else {
                        o.ok = true;
                        o.bytes = static_cast<quint64>(total);
                        o.files << QStringLiteral("%1 (%2)").arg(QFileInfo(destination).fileName(), formatBytes(o.bytes));
                        o.message = tr("Wrote the archive %1 (%2), checksums verified.").arg(destination, formatBytes(o.bytes));
                    }
                }
            }
        }
        deliverExport(o);
    });
    return true;
}

bool Workbench::startSensitivity(const SensitivityParams& params, QString* error)
{
    AllocationRequest request;
    request.base = params;
    return startAnalysis(request, false, error);
}

bool Workbench::startAllocation(const AllocationRequest& request, QString* error)
{
    return startAnalysis(request, true, error);
}

bool Workbench::startAnalysis(const AllocationRequest& request, bool allocate, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (!m_checkpoint || m_summary.isArchive) {
        *error = tr("Open a model (not an archive) to measure its sensitivity.");
        return false;
    }
    if (!QFileInfo(QString::fromStdString(request.base.textPath)).isFile()) {
        *error = tr("Choose a text file for the analysis (%1 is not a file).").arg(QString::fromStdString(request.base.textPath));
        return false;
    }
    if (allocate && request.menu.empty()) {
        *error = tr("Give at least one menu entry to allocate from.");
        return false;
    }
    const RecorderOptions recording{m_storePath.toStdString(), true, "pocketllm workbench"};
    launch(JobStatus::Kind::Sensitivity, [this, request, allocate, recording] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        SensitivityOutcome o;
        o.isAllocation = allocate;
        const auto report = [&](const SensitivityProgress& s, int option, int options) {
            JobStatus st;
            st.kind = JobStatus::Kind::Sensitivity;
            const double unitFraction = s.unitCount ? double(s.unitsDone) / s.unitCount : 0;
            st.fraction = (option + unitFraction) / options;
            st.etaSeconds = s.etaSeconds >= 0 ? s.etaSeconds + (options - option - 1) * (s.elapsedSeconds + s.etaSeconds) : -1;
            st.text = options > 1 ? tr("menu entry %1/%2: unit %3/%4").arg(option + 1).arg(options).arg(s.unitsDone).arg(s.unitCount)
                                  : tr("sensitivity: unit %1/%2 (base perplexity %3)").arg(s.unitsDone).arg(s.unitCount).arg(s.basePerplexity, 0, 'f', 4);
            std::lock_guard<std::mutex> lock(m_bufferMutex);
            m_pendingStatus = st;
            if (s.latest && option == options - 1)
                m_pendingUnits.push_back(*s.latest);
            return !stopFlag->load();
        };
        if (allocate) {
            auto r = planBitAllocation(request, *m_registry, &recording, [&](const AllocationProgress& a) {
                return report(a.sensitivity, a.option, a.optionCount);
            });
            if (r) {
                o.ok = true;
                o.basePerplexity = r->basePerplexity;
                o.allocation = *r;
                o.message = tr("Plan: %1 bits per weight (budget %2), predicted damage %3.")
                                .arg(r->plan.bpw, 0, 'f', 3)
                                .arg(request.budgetBpw, 0, 'f', 3)
                                .arg(r->plan.predictedDamage, 0, 'g', 4);
            } else {
                o.cancelled = r.cancelled();
                o.errorKind = r.kind();
                o.message = o.cancelled ? tr("Allocation cancelled.") : QString::fromStdString(r.message());
            }
        } else {
            auto r = runSensitivity(request.base, *m_registry, &recording, [&](const SensitivityProgress& s) {
                if (s.latest)
                    o.units.push_back(*s.latest);
                return report(s, 0, 1);
            });
            if (r) {
                o.ok = true;
                o.basePerplexity = r->basePerplexity;
                o.units = r->units;
                o.runId = r->runId;
                o.message = tr("Measured %1 units in %2 (base perplexity %3).")
                                .arg(r->units.size())
                                .arg(formatSeconds(r->seconds))
                                .arg(r->basePerplexity, 0, 'f', 4);
            } else {
                o.cancelled = r.cancelled();
                o.errorKind = r.kind();
                o.message = o.cancelled ? tr("Sensitivity analysis cancelled; the units measured are kept.") : QString::fromStdString(r.message());
            }
        }
        setDelivery([this, o] {
            spdlog::log(o.ok || o.cancelled ? spdlog::level::info : spdlog::level::err, "analysis: {}", o.message.toStdString());
            Q_EMIT sensitivityFinished(o);
            Q_EMIT storeChanged();
        });
    });
    return true;
}

} // namespace pocket::ui
