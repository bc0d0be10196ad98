#!/usr/bin/env bash
# CI step after the tests: builds the Debian package (cpack -G DEB), checks its contents, installs it
# with apt-get (so its dependencies resolve), runs the installed programs from / with a clean
# environment (no POCKETLLM_* variables, the source and build trees hidden where a private mount
# namespace is available) and removes the package again. Any failure fails the script.
# Without root and without passwordless sudo it only builds and checks the package, and says so.
# Usage: scripts/package-check.sh      (POCKET_BUILD_DIR: build folder, default build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${POCKET_BUILD_DIR:-build}
PKG=pocketllm-workbench
PREFIX=/usr
say() { echo "package-check: $*"; }
die() { echo "package-check: FAILED: $*" >&2; exit 1; }

[ -f "$BUILD_DIR/build.ninja" ] || bash scripts/build.sh
# Up to date after scripts/test.sh (CI); builds the programs, plugins and shim otherwise.
cmake --build "$BUILD_DIR" --target pocket_installables -- -j"$(nproc)"
rm -f "$BUILD_DIR"/${PKG}_*.deb
(cd "$BUILD_DIR" && cpack -G DEB) || die "cpack -G DEB"
DEB=$(ls "$BUILD_DIR"/${PKG}_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] || die "cpack wrote no ${PKG}_*.deb in $BUILD_DIR"
DEB=$(realpath "$DEB")
say "built $DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb --field "$DEB" Package Version Architecture Depends Recommends

# Contents: both programs, the shim, every plugin, the resources, desktop entry and icon.
CONTENTS=$(dpkg-deb --contents "$DEB" | awk '{ print $NF }' | sed 's|^\./|/|')
for f in $PREFIX/bin/pocketllm $PREFIX/bin/pocketllm-cli \
         $PREFIX/lib/pocketllm-workbench/libpocket_spm.so \
         $PREFIX/lib/pocketllm-workbench/plugins/libpocket_method_pocketllm.so \
         $PREFIX/lib/pocketllm-workbench/plugins/libpocket_method_rtn.so \
         $PREFIX/lib/pocketllm-workbench/plugins/libpocket_method_gptq.so \
         $PREFIX/lib/pocketllm-workbench/plugins/libpocket_method_vq.so \
         $PREFIX/lib/pocketllm-workbench/plugins/libpocket_method_aqlm.so \
         $PREFIX/share/pocketllm-workbench/resources/models/stories260K/stories260K.bin \
         $PREFIX/share/pocketllm-workbench/resources/models/stories260K/tok512.bin \
         $PREFIX/share/pocketllm-workbench/resources/text/tinystories_valid_30k.txt \
         $PREFIX/share/pocketllm-workbench/resources/baselines/published.json \
         $PREFIX/share/applications/pocketllm-workbench.desktop \
         $PREFIX/share/icons/hicolor/scalable/apps/pocketllm-workbench.svg; do
  grep -qx "$f" <<< "$CONTENTS" || die "the package lacks $f"
done
# Depends must come from dpkg-shlibdeps (LibTorch, Qt, sentencepiece), not be empty.
DEPENDS=$(dpkg-deb --field "$DEB" Depends)
for lib in libtorch libqt6widgets6 libsentencepiece; do
  grep -q "$lib" <<< "$DEPENDS" || die "Depends lacks $lib (shlibdeps): $DEPENDS"
done
# No ELF file in the package may point into the build or source tree (RPATH/RUNPATH).
EXTRACT=$(mktemp -d)
trap 'rm -rf "$EXTRACT"' EXIT
dpkg-deb -x "$DEB" "$EXTRACT"
while IFS= read -r -d '' elf; do
  if file -b "$elf" | grep -q '^ELF'; then
    rp=$(readelf -d "$elf" | grep -E 'R(UN)?PATH' || true)
    [ -z "$rp" ] || die "$(basename "$elf") has $rp"
  fi
done < <(find "$EXTRACT" -type f -print0)
say "contents, Depends and RUNPATHs ok"

# Installing needs root (CI) or passwordless sudo (a developer's machine); otherwise stop here.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    say "SKIPPED installing $DEB: not root and no passwordless sudo (CI runs this as root)"
    exit 0
  fi
fi
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok installed"; then
  say "note: $PKG was already installed; it is replaced now and removed at the end"
fi
APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"
remove_package() {
  $APT remove -y -q --purge "$PKG" >/dev/null || echo "package-check: could not remove $PKG" >&2
  rm -rf "$EXTRACT" "${HOME_DIR:-}"
}
trap remove_package EXIT
say "installing $DEB"
$APT install -y -q "$DEB" >/dev/null || die "apt-get install $DEB"

# Run the installed programs from / with a clean environment and a throw-away HOME, so the build
# tree, the source tree and POCKETLLM_* settings cannot be what makes them work.
HOME_DIR=$(mktemp -d)
chmod 755 "$HOME_DIR"
# A SentencePiece tokenizer (from ../shared when there), to see the shim load from its installed place.
SPM_MODEL=$ROOT/../shared/assets/tokenizers/llama2/tokenizer.model
[ -f "$SPM_MODEL" ] && cp "$SPM_MODEL" "$HOME_DIR/tokenizer.model"
RESOURCES=$PREFIX/share/pocketllm-workbench/resources
CHECK_SCRIPT='set -euo pipefail
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }
cd /
command -v pocketllm-cli | grep -qx "'"$PREFIX"'/bin/pocketllm-cli" || fail "pocketllm-cli is not '"$PREFIX"'/bin/pocketllm-cli"
echo "== pocketllm-cli --version"
version=$(pocketllm-cli --version)
echo "$version"
echo "$version" | grep -Eq "^pocketllm-cli [0-9]+\.[0-9]+\.[0-9]+ \(git [0-9a-z]+\)$" || fail "unexpected --version: $version"
echo "== pocketllm --version (GUI, offscreen)"
QT_QPA_PLATFORM=offscreen pocketllm --version || fail "pocketllm --version"
echo "== pocketllm-cli eval (installed demo model)"
pocketllm-cli eval '"$RESOURCES"'/models/stories260K/stories260K.bin \
  --text '"$RESOURCES"'/text/tinystories_valid_30k.txt --ctx 256 --max-tokens 2000 --no-store
json=$(pocketllm-cli --json -q eval '"$RESOURCES"'/models/stories260K/stories260K.bin \
  --text '"$RESOURCES"'/text/tinystories_valid_30k.txt --ctx 256 --max-tokens 2000 --no-store)
echo "$json" | grep -q "\"perplexity\"" || fail "eval --json has no perplexity: $json"
echo "== pocketllm-cli compress (rtn, installed plugin), inspect and eval of the archive"
pocketllm-cli -q --no-store compress '"$RESOURCES"'/models/stories260K/stories260K.bin -o "$HOME/demo-rtn.pllm" --method rtn --set bits=4
pocketllm-cli inspect "$HOME/demo-rtn.pllm" > "$HOME/inspect.txt"
head -n 4 "$HOME/inspect.txt"
pocketllm-cli --no-store eval "$HOME/demo-rtn.pllm" --text '"$RESOURCES"'/text/tinystories_valid_30k.txt --ctx 256 --max-tokens 2000
if [ -f "$HOME/tokenizer.model" ]; then
  echo "== the SentencePiece shim loads from the installed folder"
  # (the llama2 tokenizer does not fit stories260K: the eval fails after loading it, as intended)
  { LD_DEBUG=files pocketllm-cli --no-store eval '"$RESOURCES"'/models/stories260K/stories260K.bin \
    --text '"$RESOURCES"'/text/tinystories_valid_30k.txt --tokenizer "$HOME/tokenizer.model" --max-tokens 100 2>&1 || true; } |
    grep -q "file='"$PREFIX"'/bin/\.\./lib/pocketllm-workbench/libpocket_spm\.so .*dynamically loaded" \
    || fail "libpocket_spm.so was not loaded from '"$PREFIX"'/lib/pocketllm-workbench"
  echo "libpocket_spm.so loaded from '"$PREFIX"'/lib/pocketllm-workbench"
fi
echo "== pocketllm-cli methods"
methods=$(pocketllm-cli methods)
echo "$methods" | grep -E "^[a-z]" || true
for m in pocketllm rtn gptq vq; do
  echo "$methods" | grep -Eq "^$m .*, '"$PREFIX"'(/bin/\.\.)?/lib/pocketllm-workbench/plugins/libpocket_method_$m\.so\)$" \
    || fail "methods does not list $m from '"$PREFIX"'/lib/pocketllm-workbench/plugins"
done
if echo "$methods" | grep -q "^refused"; then fail "a plugin was refused"; fi
echo "== pocketllm-cli doctor"
pocketllm-cli doctor'
run_clean() {
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME_DIR" LANG=C.UTF-8 bash -c "$CHECK_SCRIPT"
}
# Hide the checkout and the build folder (and ../shared) behind empty folders when we may (root and a
# private mount namespace), so nothing can be read from them.
HIDE=("$ROOT")
[ -d "$ROOT/../shared" ] && HIDE+=("$(realpath "$ROOT/../shared")")
BUILD_ABS=$(realpath "$BUILD_DIR")
case "$BUILD_ABS/" in "$ROOT"/*) ;; *) HIDE+=("$BUILD_ABS") ;; esac
if [ -z "$SUDO" ] && command -v unshare >/dev/null &&
   unshare --mount --propagation private sh -c 'mount -t tmpfs -o size=1m tmpfs "$1"' probe "$ROOT" 2>/dev/null; then
  say "running the installed programs with ${HIDE[*]} hidden (private mount namespace)"
  export CHECK_SCRIPT HOME_DIR
  unshare --mount --propagation private bash -c \
    'set -e; for d in "$@"; do mount -t tmpfs -o size=1m,mode=755 tmpfs "$d"; [ -z "$(ls -A "$d")" ]; done
     exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME_DIR" LANG=C.UTF-8 bash -c "$CHECK_SCRIPT"' \
    hide "${HIDE[@]}" || die "the installed programs (see above)"
else
  say "running the installed programs from / with a clean environment (the checkout stays visible)"
  run_clean || die "the installed programs (see above)"
fi
say "removing $PKG"
trap - EXIT
remove_package
dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok installed" && die "$PKG is still installed"
say "ok"
