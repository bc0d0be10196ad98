#!/usr/bin/env bash
# Issue 7 benchmark (prints figures; not a test): does a bit allocation from measured sensitivity
# beat uniform settings at the same bits per weight? stories260K, TinyStories part A split as in
# bench/baselines.sh: sensitivities are measured on the calibration quarter, perplexity on the
# evaluation three quarters (ctx 256). Menu: RTN 2..5 bits, groups of 32 or 64. Budgets: the bpw of
# uniform RTN 3 bits g32 and 4 bits g32, so each allocated plan is compared at (at most) equal bits.
# Usage: bench/allocation.sh [build dir]      (outputs in $BENCH_DIR, default <build>/bench/allocation)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/allocation}
MODEL=resources/models/stories260K/stories260K.bin
PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
mkdir -p "$OUT"
if [ ! -f "$PART_A" ]; then echo "needs $PART_A (../shared beside the checkout)"; exit 1; fi
CSV="$OUT/results.csv"
. bench/bench_lib.sh
split_part_a "$PART_A"
EVAL="$OUT/eval.txt"
CALIB="$OUT/calib.txt"
echo "series,label,bpw_c,perplexity,bpw_all_in,compress_s" > "$CSV"
fp=$(fp_perplexity "$MODEL" "$EVAL" 256)
echo "FP32 perplexity on the evaluation text: $fp"
printf "%-18s %-26s %8s %8s %11s %10s\n" series setting bpw_c all-in perplexity compress_s

MENU=(--menu bits=2,group=32 --menu bits=3,group=64 --menu bits=3,group=32 --menu bits=4,group=64 --menu bits=4,group=32
      --menu bits=5,group=64 --menu bits=5,group=32)
for uniform in "3 32" "4 32"; do
  set -- $uniform
  run_case "$MODEL" "$EVAL" 256 uniform rtn "${1}b-g$2" --set bits=$1 --set group=$2
  budget=$(tail -1 "$CSV" | cut -d, -f3)
  archive="$OUT/allocated-$budget.pllm"
  rm -rf "$archive" "$archive.work"
  start=$(date +%s.%N)
  a=$("$CLI" -q --json "${STORE[@]}" allocate "$MODEL" --text "$CALIB" --ctx 256 --windows 16 --method rtn "${MENU[@]}" \
      --budget "$budget" -o "$archive")
  e=$("$CLI" -q --json "${STORE[@]}" eval "$archive" --text "$EVAL" --ctx 256)
  python3 - "$a" "$e" "$CSV" "$budget" "$start" "$OUT/plan-$budget.json" <<'PY'
import json, sys, time
a, e, csv, budget, start = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
json.dump(a, open(sys.argv[6], "w"), indent=1)
counts = {}
for m in a["matrices"]:
    counts[m["setting"]] = counts.get(m["setting"], 0) + 1
label = "budget-%s" % budget
secs = time.time() - start
print("%-18s %-26s %8.3f %8s %11.3f %10.1f   %s" % ("allocated", label, a["archive_bpw_compressed"], "", e["perplexity"], secs,
      ", ".join("%s x%d" % kv for kv in sorted(counts.items()))))
open(csv, "a").write("allocated,%s,%.4f,%.4f,,%.2f\n" % (label, a["archive_bpw_compressed"], e["perplexity"], secs))
PY
  rm -rf "$archive" "$archive.work"
done
echo "CSV: $CSV (plans: $OUT/plan-*.json)"
