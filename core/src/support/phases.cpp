#include "pocket/support/phases.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>

namespace pocket {

namespace {

struct Open {
    int index;
    std::chrono::steady_clock::time_point start;
};

struct Registry {
    std::mutex mutex;
    std::vector<PhaseTime> phases;
    std::vector<Open> open;  // innermost last
    double processPeakMb = 0; // high-water marks seen before a reset
    bool canReset = true;
};

Registry& registry()
{
    static Registry r;
    return r;
}

// VmHWM (or, with `current`, VmRSS) of this process in MiB; 0 when /proc cannot be read.
double statusMb(const char* key)
{
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string prefix = std::string(key) + ":";
    while (std::getline(in, line))
        if (line.compare(0, prefix.size(), prefix) == 0)
            return std::stod(line.substr(prefix.size())) / 1024.0; // kB
    return 0;
}

// Folds the current high-water mark into every open phase and the process peak.
void foldMark(Registry& r)
{
    const double mark = r.canReset ? statusMb("VmHWM") : statusMb("VmRSS");
    r.processPeakMb = std::max(r.processPeakMb, mark);
    for (const Open& o : r.open)
        r.phases[static_cast<std::size_t>(o.index)].peakRssMb = std::max(r.phases[static_cast<std::size_t>(o.index)].peakRssMb, mark);
}

void resetMark(Registry& r)
{
    if (!r.canReset)
        return;
    std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
    if (!f || std::fputs("5", f) < 0) // 5: reset the peak resident set size
        r.canReset = false;
    if (f)
        std::fclose(f);
}

} // namespace

namespace {

class ProcessLog final : public PhaseLog {
public:
    int open(const char* name) override
    {
        Registry& r = registry();
        std::lock_guard<std::mutex> lock(r.mutex);
        foldMark(r);
        auto it = std::find_if(r.phases.begin(), r.phases.end(), [&](const PhaseTime& p) { return p.name == name; });
        if (it == r.phases.end()) {
            r.phases.push_back({name, 0, 0, 0});
            it = r.phases.end() - 1;
        }
        const int index = static_cast<int>(it - r.phases.begin());
        r.open.push_back({index, std::chrono::steady_clock::now()});
        resetMark(r);
        foldMark(r); // the resident set at the start counts
        return index;
    }
    void close(int index) override
    {
        Registry& r = registry();
        std::lock_guard<std::mutex> lock(r.mutex);
        auto it = std::find_if(r.open.rbegin(), r.open.rend(), [&](const Open& o) { return o.index == index; });
        if (it == r.open.rend()) // forgotten by resetPhases
            return;
        foldMark(r);
        PhaseTime& p = r.phases[static_cast<std::size_t>(index)];
        p.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - it->start).count();
        ++p.count;
        r.open.erase(std::next(it).base());
    }
};

thread_local PhaseLog* t_bound = nullptr;

} // namespace

PhaseLog& processPhaseLog()
{
    static ProcessLog log;
    return log;
}

PhaseLogBinding::PhaseLogBinding(PhaseLog* log) : m_previous(t_bound)
{
    if (log)
        t_bound = log;
}

PhaseLogBinding::~PhaseLogBinding() { t_bound = m_previous; }

ScopedPhase::ScopedPhase(const char* name) : m_log(t_bound ? t_bound : &processPhaseLog()), m_handle(m_log->open(name)) {}

ScopedPhase::~ScopedPhase() { m_log->close(m_handle); }

void resetPhases()
{
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    foldMark(r);
    r.phases.clear();
    r.open.clear();
}

std::vector<PhaseTime> phaseTimes()
{
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    return r.phases;
}

double processPeakRssMb()
{
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    foldMark(r);
    return r.processPeakMb;
}

} // namespace pocket
