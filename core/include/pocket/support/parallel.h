// Splitting a loop over threads of its own: shared by the methods' kernels and the archive's
// lossless stage. Reentrant.
#pragma once

#include <cstdint>
#include <functional>

namespace pocket {

// Runs body(begin, end) over [0, count) split into at most `threads` contiguous parts (<= 0: one
// per core), at least `minPerPart` items each, on threads of its own; returns when all are done.
// An exception in any part is rethrown here once every thread has joined; when no thread can be
// started, the calling thread does the part itself.
void parallelFor(std::int64_t count, int threads, std::int64_t minPerPart, const std::function<void(std::int64_t, std::int64_t)>& body);

} // namespace pocket
