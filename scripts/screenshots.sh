#!/usr/bin/env bash
# Renders the workbench's main views to PNG under the offscreen platform (a short PocketLLM run on
# the bundled demo model, evaluations before and after, the comparison view), for docs/ and the
# README. Uses a private data folder and store, so the user's runs and settings are untouched.
# Usage: scripts/screenshots.sh [output dir, default docs/screenshots]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${POCKET_BUILD_DIR:-build}
OUT=${1:-docs/screenshots}
[ -x "$BUILD_DIR/bin/pocketllm" ] || bash scripts/build.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
POCKETLLM_DATA_DIR="$TMP/data" XDG_CONFIG_HOME="$TMP/config" XDG_RUNTIME_DIR="$TMP" QT_QPA_PLATFORM=offscreen \
  "$BUILD_DIR/bin/pocketllm" --screenshots "$OUT" --store "$TMP/store.sqlite"
ls -l "$OUT"
