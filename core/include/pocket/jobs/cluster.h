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
// Messages are JSON text. Rank 0 to a worker: start (the work folder and the plan's group ids),
// group (an index), stop. A worker to rank 0: ready, failed (with the error), progress (throttled),
// done (an index). A worker only ends on stop, so rank 0 always ends the run.
#pragma once

#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/result.h"

#include <optional>
#include <string>

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

// Rank 0's side of a distributed run: runCompressJob with params.cluster set calls these. Made by
// runCompressJob; exposed for the tests.
// Every other rank: waits for rank 0's start, opens the same job (model, method, plan) and the
// shared work folder (which must hold the same job), then compresses the groups it is given until
// rank 0 says stop. A rank that cannot read the model, or plans differently, tells rank 0, which
// stops the run with an error naming that rank and its host. Returns that error on this rank too.
Status runCompressWorker(const CompressJobParams& params, MethodRegistry& registry, ClusterChannel& channel);

// Rank 0 ends the workers (stop); safe to call more than once and when the run never started.
// runCompressJob calls it on every path; the CLI calls it again before it finalises MPI, so no
// worker waits for ever after an error that happened before the job began.
void stopClusterWorkers(ClusterChannel& channel);

} // namespace pocket
