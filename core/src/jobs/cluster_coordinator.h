// Private to core/src/jobs: rank 0's side of a distributed compression run (pocket/jobs/cluster.h
// has the protocol): the start handshake, and waves of independent groups handed out to the
// workers while rank 0 compresses groups of the same wave itself. Use from the job's thread.
#pragma once

#include "pocket/jobs/cluster.h"
#include "pocket/methods/method.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

// A message as JSON; a text that is not a JSON object gives a "kind" of "invalid".
nlohmann::json parseClusterMessage(const std::string& text);
nlohmann::json trainProgressJson(const TrainProgress& train);
TrainProgress trainProgressFrom(const nlohmann::json& message);

class ClusterCoordinator {
public:
    // What the coordinator asks of the job.
    struct Hooks {
        std::function<Status(std::size_t)> compressHere;   // rank 0 compresses group i (saved in the work folder)
        std::function<void(int, std::size_t, double)> groupDone; // rank r finished group i in s seconds
        std::function<bool(int, std::size_t, const TrainProgress&)> remoteProgress; // false cancels
    };

    explicit ClusterCoordinator(ClusterChannel& channel) : m_channel(channel), m_assigned(static_cast<std::size_t>(channel.size())) {}
    // Sends start to every worker and waits until each is ready; a worker that cannot open the job
    // fails the run with an error naming its rank and host.
    Status start(const std::string& workDir, const std::vector<std::string>& groupIds);
    // Compresses the groups `todo` (independent of each other) across all ranks; returns when all
    // are saved in the work folder, or with the first failure.
    Status runWave(const std::vector<std::size_t>& todo, const Hooks& hooks);
    // Handles the messages already arrived (rank 0 calls it from its own compression's progress
    // reports); false once the run must stop (failed() says why).
    bool service();
    const std::optional<Error>& failed() const { return m_failed; }

private:
    void handle(int from, const std::string& text);
    void fill(int worker);
    std::string rankName(int rank, const nlohmann::json& message) const;

    ClusterChannel& m_channel;
    const Hooks* m_hooks = nullptr;
    std::deque<std::size_t> m_queue;          // groups of this wave not yet handed out
    std::vector<std::vector<std::size_t>> m_assigned; // per worker: handed out, not done
    std::size_t m_pending = 0;                // handed to workers, not done
    std::optional<Error> m_failed;
    std::vector<bool> m_ready;
};

} // namespace pocket
