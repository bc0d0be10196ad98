#!/usr/bin/env bash
# Issue 3 benchmarks (printed figures; not a test). Usage: bench/compress.sh [build dir] [sections...]
# Sections: time curves paper nearest decode bigmatrix inspect (default: all). Archives go to $BENCH_DIR
# (default <build>/bench). Perplexity: stories260K on TinyStories part A, ctx 256 (FP32: 4.9992).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
shift || true
SECTIONS=${*:-time curves paper nearest decode bigmatrix inspect}
CLI="$BUILD_DIR/bin/pocketllm-cli"
BENCH_DIR=${BENCH_DIR:-$BUILD_DIR/bench}
MODEL=resources/models/stories260K/stories260K.bin
TEXT=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
[ -f "$TEXT" ] || TEXT=resources/text/tinystories_valid_30k.txt
mkdir -p "$BENCH_DIR"
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

# compress + eval one setting; prints one table row.
point() {
  local label=$1; shift
  local out="$BENCH_DIR/$label.pllm"
  local c e
  c=$("$CLI" -q --json compress "$MODEL" -o "$out" --threads 2 "$@")
  e=$("$CLI" -q --json eval "$out" --text "$TEXT" --ctx 256)
  python3 - "$label" "$c" "$e" <<'PY'
import json, sys
label, c, e = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
snr = sum(m["snr_db"] for m in c["matrices"]) / len(c["matrices"])
print(f"{label:28s} bpw_c {c['bpw_compressed']:7.3f}  all-in {c['bpw_all_in']:7.3f}  ratio_fp16 {c['ratio_fp16']:5.2f}"
      f"  mean SNR {snr:5.2f} dB  ppl {e['perplexity']:10.4f}  compress {c['seconds']:6.1f} s")
PY
}

if has time; then
  echo "== compress all 35 linear layers of stories260K with the defaults (2 threads)"
  "$CLI" -q --json compress "$MODEL" -o "$BENCH_DIR/defaults.pllm" --threads 2 | python3 -c "
import json,sys; d=json.load(sys.stdin)
print('%.1f s, peak RSS %.0f MiB, bpw_c %.1f (per-matrix K=32768 codebooks dwarf 4096-weight matrices)' % (d['seconds'], d['peak_rss_mb'], d['bpw_compressed']))"
fi

if has curves; then
  echo "== perplexity against bits per weight, each sharing scope (epochs 50, batch 1024; FP32 ppl 4.9992)"
  for dk in "4 256" "4 1024" "2 256" "4 4096" "2 1024"; do
    set -- $dk; point "model-d$1-K$2" --set sharing=model --set d=$1 --set K=$2 --set batch=1024
  done
  for dk in "4 64" "8 256" "4 256" "2 256" "4 1024"; do
    set -- $dk; point "type-d$1-K$2" --set sharing=type --set d=$1 --set K=$2 --set batch=1024
  done
  for dk in "4 16" "4 64" "2 16" "2 64" "4 256"; do
    set -- $dk; point "matrix-d$1-K$2" --set sharing=matrix --set d=$1 --set K=$2 --set batch=1024
  done
fi

if has paper; then
  echo "== the paper's settings: one network per matrix, reference defaults (d 4, K 32768) and the worked example (d 8)"
  point "paper-d4-K32768"
  point "paper-d8-K32768" --set d=8
fi

if has nearest; then
  echo "== nearest-codeword search, K 32768, batch 16384"
  "$BUILD_DIR/bin/bench_nearest" --threads 2
fi

if has decode; then
  echo "== decode throughput (model-shared d 4, K 256 archive)"
  [ -f "$BENCH_DIR/model-d4-K256.pllm" ] || "$CLI" -q compress "$MODEL" -o "$BENCH_DIR/model-d4-K256.pllm" --set sharing=model --set K=256 --set batch=1024 >/dev/null
  "$BUILD_DIR/bin/bench_decode" "$BENCH_DIR/model-d4-K256.pllm" --threads 2
fi

if has inspect; then
  BIG=${BIG_MODEL:-$BENCH_DIR/random-1gb} # e.g. the llama.cpp peer's ~/.cache/pocketllm-peer/models/random-1gb
  if [ ! -f "$BIG/config.json" ]; then
    echo "== writing a ~1 GB random Llama-shaped checkpoint (f16) to $BIG"
    "$CLI" -q make-random --preset 1gb --dtype f16 --out "$BIG" --force >/dev/null
  fi
  echo "== GUI stall while the Inspect tab draws block 0 down_proj [2048 x 5632] (PocketLLM d 4, K 4096)"
  [ -f "$BENCH_DIR/inspect-down.pllm" ] || "$CLI" -q compress "$BIG" -o "$BENCH_DIR/inspect-down.pllm" --blocks 0 --types down \
    --set K=4096 --set kmeans_iters=3 --set epochs=2 --threads 2 >/dev/null
  "$BUILD_DIR/bin/bench_gui_stall" --inspect "$BIG" "$BENCH_DIR/inspect-down.pllm" model.layers.0.mlp.down_proj.weight
fi

if has bigmatrix; then
  BIG="$BENCH_DIR/random-1gb"
  if [ ! -f "$BIG/config.json" ]; then
    echo "== writing a ~1 GB random Llama-shaped checkpoint (f16) to $BIG"
    "$CLI" -q make-random --preset 1gb --dtype f16 --out "$BIG" --force >/dev/null
  fi
  echo "== peak RSS compressing one matrix (block 0 down_proj) of the ~1 GB checkpoint, 1 epoch, archive streamed"
  "$CLI" -q --json compress "$BIG" -o "$BENCH_DIR/big-one-matrix.pllm" --blocks 0 --types down --set epochs=1 --threads 2 | python3 -c "
import json,sys; d=json.load(sys.stdin); m=d['matrices'][0]
print('%s [%d x %d]: %.1f s, SNR %.2f dB, peak RSS %.0f MiB, archive %.2f GB' % (m['name'], m['rows'], m['cols'], d['seconds'], m['snr_db'], d['peak_rss_mb'], d['archive_bytes']/1e9))"
fi
