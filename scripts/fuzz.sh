#!/usr/bin/env bash
# The readers of untrusted files under libFuzzer with AddressSanitizer and UBSan (fuzz/): installs
# clang and libFuzzer when missing, builds fuzz/ into build-fuzz/ (or $POCKET_FUZZ_BUILD_DIR), and
# runs each target for SECONDS (default 30) from its committed seed corpus (fuzz/corpus/<target>/,
# read only; new inputs go to a scratch corpus under the build folder). A finding (crash, sanitizer
# report, leak, timeout, out of memory) fails the script and leaves the input that caused it in
# <build>/findings/ with the log.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     targets: gguf tokenizer_json safetensors llama2c pllm rans
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf tokenizer_json safetensors llama2c pllm rans)
BUILD_DIR=${POCKET_FUZZ_BUILD_DIR:-build-fuzz}

missing=()
for p in clang libfuzzer-14-dev cmake ninja-build pkg-config nlohmann-json3-dev libspdlog-dev libxxhash-dev libpcre2-dev libutf8proc-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "fuzz: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S fuzz -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" >/dev/null
cmake --build "$BUILD_DIR"

mkdir -p "$BUILD_DIR/findings"
failed=()
for t in "${targets[@]}"; do
  scratch="$BUILD_DIR/corpus/$t"
  mkdir -p "$scratch"
  log="$BUILD_DIR/findings/$t.log"
  # -rss_limit_mb: an input that makes a reader allocate past 2 GiB is a finding, not a machine hang.
  if "$BUILD_DIR/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$BUILD_DIR/findings/$t-" "$scratch" "fuzz/corpus/$t" >"$log" 2>&1; then
    echo "fuzz: $t: $(grep -E '^#[0-9]+.*DONE' "$log" | tail -1 | sed 's/^#\([0-9]*\).*corp: \([0-9]*\)\/.*/\1 inputs run, corpus \2/'), no finding in ${seconds} s"
  else
    echo "fuzz: $t: FINDING (log: $log)"
    grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5
    failed+=("$t")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: findings in ${failed[*]}"; exit 1; }
