#!/usr/bin/env bash
# Set everything up and run the whole sft stage on the demo profile (CPU, offline, a few minutes):
# convert the bundled Harbor job -> register -> report -> train a tiny Qwen3 -> runtime_info.output.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
bash scripts/install_env.sh
"$PY" scripts/build_tiny_model.py --out artifacts/demo/tiny-qwen3
[[ -d data/01_raw/demo_job ]] || "$PY" scripts/make_demo_job.py --out data/01_raw/demo_job
export SFT_CONFIG=config.demo.yaml
# The demo reuses its output dir on every run; a real profile refuses that unless asked.
export SFT_ALLOW_OVERWRITE_OUTPUT=1
bash scripts/dryrun.sh
"$ENV_BIN/kedro" run "$@"
"$PY" - <<'PY'
import json
import yaml
from sft.core.turns import agent_lines, summary_line
cfg = yaml.safe_load(open("config.demo.yaml"))
# how faithful the conversion was: the model's turns in the job vs the trainable turns in the rows
funnel = json.load(open(f"data/08_reporting/{cfg['runtime_info']['input']['conversion']['data_name']}/funnel.json"))
print("\n" + summary_line(funnel.get("model_turns")))
print("\n".join(agent_lines(funnel.get("model_turns"))))
out = cfg["runtime_info"]["output"]
print("\nruntime_info.output written to config.demo.yaml:")
print(yaml.safe_dump(out, sort_keys=False))
PY
