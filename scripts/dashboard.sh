#!/usr/bin/env bash
# Read-only live training dashboard (runs, compare, datasets). Binds 127.0.0.1:8091 unless told otherwise.
#   bash scripts/dashboard.sh [--host 127.0.0.1] [--port 8091] [--project-dir .] [--poll-seconds 5]
# From another machine use an SSH tunnel: ssh -L 8091:127.0.0.1:8091 <host>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${SFT_PYTHON:-$ROOT/artifacts/env/lf/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
export KEDRO_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}"
exec "$PY" -m sft.dashboard --project-dir "$ROOT" "$@"
