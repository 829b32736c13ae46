#!/usr/bin/env bash
# Side-effect-free preflight of the selected config ($SFT_CONFIG, default config.yaml).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${SFT_PYTHON:-$ROOT/artifacts/env/lf/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
export KEDRO_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}"
exec "$PY" -m sft.preflight.dryrun "$@"
