#!/usr/bin/env bash
# Regenerates the committed seed corpora (fuzz/corpus/<target>/) from small files made here: tiny
# random models written by pocketllm-cli (safetensors in F32/F16/BF16, GGUF in F32/F16 with and
# without a tokenizer, .pllm archives from rtn and vq), byte-level and SentencePiece-style
# tokenizer.json files, a legacy llama2.c checkpoint written to its layout, and, when the llama.cpp
# peer is built (bench/peer/llamacpp.sh), GGUFs quantised by llama-quantize (Q8_0, Q4_0, Q4_1, Q5_0,
# Q5_1, IQ4_NL). Seeds stay small (a few KiB to ~70 KiB) so that the fuzzers run fast.
#   bash fuzz/make-seeds.sh        (needs build/bin/pocketllm-cli)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cli="$here/${POCKET_BUILD_DIR:-build}/bin/pocketllm-cli"
peer="${POCKET_PEER_CACHE:-$HOME/.cache/pocketllm-peer}/llama.cpp/build/bin"
out="$here/fuzz/corpus"
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
[ -x "$cli" ] || { echo "make-seeds: build pocketllm-cli first ($cli)"; exit 1; }
rm -rf "$out"
mkdir -p "$out"/{gguf,tokenizer_json,safetensors,llama2c,pllm}
c() { "$cli" --no-store -q "$@" >/dev/null; }

# Models: dim 32 (llama.cpp's 32-blocks fit), 1 block, 2 heads, 1 KV head, vocab 64.
shape=(--dim 32 --hidden 64 --layers 1 --heads 2 --kv-heads 1 --vocab 64 --seq-len 64)
for dt in f32 f16 bf16; do
  c make-random --out "$w/m-$dt" "${shape[@]}" --dtype "$dt" --seed 3
  cp "$w/m-$dt/model.safetensors" "$out/safetensors/$dt.safetensors"
done
c make-random --out "$w/m-bias" "${shape[@]}" --bias --tie --seed 4
cp "$w/m-bias/model.safetensors" "$out/safetensors/bias-tied.safetensors"
for dt in f32 f16; do c convert "$w/m-$dt" --to gguf --dtype "$dt" --out "$out/gguf/$dt.gguf"; done
# With SentencePiece-style scores in the metadata: stories260K's 512-token tokenizer.
c make-random --out "$w/m-tok" --dim 16 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --vocab 512 --seq-len 64 \
  --tokenizer "$here/resources/models/stories260K/tok512.bin" --seed 5
c convert "$w/m-tok" --to gguf --dtype f16 --out "$out/gguf/llama-tokenizer.gguf"
if [ -x "$peer/llama-quantize" ]; then
  for t in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL; do
    "$peer/llama-quantize" "$out/gguf/f32.gguf" "$out/gguf/$t.gguf" "$t" >/dev/null 2>&1 || echo "make-seeds: llama-quantize $t failed"
  done
fi

# tokenizer.json: byte-level (Qwen2's and Llama-3's split regexes) and SentencePiece-style.
python3 - "$out/tokenizer_json" <<'PY'
import json, sys
out = sys.argv[1]
def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
bm = bytes_to_unicode()
sp = bm[32]
def byte_level(regex, name, digits):
    vocab = {bm[b]: i for i, b in enumerate(range(256))}
    merges = [("h","e"),(sp,"t"),(sp+"t","he"),("a","n"),(sp,"a"),("i","n"),(sp,"s"),("e","r"),(sp+"a","n"),("an","d"),("1","2")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": len(vocab), "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
             {"id": len(vocab) + 1, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    if digits:
        pre["pretokenizers"].insert(0, {"type": "Digits", "individual_digits": True})
    t = {"version": "1.0", "added_tokens": added, "normalizer": {"type": "NFC"}, "pre_tokenizer": pre,
         "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": name == "llama3",
                   "vocab": vocab, "merges": [a + " " + b for a, b in merges]}}
    json.dump(t, open(f"{out}/{name}.json", "w"), ensure_ascii=False)
byte_level(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", "qwen2", False)
byte_level(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", "llama3", True)
# SentencePiece-style (Llama-2 / Mistral / TinyLlama): Metaspace via normalizer, byte fallback.
M = "\u2581"
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    vocab["<0x%02X>" % b] = len(vocab)
pieces = [M, "e", "t", "a", "o", "h", "n", "s", M + "t", "he", M + "the", "an", M + "a", "in", "er", "nd", M + "and"]
merges = [(M, "t"), ("h", "e"), (M + "t", "he"), ("a", "n"), (M, "a"), ("i", "n"), ("e", "r"), ("n", "d"), (M + "a", "nd")]
for p in pieces + ["i", "r", "d", M + "and"]:
    vocab.setdefault(p, len(vocab))
t = {"version": "1.0",
     "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                      for i, c in [(0, "<unk>"), (1, "<s>"), (2, "</s>")]],
     "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": M}, {"type": "Replace", "pattern": {"String": " "}, "content": M}]},
     "pre_tokenizer": None,
     "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": M}, "content": " "}, {"type": "ByteFallback"},
                                                   {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
     "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
               "vocab": vocab, "merges": [a + " " + b for a, b in merges]}}
json.dump(t, open(f"{out}/sentencepiece-style.json", "w"), ensure_ascii=False)
PY
# The same as a Qwen2 model's GGUF (llama.cpp's gpt2 tokenizer form).
cp "$out/tokenizer_json/qwen2.json" "$w/qwen-tokenizer.json"
n=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print(len(t["model"]["vocab"]) + len(t["added_tokens"]))' "$w/qwen-tokenizer.json")
c make-random --out "$w/m-qwen" --dim 16 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --vocab "$n" --seq-len 64 --bias --seed 6
cp "$w/qwen-tokenizer.json" "$w/m-qwen/tokenizer.json"
python3 - "$w/m-qwen/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["model_type"] = "qwen2"; c["architectures"] = ["Qwen2ForCausalLM"]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
c convert "$w/m-qwen" --to gguf --dtype f16 --out "$out/gguf/qwen2-gpt2-tokenizer.gguf"

# llama2.c legacy .bin (dim 16, hidden 32, 1 layer, 2 heads, 1 KV head, vocab 32, seq 16), shared and not.
python3 - "$out/llama2c" <<'PY'
import random, struct, sys
random.seed(7)
dim, hidden, layers, heads, kv, vocab, seq = 16, 32, 1, 2, 1, 32, 16
hd = dim // heads
for shared in (True, False):
    n = vocab * dim + layers * dim + layers * dim * dim + 2 * layers * dim * kv * hd + layers * dim * dim + layers * dim
    n += 3 * layers * dim * hidden + dim + seq * hd  # w1 w2 w3, final norm, freq_cis real + imag
    if not shared:
        n += vocab * dim
    head = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab if shared else -vocab, seq)
    body = struct.pack("<%df" % n, *[random.gauss(0, 0.1) for _ in range(n)])
    open(f"{sys.argv[1]}/{'shared' if shared else 'untied'}.bin", "wb").write(head + body)
PY
for f in "$out"/llama2c/*.bin; do "$cli" --no-store -q info "$f" >/dev/null || { echo "make-seeds: $f does not open"; exit 1; }; done

# .pllm archives: rtn and k-means VQ, with and without a tokenizer, and with rANS-coded code streams.
c compress "$w/m-f32" -o "$out/pllm/rtn.pllm" --method rtn --set bits=4 --set group=32
c compress "$w/m-tok" -o "$out/pllm/vq-tokenizer.pllm" --method vq --set d=4 --set K=16
c compress "$w/m-f16" -o "$out/pllm/rtn-f16.pllm" --method rtn --set bits=2 --set group=16
c compress "$w/m-f32" -o "$out/pllm/rtn-rans.pllm" --method rtn --set bits=3 --set group=32 --entropy on --coder rans
c compress "$w/m-f32" -o "$out/pllm/rtn-zstd.pllm" --method rtn --set bits=4 --set group=32 --entropy on --coder zstd
du -sh "$out"/*
