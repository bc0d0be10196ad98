#!/usr/bin/env bash
# Benchmark (prints figures; not a test): BLAS matmul speed, evaluation speed on stories260K,
# and a ~1 GB Llama-shaped random checkpoint walked tensor by tensor and evaluated, with peak RSS.
# Usage: bench/run.sh [build dir]   (default build/; the 1 GB model goes to $BENCH_DIR or build/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
BENCH_DIR=${BENCH_DIR:-$BUILD_DIR/bench}
SHARED=../shared/assets
TEXT=$SHARED/eval/tinystories/tinystories_valid_part_a.txt
[ -f "$TEXT" ] || TEXT=resources/text/tinystories_valid_30k.txt
WIKI=$SHARED/eval/wikitext2/wiki.test.raw
LLAMA_TOK=$SHARED/tokenizers/llama2/tokenizer.model
mkdir -p "$BENCH_DIR"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" "$@"; }

echo "== machine"
echo "cores: $(nproc)"
"$CLI" --json doctor | field threads matmul_1024_gflops | awk '{printf "LibTorch threads %s, 1024x1024 fp32 matmul %.1f GFLOP/s\n", $1, $2}'

echo "== stories260K on $(basename "$TEXT"), ctx 256"
"$CLI" -q --json eval resources/models/stories260K/stories260K.bin --text "$TEXT" --ctx 256 \
  | field perplexity tokens tokens_per_s peak_rss_mb \
  | awk '{printf "perplexity %.4f over %s tokens, %.0f tokens/s, peak RSS %.0f MiB\n", $1, $2, $3, $4}'

MODEL="$BENCH_DIR/random-1gb"
if [ ! -f "$MODEL/config.json" ]; then
  echo "== writing a ~1 GB random Llama-shaped checkpoint (f16) to $MODEL"
  TOKARG=()
  [ -f "$LLAMA_TOK" ] && TOKARG=(--tokenizer "$LLAMA_TOK")
  "$CLI" -q --json make-random --preset 1gb --dtype f16 --out "$MODEL" --force "${TOKARG[@]}" \
    | field parameters bytes seconds peak_rss_mb \
    | awk '{printf "%s parameters, %.2f GB, written in %.1f s, peak RSS %.0f MiB\n", $1, $2/1e9, $3, $4}'
fi
echo "== walking every tensor of the 1 GB checkpoint, one at a time"
"$CLI" -q --json info --walk "$MODEL" | python3 -c "
import json,sys; d=json.load(sys.stdin)
print('%.2f GB stored, walk %.1f s (%.2f GB/s), peak RSS %.0f MiB' % (d['bytes']/1e9, d['walk']['seconds'], d['walk']['gb_per_s'], d['peak_rss_mb']))"
if [ -f "$MODEL/tokenizer.model" ]; then
  EVAL_TEXT=$WIKI; [ -f "$EVAL_TEXT" ] || EVAL_TEXT=$TEXT
  echo "== eval of the 1 GB checkpoint (fp32 compute), ctx 512, 2048 tokens of $(basename "$EVAL_TEXT")"
  "$CLI" -q --json eval "$MODEL" --text "$EVAL_TEXT" --ctx 512 --max-tokens 2048 \
    | field tokens tokens_per_s load_s peak_rss_mb \
    | awk '{printf "%s tokens, %.1f tokens/s, load %.1f s, peak RSS %.0f MiB\n", $1, $2, $3, $4}'
else
  echo "(no Llama-2 tokenizer in $SHARED: skipping the 1 GB eval)"
fi
