#!/usr/bin/env bash
# Issue 17 benchmark (prints figures; not a test): double compression (arXiv 2502.15443) on
# stories260K and, when present, the ~1 GB random checkpoint. Each case is compressed with the
# lossless stage off (--entropy none), evaluated, then repacked with --entropy auto (rANS; and the
# fastest coder, zstd where within 1% of rANS): the stored
# bits per weight move, the perplexity cannot (decoding is bit-exact; the test suite checks it).
#   1. INT8 (rtn bits=8, per channel and g128): lossless stage alone (min/max and symmetric zero
#      point), then, symmetric, with compression-aware rounding (rate = 0.3 .. 3, the
#      rate/distortion curve) and pruning (10% and 30%, by magnitude and by input norm), one at a time.
#   2. RTN/GPTQ 3- and 4-bit, k-means VQ and PocketLLM: bits per weight before and after the stage,
#      and the perplexity-vs-bpw chart with both points of each case.
#   3. The ~1 GB checkpoint (random weights, no real statistics): INT8 sizes only.
# Usage: bench/double_compression.sh [build dir]   (outputs in $BENCH_DIR, default <build>/bench/double)
#        PARTS="int8 lowbit big" selects parts; BIG_MODEL=folder overrides the 1 GB model.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/double}
MODEL=resources/models/stories260K/stories260K.bin
PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
BIG=${BIG_MODEL:-${POCKET_PEER_CACHE:-$HOME/.cache/pocketllm-peer}/models/random-1gb}
mkdir -p "$OUT"
want() { [[ " ${PARTS:-int8 lowbit big} " == *" $1 "* ]]; }
[ -f "$PART_A" ] || { echo "needs $PART_A (../shared beside the checkout)"; exit 1; }
CSV="$OUT/double.csv"
CHART_CSV="$OUT/chart.csv"
. bench/bench_lib.sh
split_part_a "$PART_A"
EVAL="$OUT/eval.txt"
# The first EVAL_CHARS characters of the evaluation text (default 60000, about 15k tokens) keep a
# case near a minute on two cores; EVAL_CHARS=0 uses all of it.
if [ "${EVAL_CHARS:-60000}" != 0 ]; then
  python3 -c "import sys; t=open(sys.argv[1],encoding='utf-8').read(); n=int(sys.argv[2]); c=t.find('\n\n', n); open(sys.argv[1],'w',encoding='utf-8').write(t[:c+1] if c>0 else t)" "$EVAL" "${EVAL_CHARS:-60000}"
fi
CALIB="$OUT/calib.txt"
CALIB_ARGS=(--calib-text "$CALIB" --calib-samples 64 --calib-len 256)
echo "model,case,step,bpw_fixed,bpw_stored,lossless_ratio,index_bits_fixed,index_bits_stored,entropy_bits,ratio_fp16_all_in,perplexity,compress_s,repack_s,bpw_stored_fastest" > "$CSV"
echo "method,label,bpw_c,perplexity" > "$CHART_CSV"

# case MODEL NAME STEP EVAL? compress-args... : one row of $CSV (and two points of $CHART_CSV).
case_row() {
  local model=$1 name=$2 step=$3 evaluate=$4; shift 4
  local a="$OUT/case.pllm" b="$OUT/case-coded.pllm" c e="" i r
  rm -rf "$a" "$a.work" "$b"
  if ! c=$("$CLI" -q --json "${STORE[@]}" compress "$model" -o "$a" --entropy none --threads "${THREADS:-2}" "$@" 2>&1); then
    echo "$name $step failed: $c" | head -3; return
  fi
  [ "$evaluate" = 1 ] && e=$("$CLI" -q --json "${STORE[@]}" eval "$a" --text "$EVAL" --ctx 256)
  r=$("$CLI" -q --json "${STORE[@]}" repack "$a" -o "$b" --entropy auto --coder rans)
  i=$("$CLI" -q --json inspect "$b")
  f=$("$CLI" -q --json "${STORE[@]}" repack "$a" -o "$b" --entropy auto --coder fastest --force)
  python3 - "$model" "$name" "$step" "$c" "$e" "$r" "$i" "$CSV" "$CHART_CSV" "$f" <<'PY'
import json, os, sys
model, name, step, c, e, r, i, csv, chart, f = sys.argv[1:11]
c, r, i, f = json.loads(c), json.loads(r), json.loads(i), json.loads(f)
ppl = json.loads(e)["perplexity"] if e else float("nan")
s = i["code_streams"]
w = i["weights_compressed"]
row = [os.path.basename(model.rstrip("/")), name, step, "%.4f" % c["bpw_compressed"], "%.4f" % r["bpw_compressed"],
       "%.4f" % (c["bpw_compressed"] / r["bpw_compressed"]), "%.4f" % (s["fixed_bits"] / w), "%.4f" % (s["stored_bits"] / w),
       "%.4f" % (s["entropy_bits"] / w), "%.3f" % r["ratio_fp16"], "%.4f" % ppl, "%.1f" % c["seconds"], "%.1f" % r["seconds"],
       "%.4f" % f["bpw_compressed"]]
print("%-14s %-22s %-24s %7.3f -> %7.3f bpw_c (x%.3f; codes %.3f -> %.3f, entropy %.3f; fastest coder %.3f)  ppl %8.3f" %
      (row[0][:14], name, step, c["bpw_compressed"], r["bpw_compressed"], c["bpw_compressed"] / r["bpw_compressed"],
       s["fixed_bits"] / w, s["stored_bits"] / w, s["entropy_bits"] / w, f["bpw_compressed"], ppl))
open(csv, "a").write(",".join(row) + "\n")
if e:
    open(chart, "a").write("%s,%s,%.4f,%.4f\n%s + lossless,%s,%.4f,%.4f\n" %
                           (name.split()[0], step, c["bpw_compressed"], ppl, name.split()[0], step, r["bpw_compressed"], ppl))
PY
  rm -rf "$a" "$a.work" "$b"
}

fp=$(fp_perplexity "$MODEL" "$EVAL" 256)
echo "stories260K FP32 perplexity (TinyStories, 3/4 of part A, ctx 256): $fp"
if want int8; then
  for g in 0 128; do
    case_row "$MODEL" "rtn8 g$g" "lossless" 1 --method rtn --set bits=8 --set group=$g
    n="rtn8 g$g sym"
    S=(--method rtn --set bits=8 --set group=$g --set zero=sym)
    case_row "$MODEL" "$n" "lossless" 1 "${S[@]}"
    for rate in ${RATES:-0.3 1 3}; do case_row "$MODEL" "$n" "rate=$rate" 1 "${S[@]}" --set rate=$rate; done
    case_row "$MODEL" "$n" "prune=0.3 magnitude" 1 "${S[@]}" --set prune=0.3
    case_row "$MODEL" "$n" "prune=0.3 input" 1 "${S[@]}" --set prune=0.3 --set prune_by=input "${CALIB_ARGS[@]}"
    case_row "$MODEL" "$n" "prune=0.1 input" 1 "${S[@]}" --set prune=0.1 --set prune_by=input "${CALIB_ARGS[@]}"
    case_row "$MODEL" "$n" "prune=0.3 input rate=1" 1 "${S[@]}" --set prune=0.3 --set prune_by=input --set rate=1 "${CALIB_ARGS[@]}"
  done
fi
if want lowbit; then
  for b in 3 4; do
    case_row "$MODEL" "rtn ${b}b" "g32" 1 --method rtn --set bits=$b --set group=32
    case_row "$MODEL" "gptq ${b}b" "g32" 1 --method gptq --set bits=$b --set group=32 "${CALIB_ARGS[@]}"
  done
  case_row "$MODEL" "rtn 3b" "g32 rate=0.3" 1 --method rtn --set bits=3 --set group=32 --set rate=0.3
  case_row "$MODEL" "vq" "model-d4-K256" 1 --method vq --set sharing=model --set d=4 --set K=256
  case_row "$MODEL" "pocketllm" "model-d4-K1024" 1 --method pocketllm --set sharing=model --set d=4 --set K=1024 ${POCKETLLM_SETTINGS:---set epochs=0 --set finetune=0}
  "$BUILD_DIR/bin/pareto_chart" "$CHART_CSV" "$OUT/double-compression.png" --reference "$fp" \
    --title "stories260K: each case before and after the lossless stage (ppl unchanged, bpw_c smaller)"
fi
if want big && [ -d "$BIG" ]; then
  for g in 0 128; do
    case_row "$BIG" "rtn8 g$g" "lossless" 0 --method rtn --set bits=8 --set group=$g
    case_row "$BIG" "rtn8 g$g sym" "lossless" 0 --method rtn --set bits=8 --set group=$g --set zero=sym
    if [ "${BIG_ALL:-0}" = 1 ]; then
      case_row "$BIG" "rtn8 g$g sym" "rate=1" 0 --method rtn --set bits=8 --set group=$g --set zero=sym --set rate=1
      case_row "$BIG" "rtn8 g$g sym" "prune=0.3 magnitude" 0 --method rtn --set bits=8 --set group=$g --set zero=sym --set prune=0.3
    fi
  done
  case_row "$BIG" "rtn4 g128" "lossless" 0 --method rtn --set bits=4 --set group=128
  case_row "$BIG" "vq" "matrix-d4-K256" 0 --method vq --set sharing=matrix --set d=4 --set K=256 --set iters=4
fi
echo "CSV: $CSV"
