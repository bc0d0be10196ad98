#!/usr/bin/env bash
# README command 1: set up, build, and start the workbench on the bundled demo model (stories260K).
# Without a display (no $DISPLAY / $WAYLAND_DISPLAY), or with POCKET_DEMO_CLI=1, it runs the same
# main job on the command line instead: compress stories260K's linear layers with PocketLLM (one
# meta-network shared by the whole model), inspect the archive, and compare its perplexity on a
# TinyStories slice with the original's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${POCKET_BUILD_DIR:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
MODEL=resources/models/stories260K/stories260K.bin
TEXT=resources/text/tinystories_valid_30k.txt
OUT=${POCKET_DEMO_OUT:-$BUILD_DIR/demo}
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${POCKET_DEMO_CLI:-}" ]; then
  echo "starting the workbench on $MODEL"
  exec "$BUILD_DIR/bin/pocketllm" "$MODEL"
fi
echo "no display: running the command-line demo (set DISPLAY for the workbench)"
mkdir -p "$OUT"
"$CLI" info "$MODEL"
echo "== original"
"$CLI" eval "$MODEL" --text "$TEXT" --ctx 256
echo "== compressing (PocketLLM, shared network, d 2, K 256)"
"$CLI" compress "$MODEL" -o "$OUT/stories260K.pllm" --set sharing=model --set d=2 --set K=256 --set batch=1024 "$@"
"$CLI" inspect "$OUT/stories260K.pllm"
echo "== compressed"
"$CLI" eval "$OUT/stories260K.pllm" --text "$TEXT" --ctx 256
