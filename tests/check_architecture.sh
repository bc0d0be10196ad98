#!/usr/bin/env bash
# Keeps the shape of the code (docs: README "Layout"):
#  1. core's subsystem folders include only their own layer or lower ones, in the order
#     support < io < model < methods < archive < store < jobs < analysis (no folder cycle);
#  2. no file of plugins/A includes a file of plugins/B (shared code lives in core's toolkit);
#  3. no function in core, plugins, ui or the apps is longer than 120 lines unless a comment just
#     above it starts with "// Long:" and says why.
# Prints the folder-level include graph of core. Exit 1 on any violation.
#   bash tests/check_architecture.sh [SOURCE_DIR]
set -uo pipefail
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root" || exit 2
layers=(support io model methods archive store jobs analysis)
declare -A rank
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done
status=0

# 1. Layering of core.
declare -A edges
for sub in "${layers[@]}"; do
  for f in $(find "core/src/$sub" "core/include/pocket/$sub" -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.inc' \) 2>/dev/null); do
    while IFS= read -r dep; do
      [ -z "$dep" ] && continue
      if [ -z "${rank[$dep]+x}" ]; then
        echo "layering: $f includes pocket/$dep/, which is not a subsystem folder"; status=1; continue
      fi
      [ "$dep" != "$sub" ] && edges["$sub -> $dep"]=1
      if [ "${rank[$dep]}" -gt "${rank[$sub]}" ]; then
        echo "layering: $f ($sub) includes pocket/$dep/, a higher layer"; status=1
      fi
    done < <(grep -oE '^#include "pocket/[a-z_]+/' "$f" | sed -E 's|#include "pocket/([a-z_]+)/|\1|')
  done
done
for f in $(find core -name '*.h' -o -name '*.cpp' | grep -vE '^core/(src|include/pocket)/'); do
  echo "layering: $f is outside core's subsystem folders"; status=1
done
echo "core's folder graph (lower layers first):"
for sub in "${layers[@]}"; do
  deps=""
  for e in "${!edges[@]}"; do [ "${e%% -> *}" = "$sub" ] && deps="$deps ${e##* -> }"; done
  sorted=$(for d in $deps; do echo "${rank[$d]} $d"; done | sort -n | cut -d' ' -f2 | xargs)
  printf '  %-9s -> %s\n' "$sub" "${sorted:-(nothing)}"
done

# 2. Plugins include core and their own files only.
for dir in plugins/*/; do
  name=$(basename "$dir")
  while IFS= read -r line; do
    file=${line%%:*}; inc=${line#*:}
    case "$inc" in
      *'"../'*|*'"plugins/'*) echo "plugins: $file includes $inc (another plugin's file)"; status=1 ;;
    esac
  done < <(grep -HoE '^#include "[^"]+"' $(find "$dir" -name '*.h' -o -name '*.cpp') 2>/dev/null)
  : "$name"
done

# 3. Function length.
long=$(find core plugins ui app -name '*.cpp' -o -name '*.h' -o -name '*.inc' | sort | xargs awk -v limit=120 '
  FNR == 1 { depth = 0; open = "" }
  {
    hist[FNR % 16] = $0
    if (open == "" && ($0 == "{" || $0 == "    {")) {
      open = $0; start = FNR; marked = 0
      for (k = 1; k <= 12; ++k) if (hist[(FNR - k + 16) % 16] ~ /^ *\/\/ Long:/) marked = 1
    } else if (open != "" && $0 == substr("    ", 1, length(open) - 1) "}") {
      n = FNR - start - 1
      if (n > limit && !marked) printf "%s:%d: a function of %d lines (split it, or say why above it with // Long:)\n", FILENAME, start, n
      open = ""
    }
  }')
if [ -n "$long" ]; then echo "$long"; status=1; fi
[ $status -eq 0 ] && echo "architecture: ok"
exit $status
