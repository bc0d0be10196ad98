#!/usr/bin/env bash
# Issue 22 benchmark (prints figures; not a test): let the budget pick the method. stories260K,
# TinyStories part A split as in bench/aqlm.sh (analysis and calibration on the last quarter, 16
# windows of 256 tokens scored and 128 x 256 calibration windows; perplexity on the first three
# quarters, ctx 256). At budgets of 2.5, 3.0 and 4.0 bpw_c: the best uniform setting of each method,
# the best one-method plan (a menu of that method's settings) and the cross-method plan (all
# entries). Every archive is written with the default lossless stage, and the analysis counts each
# unit's bits after the same stage, so budgets and results are both stored bits (bpw_c).
# The analyses are cached in $OUT/analysis.sqlite: the first plan measures every menu entry, the
# others read the units from the store (the per-entry cost is in plan-*.json, "entries").
# Usage: bench/allocation_methods.sh [build dir]    (outputs in $BENCH_DIR, default <build>/bench/allocation-methods)
#        BUDGETS="2.5 3.0 4.0" and PLANS="all rtn gptq aqlm" limit the plans, SKIP="all-3.0 ..." skips some;
#        UNIFORM=0 skips the uniform runs. Rows are appended to the CSV of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/bin/pocketllm-cli"
OUT=${BENCH_DIR:-$BUILD_DIR/bench/allocation-methods}
MODEL=resources/models/stories260K/stories260K.bin
PART_A=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
mkdir -p "$OUT"
[ -f "$PART_A" ] || { echo "needs $PART_A (../shared beside the checkout)"; exit 1; }
. bench/bench_lib.sh
split_part_a "$PART_A"
EVAL="$OUT/eval.txt"
CALIB="$OUT/calib.txt"
CALIB_ARGS=(--calib-text "$CALIB" --calib-samples 128 --calib-len 256)
CSV="$OUT/results-stories260K.csv"
[ -f "$CSV" ] || echo "series,label,bpw_c,perplexity,bpw_all_in,compress_s" > "$CSV"
fp=$(fp_perplexity "$MODEL" "$EVAL" 256)
echo "FP32 perplexity on the evaluation text: $fp"
printf "%-18s %-26s %8s %8s %11s %10s\n" series setting bpw_c all-in perplexity seconds

# The menus. AQLM's codebooks are shared per matrix type (each type one item of the plan) or by the
# whole model (a uniform choice); per-matrix AQLM codebooks cost more than the codes here.
declare -A MENUS
MENUS[rtn]="rtn:bits=2,group=32 rtn:bits=2,group=64 rtn:bits=3,group=32 rtn:bits=3,group=64 rtn:bits=4,group=32 rtn:bits=4,group=64"
MENUS[gptq]="gptq:bits=2,group=32 gptq:bits=2,group=64 gptq:bits=3,group=32 gptq:bits=3,group=64 gptq:bits=4,group=32 gptq:bits=4,group=64"
MENUS[aqlm]="aqlm:M=2,B=4,g=4,sharing=type aqlm:M=2,B=5,g=4,sharing=type aqlm:M=2,B=6,g=4,sharing=type aqlm:M=2,B=5,g=4,sharing=model aqlm:M=2,B=6,g=4,sharing=model"
MENUS[all]="${MENUS[gptq]} ${MENUS[rtn]} ${MENUS[aqlm]}"

if [ "${UNIFORM:-1}" = 1 ]; then
  for entry in ${MENUS[all]}; do
    method=${entry%%:*}
    args=()
    IFS=, read -ra kv <<< "${entry#*:}"
    for x in "${kv[@]}"; do args+=(--set "$x"); done
    [ "$method" = rtn ] || args+=("${CALIB_ARGS[@]}")
    run_case "$MODEL" "$EVAL" 256 "uniform-$method" "$method" "$(echo "${entry#*:}" | tr ',=' '_-')" "${args[@]}"
  done
fi

for budget in ${BUDGETS:-3.0 2.5 4.0}; do
  for plan in ${PLANS:-all gptq aqlm rtn}; do
    [[ " ${SKIP:-} " == *" $plan-$budget "* ]] && continue
    menu=()
    for entry in ${MENUS[$plan]}; do menu+=(--menu "$entry"); done
    archive="$OUT/plan-$plan-$budget.pllm"
    rm -rf "$archive" "$archive.work"
    start=$(date +%s.%N)
    if ! a=$("$CLI" -q --json --store "$OUT/analysis.sqlite" allocate "$MODEL" --text "$CALIB" --ctx 256 --windows 16 "${CALIB_ARGS[@]}" \
        --threads "${THREADS:-2}" "${menu[@]}" --budget "$budget" -o "$archive" 2>&1); then
      echo "plan $plan at $budget failed: $a" | tail -3; continue
    fi
    e=$("$CLI" -q --json "${STORE[@]}" eval "$archive" --text "$EVAL" --ctx 256)
    python3 - "$a" "$e" "$CSV" "$plan" "$budget" "$start" "$OUT/plan-$plan-$budget.json" <<'PY'
import json, sys, time
a, e, csv, plan, budget, start = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
json.dump(a, open(sys.argv[7], "w"), indent=1)
counts = {}
for m in a["matrices"]:
    n = len(m.get("matrices", [m["matrix"]]))
    counts[m["setting"]] = counts.get(m["setting"], 0) + n
secs = time.time() - start
measured = sum(x["units"] - x["from_store"] for x in a["entries"])
analysis = sum(x["seconds"] for x in a["entries"])
series = "plan-all" if plan == "all" else "plan-" + plan
print("%-18s %-26s %8.3f %8s %11.3f %10.1f   predicted KL %.4f, measured %.4f; %d units measured in %.0f s; %s" % (
      series, "budget-" + budget, a["archive_bpw_compressed"], "", e["perplexity"], secs, a["predicted_damage"], a["measured"]["kl"],
      measured, analysis, ", ".join("%s x%d" % kv for kv in sorted(counts.items()))))
open(csv, "a").write("%s,budget-%s,%.4f,%.4f,,%.2f\n" % (series, budget, a["archive_bpw_compressed"], e["perplexity"], secs))
PY
    rm -rf "$archive" "$archive.work"
  done
done
python3 - "$CSV" "$fp" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fp = float(sys.argv[2])
print("\nbudget | " + " | ".join(["uniform rtn", "uniform gptq", "uniform aqlm", "plan rtn", "plan gptq", "plan aqlm", "plan all"]))
for budget in ["2.5", "3.0", "4.0"]:
    b = float(budget)
    cells = []
    for m in ["rtn", "gptq", "aqlm"]:
        ok = [r for r in rows if r["series"] == "uniform-" + m and float(r["bpw_c"]) <= b + 1e-9]
        best = min(ok, key=lambda r: float(r["perplexity"])) if ok else None
        cells.append("%.2f @ %.3f (%s)" % (float(best["perplexity"]), float(best["bpw_c"]), best["label"]) if best else "-")
    for p in ["plan-rtn", "plan-gptq", "plan-aqlm", "plan-all"]:
        r = [x for x in rows if x["series"] == p and x["label"] == "budget-" + budget]
        cells.append("%.2f @ %.3f (%.2fx)" % (float(r[-1]["perplexity"]), float(r[-1]["bpw_c"]), float(r[-1]["perplexity"]) / fp) if r else "-")
    print(budget + " | " + " | ".join(cells))
PY
[ -x "$BUILD_DIR/bin/pareto_chart" ] && "$BUILD_DIR/bin/pareto_chart" "$CSV" "$OUT/pareto-stories260K.png" --reference "$fp" --xmin 2 --xmax 4.6 --ymax 40 \
  --title "stories260K, TinyStories (3/4 of part A), ctx 256: uniform settings and plans across methods vs bpw_c"
echo "CSV: $CSV (plans: $OUT/plan-*.json)"
