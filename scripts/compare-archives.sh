#!/usr/bin/env bash
# Byte-identity check between two builds: compresses the bundled demo model (stories260K) with
# every method, in several settings each (calibrated, shared codebooks, row scales, per-matrix
# settings), with the pocketllm-cli of build A and of build B, and compares the archives byte for
# byte. Used for refactorings that must not change any output.
#   bash scripts/compare-archives.sh BUILD_A BUILD_B [WORK_DIR]
# BUILD_x is a build folder (bin/pocketllm-cli, lib/pocketllm-workbench/plugins). Exit 0 when every
# pair is identical; prints one line per case with both SHA-256 sums.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
a="$(cd "$1" && pwd)"; b="$(cd "$2" && pwd)"
work="${3:-$(mktemp -d)}"
mkdir -p "$work"
model="$here/resources/models/stories260K/stories260K.bin"
text="$here/resources/text/tinystories_valid_30k.txt"
calib=(--calib-text "$text" --calib-samples 16 --calib-len 128)
cases=(
  "rtn-4b-g32|--method rtn --set bits=4 --set group=32"
  "rtn-3b-row-bf16|--method rtn --set bits=3 --set group=0 --keep-dtype bf16 --blocks 1-3"
  "gptq-3b-g32|--method gptq --set bits=3 --set group=32 ${calib[*]}"
  "gptq-4b-actorder|--method gptq --set bits=4 --set group=64 --set act_order=true ${calib[*]} --types q,k,v,o"
  "vq-K256-d4|--method vq --set K=256 --set d=4"
  "vq-type-rowscale|--method vq --set K=512 --set d=4 --set sharing=type --set row_scale=true"
  "vq-feedback-hdiag|--method vq --set K=256 --set d=2 --set feedback=true --set weighting=hessian_diag ${calib[*]}"
  "pocketllm-default-K256|--method pocketllm --set K=256 --set epochs=20 --set sharing=model"
  "pocketllm-trained|--method pocketllm --set encoder=trained --set init=normal --set K=256 --set epochs=3 --set row_scale=false --set final_norm=true --set rln_affine=true --types q,k"
  "pocketllm-feedback-finetune|--method pocketllm --set K=256 --set epochs=10 --set feedback=true --set finetune=5 --set weighting=hessian_diag --set sharing=type ${calib[*]} --blocks 0-2"
)
status=0
for c in "${cases[@]}"; do
  name="${c%%|*}"; args="${c#*|}"
  sums=()
  for side in a b; do
    build="$a"; [ "$side" = b ] && build="$b"
    out="$work/$name.$side.pllm"
    rm -rf "$out" "$out.work"
    # shellcheck disable=SC2086
    POCKETLLM_PLUGIN_PATH="$build/lib/pocketllm-workbench/plugins" "$build/bin/pocketllm-cli" --no-store -q \
      compress "$model" -o "$out" --threads 2 $args >/dev/null
    sums+=("$(sha256sum "$out" | cut -c1-16)")
  done
  if [ "${sums[0]}" = "${sums[1]}" ]; then verdict=identical; else verdict=DIFFERENT; status=1; fi
  printf '%-28s %s %s  %s\n' "$name" "${sums[0]}" "${sums[1]}" "$verdict"
done
exit $status
