#!/usr/bin/env bash
# Issue 19 benchmark (prints figures; not a test): LoRA recovery on stories260K. Three compressions
# near 3-4 bpw_c (RTN 3-bit g32; VQ with error feedback and row scales, d4 K1024, one codebook; the
# best PocketLLM variant of bench/pocketllm_vs_baselines.sh, d4 K1024), each evaluated against the
# original (perplexity, KL(original || model) with percentiles, same top-1) before and after
# `recover` with each adapter setting in $RECOVER (default: rank 1 on the MLP matrices, the setting
# that stays under 0.3 bpw_c; rank 1 on every matrix; rank 4 on every matrix; rank 1 on the MLP
# matrices trained on KL(original || model) instead of the next-token loss). Calibration and
# training: the last quarter of TinyStories part A; evaluation: the first three quarters, ctx 256.
# With ZEROSHOT=1 (default) also zero-shot accuracy of the FP32 model on the five bundled tasks.
#   bash bench/recovery.sh [BUILD_DIR]     outputs in $BENCH_DIR (default <build>/bench/recovery)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/recovery}
mkdir -p "$OUT"
. bench/bench_lib.sh
MODEL=resources/models/stories260K/stories260K.bin
PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
[ -f "$PART_A" ] || { echo "needs $PART_A (../shared beside the checkout)"; exit 1; }
split_part_a "$PART_A"
CALIB=(--calib-text "$OUT/calib.txt" --calib-samples 128 --calib-len 256)
TRAIN=${TRAIN:-"--lr 1e-3 --epochs 4 --batch 8"}
RECOVER=${RECOVER:-"mlp-r1:--rank=1:--types=gate_proj,up_proj,down_proj all-r1:--rank=1 all-r4:--rank=4 mlp-r1-kl:--rank=1:--types=gate_proj,up_proj,down_proj:--objective=kl:--original=$MODEL"}
CSV="$OUT/recovery-stories260K.csv"
echo "series,adapters,bpw_c,adapter_bpw,perplexity,kl_mean,kl_p99,top1,objective_before,objective_after,train_s" > "$CSV"

# evaluate ARCHIVE: one JSON line with perplexity and the divergence from the original.
evaluate() {
  "$CLI" -q --json "${STORE[@]}" eval "$1" --text "$OUT/eval.txt" --ctx 256 --reference "$MODEL"
}
row() { # series adapters compress-or-recover-json eval-json
  python3 - "$@" "$CSV" <<'PY'
import json, sys
series, adapters, made, ev, csv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
ref = ev["reference"]
bpw = made.get("bpw_after", made.get("bpw_compressed"))
cells = [series, adapters, "%.4f" % bpw, "%.4f" % made.get("adapter_bpw", 0), "%.4f" % ev["perplexity"], "%.5f" % ref["kl_mean"],
         "%.5f" % ref["kl_p99"], "%.4f" % ref["top1_agreement"], "%.4f" % made.get("objective_before", 0),
         "%.4f" % made.get("objective_after", 0), "%.1f" % made.get("train_s", 0)]
open(csv, "a").write(",".join(cells) + "\n")
print("%-14s %-8s bpw_c %.3f (+%.3f)  ppl %.3f  KL %.4f (p99 %.3f)  top-1 %.1f%%  objective %.4f -> %.4f  %s s" % (
    series, adapters, bpw, made.get("adapter_bpw", 0), ev["perplexity"], ref["kl_mean"], ref["kl_p99"], 100 * ref["top1_agreement"],
    made.get("objective_before", 0), made.get("objective_after", 0), cells[-1]))
PY
}

fp=$(fp_perplexity "$MODEL" "$OUT/eval.txt" 256)
echo "FP32 perplexity on the evaluation text: $fp"
declare -A SETTINGS=(
  [rtn-3b-g32]="--method rtn --set bits=3 --set group=32"
  [vq-fb-rs-d4-K1024]="--method vq --set sharing=model --set d=4 --set K=1024 --set feedback=true --set row_scale=true ${CALIB[*]}"
  [pocketllm-best-d4-K1024]="--method pocketllm --set sharing=model --set d=4 --set K=1024 --set epochs=0 --set feedback=true --set finetune=300 ${CALIB[*]}"
)
for series in ${SERIES:-rtn-3b-g32 vq-fb-rs-d4-K1024 pocketllm-best-d4-K1024}; do
  archive="$OUT/$series.pllm"
  rm -rf "$archive" "$archive.work"
  # shellcheck disable=SC2086
  made=$("$CLI" -q --json "${STORE[@]}" compress "$MODEL" -o "$archive" ${SETTINGS[$series]})
  row "$series" none "$made" "$(evaluate "$archive")"
  for r in $RECOVER; do
    name=${r%%:*} args=${r#*:}
    # shellcheck disable=SC2086
    rec=$("$CLI" -q --json "${STORE[@]}" recover "$archive" "${CALIB[@]}" ${args//:/ } $TRAIN -o "$OUT/$series-$name.pllm" --force)
    row "$series" "$name" "$rec" "$(evaluate "$OUT/$series-$name.pllm")"
  done
done

if [ "${ZEROSHOT:-1}" = 1 ]; then
  "$CLI" "${STORE[@]}" zeroshot "$MODEL" --threads 2 | tee "$OUT/zeroshot-stories260K.txt"
fi
echo "table: $CSV"
