#include "pocket/jobs/run_recorder.h"

#include "pocket/support/app_paths.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/fingerprint.h"
#include "pocket/store/experiment_store.h"
#include "pocket/support/timing.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

namespace pocket {


MatrixMetric matrixMetricOf(const MatrixReport& r)
{
    return {r.name, r.groupId, r.rows, r.cols, r.mse, r.snrDb, r.bpw, std::nullopt, std::nullopt, std::nullopt};
}

RunStatus endStatusOf(const Error& error) { return error.isCancelled() ? RunStatus::Cancelled : RunStatus::Failed; }

std::string defaultStorePath()
{
    if (const char* env = std::getenv("POCKETLLM_STORE"); env && *env)
        return env;
    return ExperimentStore::defaultPath();
}

Result<std::int64_t> upsertModelOf(ExperimentStore& store, const Checkpoint& c)
{
    auto hash = modelFingerprint(c.path());
    if (!hash)
        return hash.error();
    std::int64_t parameters = 0;
    for (const auto& t : c.tensors())
        parameters += elementCount(t.shape);
    return store.upsertModel({0, displayName(c.path()), c.config().architecture, parameters, *hash, absolutePath(c.path())});
}

RunRecorder::RunRecorder(RecorderOptions options) : m_options(std::move(options)), m_start(std::chrono::steady_clock::now()) {}

std::string RunRecorder::storePath() const { return m_store ? m_store->path() : std::string(); }

double RunRecorder::secondsSinceStart() const
{
    return pocket::secondsSince(m_start);
}

RunRecorder::~RunRecorder()
{
    if (m_begun && !m_finished)
        markEnded(RunStatus::Failed, "interrupted: the run ended without a result");
}

std::int64_t RunRecorder::disable(const std::string& message)
{
    if (m_options.enabled)
        spdlog::warn("experiment store: {}; this run is not recorded", message);
    m_options.enabled = false;
    m_store.reset();
    return 0;
}

bool RunRecorder::startFinishing()
{
    begin();
    m_finished = true;
    return m_store && m_runId != 0;
}

Result<std::int64_t> RunRecorder::upsertTextDataset(const std::string& textPath)
{
    auto hash = fileFingerprint(textPath);
    if (!hash)
        return hash.error();
    return m_store->upsertDataset({0, displayName(textPath), "", *hash, absolutePath(textPath)});
}

std::int64_t RunRecorder::finishDone(RunFinish finish)
{
    finish.status = RunStatus::Done;
    finish.peakRssMb = peakRssMb();
    if (auto s = m_store->finishRun(m_runId, finish); !s)
        return disable(s.message());
    spdlog::info("recorded as run #{} in {}", m_runId, m_store->path());
    return m_runId;
}

void RunRecorder::begin()
{
    if (m_begun || !m_options.enabled)
        return;
    m_begun = true;
    auto store = ExperimentStore::open(m_options.storePath);
    if (!store) {
        disable(store.message());
        return;
    }
    m_store = std::move(*store);
    auto id = insertRun(*m_store);
    if (!id) {
        disable(id.message());
        return;
    }
    m_runId = *id;
    spdlog::debug("recording as run #{} in {}", m_runId, m_store->path());
}

void RunRecorder::markEnded(RunStatus status, const std::string& error)
{
    m_finished = true;
    if (!m_store || m_runId == 0)
        return;
    RunFinish f;
    f.status = status;
    f.error = error;
    f.wallSeconds = secondsSinceStart();
    f.peakRssMb = peakRssMb();
    if (auto s = m_store->finishRun(m_runId, f); !s)
        disable(s.message());
}

} // namespace pocket
