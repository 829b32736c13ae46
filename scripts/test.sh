#!/usr/bin/env bash
# Set everything up and run the test suite (lint first). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
bash scripts/install_env.sh
"$PY" scripts/build_tiny_model.py --out artifacts/demo/tiny-qwen3
"$ENV_BIN/ruff" check src tests scripts benchmarks
"$PY" -m pytest -q "$@"
