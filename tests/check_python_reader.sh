#!/usr/bin/env bash
# The Python reader of docs/archive-format.md (section 14), an implementation of the format written
# from the document, reads archives this build writes: the same rtn 3-bit compression stored packed
# (format 1) and rANS-coded (format 2) must give the same payload bytes, section by section.
#   tests/check_python_reader.sh CLI DOC
set -euo pipefail
cli=$1 doc=$2
here="$(cd "$(dirname "$0")/.." && pwd)"
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
model="$here/resources/models/stories260K/stories260K.bin"
"$cli" --no-store -q compress "$model" --method rtn --set bits=3 --out "$w/packed.pllm" --entropy none >/dev/null
"$cli" --no-store -q repack "$w/packed.pllm" --out "$w/coded.pllm" --entropy on >/dev/null
python3 - "$doc" "$w/packed.pllm" "$w/coded.pllm" <<'PY'
import sys
doc = open(sys.argv[1], encoding="utf-8").read()
code = doc.split("## 14. A reader in Python")[1].split("```python")[1].split("```")[0]
ns = {}
exec(code, ns)
m1, s1 = ns["read_model"](sys.argv[2])
m2, s2 = ns["read_model"](sys.argv[3])
assert m1["format_version"] == 1 and m2["format_version"] == 2, (m1["format_version"], m2["format_version"])
coded = sum(1 for g in m2["groups"] for c in g.get("section_codes") or [] if c and c["codec"] == "rans")
assert coded == 35, coded
n = 0
for g1, g2 in zip(m1["groups"], m2["groups"]):
    for a, b in zip(g1["sections"], g2["sections"]):
        assert s1[a] == s2[b], a
        n += 1
print(f"python reader: {coded} coded sections decode to the packed bytes ({n} sections compared)")
PY
