#!/usr/bin/env bash
# Read-only live training dashboard (runs, compare, datasets). Binds 127.0.0.1:8091 unless told otherwise.
#   bash scripts/dashboard.sh [--host 127.0.0.1] [--port 8091] [--project-dir .] [--poll-seconds 5]
# From another machine use an SSH tunnel: ssh -L 8091:127.0.0.1:8091 <host>
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
# Usable before set-up too (the preflight reports a missing env): fall back to the system Python.
PY="${SFT_PYTHON:-$PY}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
exec "$PY" -m sft.dashboard --project-dir "$ROOT" "$@"
