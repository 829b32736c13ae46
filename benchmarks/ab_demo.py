"""Are two commits' demo outputs the same? (the redesign's "byte-identical outputs" check)

    python -m benchmarks.ab_demo COMMIT_A COMMIT_B

Each commit is checked out into a fresh git worktree (sharing this checkout's environment and tiny model),
runs ``SFT_CONFIG=config.demo.yaml kedro run --pipeline=convert`` there, and every file it wrote under
``artifacts/data/{lf_data,im_data}`` and ``data/08_reporting`` is compared. The datasets must be equal byte
for byte; report files are compared after replacing the worktree's absolute path and dropping wall-clock
fields (``elapsed_s``, ``tokens_per_s``, ``check_s``), the only parts that differ between two runs of the
same code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIRS = ("artifacts/data/lf_data", "artifacts/data/im_data", "data/08_reporting")
CLOCK_FIELDS = re.compile(rb'"(elapsed_s|tokens_per_s|check_s)": ?[0-9.e+-]+')


def run_demo(commit: str, where: Path) -> dict[str, bytes]:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(where), commit], check=True
    )
    (where / "artifacts" / "demo").mkdir(parents=True, exist_ok=True)
    (where / "artifacts" / "env").symlink_to(REPO / "artifacts" / "env")
    (where / "artifacts" / "demo" / "tiny-qwen3").symlink_to(REPO / "artifacts" / "demo" / "tiny-qwen3")
    env = {
        **os.environ,
        "SFT_CONFIG": "config.demo.yaml",
        "PYTHONPATH": str(where / "src"),
        "KEDRO_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    kedro = REPO / "artifacts" / "env" / "lf" / "bin" / "kedro"
    subprocess.run(
        [str(kedro), "run", "--pipeline=convert"],
        cwd=where,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    files = {}
    for top in OUTPUT_DIRS:
        for path in sorted((where / top).rglob("*")):
            if path.is_file():
                raw = path.read_bytes().replace(str(where).encode(), b"ROOT")
                files[str(path.relative_to(where))] = CLOCK_FIELDS.sub(rb'"\1": 0', raw)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("commit_a")
    parser.add_argument("commit_b")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="sft-ab-demo-"))
    try:
        a = run_demo(args.commit_a, scratch / "a")
        b = run_demo(args.commit_b, scratch / "b")
    finally:
        for side in ("a", "b"):
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / side)],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(scratch, ignore_errors=True)
    differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
    details = {name: json_difference(a.get(name), b.get(name)) for name in differ if name.endswith(".json")}
    print(json.dumps({"files": len(a.keys() | b.keys()), "differ": differ, "json_keys": details}, indent=2))
    return 1 if differ else 0


def json_difference(a: bytes | None, b: bytes | None) -> dict[str, list[str]] | str:
    """Which top-level keys of a JSON object were added, removed or changed between A and B."""
    try:
        old, new = json.loads(a or b"{}"), json.loads(b or b"{}")
    except ValueError:
        return "not JSON"
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return "not a JSON object"
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "changed": sorted(k for k in old.keys() & new.keys() if old[k] != new[k]),
    }


if __name__ == "__main__":
    sys.exit(main())
