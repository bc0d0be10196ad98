#!/usr/bin/env bash
# Issue 4 benchmark (prints figures; not a test): RTN, GPTQ, k-means VQ and PocketLLM on stories260K,
# perplexity at ctx 256 against bits per weight, as a table, a CSV and a PNG of each method's Pareto front.
# TinyStories part A is split at a story boundary: the first 3/4 is the evaluation text for every
# method, the last 1/4 the calibration text for GPTQ (disjoint, so calibration never sees test text).
# Usage: [METHODS="rtn gptq vq pocketllm"] bench/baselines.sh [build dir]
#        (outputs in $BENCH_DIR, default <build>/bench/baselines)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/baselines}
MODEL=resources/models/stories260K/stories260K.bin
PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
mkdir -p "$OUT"
want() { [[ " ${METHODS:-rtn gptq vq pocketllm} " == *" $1 "* ]]; }
if [ ! -f "$PART_A" ]; then echo "needs $PART_A (../shared beside the checkout)"; exit 1; fi
python3 - "$PART_A" "$OUT" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
cut = text.find("\n\n", len(text) * 3 // 4)
open(sys.argv[2] + "/eval.txt", "w", encoding="utf-8").write(text[:cut + 1])
open(sys.argv[2] + "/calib.txt", "w", encoding="utf-8").write(text[cut + 2:])
PY
EVAL="$OUT/eval.txt"
CALIB="$OUT/calib.txt"
CSV="$OUT/results.csv"
echo "method,label,bpw_c,perplexity,bpw_all_in,compress_s" > "$CSV"
STORE=(--no-store)
"$CLI" --help | grep -q -- "--no-store" || STORE=()

fp=$("$CLI" -q --json "${STORE[@]}" eval "$MODEL" --text "$EVAL" --ctx 256 | python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])")
echo "FP32 perplexity on the evaluation text: $fp"
printf "%-10s %-28s %8s %8s %11s %10s\n" method setting bpw_c all-in perplexity compress_s

run() { # method label compress-args...
  local method=$1 label=$2; shift 2
  local archive="$OUT/$method-$label.pllm" c e
  if ! c=$("$CLI" -q --json "${STORE[@]}" compress "$MODEL" -o "$archive" --method "$method" --threads 2 "$@" 2>&1); then
    echo "$method $label failed: $c"; return
  fi
  e=$("$CLI" -q --json "${STORE[@]}" eval "$archive" --text "$EVAL" --ctx 256)
  python3 - "$method" "$label" "$c" "$e" "$CSV" <<'PY'
import json, sys
method, label, c, e, csv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
row = (method, label, c["bpw_compressed"], e["perplexity"], c["bpw_all_in"], c["seconds"])
print("%-10s %-28s %8.3f %8.3f %11.3f %10.1f" % (row[0], row[1], row[2], row[4], row[3], row[5]))
open(csv, "a").write("%s,%s,%.4f,%.4f,%.4f,%.2f\n" % row)
PY
  rm -f "$archive"
}

want rtn && for g in 32 64; do for b in 2 3 4 5 6; do run rtn "${b}b-g$g" --set bits=$b --set group=$g; done; done
if want gptq && "$CLI" methods | grep "^gptq" >/dev/null; then
  for g in 32 64; do for b in 2 3 4 5 6; do
    run gptq "${b}b-g$g" --set bits=$b --set group=$g --calib-text "$CALIB" --calib-samples 128 --calib-len 256
  done; done
fi
want vq && for scope in model type; do for dk in "4 256" "4 1024" "4 4096" "8 4096" "2 256"; do
  set -- $dk; run vq "$scope-d$1-K$2" --set sharing=$scope --set d=$1 --set K=$2
done; done
want vq && for dk in "4 16" "4 64" "4 256" "2 16"; do
  set -- $dk
  run vq "matrix-d$1-K$2" --set sharing=matrix --set d=$1 --set K=$2
  run vq "matrix-d$1-K$2-feedback" --set sharing=matrix --set d=$1 --set K=$2 --set feedback=true --calib-text "$CALIB"
done
want pocketllm && for dk in "4 1024" "2 256" "4 4096" "2 1024"; do
  set -- $dk; run pocketllm "model-d$1-K$2" --set sharing=model --set d=$1 --set K=$2 --set batch=1024
done
"$BUILD_DIR/bin/pareto_chart" "$CSV" "$OUT/pareto.png" --reference "$fp" \
  --title "stories260K, TinyStories (3/4 of part A), ctx 256: perplexity vs bpw_c"
echo "CSV: $CSV"
