// Time and memory per phase of a run (calibration, Hessians, k-means, training, assignment,
// writing, ...), accumulated process-wide: a ScopedPhase adds its wall time to its name when it
// ends. Phases nest (a "compress" phase holds the methods' "k-means" and "training"); each phase's
// peak is the largest resident set seen while it was open, measured with Linux's resettable
// high-water mark (/proc/self/clear_refs, then VmHWM), or the resident set at its end where the
// mark cannot be reset. Open phases from one thread at a time (the job's thread); reading is safe
// from any thread.
#pragma once

#include <string>
#include <vector>

namespace pocket {

struct PhaseTime {
    std::string name;
    double seconds = 0;   // summed over every time the phase was open
    int count = 0;        // how often it was open
    double peakRssMb = 0; // the largest resident set while it was open
};

// Where phases are counted. Every plugin links its own copy of core, so a method counts its
// phases in the host's log: the host passes its log in CompressContext::phases and the plugin binds
// it for the call (PhaseLogBinding); the virtual calls then reach the host's copy.
class PhaseLog {
public:
    virtual ~PhaseLog() = default;
    virtual int open(const char* name) = 0;
    virtual void close(int handle) = 0;
};
// This module's own log (the one phaseTimes() reads).
PhaseLog& processPhaseLog();

// Makes `log` the log of this thread in this module while it lives (nullptr: keep the current).
class PhaseLogBinding {
public:
    explicit PhaseLogBinding(PhaseLog* log);
    ~PhaseLogBinding();
    PhaseLogBinding(const PhaseLogBinding&) = delete;
    PhaseLogBinding& operator=(const PhaseLogBinding&) = delete;

private:
    PhaseLog* m_previous;
};

class ScopedPhase {
public:
    explicit ScopedPhase(const char* name);
    ~ScopedPhase();
    ScopedPhase(const ScopedPhase&) = delete;
    ScopedPhase& operator=(const ScopedPhase&) = delete;

private:
    PhaseLog* m_log;
    int m_handle;
};

// Forgets every phase (a new run). Phases still open are forgotten too.
void resetPhases();
// The phases in the order they were first opened.
std::vector<PhaseTime> phaseTimes();
// The largest resident set this process has had, in MiB (the high-water mark survives the resets).
double processPeakRssMb();

} // namespace pocket
