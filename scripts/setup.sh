#!/usr/bin/env bash
# Installs the Debian bookworm packages PocketLLM Workbench needs to build, test, package and run
# (dpkg-dev and file: dpkg-shlibdeps for the .deb's dependencies).
# Idempotent: prints nothing and touches nothing when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  qt6-base-dev qt6-base-dev-tools libqt6sql6-sqlite libqt6opengl6-dev qt6-svg-dev
  libqcustomplot-dev libqcustomplot2.1-qt6
  libtorch-dev libopenblas0-pthread
  libspdlog-dev libfmt-dev libsqlite3-dev libsentencepiece-dev nlohmann-json3-dev
  libzstd-dev libxxhash-dev libcli11-dev libpcre2-dev libutf8proc-dev
  xvfb xauth
  dpkg-dev file
  python3 python3-zstandard
  curl ca-certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${#missing[@]} missing package(s): ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
