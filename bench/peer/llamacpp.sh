#!/usr/bin/env bash
# llama.cpp as a peer: an independent implementation to check ours against (never a run-time
# dependency of the product). Fetches the llama.cpp source that npm's node-llama-cpp@3.21.1 ships as
# a git bundle, builds the tools we compare with into a cache folder outside the checkout, and
# makes the peer models:
#   stories260K (llama2.c) -> GGUF F32 with llama-convert-llama2c-to-ggml, then Q8_0 Q5_1 Q5_0 Q4_1
#   Q4_0 IQ4_NL with llama-quantize (its 172-wide w2 rows cannot take 32-blocks and stay F16/F32);
#   the generated ~1 GB checkpoint (pocketllm-cli make-random --preset 1gb, Llama-2 tokenizer) ->
#   GGUF F16 written by pocketllm-cli convert --to gguf, then Q8_0 Q4_K_M Q3_K_M Q2_K.
# Everything is done once; later runs reuse the cache. Prints where things are.
#   bash bench/peer/llamacpp.sh [tools|models|small|all]     (default all; small: tools + the stories260K files)
# Environment: POCKET_PEER_CACHE (default ~/.cache/pocketllm-peer), POCKET_BUILD_DIR (default build).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${POCKET_PEER_CACHE:-$HOME/.cache/pocketllm-peer}"
what="${1:-all}"
cli="$here/${POCKET_BUILD_DIR:-build}/bin/pocketllm-cli"
mkdir -p "$cache"

need_packages() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "peer: installing ${missing[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

build_tools() {
  need_packages build-essential cmake git python3-numpy
  command -v npm >/dev/null || need_packages nodejs npm
  if [ ! -f "$cache/npm/node_modules/node-llama-cpp/llama/gitRelease.bundle" ]; then
    mkdir -p "$cache/npm"
    (cd "$cache/npm" && npm i -E node-llama-cpp@3.21.1 --ignore-scripts --no-audit --no-fund >/dev/null)
  fi
  if [ ! -d "$cache/llama.cpp/.git" ]; then
    rm -rf "$cache/llama.cpp"
    git clone -q "$cache/npm/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$cache/llama.cpp"
  fi
  local b="$cache/llama.cpp/build"
  if [ ! -x "$b/bin/llama-perplexity" ] || [ ! -x "$b/bin/llama-tokenize" ] || [ ! -x "$b/bin/llama-simple" ] || ! grep -q "mno-amx" "$b/CMakeCache.txt" 2>/dev/null; then
    # -march=native, but without AMX: where the kernel does not grant the tile state (seen here:
    # SIGILL on tilezero in ggml's AMX matmul for Q8_0) the quantised paths would crash.
    local noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -S "$cache/llama.cpp" -B "$b" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
      -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
    cmake --build "$b" -j"$(nproc)" --target llama-quantize llama-perplexity llama-imatrix llama-bench \
      llama-convert-llama2c-to-ggml llama-tokenize llama-simple >/dev/null
  fi
  echo "peer: tools in $b/bin"
}

make_models() {
  local bin="$cache/llama.cpp/build/bin" m="$cache/models"
  mkdir -p "$m"
  local src="$here/resources/models/stories260K"
  if [ ! -f "$m/stories260K-F32.gguf" ]; then
    "$bin/llama-convert-llama2c-to-ggml" --copy-vocab-from-model "$src/tok512.bin" --llama2c-model "$src/stories260K.bin" \
      --llama2c-output-model "$m/stories260K-F32.gguf" >/dev/null 2>&1
  fi
  for t in Q8_0 Q5_1 Q5_0 Q4_1 Q4_0 IQ4_NL; do
    [ -f "$m/stories260K-$t.gguf" ] || "$bin/llama-quantize" "$m/stories260K-F32.gguf" "$m/stories260K-$t.gguf" "$t" >/dev/null 2>&1
  done
  [ "${1:-}" = small ] && { echo "peer: models in $m"; return 0; }
  [ -x "$cli" ] || { echo "peer: build pocketllm-cli first ($cli)"; return 1; }
  if [ ! -f "$m/random-1gb-F16.gguf" ]; then
    local tok="$here/../shared/assets/tokenizers/llama2/tokenizer.model"
    [ -d "$m/random-1gb" ] || "$cli" -q make-random --preset 1gb --dtype f16 --tokenizer "$tok" --out "$m/random-1gb" >/dev/null
    "$cli" -q convert "$m/random-1gb" --to gguf --dtype f16 --out "$m/random-1gb-F16.gguf" >/dev/null
  fi
  for t in Q8_0 Q4_K_M Q3_K_M Q2_K; do
    [ -f "$m/random-1gb-$t.gguf" ] || "$bin/llama-quantize" "$m/random-1gb-F16.gguf" "$m/random-1gb-$t.gguf" "$t" >/dev/null 2>&1
  done
  echo "peer: models in $m"
  ls -la "$m"/*.gguf
}

case "$what" in
  tools) build_tools ;;
  models) make_models ;;
  small) build_tools; make_models small ;;  # the stories260K files only (what compare-llamacpp.sh check needs)
  all) build_tools; make_models ;;
  *) echo "usage: $0 [tools|models|small|all]"; exit 2 ;;
esac
