#!/usr/bin/env bash
# The Python reader of docs/archive-format.md (section 14), an implementation of the format written
# from the document, reads archives this build writes: the same rtn 3-bit compression stored packed
# (format 1), rANS-coded and zstd-coded (format 2) must give the same payload bytes, section by section,
# and an archive with LoRA adapters (format 3) reads with them and the same payloads.
#   tests/check_python_reader.sh CLI DOC
set -euo pipefail
cli=$1 doc=$2
here="$(cd "$(dirname "$0")/.." && pwd)"
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
model="$here/resources/models/stories260K/stories260K.bin"
"$cli" --no-store -q compress "$model" --method rtn --set bits=3 --out "$w/packed.pllm" --entropy none >/dev/null
"$cli" --no-store -q repack "$w/packed.pllm" --out "$w/coded.pllm" --entropy on --coder rans >/dev/null
"$cli" --no-store -q repack "$w/packed.pllm" --out "$w/zstd.pllm" --entropy on --coder zstd >/dev/null
# An interpreter with the zstandard module (Debian's python3-zstandard), the first python3 otherwise.
py=python3
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c "import zstandard" 2>/dev/null; then py=$p; break; fi
done
# Format 3: LoRA adapters on the down projections (a short training run).
"$cli" --no-store -q recover "$w/coded.pllm" --calib-text "$here/resources/text/tinystories_valid_30k.txt" --calib-samples 8 \
  --calib-len 32 --rank 2 --types down_proj --out "$w/lora.pllm" >/dev/null
"$py" - "$doc" "$w/packed.pllm" "$w/coded.pllm" "$w/zstd.pllm" "$w/lora.pllm" <<'PY'
import sys
doc = open(sys.argv[1], encoding="utf-8").read()
code = doc.split("## 14. A reader in Python")[1].split("```python")[1].split("```")[0]
ns = {}
exec(code, ns)
m1, s1 = ns["read_model"](sys.argv[2])
assert m1["format_version"] == 1, m1["format_version"]
for path, codec in ((sys.argv[3], "rans"), (sys.argv[4], "zstd")):
    m2, s2 = ns["read_model"](path)
    assert m2["format_version"] == 2, m2["format_version"]
    coded = sum(1 for g in m2["groups"] for c in g.get("section_codes") or [] if c and c["codec"] == codec)
    assert coded == 35, (codec, coded)
    n = 0
    for g1, g2 in zip(m1["groups"], m2["groups"]):
        for a, b in zip(g1["sections"], g2["sections"]):
            assert s1[a] == s2[b], a
            n += 1
    print(f"python reader: {coded} {codec} sections decode to the packed bytes ({n} sections compared)")
m3, s3 = ns["read_model"](sys.argv[5])
assert m3["format_version"] == 3, m3["format_version"]
assert len(m3["adapters"]) == 5 and all(a["rank"] == 2 for a in m3["adapters"]), m3["adapters"]
for g1, g3 in zip(m1["groups"], m3["groups"]):
    for a, b in zip(g1["sections"], g3["sections"]):
        assert s1[a] == s3[b], a
print(f"python reader: format 3 with {len(m3['adapters'])} adapters, the groups' payloads unchanged")
PY
