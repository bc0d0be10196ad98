#!/usr/bin/env bash
# README command 1: set up, build, and run the main job on the bundled demo model: the perplexity
# of stories260K on a TinyStories slice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${POCKET_BUILD_DIR:-build}
"$BUILD_DIR/bin/pocketllm-cli" info resources/models/stories260K/stories260K.bin
"$BUILD_DIR/bin/pocketllm-cli" eval resources/models/stories260K/stories260K.bin \
  --text resources/text/tinystories_valid_30k.txt --ctx 256 "$@"
