#!/usr/bin/env bash
# Side-effect-free preflight of the selected config ($SFT_CONFIG, default config.yaml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
# Usable before set-up too (the preflight reports a missing env): fall back to the system Python.
PY="${SFT_PYTHON:-$PY}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
exec "$PY" -m sft.preflight.dryrun "$@"
