#!/usr/bin/env bash
# compress --mpi under Open MPI on this host (CTest runs it where the MPI module was built; CI
# installs Open MPI for it):
#  1. RTN, k-means VQ shared per type, and GPTQ (calibration block by block) with mpirun -np 3 write
#     the archive a single process writes, byte for byte, and report 3 ranks;
#  2. a rank killed with SIGKILL mid-run stops the job and mpirun names it; --resume with -np 2
#     continues from the finished groups to the same archive;
#  sensitivity units across -np 3 give the single-process figures exactly;
#  3. a rank that cannot read the model (an MPMD launch giving it another path) is named in the
#     error, and no archive is written.
# Usage: tests/mpi_check.sh PATH/TO/pocketllm-cli RESOURCES_DIR
set -euo pipefail
CLI=$(realpath "$1")
RES=$(realpath "$2")
MODEL=$RES/models/stories260K/stories260K.bin
TEXT=$RES/text/tinystories_valid_30k.txt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export POCKETLLM_DATA_DIR=$WORK/data
# vader single-copy off: containers often forbid the ptrace it needs
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun --allow-run-as-root --oversubscribe)
fail() { echo "mpi_check: FAILED: $*" >&2; exit 1; }
say() { echo "mpi_check: $*"; }

check_same() { # name, then the compress options
  local name=$1; shift
  "$CLI" -q compress "$MODEL" -o "$WORK/alone.pllm" --threads 1 "$@" >/dev/null
  "${MPIRUN[@]}" -np 3 "$CLI" -q --json compress "$MODEL" -o "$WORK/mpi.pllm" --threads 1 --mpi "$@" >"$WORK/mpi.json" ||
    fail "$name: mpirun -np 3 failed"
  grep -q '"ranks": *3' "$WORK/mpi.json" || fail "$name: the JSON does not report 3 ranks: $(head -c 300 "$WORK/mpi.json")"
  cmp "$WORK/alone.pllm" "$WORK/mpi.pllm" || fail "$name: the -np 3 archive differs from the single-process one"
  say "$name: -np 3 archive identical to one process ($(sha256sum <"$WORK/mpi.pllm" | cut -c1-16))"
  rm -f "$WORK/alone.pllm" "$WORK/mpi.pllm"
}

check_same rtn --method rtn --set bits=4
check_same "vq per type" --method vq --set d=2 --set K=64 --set sharing=type --set iters=10
check_same "gptq block by block" --method gptq --set bits=4 --calib-text "$TEXT" --calib-samples 8 --calib-len 64

# Sensitivity units across 3 ranks: the same units and figures as one process.
SENS=(sensitivity "$MODEL" --text "$TEXT" --ctx 64 --windows 4 --blocks 0-1 --threads 1 --method gptq --set bits=3 --calib-samples 8 --calib-len 64)
"$CLI" -q --json --no-store "${SENS[@]}" >"$WORK/sens-alone.json"
"${MPIRUN[@]}" -np 3 "$CLI" -q --json --no-store "${SENS[@]}" --mpi >"$WORK/sens-mpi.json" || fail "sensitivity: mpirun -np 3 failed"
python3 - "$WORK/sens-alone.json" "$WORK/sens-mpi.json" <<'PY' || fail "sensitivity: -np 3 differs from one process"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for d in (a, b):
    d.pop("seconds")
    for u in d["units"]:
        u.pop("seconds", None)
assert a == b, (a, b)
print(f"mpi_check: sensitivity (gptq, {len(a['units'])} units): -np 3 gives the single-process figures exactly")
PY

# 2. A rank killed mid-run, then --resume with another number of ranks.
SLOW=(--method pocketllm --set d=4 --set K=64 --set epochs=400)
"$CLI" -q compress "$MODEL" -o "$WORK/alone.pllm" --threads 1 "${SLOW[@]}" >/dev/null
"${MPIRUN[@]}" -np 3 "$CLI" -q compress "$MODEL" -o "$WORK/killed.pllm" --threads 1 --mpi "${SLOW[@]}" >"$WORK/killed.log" 2>&1 &
LAUNCHER=$!
victim=""
for _ in $(seq 600); do
  if ls "$WORK/killed.pllm.work"/group-* >/dev/null 2>&1; then
    for p in /proc/[0-9]*; do
      if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2' &&
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q pocketllm-cli; then
        victim=${p#/proc/}
      fi
    done
    [ -n "$victim" ] && break
  fi
  sleep 0.1
done
[ -n "$victim" ] || { kill "$LAUNCHER" 2>/dev/null; fail "no rank 2 process found to kill"; }
kill -9 "$victim"
if wait "$LAUNCHER"; then fail "mpirun succeeded although rank 2 was killed"; fi
grep -q "rank 2" "$WORK/killed.log" || fail "mpirun's output does not name rank 2: $(tail -c 600 "$WORK/killed.log")"
[ ! -e "$WORK/killed.pllm" ] || fail "an archive was written by the killed run"
done_groups=$(ls "$WORK/killed.pllm.work"/group-* | wc -l)
say "rank 2 killed: the job stopped; $done_groups group(s) were finished; mpirun: $(grep -m1 "rank 2" "$WORK/killed.log")"
"${MPIRUN[@]}" -np 2 "$CLI" -q --json compress "$MODEL" -o "$WORK/killed.pllm" --threads 1 --mpi --resume "${SLOW[@]}" >"$WORK/resumed.json" ||
  fail "--resume with -np 2 failed"
grep -q '"groups_resumed": *[1-9]' "$WORK/resumed.json" || fail "--resume took no group from the work folder"
cmp "$WORK/alone.pllm" "$WORK/killed.pllm" || fail "the resumed archive differs from the single-process one"
say "--resume with -np 2: identical archive ($(grep -o '"groups_resumed": *[0-9]*' "$WORK/resumed.json"))"

# 3. A rank that cannot read the model.
if "${MPIRUN[@]}" -np 2 "$CLI" -q compress "$MODEL" -o "$WORK/c.pllm" --mpi --method rtn : \
    -np 1 "$CLI" -q compress "$WORK/missing.bin" -o "$WORK/c.pllm" --mpi --method rtn >"$WORK/missing.log" 2>&1; then
  fail "a rank without the model did not fail the run"
fi
grep -q "rank 2 (.*missing.bin" "$WORK/missing.log" || fail "the error does not name rank 2 and the file: $(tail -c 600 "$WORK/missing.log")"
[ ! -e "$WORK/c.pllm" ] || fail "an archive was written"
say "a rank without the model: $(grep -m1 'rank 2 (' "$WORK/missing.log")"
say "passed"
