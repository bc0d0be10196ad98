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
CSV="$OUT/results.csv"
. bench/bench_lib.sh   # split_part_a, fp_perplexity, run_case (shared with pocketllm_vs_baselines.sh)
split_part_a "$PART_A"
EVAL="$OUT/eval.txt"
CALIB="$OUT/calib.txt"
echo "method,label,bpw_c,perplexity,bpw_all_in,compress_s" > "$CSV"

fp=$(fp_perplexity "$MODEL" "$EVAL" 256)
echo "FP32 perplexity on the evaluation text: $fp"
printf "%-10s %-28s %8s %8s %11s %10s\n" method setting bpw_c all-in perplexity compress_s

run() { # method label compress-args...
  local method=$1; shift
  run_case "$MODEL" "$EVAL" 256 "$method" "$method" "$@"
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
  # the reference code's variant (issue 4's figures; the plugin's defaults changed in issue 5)
  set -- $dk; run pocketllm "model-d$1-K$2" --set sharing=model --set d=$1 --set K=$2 --set batch=1024 \
    --set encoder=trained --set init=normal --set rln_affine=true --set final_norm=true --set row_scale=false \
    --set lr=0.016 --set schedule=step --set epochs=50
done
"$BUILD_DIR/bin/pareto_chart" "$CSV" "$OUT/pareto.png" --reference "$fp" \
  --title "stories260K, TinyStories (3/4 of part A), ctx 256: perplexity vs bpw_c"
echo "CSV: $CSV"
