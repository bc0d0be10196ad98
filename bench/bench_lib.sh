# Shared by bench/baselines.sh and bench/pocketllm_vs_baselines.sh (source it; not a program).
# Needs: CLI (pocketllm-cli path), OUT (output folder), CSV (results file).

# split_part_a PART_A_FILE: the first 3/4 of TinyStories part A (cut at a story boundary) is the
# evaluation text, the last 1/4 the calibration text ($OUT/eval.txt, $OUT/calib.txt): disjoint.
split_part_a() {
  python3 - "$1" "$OUT" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
cut = text.find("\n\n", len(text) * 3 // 4)
open(sys.argv[2] + "/eval.txt", "w", encoding="utf-8").write(text[:cut + 1])
open(sys.argv[2] + "/calib.txt", "w", encoding="utf-8").write(text[cut + 2:])
PY
}

# --no-store when this CLI has it (runs are not recorded in the experiment store).
STORE=(--no-store)
"$CLI" --help | grep -q -- "--no-store" || STORE=()

# fp_perplexity MODEL TEXT CTX [eval args...]
fp_perplexity() {
  local model=$1 text=$2 ctx=$3; shift 3
  "$CLI" -q --json "${STORE[@]}" eval "$model" --text "$text" --ctx "$ctx" "$@" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])"
}

# run_case MODEL TEXT CTX SERIES METHOD LABEL compress-args... : compresses, evaluates, prints a row
# and appends it to $CSV (series,label,bpw_c,perplexity,bpw_all_in,compress_s and, with
# CSV_DETAIL=1, the bit split, mean SNR and the codebook usage of the first group).
run_case() {
  local model=$1 text=$2 ctx=$3 series=$4 method=$5 label=$6; shift 6
  local archive="$OUT/$method-$label.pllm" c e i=""
  rm -rf "$archive" "$archive.work"
  if ! c=$("$CLI" -q --json "${STORE[@]}" compress "$model" -o "$archive" --method "$method" --threads "${THREADS:-2}" "$@" 2>&1); then
    echo "$series $label failed: $c" | head -5; return
  fi
  e=$("$CLI" -q --json "${STORE[@]}" eval "$archive" --text "$text" --ctx "$ctx" ${EVAL_ARGS:-})
  [ "${CSV_DETAIL:-0}" = 1 ] && [ -x "$(dirname "$CLI")/archive_usage" ] && i=$("$(dirname "$CLI")/archive_usage" "$archive" | head -1 || true)
  python3 - "$series" "$label" "$c" "$e" "$CSV" "${CSV_DETAIL:-0}" "$i" <<'PY'
import json, math, sys
series, label, c, e, csv, detail = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"
row = [series, label, "%.4f" % c["bpw_compressed"], "%.4f" % e["perplexity"], "%.4f" % c["bpw_all_in"], "%.2f" % c["seconds"]]
text = "%-18s %-26s %8.3f %8.3f %11.3f %10.1f" % (series, label, c["bpw_compressed"], c["bpw_all_in"], e["perplexity"], c["seconds"])
if detail:
    b, w = c["bits"], c["weights_compressed"]
    mats = c.get("matrices", [])
    snr = sum(m["snr_db"] for m in mats) / max(1, len(mats))
    used, ent = "", ""
    try:
        meta = json.loads(sys.argv[7])
        used, ent = meta.get("used_codewords", ""), meta.get("index_entropy_bits", meta.get("code_entropy_bits", ""))
        if isinstance(used, list):  # one entry per codebook (aqlm): "a/b"
            used = "/".join(str(u) for u in used)
        if ent != "":
            ent = "/".join("%.3f" % e for e in ent) if isinstance(ent, list) else "%.3f" % ent
    except Exception:
        pass
    row += ["%.4f" % (b["index"] / w), "%.4f" % (b["codebook"] / w), "%.4f" % (b["decoder"] / w), "%.4f" % (b["scale"] / w),
            "%.3f" % snr, str(used), str(ent)]
    text += "  snr %.2f dB" % snr
print(text)
open(csv, "a").write(",".join(row) + "\n")
PY
  rm -rf "$archive" "$archive.work"
}
