#!/usr/bin/env bash
# Issue 5 benchmark (prints figures; not a test): PocketLLM (default and best variants) against
# k-means VQ (plain, with GPTVQ-style error feedback, with feedback + per-row scales), RTN and GPTQ,
# perplexity against bits per weight over the compressed matrices (bpw_c, every overhead counted),
# 2 to 5 bpw, as a table, a CSV and a Pareto PNG.
# stories260K: TinyStories part A split as in bench/baselines.sh (first 3/4 evaluation, last 1/4
# calibration, disjoint), ctx 256. With --hf MODEL_DIR: the same on WikiText-2 (test split for
# evaluation; the calibration text is the first 1/4 of the WikiText-2 rows, the evaluation the
# remaining 3/4, so they stay disjoint) for a Hugging Face model folder.
# Usage: bench/pocketllm_vs_baselines.sh [build dir] [--hf MODEL_DIR] [--quick]
#        SERIES="rtn gptq vq vq-fb vq-fb-rs pocketllm-default pocketllm-best" limits the series;
#        outputs in $BENCH_DIR (default <build>/bench/pocketllm-vs-baselines).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build
HF=""
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hf) HF=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) BUILD_DIR=$1; shift ;;
  esac
done
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/pocketllm-vs-baselines}
mkdir -p "$OUT"
. bench/bench_lib.sh
want() { [[ " ${SERIES:-rtn gptq vq vq-fb vq-fb-rs pocketllm-default pocketllm-best} " == *" $1 "* ]]; }
export CSV_DETAIL=1

if [ -z "$HF" ]; then
  NAME=stories260K
  MODEL=resources/models/stories260K/stories260K.bin
  PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
  [ -f "$PART_A" ] || { echo "needs $PART_A (../shared beside the checkout)"; exit 1; }
  split_part_a "$PART_A"
  CTX=256
  CALIB_ARGS=(--calib-text "$OUT/calib.txt" --calib-samples 128 --calib-len 256)
  TITLE="stories260K, TinyStories (3/4 of part A), ctx 256: perplexity vs bpw_c"
else
  NAME=$(basename "$HF")
  MODEL=$HF
  WIKI=../shared/assets/eval/wikitext2/wiki.test.gptq-join.txt
  [ -f "$WIKI" ] || { echo "needs $WIKI"; exit 1; }
  python3 - "$WIKI" "$OUT" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
cut = text.find("\n\n", len(text) // 4)
open(sys.argv[2] + "/calib.txt", "w", encoding="utf-8").write(text[:cut + 1])
open(sys.argv[2] + "/eval.txt", "w", encoding="utf-8").write(text[cut + 2:])
PY
  CTX=${CTX:-2048}
  CALIB_ARGS=(--calib-text "$OUT/calib.txt" --calib-samples 128 --calib-len "$CTX")
  TITLE="$NAME, WikiText-2 (last 3/4 of test), ctx $CTX: perplexity vs bpw_c"
fi
EVAL="$OUT/eval.txt"
CSV="$OUT/results-$NAME.csv"
echo "series,label,bpw_c,perplexity,bpw_all_in,compress_s,bpw_index,bpw_codebook,bpw_decoder,bpw_scale,mean_snr_db,used_codewords,index_entropy_bits" > "$CSV"
# shellcheck disable=SC2086
fp=$(fp_perplexity "$MODEL" "$EVAL" "$CTX" ${EVAL_ARGS:-})
echo "FP32 perplexity on the evaluation text: $fp"
printf "%-18s %-26s %8s %8s %11s %10s\n" series setting bpw_c all-in perplexity compress_s
r() { run_case "$MODEL" "$EVAL" "$CTX" "$@"; }

# (d, K) pairs spanning 2 to 5 bpw_c with one codebook for the whole model: on a 260K-parameter
# model the codebook's 16*K*d bits are a large share (K 4096, d 4: 1.16 bpw), so d = 2 with small K
# reaches 3.2 to 5.3 bpw more cheaply than d = 4 with large K.
if [ "$QUICK" = 1 ]; then DKS="4:1024 2:256"; else DKS=${DKS:-"4:256 4:1024 4:4096 2:64 2:128 2:256 2:512 2:1024"}; fi
[ -n "$HF" ] && DKS=${HF_DKS:-"4:256 4:1024 4:4096 4:16384 2:256 2:1024"}
BEST=${BEST_SETTINGS:-"--set epochs=0 --set feedback=true --set finetune=300"}

if want rtn; then for g in 32 64; do for b in 2 3 4; do r rtn rtn "${b}b-g$g" --set bits=$b --set group=$g; done; done; fi
if want gptq; then for g in 32 64; do for b in 2 3 4; do r gptq gptq "${b}b-g$g" --set bits=$b --set group=$g "${CALIB_ARGS[@]}"; done; done; fi
for dk in $DKS; do
  d=${dk%%:*} k=${dk##*:}
  V=(--set sharing=model --set d=$d --set K=$k)
  want vq && r vq vq "model-d$d-K$k" "${V[@]}"
  want vq-fb && r vq-fb vq "model-d$d-K$k-fb" "${V[@]}" --set feedback=true "${CALIB_ARGS[@]}"
  want vq-fb-rs && r vq-fb-rs vq "model-d$d-K$k-fb-rs" "${V[@]}" --set feedback=true --set row_scale=true "${CALIB_ARGS[@]}"
  # PocketLLM default variant: init=vq (k-means in weight space, identity decoder), row scales,
  # 200 full-batch steps training decoder + codebook with codes = nearest decoded codeword; needs
  # no calibration text.
  want pocketllm-default && r pocketllm-default pocketllm "model-d$d-K$k" "${V[@]}"
  # PocketLLM best variant found: the init=vq start, GPTVQ-style feedback over the decoded
  # codewords, then 300 full-batch steps fine-tuning decoder, codebook and row scales on the
  # layers' output error tr(E H E^T).
  # shellcheck disable=SC2086
  want pocketllm-best && r pocketllm-best pocketllm "model-d$d-K$k-best" "${V[@]}" $BEST "${CALIB_ARGS[@]}"
done

"$BUILD_DIR/bin/pareto_chart" "$CSV" "$OUT/pareto-$NAME.png" --reference "$fp" --title "$TITLE" --xmin 1.8 --xmax 5.3
echo "CSV: $CSV"
echo "PNG: $OUT/pareto-$NAME.png"
