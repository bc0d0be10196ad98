#!/usr/bin/env bash
# CTest cli_reference: docs/cli-reference.md must be what scripts/gen-cli-reference.sh makes from the
# built pocketllm-cli's --help. On failure, regenerate it: scripts/gen-cli-reference.sh [BUILD/bin/pocketllm-cli]
# Usage: tests/check_cli_reference.sh CLI REFERENCE_MD
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
exec bash "$ROOT/scripts/gen-cli-reference.sh" --check "$1" "$2"
