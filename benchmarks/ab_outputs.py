"""Byte-identity check for speed work: the same job converted by two source trees must give the same bytes.

A performance change must not move a single output byte. ``tests/engine`` compares single vs parallel and
cached vs clean runs of *one* tree; this script compares *two* trees (e.g. a saved copy of ``src`` before a
change and the working tree) on a generated job, in several settings, with 1 and 2 workers. The generated
job has no secrets, lone surrogates or ``(empty)`` outputs, so ``--plant`` also converts a copy of it with
such strings written into every request of the proxy logs (consistently, so prefix de-duplication still
collapses the calls), which exercises the scrubbing and repair paths.

    cp -r src /tmp/src-before    # before editing
    python -m benchmarks.ab_outputs --trees /tmp/src-before/src,src --trials 40 --plant

Prints one line per (job, settings, workers) with the digest of each tree and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# (name, conversion overrides, secret values passed to convert_job)
SETTINGS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("all-trials", {"instance_status": "all", "exclude_repos_file": ""}, []),
    ("default-filters", {"exclude_repos_file": ""}, []),
    (
        "drop-errors+no-reasoning+credential",
        {
            "instance_status": "all",
            "exclude_repos_file": "",
            "drop_tool_errors": True,
            "keep_reasoning": False,
        },
        ["Resolve the issue in the repository", "Steps to reproduce"],
    ),
    ("no-scrub", {"instance_status": "all", "exclude_repos_file": "", "scrub_secrets": False}, []),
    # every trial read from its ATIF files (the other settings read the proxy logs where there are some)
    ("atif-only", {"instance_status": "all", "exclude_repos_file": "", "trajectory_source": "atif"}, []),
]

# literal (as it appears in the JSON text of the log) -> replacement with planted secrets and escapes
PLANTS = {
    "Resolve the issue in the repository": "Resolve sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAA \\ud83d the issue in the repository",
    "IndexError": "IndexError AKIAABCDEFGHIJKLMNOP aws_secret_access_key = abcdefghijklmnop1234",
    "New Terminal Output:": "New Terminal Output: \\udc00 hf_abcdefghijklmnopqrstuvwxyz0123456789",
}


def child(job: Path, work: Path, settings: str, workers: int) -> str:
    """Convert ``job`` with the ``sft`` on ``sys.path``; returns the sha256 of every output file."""
    from sft.config.loader import load_config
    from sft.engine.harbor import convert_job

    try:
        from sft.core.spool import iter_row_bytes
    except ImportError:  # a tree from before the spool: rows are lists, written with orjson.dumps
        import orjson

        def iter_row_bytes(rows: Any) -> Any:
            return (orjson.dumps(row) for row in rows)

    _name, overrides, secrets = next(s for s in SETTINGS if s[0] == settings)
    cfg = load_config(REPO / "config.demo.yaml").runtime_info.input
    cfg = cfg.model_copy(
        update={"conversion": cfg.conversion.model_copy(update={**overrides, "use_cache": False})}
    )
    shutil.rmtree(work, ignore_errors=True)
    (work / "artifacts" / "data").mkdir(parents=True)
    result = convert_job(cfg, job, work, num_workers=workers, progress=False, secret_values=secrets)
    digest = hashlib.sha256()
    for rows in (result.lf_rows, result.im_rows):  # the exact bytes the writers put in the files
        for raw in iter_row_bytes(rows):
            digest.update(raw + b"\n")
    for part in (result.rejects, result.funnel):
        digest.update(json.dumps(part, ensure_ascii=False, sort_keys=False).encode("utf-8", "surrogatepass"))
    shutil.rmtree(work, ignore_errors=True)
    return digest.hexdigest()


def plant(job: Path, planted: Path) -> Path:
    """A copy of ``job`` whose proxy logs carry secrets and lone-surrogate escapes in every request."""
    shutil.rmtree(planted, ignore_errors=True)
    shutil.copytree(job, planted)
    for log in sorted(planted.rglob("litellm-trajectory.jsonl")):
        text = log.read_text(encoding="utf-8")
        for old, new in PLANTS.items():
            text = text.replace(old, new)
        log.write_text(text, encoding="utf-8")
    return planted


def run_tree(tree: str, job: Path, work: Path, settings: str, workers: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.ab_outputs",
        "_child",
        "--job",
        str(job),
        "--work",
        str(work),
        "--settings",
        settings,
        "--workers",
        str(workers),
    ]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="compare", choices=["compare", "_child"])
    p.add_argument("--trees", default="src", help="comma-separated src directories to compare")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--max-turns", type=int, default=60)
    p.add_argument("--plant", action="store_true", help="also compare on a copy with planted secrets")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/sft-bench-ab"))
    p.add_argument("--job", type=Path)
    p.add_argument("--work", type=Path)
    p.add_argument("--settings", default="all-trials")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    if args.mode == "_child":
        sys.stdout.write(child(args.job, args.work, args.settings, args.workers) + "\n")
        return 0
    from benchmarks.bench_convert import make_job

    job = args.work_dir / f"job-{args.trials}"
    make_job(job, args.trials, args.max_turns, 0, 0)
    jobs = [job] + ([plant(job, args.work_dir / f"job-{args.trials}-planted")] if args.plant else [])
    trees = args.trees.split(",")
    differ = False
    for current in jobs:
        for name, _overrides, _secrets in SETTINGS:
            for workers in (1, 2):
                digests = [run_tree(t, current, args.work_dir / "root", name, workers) for t in trees]
                same = len(set(digests)) == 1
                differ |= not same
                sys.stdout.write(
                    f"{'same' if same else 'DIFF'} {current.name} {name} w{workers} "
                    f"{' '.join(d[:16] for d in digests)}\n"
                )
                sys.stdout.flush()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
