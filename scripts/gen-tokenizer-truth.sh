#!/usr/bin/env bash
# Regenerates the committed tokenizer truth (tests/data/tokenizers/*.ids) with node and
# @huggingface/tokenizers (scripts/fetch-tokenizers.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/fetch-tokenizers.sh"
cache="${POCKET_PEER_CACHE:-$HOME/.cache/pocketllm-peer}/npm-tokenizers"
NODE_PATH="$cache/node_modules" node --input-type=module -e "
import('$cache/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs').then(() => 0)" >/dev/null
cp "$here/tests/tokenizer_truth.mjs" "$cache/tokenizer_truth.mjs"
(cd "$cache" && node tokenizer_truth.mjs "$cache" "$here/../shared/assets" "$here/tests/data/tokenizers")
ls -la "$here/tests/data/tokenizers"
