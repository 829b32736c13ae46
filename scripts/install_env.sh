#!/usr/bin/env bash
# Create (or update) the training + project environment at meta_info.environment.sft_uv.
#
#   bash scripts/install_env.sh            # uses $SFT_CONFIG or config.yaml
#   SFT_ENV_DIR=/path bash scripts/install_env.sh   # override the location (must be under artifacts/env/)
#
# Idempotent: an existing env whose stamp matches the pinned requirements is left alone.
# Refuses to create or delete anything outside <project>/artifacts/env/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${SFT_CONFIG:-config.yaml}"
[[ "$CONFIG" = /* ]] || CONFIG="$ROOT/$CONFIG"

# Read two keys from the config without needing any package (the env does not exist yet).
read_key() {  # $1 = key under meta_info.environment
  [[ -f "$CONFIG" ]] || return 0
  python3 - "$CONFIG" "$1" <<'PY'
import re, sys
path, key = sys.argv[1], sys.argv[2]
in_env = False
for line in open(path, encoding="utf-8"):
    if re.match(r"^\s{2}environment:\s*$", line):
        in_env = True
        continue
    if in_env:
        if re.match(r"^\s{0,2}\S", line):
            break
        m = re.match(r"^\s+" + re.escape(key) + r":\s*['\"]?([^'\"#\s]*)", line)
        if m:
            print(m.group(1))
            break
PY
}

ENV_REL="${SFT_ENV_DIR:-$(read_key sft_uv)}"
ENV_REL="${ENV_REL:-artifacts/env/lf}"
WANT_PY="$(read_key python_version)"
WANT_PY="${WANT_PY:-3.11}"
[[ "$ENV_REL" = /* ]] && ENV_DIR="$ENV_REL" || ENV_DIR="$ROOT/$ENV_REL"
ENV_DIR="$(python3 -c 'import os,sys; print(os.path.realpath(sys.argv[1]))' "$ENV_DIR")"
GUARD="$(python3 -c 'import os,sys; print(os.path.realpath(sys.argv[1]))' "$ROOT/artifacts/env")"
case "$ENV_DIR/" in
  "$GUARD"/?*/) ;;
  *) echo "[FAIL] refusing to manage an environment outside $GUARD: $ENV_DIR (meta_info.environment.sft_uv)" >&2; exit 2 ;;
esac

# Python: the configured version when available, else the newest >= 3.11.
PY=""
for cand in "python$WANT_PY" python3.13 python3.12 python3.11; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    PY="$(command -v "$cand")"; break
  fi
done
[[ -n "$PY" ]] || { echo "[FAIL] no Python >= 3.11 found on PATH" >&2; exit 2; }
PYV="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [[ "$PYV" != "$WANT_PY" ]]; then
  echo "[INFO] python $WANT_PY (meta_info.environment.python_version) not found; using $PY ($PYV)"
fi

HAS_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAS_GPU=1; fi

STAMP_SRC="$(cat requirements/constraints.txt pyproject.toml; echo "py=$PYV gpu=$HAS_GPU")"
STAMP="$(printf '%s' "$STAMP_SRC" | sha256sum | cut -c1-16)"
if [[ -x "$ENV_DIR/bin/python" && -f "$ENV_DIR/.sft-stamp" && "$(cat "$ENV_DIR/.sft-stamp")" == "$STAMP" ]]; then
  echo "[OK] environment $ENV_REL is up to date (stamp $STAMP)"
  # Keep the editable install pointing at this checkout (a fresh clone in another folder).
  "$ENV_DIR/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" >/dev/null
  exit 0
fi

if [[ -d "$ENV_DIR" && ! -x "$ENV_DIR/bin/python" ]]; then
  echo "[INFO] removing broken environment $ENV_DIR"
  rm -rf -- "$ENV_DIR"
fi
if [[ ! -x "$ENV_DIR/bin/python" ]]; then
  echo "[INFO] creating venv at $ENV_REL with $PY"
  mkdir -p "$(dirname "$ENV_DIR")"
  "$PY" -m venv "$ENV_DIR"
fi
VPY="$ENV_DIR/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VPY" -m pip install -q --upgrade "pip>=24" setuptools wheel

# torch first, pinned, so nothing later swaps it for another build.
TORCH_PIN="$(grep -E '^torch==' requirements/constraints.txt)"
echo "[INFO] installing $TORCH_PIN ($([[ $HAS_GPU = 1 ]] && echo 'GPU machine: CUDA build' || echo 'no GPU: CPU build when available'))"
"$VPY" -m pip install -q "$TORCH_PIN"

echo "[INFO] installing LLaMA-Factory, Kedro and the project (pinned by requirements/constraints.txt)"
"$VPY" -m pip install -q -c requirements/constraints.txt -e "$ROOT[dev,dashboard,notebook]"

# On CPU torch the PyPI torchvision/torchaudio wheels are CUDA builds that cannot load
# (docs/llamafactory-rules.md §12.3): drop torchvision, and make torchaudio import as pure Python.
if ! "$VPY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
  if "$VPY" -m pip show -q torchvision >/dev/null 2>&1; then
    echo "[INFO] CPU torch: uninstalling the CUDA-only torchvision wheel"
    "$VPY" -m pip uninstall -y -q torchvision
  fi
  TA_LIB="$("$VPY" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("torchaudio")
print(os.path.join(os.path.dirname(spec.origin), "lib") if spec and spec.origin else "")
PY
)"
  if [[ -n "$TA_LIB" && -d "$TA_LIB" ]] && ls "$TA_LIB"/*.so >/dev/null 2>&1; then
    echo "[INFO] CPU torch: removing torchaudio's CUDA-linked libraries in $TA_LIB"
    rm -f -- "$TA_LIB"/*.so
  fi
fi

echo "[INFO] import check"
"$VPY" - <<'PY'
import importlib
mods = ["torch", "transformers", "datasets", "accelerate", "peft", "trl", "deepspeed", "llamafactory",
        "kedro", "kedro_datasets", "wandb", "huggingface_hub", "pandas", "pyarrow", "matplotlib", "sft"]
for m in mods:
    mod = importlib.import_module(m)
    print(f"  {m:16s} {getattr(mod, '__version__', '?')}")
from transformers import PreTrainedModel  # noqa: F401  (fails when a CUDA torchvision sits beside CPU torch)
import torch
print(f"  cuda available: {torch.cuda.is_available()} ({torch.cuda.device_count()} device(s))")
PY
echo "$STAMP" > "$ENV_DIR/.sft-stamp"
echo "[OK] environment ready: $ENV_REL"
