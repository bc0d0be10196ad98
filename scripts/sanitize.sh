#!/usr/bin/env bash
# Builds the whole project with AddressSanitizer and UndefinedBehaviorSanitizer into build-asan/
# (or $POCKET_ASAN_BUILD_DIR) and runs the whole test suite under them, the GUI test offscreen
# included. Any sanitizer report fails the run. Leaks are checked; reports that come only from
# third-party libraries' own allocations (LibTorch, Qt, fontconfig, ...) are suppressed by
# scripts/sanitize.supp, never our code's.
#   bash scripts/sanitize.sh            # set up, build, run everything
#   bash scripts/sanitize.sh -R test_archive   # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${POCKET_ASAN_BUILD_DIR:-build-asan}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOCKET_SANITIZE=ON >/dev/null
fi
start=$(date +%s)
cmake --build "$BUILD_DIR" -- -j"$(nproc)"
built=$(date +%s)
supp="$(pwd)/scripts/sanitize.supp"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_odr_violation=0:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
cd "$BUILD_DIR"
status=0
ctest --output-on-failure -j"$(nproc)" --timeout 3000 "$@" || status=$?
end=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s, exit $status"
exit $status
