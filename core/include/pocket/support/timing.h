// Wall-clock measurement and duration text shared by core and both front ends. Header-only;
// any thread (a Stopwatch is a value).
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace pocket {

// Seconds of wall time since construction (steady clock).
class Stopwatch {
public:
    Stopwatch() : m_start(std::chrono::steady_clock::now()) {}
    double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count(); }

private:
    std::chrono::steady_clock::time_point m_start;
};

// Seconds since `start` on the steady clock.
inline double secondsSince(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// "m:ss" below an hour, "h:mm:ss" above, "--:--" for a negative, NaN or absurd value (an unknown ETA).
inline std::string formatDuration(double seconds)
{
    if (!(seconds >= 0) || seconds > 1e7)
        return "--:--";
    const long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

} // namespace pocket
