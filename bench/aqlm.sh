#!/usr/bin/env bash
# Issue 18 benchmark (prints figures; not a test): AQLM computed here (several M/B/g), PocketLLM with
# additive codebooks, VQ with error feedback and row scales, PocketLLM's best variant and GPTQ on
# stories260K near 2.0, 2.5 and 3.0 bpw_c (every overhead counted), as a table, a CSV and a Pareto PNG.
# Split and calibration exactly as bench/pocketllm_vs_baselines.sh: TinyStories part A, first 3/4
# evaluation text, last 1/4 calibration text (128 windows of 256 tokens), ctx 256.
# Usage: bench/aqlm.sh [build dir]
#        SERIES="aqlm pocketllm-additive pocketllm-additive-ws vq-fb-rs pocketllm-best gptq" limits the series;
#        AQLM_CONFIGS="g:M:B ..." the AQLM shapes; RECORD=1 records every run in the experiment
#        store (so `pocketllm-cli compare` shows them beside the published AQLM rows);
#        outputs in $BENCH_DIR (default <build>/bench/aqlm).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/aqlm}
mkdir -p "$OUT"
. bench/bench_lib.sh
[ "${RECORD:-0}" = 1 ] && STORE=()
want() { [[ " ${SERIES:-aqlm pocketllm-additive pocketllm-additive-ws vq-fb-rs pocketllm-best gptq} " == *" $1 "* ]]; }
export CSV_DETAIL=1

MODEL=resources/models/stories260K/stories260K.bin
PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
[ -f "$PART_A" ] || { echo "needs $PART_A (../shared beside the checkout)"; exit 1; }
split_part_a "$PART_A"
CALIB_ARGS=(--calib-text "$OUT/calib.txt" --calib-samples 128 --calib-len 256)
EVAL="$OUT/eval.txt"
CSV="$OUT/results-stories260K.csv"
echo "series,label,bpw_c,perplexity,bpw_all_in,compress_s,index_bpw,codebook_bpw,decoder_bpw,scale_bpw,mean_snr_db,codewords_used,index_entropy_bits" > "$CSV"
fp=$(fp_perplexity "$MODEL" "$EVAL" 256)
echo "FP32 perplexity on the evaluation text: $fp"
printf "%-18s %-26s %8s %8s %11s %10s\n" series setting bpw_c all-in perplexity compress_s
r() { run_case "$MODEL" "$EVAL" 256 "$@"; }

# AQLM, one set of codebooks for the whole model (per-matrix codebooks of 2^B entries cost more than
# the codes on matrices of 4,096 to 11,008 weights). g = 4 divides every input width (64, 172);
# g = 8 pads the 172-wide matrices to 176. Bits: M*B/g index + 16/in (row scales: 0.21 on average)
# + 16*M*2^B*g/226,304 (codebooks).
if want aqlm; then
  for cfg in ${AQLM_CONFIGS:-8:2:6 8:2:7 4:2:4 8:2:8 8:3:6 4:2:5 8:4:5 4:3:4 4:2:6}; do
    IFS=: read -r g m b <<< "$cfg"
    r aqlm aqlm "model-g$g-${m}x$b" --set sharing=model --set g="$g" --set M="$m" --set B="$b" "${CALIB_ARGS[@]}"
  done
fi
# PocketLLM with additive codebooks: M = 2 codebooks of K in the latent space, started from residual
# k-means with the identity decoder. pocketllm-additive: AQLM's alternation (6 rounds of the
# output-error code search, then 100 Adam steps on codebooks and row scales), the decoder joining the
# last round's fine-tune. pocketllm-additive-ws: codes by the beam search over decoded candidates in
# weight space (20 training steps, Hessian-diagonal weighting), then 300 fine-tune steps.
PLA=${PLA_SETTINGS:-"--set epochs=0 --set feedback=true --set rounds=6 --set sweeps=1 --set finetune=100"}
PLW=${PLW_SETTINGS:-"--set epochs=20 --set weighting=hessian_diag --set finetune=300"}
for k in 16 32 64; do
  A=(--set sharing=model --set d=4 --set K=$k --set codebooks=2)
  # shellcheck disable=SC2086
  want pocketllm-additive && r pocketllm-additive pocketllm "model-d4-K${k}x2" "${A[@]}" $PLA "${CALIB_ARGS[@]}"
  # shellcheck disable=SC2086
  want pocketllm-additive-ws && r pocketllm-additive-ws pocketllm "model-d4-K${k}x2-ws" "${A[@]}" $PLW "${CALIB_ARGS[@]}"
done
for dk in 4:256 4:1024 2:64; do
  d=${dk%%:*} k=${dk##*:}
  V=(--set sharing=model --set d=$d --set K=$k)
  want vq-fb-rs && r vq-fb-rs vq "model-d$d-K$k-fb-rs" "${V[@]}" --set feedback=true --set row_scale=true "${CALIB_ARGS[@]}"
  want pocketllm-best && r pocketllm-best pocketllm "model-d$d-K$k-best" "${V[@]}" --set epochs=0 --set feedback=true --set finetune=300 "${CALIB_ARGS[@]}"
done
if want gptq; then for bg in 2:64 2:32 3:64; do
  r gptq gptq "${bg%%:*}b-g${bg##*:}" --set bits="${bg%%:*}" --set group="${bg##*:}" "${CALIB_ARGS[@]}"
done; fi

"$BUILD_DIR/bin/pareto_chart" "$CSV" "$OUT/pareto-stories260K.png" --reference "$fp" --xmin 1.7 --xmax 3.4 --ymax 60 \
  --title "stories260K, TinyStories (3/4 of part A), ctx 256: AQLM and additive PocketLLM vs bpw_c"
echo "CSV: $CSV"
