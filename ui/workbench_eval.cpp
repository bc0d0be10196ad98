// The workbench's jobs that judge and repair a compressed model beyond perplexity: zero-shot
// accuracy and LoRA recovery (see workbench.h for the threading rules they follow).
#include "workbench.h"

#include "pocket/support/app_paths.h"

#include <spdlog/spdlog.h>

namespace pocket::ui {

bool Workbench::startZeroShot(const ZeroShotJobParams& params, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    if (params.tasks.empty()) {
        *error = tr("No zero-shot task files: the bundled ones (resources/eval/zeroshot) were not found.");
        return false;
    }
    const RecorderOptions recording{m_storePath.toStdString(), true, "pocketllm workbench"};
    launch(JobStatus::Kind::ZeroShot, [this, params, recording] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        auto result = runZeroShotJob(params, *m_registry, &recording, [&](const ZeroShotJobProgress& p) {
            JobStatus st;
            st.kind = JobStatus::Kind::ZeroShot;
            if (p.phase == ZeroShotJobProgress::Phase::Loading) {
                st.text = tr("loading weights %1/%2").arg(p.tensorsLoaded).arg(p.tensorsTotal);
            } else {
                const double task = p.scoring.requestsTotal ? double(p.scoring.requestsDone) / p.scoring.requestsTotal : 0;
                st.fraction = (p.taskIndex + task) / static_cast<double>(params.tasks.size());
                st.text = tr("zero-shot %1 (%2/%3): %4/%5 requests")
                              .arg(zeroShotTaskName(params.tasks[static_cast<std::size_t>(p.taskIndex)].task))
                              .arg(p.taskIndex + 1)
                              .arg(params.tasks.size())
                              .arg(p.scoring.requestsDone)
                              .arg(p.scoring.requestsTotal);
            }
            postStatus(st);
            return !stopFlag->load();
        });
        ZeroShotOutcome o;
        o.modelPath = QString::fromStdString(params.modelPath);
        if (result) {
            o.ok = true;
            o.tasks = result->tasks;
            o.meanAcc = result->meanAcc;
            o.averageName = QString::fromStdString(result->averageName);
            o.runId = result->runId;
            o.message = tr("Zero-shot: mean accuracy %1% over %2 tasks in %3.")
                            .arg(100 * o.meanAcc, 0, 'f', 2)
                            .arg(o.tasks.size())
                            .arg(formatSeconds(result->totalSeconds));
        } else {
            o.cancelled = result.cancelled();
            o.errorKind = result.kind();
            o.message = o.cancelled ? tr("Zero-shot evaluation cancelled.") : QString::fromStdString(result.message());
        }
        setDelivery([this, o] {
            spdlog::log(o.ok || o.cancelled ? spdlog::level::info : spdlog::level::err, "zero-shot {}: {}", o.modelPath.toStdString(),
                        o.message.toStdString());
            Q_EMIT zeroShotFinished(o);
            if (o.runId > 0)
                Q_EMIT storeChanged();
        });
    });
    return true;
}

bool Workbench::startRecover(const RecoverJobParams& params, QString* error)
{
    if (busy()) {
        *error = tr("A job is already running.");
        return false;
    }
    launch(JobStatus::Kind::Recover, [this, params] {
        const std::shared_ptr<std::atomic<bool>> stopFlag = m_stop;
        auto result = runRecoverJob(params, *m_registry, [&](const RecoverJobProgress& p) {
            JobStatus st;
            st.kind = JobStatus::Kind::Recover;
            switch (p.phase) {
            case RecoverJobProgress::Phase::Loading:
                st.text = tr("loading weights %1/%2").arg(p.tensorsLoaded).arg(p.tensorsTotal);
                break;
            case RecoverJobProgress::Phase::Measuring:
                st.text = tr("measuring the objective");
                break;
            case RecoverJobProgress::Phase::Writing:
                st.text = tr("writing the archive");
                st.fraction = 1;
                break;
            case RecoverJobProgress::Phase::Training: {
                const AdapterTrainingProgress& s = p.step;
                st.fraction = s.steps ? double(s.step) / s.steps : 0;
                const double rate = s.elapsedSeconds > 0 ? s.step / s.elapsedSeconds : 0;
                st.etaSeconds = rate > 0 ? (s.steps - s.step) / rate : -1;
                st.text = tr("training adapters: step %1/%2, loss %3").arg(s.step).arg(s.steps).arg(s.loss, 0, 'f', 4);
                TrainPoint point;
                point.groupId = QStringLiteral("LoRA");
                point.step = s.step;
                point.totalSteps = s.steps;
                point.loss = s.loss;
                std::lock_guard<std::mutex> lock(m_bufferMutex);
                m_pending.push_back(point);
                break;
            }
            }
            postStatus(st);
            return !stopFlag->load();
        });
        RecoverOutcome o;
        if (result) {
            o.ok = true;
            o.result = *result;
            o.message = tr("Recovered: objective %1 → %2, adapters on %3 matrices add %4 bits per weight (%5 → %6). Wrote %7.")
                            .arg(result->objectiveBefore, 0, 'f', 4)
                            .arg(result->objectiveAfter, 0, 'f', 4)
                            .arg(result->adapters)
                            .arg(result->adapterBpw, 0, 'f', 3)
                            .arg(result->bpwBefore, 0, 'f', 3)
                            .arg(result->bpwAfter, 0, 'f', 3)
                            .arg(QString::fromStdString(result->outPath));
        } else {
            o.cancelled = result.cancelled();
            o.errorKind = result.kind();
            o.message = o.cancelled ? tr("Recovery cancelled; nothing was written.") : QString::fromStdString(result.message());
        }
        setDelivery([this, o] {
            spdlog::log(o.ok || o.cancelled ? spdlog::level::info : spdlog::level::err, "recover: {}", o.message.toStdString());
            Q_EMIT recoverFinished(o);
        });
    });
    return true;
}

} // namespace pocket::ui
