#!/usr/bin/env bash
# Issue 20: throughput on one machine and across MPI ranks (printed figures; not a test).
# Usage: bench/scale.sh [build dir] [sections...]      sections: methods mpi project (default: all)
#   BLOCKS   the blocks of the ~1 GB checkpoint to compress (default "0-1": 2 of its 8 blocks, 14
#            matrices; "all" for every block); THREADS compute threads (default: one per core);
#   NP       the mpirun rank counts of the mpi section (default "1 2"); BIG_MODEL the checkpoint
#            (default <build>/bench/random-1gb, written by make-random --preset 1gb when missing).
# methods: every method at settings that suit a 0.49B model, with time, peak RSS (and its split
#   into heap and mapped files, bench/rss_split.py) and the phases
#   (rank 0's; they nest: "compress" holds the methods' k-means, training and assignment), saved as
#   <bench>/scale-<method>.json; project: bench/scale_model.py's cost model on those files
#   (Llama-2-7B and -70B on 1 and 64 machines); mpi: the same job with -np N, time, speedup and
#   the archive's checksum.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
shift || true
SECTIONS=${*:-methods mpi project}
CLI=$(realpath "$BUILD_DIR/bin/pocketllm-cli")
BENCH_DIR=${BENCH_DIR:-$BUILD_DIR/bench}
BIG=${BIG_MODEL:-$BENCH_DIR/random-1gb}
BLOCKS=${BLOCKS:-0-1}
THREADS=${THREADS:-$(nproc)}
NP=${NP:-1 2}
TOKENIZER=../shared/assets/tokenizers/llama2/tokenizer.model
TEXT=../shared/assets/eval/tinystories/tinystories_valid_part_a.txt
[ -f "$TEXT" ] || TEXT=resources/text/tinystories_valid_30k.txt
mkdir -p "$BENCH_DIR"
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
if [ ! -f "$BIG/config.json" ]; then
  echo "== writing a ~1 GB random Llama-shaped checkpoint (f16) to $BIG"
  "$CLI" -q make-random --preset 1gb --dtype f16 --out "$BIG" --force >/dev/null
fi
SELECT=()
[ "$BLOCKS" = all ] || SELECT=(--blocks "$BLOCKS")

# The settings per method, chosen for a 0.49B model on a small machine (see docs/scaling.md).
declare -A SETTINGS=(
  [rtn]="--set bits=4 --set group=128"
  [gptq]="--set bits=4 --set group=128 --calib-text $TEXT --calib-samples 16 --calib-len 256 --tokenizer $TOKENIZER"
  [vq]="--set d=4 --set K=4096 --set iters=10"
  [pocketllm]="--set d=4 --set K=4096 --set kmeans_iters=10 --set epochs=20"
)
METHODS=${METHODS:-rtn gptq vq pocketllm}

if has methods; then
  echo "== compress blocks $BLOCKS of $(basename "$BIG") ($THREADS threads): time, peak RSS, phases"
  for m in $METHODS; do
    # shellcheck disable=SC2086
    python3 bench/rss_split.py "$BENCH_DIR/scale-$m.json" -- "$CLI" -q --json compress "$BIG" -o "$BENCH_DIR/scale-$m.pllm" --method "$m" \
      ${SETTINGS[$m]} "${SELECT[@]}" --threads "$THREADS" >"$BENCH_DIR/scale-$m.split"
    python3 - "$m" "$BENCH_DIR/scale-$m.json" <<'PY'
import json, sys
m, d = sys.argv[1], json.load(open(sys.argv[2]))
w = sum(x["rows"] * x["cols"] for x in d["matrices"])
print(f"{m:10s} {d['seconds']:8.1f} s  {w / d['seconds'] / 1e6:7.2f} M weights/s  peak RSS {d['peak_rss_mb']:7.0f} MiB  "
      f"bpw_c {d['bpw_compressed']:.3f}  ({len(d['matrices'])} matrices)")
for p in d["phases"]:
    print(f"    {p['phase']:12s} {p['seconds']:8.1f} s  x{p['count']:<4d} peak RSS {p['peak_rss_mb']:7.0f} MiB")
PY
    cat "$BENCH_DIR/scale-$m.split"
    rm -f "$BENCH_DIR/scale-$m.pllm"
  done
fi

if has mpi; then
  if ! command -v mpirun >/dev/null || [ ! -f "$BUILD_DIR/lib/libpocket_mpi.so" ]; then
    echo "== mpi: skipped (no mpirun, or the build has no MPI module)"
  else
    export OMPI_MCA_btl_vader_single_copy_mechanism=none
    cores=$(nproc)
    for m in ${MPI_METHODS:-rtn vq}; do
      echo "== $m, blocks $BLOCKS, mpirun -np N (threads per rank: $cores/N)"
      base=""
      for n in $NP; do
        t=$(( cores / n )); [ "$t" -ge 1 ] || t=1
        # shellcheck disable=SC2086
        mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$n" "$CLI" -q --json compress "$BIG" -o "$BENCH_DIR/mpi-$m-$n.pllm" --mpi \
          --method "$m" ${SETTINGS[$m]} "${SELECT[@]}" --threads "$t" >"$BENCH_DIR/mpi-$m-$n.json"
        s=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds'])" "$BENCH_DIR/mpi-$m-$n.json")
        [ -n "$base" ] || base=$s
        sum=$(sha256sum <"$BENCH_DIR/mpi-$m-$n.pllm" | cut -c1-16)
        python3 -c "import sys; n,s,b,c=sys.argv[1:]; print(f'  -np {n:>2s}  {float(s):8.1f} s  speedup {float(b)/float(s):5.2f}  sha256 {c}')" "$n" "$s" "$base" "$sum"
      done
      rm -f "$BENCH_DIR"/mpi-"$m"-*.pllm
    done
  fi
fi

if has project; then
  echo "== projection (bench/scale_model.py)"
  python3 bench/scale_model.py "$BENCH_DIR"/scale-*.json
fi
