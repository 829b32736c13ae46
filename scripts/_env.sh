# Sourced by the scripts: offline-safe defaults and the project's Python.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:kedro,ignore::DeprecationWarning}"
ENV_BIN="$ROOT/artifacts/env/lf/bin"
export PATH="$ENV_BIN:$PATH"
PY="$ENV_BIN/python"
