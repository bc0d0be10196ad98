// Distributed runs from the command line (compress --mpi): finds out whether mpirun started this
// process, and loads the MPI module (lib/libpocket_mpi.so beside bin/, built only where Open MPI
// was found) that implements core's ClusterChannel.
#pragma once

#include "cli_common.h"

#include "pocket/jobs/cluster.h"
#include "pocket/support/result.h"

#include <functional>
#include <memory>
#include <optional>

// The number of processes mpirun (or srun with PMIx) started in this job, from the environment;
// 0 when this process was not started by an MPI launcher.
int mpiLaunchSize();
// The processes mpirun started on this host (for the default thread count); 1 if unknown.
int mpiLocalSize();

// Initialises MPI through the module. Errors: the module is missing (this build has no MPI), or MPI
// cannot start.
pocket::Result<std::unique_ptr<pocket::ClusterChannel>> openMpiChannel();

// The cluster a command runs on: MPI when asked (--mpi) or when mpirun started more than one
// process; nullptr otherwise.
pocket::Result<std::unique_ptr<pocket::ClusterChannel>> clusterFor(bool mpiOption);
// Compute threads: `requested` when given (a warning when the rank is bound to fewer cores), else
// the cores the rank is bound to, else the cores of this host shared by its ranks.
int clusterThreads(int requested, const pocket::ClusterChannel* cluster);
// A command's place in a distributed run: the cluster when there is one (clusterFor), and on
// ranks other than 0 the exit code of their part (`work`, run at once; its error named by rank and
// host). Sets the compute threads (clusterThreads) either way.
struct ClusterRole {
    std::unique_ptr<pocket::ClusterChannel> channel; // nullptr: this process alone
    std::optional<int> exitCode;                     // set: not rank 0, return this
};
ClusterRole joinCluster(const cli::Globals& g, bool mpiOption, int threads,
                        const std::function<pocket::Status(pocket::ClusterChannel&)>& work);

// Rank 0 ends the workers when it leaves a command, on every path (refusals included).
struct ClusterStop {
    pocket::ClusterChannel* channel = nullptr;
    ~ClusterStop();
};
