#include "pocket/jobs/cluster.h"

#include "pocket/support/timing.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

namespace pocket {

using json = nlohmann::json;

namespace {

// Items handed to a worker ahead of time, so it never waits while rank 0 is busy with its own.
constexpr std::size_t kAhead = 2;

// A message as JSON; a text that is not a JSON object with a kind gives the kind "invalid".
json parseMessage(const std::string& text)
{
    json message = json::parse(text, nullptr, false);
    if (message.is_discarded() || !message.is_object() || !message.contains("kind") || !message["kind"].is_string())
        return json{{"kind", "invalid"}, {"text", text.substr(0, 200)}};
    return message;
}

// A worker's wait for rank 0's messages; those that arrived early (items handed out ahead while
// this rank was busy) are kept in order.
class Inbox {
public:
    explicit Inbox(ClusterChannel& channel) : m_channel(channel) {}
    json next()
    {
        while (m_early.empty())
            poll(1.0);
        json m = std::move(m_early.front());
        m_early.pop_front();
        return m;
    }
    bool stopArrived()
    {
        poll(0);
        return std::any_of(m_early.begin(), m_early.end(), [](const json& m) { return m["kind"] == "stop"; });
    }

private:
    void poll(double wait)
    {
        int from = -1;
        while (auto text = m_channel.receive(wait, from)) {
            if (from == 0)
                m_early.push_back(parseMessage(*text));
            wait = 0;
        }
    }
    ClusterChannel& m_channel;
    std::deque<json> m_early;
};

} // namespace

json trainProgressJson(const TrainProgress& t)
{
    return json{{"group_id", t.groupId}, {"step", t.step}, {"steps", t.totalSteps}, {"epoch", t.epoch}, {"epochs", t.epochs},
                {"loss", t.loss}, {"snr", std::isfinite(t.snrDb) ? json(t.snrDb) : json()}, {"usage", t.codebookUsage}};
}

TrainProgress trainProgressFrom(const json& m)
{
    TrainProgress t;
    t.groupId = m.value("group_id", std::string());
    t.step = m.value("step", 0);
    t.totalSteps = m.value("steps", 0);
    t.epoch = m.value("epoch", 0);
    t.epochs = m.value("epochs", 0);
    t.loss = m.value("loss", 0.0);
    if (m.contains("snr") && m["snr"].is_number())
        t.snrDb = m["snr"].get<double>();
    t.codebookUsage = m.value("usage", 0.0);
    return t;
}

std::string ClusterCoordinator::rankName(int rank, const json& message)
{
    const std::string host = message.value("host", std::string());
    return "rank " + std::to_string(rank) + (host.empty() ? "" : " (" + host + ")");
}

Status ClusterCoordinator::start(const std::string& workDir, const std::vector<std::string>& ids)
{
    const int size = m_channel.size();
    const std::string start = json{{"kind", "start"}, {"work", workDir}, {"ids", ids}}.dump();
    for (int r = 1; r < size; ++r)
        POCKET_TRY(m_channel.send(r, start));
    m_ready.assign(static_cast<std::size_t>(size), false);
    m_ready[0] = true;
    while (std::find(m_ready.begin(), m_ready.end(), false) != m_ready.end()) {
        int from = -1;
        if (auto text = m_channel.receive(1.0, from))
            handle(from, *text);
        if (m_failed)
            return *m_failed;
    }
    spdlog::info("distributed run: {} ranks ready", size);
    return {};
}

void ClusterCoordinator::fill(int worker)
{
    auto& mine = m_assigned[static_cast<std::size_t>(worker)];
    while (mine.size() < kAhead && !m_queue.empty() && !m_failed) {
        const std::size_t index = m_queue.front();
        m_queue.pop_front();
        if (Status sent = m_channel.send(worker, json{{"kind", "item"}, {"index", index}}.dump()); !sent) {
            m_failed = sent.error();
            return;
        }
        mine.push_back(index);
        ++m_pending;
    }
}

void ClusterCoordinator::handle(int from, const std::string& text)
{
    if (from <= 0 || from >= m_channel.size()) {
        m_failed = Error::internal("distributed run: a message from an unknown rank " + std::to_string(from));
        return;
    }
    const json m = parseMessage(text);
    const std::string kind = m["kind"];
    if (kind == "failed") {
        m_failed = Error{rankName(from, m) + ": " + m.value("error", std::string("failed")), ErrorKind::Input};
    } else if (kind == "ready") {
        m_ready[static_cast<std::size_t>(from)] = true;
    } else if (kind == "done" && m.contains("index") && m["index"].is_number_unsigned()) {
        const std::size_t index = m["index"].get<std::size_t>();
        auto& mine = m_assigned[static_cast<std::size_t>(from)];
        const auto it = std::find(mine.begin(), mine.end(), index);
        if (it == mine.end()) {
            m_failed = Error::internal("distributed run: " + rankName(from, m) + " finished item " + std::to_string(index) + ", which it was not given");
            return;
        }
        mine.erase(it);
        --m_pending;
        if (m_hooks)
            if (Status taken = m_hooks->itemDone(from, index, m); !taken) {
                m_failed = taken.error();
                return;
            }
        fill(from);
    } else if (kind == "progress" && m.contains("index") && m["index"].is_number_unsigned()) {
        if (m_hooks && m_hooks->remoteProgress && !m_hooks->remoteProgress(from, m["index"].get<std::size_t>(), trainProgressFrom(m)))
            m_failed = Error::cancelled();
    } else {
        m_failed = Error::internal("distributed run: an unexpected message from " + rankName(from, m) + ": " + text.substr(0, 200));
    }
}

bool ClusterCoordinator::service()
{
    int from = -1;
    while (!m_failed) {
        auto text = m_channel.receive(0, from);
        if (!text)
            break;
        handle(from, *text);
    }
    return !m_failed;
}

Status ClusterCoordinator::runWave(const std::vector<std::size_t>& todo, const Hooks& hooks)
{
    m_hooks = &hooks;
    m_queue.assign(todo.begin(), todo.end());
    for (int w = 1; w < m_channel.size(); ++w)
        fill(w);
    while (!m_failed && (!m_queue.empty() || m_pending > 0)) {
        if (!m_queue.empty()) {
            const std::size_t index = m_queue.front();
            m_queue.pop_front();
            Status here = hooks.workHere(index);
            if (m_failed)
                break; // a worker's failure (or a cancel) stopped rank 0's item too
            if (!here) {
                m_failed = here.error();
                break;
            }
            service();
            continue;
        }
        int from = -1;
        if (auto text = m_channel.receive(0.5, from))
            handle(from, *text);
    }
    m_hooks = nullptr;
    if (m_failed)
        return *m_failed;
    return {};
}

void stopClusterWorkers(ClusterChannel& channel)
{
    if (channel.rank() != 0 || channel.stopSent)
        return;
    channel.stopSent = true;
    const std::string stop = json{{"kind", "stop"}}.dump();
    for (int r = 1; r < channel.size(); ++r)
        if (Status sent = channel.send(r, stop); !sent)
            spdlog::warn("distributed run: could not tell rank {} to stop: {}", r, sent.message());
}

Status serveCluster(ClusterChannel& channel, const ClusterWorker& worker)
{
    Inbox inbox(channel);
    const auto tell = [&](json message) {
        message["host"] = channel.host();
        if (Status sent = channel.send(0, message.dump()); !sent)
            spdlog::warn("rank {}: {}", channel.rank(), sent.message());
    };
    const json start = inbox.next();
    if (start["kind"] != "start")
        return {}; // stopped before the job began (rank 0 refused it)
    if (Status opened = worker.open(start); !opened) {
        if (inbox.stopArrived())
            return {}; // rank 0 stopped the run meanwhile (another rank failed; its work folder may be gone)
        tell({{"kind", "failed"}, {"error", opened.message()}});
        while (inbox.next()["kind"] != "stop") {
        }
        return opened.error();
    }
    tell({{"kind", "ready"}});
    std::optional<Error> failure;
    for (json m = inbox.next(); m["kind"] != "stop"; m = inbox.next()) {
        if (m["kind"] != "item" || failure)
            continue; // after a failure, only the stop matters
        const std::size_t index = m.value("index", std::size_t(0));
        bool stopped = false;
        auto done = worker.work(index, [&] { return stopped = stopped || inbox.stopArrived(); });
        if (stopped)
            return {}; // rank 0 stopped the run (a cancel, or another rank's failure)
        if (!done) {
            failure = done.error();
            tell({{"kind", "failed"}, {"error", failure->message}});
            continue;
        }
        json message = *done;
        message["kind"] = "done";
        message["index"] = index;
        tell(message);
    }
    if (failure)
        return *failure;
    return {};
}

} // namespace pocket
