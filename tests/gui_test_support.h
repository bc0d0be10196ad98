// Helpers of the offscreen workbench tests (test_gui, test_teaching): letting the event loop run.
#pragma once

#include <QCoreApplication>
#include <QElapsedTimer>

#include <functional>

namespace testsupport {

// Processes events for `ms` milliseconds (repaints, queued replots, timers).
inline void settle(int ms)
{
    QElapsedTimer t;
    t.start();
    while (t.elapsed() < ms)
        QCoreApplication::processEvents(QEventLoop::AllEvents, 10);
}

// Processes events until `done` or `timeoutMs`; returns done().
inline bool waitFor(const std::function<bool()>& done, int timeoutMs)
{
    QElapsedTimer t;
    t.start();
    while (!done() && t.elapsed() < timeoutMs)
        QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    return done();
}

} // namespace testsupport
