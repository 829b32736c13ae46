#!/usr/bin/env bash
# Create (or update) the training + project environment at meta_info.environment.sft_uv.
#
#   bash scripts/install_env.sh            # uses $SFT_CONFIG or config.yaml
#   SFT_ENV_DIR=/path bash scripts/install_env.sh   # override the location (must be under artifacts/env/)
#   bash scripts/install_env.sh --plan     # print what would be installed here, install nothing
#
# On a machine where `nvidia-smi -L` works (or with SFT_ASSUME_GPU=1 for --plan) it builds the GPU env the
# active profile needs: CUDA torch, the `gpu` extra (liger-kernel), DeepSpeed in LLaMA-Factory 0.9.5's range,
# and FlashAttention-2 by SFT_FLASH_ATTN:
#   auto  (default) the prebuilt wheel of the flash-attn release matching torch / CUDA / Python / C++ ABI,
#         when it can be downloaded; otherwise nothing, with the explicit fallback said (fa2 profiles then need
#         infrastructure.attn_fallback: sdpa, or SFT_FLASH_ATTN=build)
#   build compile it (pip --no-build-isolation; needs nvcc, ~1 h with MAX_JOBS=8)
#   skip  never install it
# CPU machines keep the CPU install (no liger-kernel, no flash-attn).
#
# Idempotent: an existing env whose stamp matches the pinned requirements is left alone.
# Refuses to create or delete anything outside <project>/artifacts/env/.
set -euo pipefail
PLAN=0
[[ "${1:-}" == "--plan" ]] && PLAN=1

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
[[ "${SFT_ASSUME_GPU:-0}" == "1" ]] && HAS_GPU=1
FLASH_MODE="${SFT_FLASH_ATTN:-auto}"
pin() { grep -E "^$1==" requirements/constraints.txt | head -n1; }
TORCH_PIN="$(pin torch)"
FLASH_PIN="$(pin flash-attn)"
EXTRAS="dev,dashboard,notebook"; [[ $HAS_GPU = 1 ]] && EXTRAS="$EXTRAS,gpu"
PYTAG="cp${PYV/./}"

# The flash-attn release wheel for this torch / CUDA / Python / ABI (its setup.py looks for the same name).
flash_wheel_url() {  # $1 torch version, $2 CUDA major, $3 cxx11 abi TRUE/FALSE
  local fv="${FLASH_PIN#flash-attn==}" tv="${1%%+*}"
  tv="$(echo "$tv" | cut -d. -f1,2)"
  echo "https://github.com/Dao-AILab/flash-attention/releases/download/v${fv}/flash_attn-${fv}+cu${2}torch${tv}cxx11abi${3}-${PYTAG}-${PYTAG}-linux_x86_64.whl"
}

if [[ $PLAN = 1 ]]; then
  DRIVER_CUDA="$( (nvidia-smi 2>/dev/null || true) | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n1)"
  CUDA_MAJOR="${SFT_CUDA_MAJOR:-${DRIVER_CUDA:-12}}"
  echo "[PLAN] environment: $ENV_DIR (python $PYV from $PY)"
  echo "[PLAN] machine: $([[ $HAS_GPU = 1 ]] && echo GPU || echo 'CPU (no nvidia-smi -L)')"
  echo "[PLAN] torch: $TORCH_PIN ($([[ $HAS_GPU = 1 ]] && echo 'CUDA build from PyPI' || echo 'CPU build when available'))"
  echo "[PLAN] project: pip install -c requirements/constraints.txt -e .[$EXTRAS]"
  for p in llamafactory transformers deepspeed $([[ $HAS_GPU = 1 ]] && echo liger-kernel); do echo "[PLAN]   $(pin "$p")"; done
  if [[ $HAS_GPU = 1 ]]; then
    case "$FLASH_MODE" in
      auto) echo "[PLAN] flash-attn: $FLASH_PIN prebuilt wheel if reachable: $(flash_wheel_url "${TORCH_PIN#torch==}" "$CUDA_MAJOR" TRUE)" \
                 "(name recomputed from the installed torch); else none, and fa2 profiles need infrastructure.attn_fallback: sdpa or SFT_FLASH_ATTN=build" ;;
      build) echo "[PLAN] flash-attn: build $FLASH_PIN from source (pip --no-build-isolation, needs nvcc)" ;;
      skip) echo "[PLAN] flash-attn: skipped (SFT_FLASH_ATTN=skip); fa2 profiles need infrastructure.attn_fallback: sdpa" ;;
      *) echo "[FAIL] SFT_FLASH_ATTN must be auto, build or skip, got $FLASH_MODE" >&2; exit 2 ;;
    esac
  else
    echo "[PLAN] flash-attn, liger-kernel: not on a CPU machine (the CPU run switches liger off; use flash_attn: sdpa/auto)"
  fi
  exit 0
fi

STAMP_SRC="$(cat requirements/constraints.txt pyproject.toml; echo "py=$PYV gpu=$HAS_GPU flash=$FLASH_MODE")"
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
echo "[INFO] installing $TORCH_PIN ($([[ $HAS_GPU = 1 ]] && echo 'GPU machine: CUDA build' || echo 'no GPU: CPU build when available'))"
"$VPY" -m pip install -q "$TORCH_PIN"

echo "[INFO] installing LLaMA-Factory, Kedro and the project (pinned by requirements/constraints.txt)"
"$VPY" -m pip install -q -c requirements/constraints.txt -e "$ROOT[$EXTRAS]"

if [[ $HAS_GPU = 1 && "$FLASH_MODE" != "skip" ]]; then
  read -r T_VER T_CUDA T_ABI < <("$VPY" -c 'import torch; print(torch.__version__, (torch.version.cuda or "0").split(".")[0], str(torch._C._GLIBCXX_USE_CXX11_ABI).upper())')
  if [[ "$FLASH_MODE" == "build" ]]; then
    echo "[INFO] building $FLASH_PIN from source (MAX_JOBS=${MAX_JOBS:-8}; about an hour)"
    MAX_JOBS="${MAX_JOBS:-8}" "$VPY" -m pip install -q --no-build-isolation "$FLASH_PIN"
  else
    URL="$(flash_wheel_url "$T_VER" "$T_CUDA" "$T_ABI")"
    if "$VPY" -m pip install -q --no-deps "$URL" 2>/dev/null; then
      echo "[OK] flash-attn from the prebuilt wheel $URL"
    else
      echo "[WARN] no prebuilt $FLASH_PIN for torch $T_VER / CUDA $T_CUDA / $PYTAG / cxx11abi $T_ABI ($URL not reachable)." \
           "FALLBACK: profiles with flash_attn: fa2 are refused by the dryrun and the train node unless" \
           "infrastructure.attn_fallback: sdpa; or rerun with SFT_FLASH_ATTN=build to compile it."
    fi
  fi
fi

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
SFT_HAS_GPU=$HAS_GPU "$VPY" - <<'PY'
import importlib
import os
from importlib import metadata
mods = ["torch", "transformers", "datasets", "accelerate", "peft", "trl", "deepspeed", "llamafactory",
        "kedro", "kedro_datasets", "wandb", "huggingface_hub", "pandas", "pyarrow", "matplotlib", "sft"]
gpu = os.environ.get("SFT_HAS_GPU") == "1"
for m in mods + (["liger_kernel"] if gpu else []):
    mod = importlib.import_module(m)
    print(f"  {m:16s} {getattr(mod, '__version__', None) or metadata.version(m.replace('_', '-'))}")
if gpu:
    try:
        import flash_attn
        print(f"  {'flash_attn':16s} {flash_attn.__version__}")
    except ImportError:
        print(f"  {'flash_attn':16s} not installed: fa2 profiles need infrastructure.attn_fallback: sdpa")
from transformers import PreTrainedModel  # noqa: F401  (fails when a CUDA torchvision sits beside CPU torch)
import torch
print(f"  cuda available: {torch.cuda.is_available()} ({torch.cuda.device_count()} device(s))")
PY
echo "$STAMP" > "$ENV_DIR/.sft-stamp"
echo "[OK] environment ready: $ENV_REL"
