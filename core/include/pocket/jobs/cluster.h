// A compression run spread over several processes (MPI ranks; docs/scaling.md). Core holds the
// whole protocol and the scheduling; the transport is a ClusterChannel, which the MPI module
// (app/cli/mpi/, built only where Open MPI is found) implements with MPI messages and the tests
// implement with threads.
//
// Rank 0 plans, opens the work folder, runs the calibration passes and hands groups out; every
// rank, rank 0 included, compresses groups and saves each finished group into the shared work
// folder; rank 0 reads them back in plan order and writes the archive, byte for byte the archive a
// single process writes for the same job (the group files are what an interrupted single-process
// run resumes from). Calibrated plans run in waves: block by block (each block's groups across
// the ranks, its Hessians handed over through the work folder, its decoded weights set into rank
// 0's calibration model before the next block), or one wave when the Hessians were measured up
// front.
//
// Messages are JSON text. Rank 0 to a worker: start (the work folder and the ids of the items:
// groups, or sensitivity units), item (an index), stop. A worker to rank 0: ready, failed (with the
// error), progress (throttled), done (an index, with what the worker measured). A worker only ends
// on stop (or after rank 0's stop reached it mid-item), so rank 0 always ends the run. Sensitivity
// (pocket/analysis/sensitivity.h) spreads its units the same way.
#pragma once

#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <nlohmann/json.hpp>

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

class ClusterChannel {
public:
    virtual ~ClusterChannel() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::string host() const = 0; // this rank's host name, for messages
    // Sends `message` to rank `to` (the message is copied before this returns).
    virtual Status send(int to, const std::string& message) = 0;
    // The next message for this rank, waiting at most `waitSeconds` (0: only one already there);
    // `from` gets the sender. Waiting must not spin a core (ranks share machines with workers).
    virtual std::optional<std::string> receive(double waitSeconds, int& from) = 0;

    bool stopSent = false; // rank 0 has told every worker to stop (stopClusterWorkers)
};

// ---- rank 0 -------------------------------------------------------------------------------

// Rank 0's side of any distributed run (compression groups, sensitivity units): the start
// handshake, then waves of independent items handed out to the workers while rank 0 works on
// items of the same wave itself. Use from one thread.
class ClusterCoordinator {
public:
    struct Hooks {
        std::function<Status(std::size_t)> workHere; // rank 0 does item i itself
        // Rank r finished item i; `done` is its done message (with the worker's own fields).
        std::function<Status(int, std::size_t, const nlohmann::json& done)> itemDone;
        // Rank r's progress report on item i; false cancels the run. May be empty.
        std::function<bool(int, std::size_t, const TrainProgress&)> remoteProgress;
    };

    explicit ClusterCoordinator(ClusterChannel& channel) : m_channel(channel), m_assigned(static_cast<std::size_t>(channel.size())) {}
    // Sends start (`workDir`, "" when there is none, and the ids of the items every rank must
    // agree on) and waits until each worker is ready. A worker that cannot open the job fails the
    // run with an error naming its rank and host.
    Status start(const std::string& workDir, const std::vector<std::string>& ids);
    // Does the items `todo` (independent of each other) across all ranks; returns when all are
    // done, or with the first failure.
    Status runWave(const std::vector<std::size_t>& todo, const Hooks& hooks);
    // Handles the messages already arrived (rank 0 calls it from its own work's progress reports,
    // so that workers get their next items); false once the run must stop (failed() says why).
    bool service();
    const std::optional<Error>& failed() const { return m_failed; }

private:
    void handle(int from, const std::string& text);
    void fill(int worker);
    static std::string rankName(int rank, const nlohmann::json& message);

    ClusterChannel& m_channel;
    const Hooks* m_hooks = nullptr;
    std::deque<std::size_t> m_queue;                  // items of this wave not yet handed out
    std::vector<std::vector<std::size_t>> m_assigned; // per worker: handed out, not done
    std::size_t m_pending = 0;                        // handed to workers, not done
    std::optional<Error> m_failed;
    std::vector<bool> m_ready;
};

// Rank 0 ends the workers (stop); safe to call more than once and when the run never started.
// The runs call it on every path; the CLI calls it again before it finalises MPI, so no worker
// waits for ever after an error that happened before the job began.
void stopClusterWorkers(ClusterChannel& channel);

// ---- the other ranks ----------------------------------------------------------------------

// A worker's side: waits for start, lets the caller open its job (`open`, given the start
// message; its error goes to rank 0, which names this rank), says ready, then does each item it
// is handed (`work`, given the index and a check for rank 0's stop; it returns the done message's
// own fields) until rank 0 says stop. Returns this rank's failure, if any.
struct ClusterWorker {
    std::function<Status(const nlohmann::json& start)> open;
    std::function<Result<nlohmann::json>(std::size_t index, const std::function<bool()>& stopArrived)> work;
};
Status serveCluster(ClusterChannel& channel, const ClusterWorker& worker);

// A progress report from a worker (sent at most twice a second by the compression worker).
nlohmann::json trainProgressJson(const TrainProgress& train);
TrainProgress trainProgressFrom(const nlohmann::json& message);

// ---- compression ----------------------------------------------------------------------------

// A compression run's worker (runCompressJob with params.cluster set is rank 0): opens the same
// job (model, method, plan) and the shared work folder (which must hold the same job), then
// compresses the groups it is given and saves each into the work folder. A rank that cannot read
// the model, or plans differently, tells rank 0, which stops the run with an error naming that
// rank and its host; that error is returned on this rank too.
Status runCompressWorker(const CompressJobParams& params, MethodRegistry& registry, ClusterChannel& channel);

} // namespace pocket
