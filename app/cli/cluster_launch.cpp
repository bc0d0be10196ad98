#include "cluster_launch.h"

#include "pocket/model/llama_model.h"
#include "pocket/support/app_paths.h"

#include <dlfcn.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <algorithm>

namespace {

int envInt(const char* name)
{
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : 0;
}

} // namespace

int mpiLaunchSize()
{
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"})
        if (const int n = envInt(name); n > 0)
            return n;
    return 0;
}

int mpiLocalSize()
{
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
        if (const int n = envInt(name); n > 0)
            return n;
    return 1;
}

pocket::Result<std::unique_ptr<pocket::ClusterChannel>> openMpiChannel()
{
    std::string path;
    if (const char* env = std::getenv("POCKETLLM_MPI_MODULE"); env && *env)
        path = env;
    else
        path = (std::filesystem::path(pocket::executableDir()) / ".." / "lib" / "libpocket_mpi.so").lexically_normal().string();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        return pocket::Error::unsupported("--mpi: this build has no MPI support (" + path +
                                          " is missing): install Open MPI (libopenmpi-dev openmpi-bin) and build again");
    // RTLD_GLOBAL: Open MPI loads its own components, which need libmpi's symbols.
    void* module = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!module)
        return pocket::fileError(path, std::string("cannot load the MPI module: ") + dlerror());
    using Open = pocket::ClusterChannel* (*)(char*, int);
    auto open = reinterpret_cast<Open>(dlsym(module, "pocket_mpi_open"));
    if (!open)
        return pocket::fileError(path, "not the MPI module (no pocket_mpi_open)");
    char error[256] = {};
    pocket::ClusterChannel* channel = open(error, sizeof error);
    if (!channel)
        return pocket::Error::io(std::string("MPI: ") + error);
    return std::unique_ptr<pocket::ClusterChannel>(channel); // the module stays loaded: MPI finalises in the destructor
}

pocket::Result<std::unique_ptr<pocket::ClusterChannel>> clusterFor(bool mpiOption)
{
    if (!mpiOption && mpiLaunchSize() <= 1)
        return std::unique_ptr<pocket::ClusterChannel>();
    return openMpiChannel();
}

int clusterThreads(int requested, const pocket::ClusterChannel* cluster)
{
    if (!cluster)
        return requested;
    // mpirun binds each rank to cores (one core each for up to 2 ranks, by default): threads
    // beyond the rank's cores only take turns.
    cpu_set_t mask;
    CPU_ZERO(&mask);
    const int usable = sched_getaffinity(0, sizeof mask, &mask) == 0 ? CPU_COUNT(&mask) : 0;
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    if (requested > 0) {
        if (usable > 0 && requested > usable)
            spdlog::warn("rank {}: --threads {} but this rank may run on {} core(s) only (mpirun binds ranks to cores; add --bind-to none)",
                         cluster->rank(), requested, usable);
        return requested;
    }
    if (usable > 0 && usable < cores)
        return usable; // bound: the cores it was given
    return std::max(1, cores / mpiLocalSize());
}

ClusterRole joinCluster(const cli::Globals& g, bool mpiOption, int threads, const std::function<pocket::Status(pocket::ClusterChannel&)>& work)
{
    ClusterRole role;
    auto cluster = clusterFor(mpiOption);
    if (!cluster) {
        role.exitCode = cli::fail(g, cluster.error());
        return role;
    }
    role.channel = std::move(*cluster);
    pocket::setComputeThreads(clusterThreads(threads, role.channel.get()));
    if (role.channel && role.channel->rank() != 0) {
        const pocket::Status worked = work(*role.channel);
        role.exitCode = worked ? cli::kExitOk
                               : cli::fail(g, worked.error().prefixed("rank " + std::to_string(role.channel->rank()) + " (" +
                                                                      role.channel->host() + ")"));
    }
    return role;
}

ClusterStop::~ClusterStop()
{
    if (channel)
        pocket::stopClusterWorkers(*channel);
}
