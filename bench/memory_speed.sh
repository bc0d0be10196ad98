#!/usr/bin/env bash
# Running archives of the ~1 GB checkpoint under a memory budget: tokens/s of `eval` (ctx 512) and
# `generate` against the weights' memory, from "every matrix in payload form" to "all decoded", for
# RTN 4-bit, k-means VQ and PocketLLM archives, next to the fp16 model; and the same weights run by
# llama.cpp (llama-bench pp512 / tg) when the peer is built. Writes docs/figures/memory-speed-*.{csv,png}.
#   bash bench/memory_speed.sh            (archives made once into ~/.cache/pocketllm-bench, ~15 min)
# Environment: MODEL (default: the peer's random-1gb HF folder, bench/peer/llamacpp.sh models),
# ARCHIVE_RTN / ARCHIVE_VQ / ARCHIVE_POCKETLLM (use these archives), GEN_TOKENS (default 16),
# EVAL_TOKENS (default 2044: 4 windows), PRECISION (default bf16), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${POCKET_BUILD_DIR:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
CHART="$BUILD_DIR/bin/line_chart"
PEER=${POCKET_PEER_DIR:-$HOME/.cache/pocketllm-peer}
MODEL=${MODEL:-$PEER/models/random-1gb}
CACHE=${POCKET_BENCH_CACHE:-$HOME/.cache/pocketllm-bench}
TEXT=${TEXT:-../shared/assets/eval/wikitext2/wiki.test.raw}
GEN_TOKENS=${GEN_TOKENS:-16}
PRECISION=${PRECISION:-bf16}
THREADS=${THREADS:-2}
OUT=docs/figures
mkdir -p "$CACHE" "$OUT"
[ -x "$CLI" ] && [ -x "$CHART" ] || cmake --build "$BUILD_DIR" --target pocketllm-cli line_chart
[ -d "$MODEL" ] || { echo "no model at $MODEL (bash bench/peer/llamacpp.sh models makes it)"; exit 1; }

archive() { # NAME ENV_OVERRIDE compress-args...
  local name=$1 override=$2; shift 2
  if [ -n "$override" ]; then echo "$override"; return; fi
  local out="$CACHE/$name.pllm"
  [ -f "$out" ] || "$CLI" -q --no-store compress "$MODEL" --out "$out" "$@" >&2
  echo "$out"
}
RTN=$(archive rtn4 "${ARCHIVE_RTN:-}" --method rtn --set bits=4 --set group=128 --set zero=int)
VQ=$(archive vq-d8-k256 "${ARCHIVE_VQ:-}" --method vq --set d=8 --set K=256 --set iters=2 --set init_sample=8192)
PL=$(archive pocketllm-k256 "${ARCHIVE_POCKETLLM:-}" --method pocketllm --set K=256 --set epochs=0 --set kmeans_iters=3)

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
run_eval() { # MODEL [budget args]
  "$CLI" -q --json --no-store eval "$1" --text "$TEXT" --ctx 512 --max-tokens "${EVAL_TOKENS:-2044}" --precision "$PRECISION" --threads "$THREADS" "${@:2}"
}
run_gen() { # MODEL TOKENS [budget args]
  "$CLI" -q --json generate "$1" --prompt "The history of" --max-tokens "$2" --greedy --ignore-eos \
    --precision "$PRECISION" --threads "$THREADS" "${@:3}"
}

CSV_EVAL=$OUT/memory-speed-eval.csv
CSV_GEN=$OUT/memory-speed-generate.csv
echo "series,weights_mb,tokens_per_s,budget_fraction,decode_s_per_pass" > "$CSV_EVAL"
echo "series,weights_mb,tokens_per_s,budget_fraction,decode_s_per_pass" > "$CSV_GEN"
row() { # CSV SERIES JSON FRACTION
  echo "$3" | json "'$2,%.1f,%.2f,$4,%.3f' % (d['memory']['weights_mb'], d['tokens_per_s'], d['memory']['decode_s_per_pass'])" >> "$1"
  tail -1 "$1"
}
echo "== fp16 model ($PRECISION compute)"
row "$CSV_EVAL" "fp16 model" "$(run_eval "$MODEL")" 1
row "$CSV_GEN" "fp16 model" "$(run_gen "$MODEL" "$GEN_TOKENS")" 1
for pair in "RTN 4-bit g128:$RTN" "VQ d8 K256:$VQ" "PocketLLM d4 K256:$PL"; do
  series=${pair%%:*}; file=${pair#*:}
  probe=$(run_gen "$file" 0 --memory-budget auto)
  min=$(echo "$probe" | json "d['memory']['minimum_mb']")
  all=$(echo "$probe" | json "d['memory']['all_decoded_mb']")
  echo "== $series: minimum $min MiB, all decoded $all MiB"
  for f in 0 0.25 0.5 0.75 1; do
    budget=$(python3 -c "print(round($min + $f * ($all - $min) + 1, 1))")
    row "$CSV_EVAL" "$series" "$(run_eval "$file" --memory-budget "$budget")" "$f"
    row "$CSV_GEN" "$series" "$(run_gen "$file" "$GEN_TOKENS" --memory-budget "$budget")" "$f"
  done
done
python3 - "$CSV_EVAL" "$CSV_GEN" <<'PY'
import csv, sys
for path in sys.argv[1:]:
    rows = list(csv.DictReader(open(path)))
    with open(path.replace(".csv", "-chart.csv"), "w") as f:
        f.write("series,x,y\n")
        for r in rows:
            f.write(f"{r['series']},{r['weights_mb']},{r['tokens_per_s']}\n")
PY
"$CHART" "$OUT/memory-speed-eval-chart.csv" "$OUT/memory-speed-eval.png" --title "eval (ctx 512, $PRECISION, $THREADS threads): tokens/s against weight memory" \
  --xlabel "weights in memory (MiB)" --ylabel "tokens/s"
"$CHART" "$OUT/memory-speed-generate-chart.csv" "$OUT/memory-speed-generate.png" --title "generate ($PRECISION, $THREADS threads): tokens/s against weight memory" \
  --xlabel "weights in memory (MiB)" --ylabel "tokens/s"
rm -f "$OUT"/memory-speed-*-chart.csv

# The same weights through llama.cpp, when the peer is built.
BENCH="$PEER/llama.cpp/build/bin/llama-bench"
if [ -x "$BENCH" ]; then
  echo "== llama.cpp on the same machine (llama-bench -t $THREADS)"
  for q in F16 Q8_0 Q4_K_M; do
    f="$PEER/models/random-1gb-$q.gguf"
    [ -f "$f" ] && "$BENCH" -m "$f" -p 512 -n "$GEN_TOKENS" -t "$THREADS" -r 2 -o csv 2>/dev/null |
      python3 -c "
import csv,sys
for r in csv.DictReader(sys.stdin):
    kind = 'pp' if int(r['n_prompt']) > 0 else 'tg'
    print('$q', kind + (r['n_prompt'] if kind == 'pp' else r['n_gen']), r['avg_ts'], 'tokens/s')"
  done
  echo "== ours on the same GGUF files ($PRECISION)"
  for q in F16 Q8_0 Q4_K_M; do
    f="$PEER/models/random-1gb-$q.gguf"
    [ -f "$f" ] || continue
    echo "$q eval $(run_eval "$f" | json "'%.1f tokens/s' % d['tokens_per_s']"); generate $(run_gen "$f" "$GEN_TOKENS" | json "'%.1f tokens/s' % d['tokens_per_s']")"
  done
fi
