#include "pocket/support/parallel.h"

#include <algorithm>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

namespace pocket {

void parallelFor(std::int64_t count, int threads, std::int64_t minPerPart, const std::function<void(std::int64_t, std::int64_t)>& body)
{
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::int64_t parts = threads > 0 ? threads : cores;
    parts = std::max<std::int64_t>(1, std::min(parts, count / std::max<std::int64_t>(1, minPerPart)));
    if (parts <= 1) {
        if (count > 0)
            body(0, count);
        return;
    }
    // An exception in any part (bad_alloc, ...) is caught there and rethrown here once every
    // thread has been joined; when no thread can be started, this thread does the part itself.
    const std::int64_t per = (count + parts - 1) / parts;
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(parts));
    const auto run = [&](std::int64_t part) {
        try {
            const std::int64_t begin = part * per, end = std::min(count, begin + per);
            if (begin < end)
                body(begin, end);
        } catch (...) {
            errors[static_cast<std::size_t>(part)] = std::current_exception();
        }
    };
    std::vector<std::thread> workers;
    std::vector<std::int64_t> inline_;
    for (std::int64_t p = 1; p < parts; ++p) {
        try {
            workers.emplace_back(run, p);
        } catch (const std::system_error&) {
            inline_.push_back(p);
        }
    }
    run(0);
    for (std::int64_t p : inline_)
        run(p);
    for (std::thread& w : workers)
        w.join();
    for (const std::exception_ptr& e : errors)
        if (e)
            std::rethrow_exception(e);
}

} // namespace pocket
