#!/usr/bin/env bash
# One-GPU check of the training stage with the active profile's features (issue 15).
#
#   bash scripts/gpu_check.sh --download-only   # here (network, project env): wheels + the converted demo data
#   bash scripts/gpu_check.sh [--steps 40 ...]  # on a GPU machine without network that has CUDA torch
#
# The GPU run installs requirements/gpu-check.txt from artifacts/wheels/gpu/ (git-ignored) into a private
# --target dir, then runs `python -m benchmarks.gpu_check` (the real stage through sft.train.run: pre-launch
# gate, YAML, llamafactory-cli under torchrun, results, history), asserts the loss falls and writes
# tokens/s, peak GPU memory and MFU into BENCHMARKS.md. Extra arguments go to benchmarks.gpu_check.
# Exit codes: 0 ok, 1 check failed, 3 no GPU visible, 4 wheels missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/artifacts/wheels/gpu}"
REQ="$ROOT/requirements/gpu-check.txt"
SITE="${GPU_CHECK_SITE:-/tmp/sft-gpu-check-site}"
TARGET_PY="${GPU_CHECK_PYTHON_VERSION:-3.12}"   # the GPU machine's Python

if [[ "${1:-}" == "--download-only" ]]; then
  PIP_PY="$ROOT/artifacts/env/lf/bin/python"; [[ -x "$PIP_PY" ]] || PIP_PY="$(command -v python3)"
  mkdir -p "$WHEELS"
  PLAT=(--python-version "$TARGET_PY" --implementation cp)
  for n in 17 24 27 28 31 34 35; do PLAT+=(--platform "manylinux_2_${n}_x86_64"); done
  PLAT+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  mapfile -t BIN < <(grep -vE '^\s*(#|$)' "$REQ" | grep -v '# sdist' | sed 's/\s*#.*//')
  mapfile -t SRC < <(grep '# sdist' "$REQ" | sed 's/\s*#.*//')
  echo "[INFO] downloading ${#BIN[@]} wheels + ${#SRC[@]} sdists for Python $TARGET_PY into $WHEELS"
  "$PIP_PY" -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$WHEELS" "${BIN[@]}"
  "$PIP_PY" -m pip download -q --no-deps --no-binary=:all: -d "$WHEELS" "${SRC[@]}"
  # The check trains on the converted demo job: convert it here (the GPU machine has no Kedro).
  if [[ ! -f artifacts/data/lf_data/demo_agent_sft.json ]]; then
    echo "[INFO] converting the demo job (SFT_CONFIG=config.demo.yaml kedro run --pipeline=convert)"
    source scripts/_env.sh
    SFT_CONFIG=config.demo.yaml "$ENV_BIN/kedro" run --pipeline=convert >/dev/null
  fi
  echo "[OK] $(ls "$WHEELS" | wc -l) files, $(du -sh "$WHEELS" | cut -f1) in $WHEELS; demo data in artifacts/data/lf_data"
  exit 0
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "[FAIL] gpu_check: no NVIDIA GPU visible (nvidia-smi missing or failing). Run it on a GPU machine;" \
       "here only \`bash scripts/gpu_check.sh --download-only\` (prepares the wheels) works." >&2
  exit 3
fi
PY3="$(command -v python3)"
if ! "$PY3" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "[FAIL] gpu_check: $PY3 has no CUDA torch that sees the GPU (the check uses the machine's own torch)." >&2
  exit 3
fi
missing=()
while read -r spec; do
  name="${spec%%==*}"; file_glob="$(echo "$name" | tr '-' '_' | tr 'A-Z' 'a-z')"
  ls "$WHEELS" 2>/dev/null | tr '-' '_' | tr 'A-Z' 'a-z' | grep -q "^${file_glob}_${spec##*==}[_.]" || missing+=("$spec")
done < <(grep -vE '^\s*(#|$)' "$REQ" | sed 's/\s*#.*//')
if (( ${#missing[@]} )); then
  echo "[FAIL] gpu_check: not in $WHEELS: ${missing[*]}. Fix: run \`bash scripts/gpu_check.sh --download-only\`" \
       "on a machine with network and carry artifacts/wheels/gpu" >&2
  exit 4
fi

T0=$(date +%s)
echo "[INFO] installing the pinned stack offline into $SITE (torch stays the machine's: $("$PY3" -c 'import torch; print(torch.__version__)'))"
rm -rf "$SITE"
"$PY3" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl
DS_BUILD_OPS=0 "$PY3" -m pip install -q --no-index --no-deps --no-build-isolation --disable-pip-version-check \
  --target "$SITE" "$WHEELS"/deepspeed-*.tar.gz "$WHEELS"/antlr4*-python3-runtime-*.tar.gz
export PYTHONPATH="$SITE:$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$(dirname "$PY3"):$PATH"
export GPU_CHECK_INSTALL_S=$(( $(date +%s) - T0 ))
echo "[INFO] installed in ${GPU_CHECK_INSTALL_S}s:"
"$PY3" - <<'PY'
import importlib
for m in ["torch", "transformers", "tokenizers", "datasets", "accelerate", "peft", "trl", "deepspeed", "llamafactory", "liger_kernel", "flash_attn", "triton"]:
    try:
        print(f"  {m:14s} {getattr(importlib.import_module(m), '__version__', '?')}")
    except Exception as exc:
        print(f"  {m:14s} not importable ({type(exc).__name__}: {str(exc)[:80]})")
PY
exec "$PY3" -m benchmarks.gpu_check --root "$ROOT" --site "$SITE" "$@"
