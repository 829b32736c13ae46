#!/usr/bin/env bash
# Set everything up and run the test suite (lint first). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
bash scripts/install_env.sh
# The dashboard's browser test drives Debian's Chromium (no browser download).
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "[INFO] installing Debian's chromium for the dashboard browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "[WARN] /usr/bin/chromium missing and not root: the dashboard browser test will be skipped"
  fi
fi
"$PY" scripts/build_tiny_model.py --out artifacts/demo/tiny-qwen3
"$ENV_BIN/ruff" check src tests scripts benchmarks
"$ENV_BIN/ruff" format --check src tests scripts benchmarks
# The layers point one way (pyproject.toml [tool.importlinter], README "Code map").
(cd "$ROOT" && PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" "$ENV_BIN/lint-imports")
"$PY" -m pytest -q "$@"
