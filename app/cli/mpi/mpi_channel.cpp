// The MPI transport of a distributed compression run (pocket/jobs/cluster.h): a module of its own,
// loaded by pocketllm-cli only for --mpi (app/cli/cluster_launch.cpp), so that neither the program
// nor the .deb depends on MPI. Built only where CMake finds MPI (Open MPI from Debian). It uses
// nothing of core but the ClusterChannel interface and its inline result types.
//
// Messages are char arrays with one tag; receiving polls MPI_Iprobe with a growing sleep (at most
// 20 ms), so a waiting rank leaves its core to the ranks that compress (a blocking MPI_Recv spins).
#include "pocket/jobs/cluster.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

constexpr int kTag = 7301;

class MpiChannel final : public pocket::ClusterChannel {
public:
    MpiChannel()
    {
        MPI_Comm_rank(MPI_COMM_WORLD, &m_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &m_size);
        char name[MPI_MAX_PROCESSOR_NAME] = {};
        int length = 0;
        MPI_Get_processor_name(name, &length);
        m_host.assign(name, static_cast<std::size_t>(std::max(0, length)));
    }
    ~MpiChannel() override { MPI_Finalize(); }

    int rank() const override { return m_rank; }
    int size() const override { return m_size; }
    std::string host() const override { return m_host; }

    pocket::Status send(int to, const std::string& message) override
    {
        const int rc = MPI_Send(message.data(), static_cast<int>(message.size()), MPI_CHAR, to, kTag, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return pocket::Error::io("MPI: sending to rank " + std::to_string(to) + " failed (" + errorText(rc) + ")");
        return {};
    }

    std::optional<std::string> receive(double waitSeconds, int& from) override
    {
        using clock = std::chrono::steady_clock;
        const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(waitSeconds));
        auto pause = std::chrono::microseconds(50);
        for (;;) {
            int flag = 0;
            MPI_Status status;
            if (MPI_Iprobe(MPI_ANY_SOURCE, kTag, MPI_COMM_WORLD, &flag, &status) == MPI_SUCCESS && flag) {
                int count = 0;
                MPI_Get_count(&status, MPI_CHAR, &count);
                std::string text(static_cast<std::size_t>(std::max(0, count)), '\0');
                MPI_Recv(text.data(), count, MPI_CHAR, status.MPI_SOURCE, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                from = status.MPI_SOURCE;
                return text;
            }
            const auto now = clock::now();
            if (now >= deadline)
                return std::nullopt;
            std::this_thread::sleep_for(std::min<clock::duration>(pause, deadline - now));
            pause = std::min(pause * 2, std::chrono::microseconds(20000));
        }
    }

private:
    static std::string errorText(int rc)
    {
        char text[MPI_MAX_ERROR_STRING] = {};
        int length = 0;
        MPI_Error_string(rc, text, &length);
        return std::string(text, static_cast<std::size_t>(std::max(0, length)));
    }

    int m_rank = 0;
    int m_size = 1;
    std::string m_host;
};

} // namespace

// Initialises MPI (once) and returns this rank's channel; nullptr with `error` filled on failure.
extern "C" __attribute__((visibility("default"))) pocket::ClusterChannel* pocket_mpi_open(char* error, int errorSize)
{
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int provided = 0;
        if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            std::snprintf(error, static_cast<std::size_t>(errorSize), "MPI_Init_thread failed");
            return nullptr;
        }
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return new MpiChannel;
}
