"""Write the bundled demo Harbor job, or a synthetic job of any size for benchmarks.

    python scripts/make_demo_job.py --out data/01_raw/demo_job                 # the 16-trial demo job
    python scripts/make_demo_job.py --out DIR --per-scaffold                    # demo as one job per scaffold
    python scripts/make_demo_job.py --out DIR --trials 2000 --max-turns 40 --big-mb 2048 --seed 1

Deterministic: the same arguments give byte-identical files. See tests.support.jobgen for what is covered.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: tests.support is not packaged
from tests.support.jobgen import (
    SCAFFOLDS,
    generate_demo_job,
    generate_demo_jobs,
    generate_job,
    payload_for_target,
)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="job dir to write (replaced if it exists)")
    parser.add_argument(
        "--trials", type=int, default=None, help="random job with N trials (default: the demo job)"
    )
    parser.add_argument("--max-turns", type=int, default=8, help="max assistant turns per trial (2..200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--big-mb", type=float, default=0.0, help="pad tool outputs so the job reaches ~M MB")
    parser.add_argument(
        "--payload-bytes", type=int, default=0, help="padding per tool output (overrides --big-mb)"
    )
    parser.add_argument("--scaffolds", default=",".join(SCAFFOLDS), help="comma list for --trials jobs")
    parser.add_argument(
        "--per-scaffold", action="store_true", help="demo only: one job per scaffold under --out"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    started = time.perf_counter()
    if args.trials is None:
        if args.per_scaffold:
            jobs = list(generate_demo_jobs(args.out, seed=args.seed).values())
        else:
            jobs = [generate_demo_job(args.out, seed=args.seed)]
    else:
        payload = args.payload_bytes or payload_for_target(
            int(args.big_mb * 2**20), args.trials, args.max_turns
        )
        scaffolds = tuple(s.strip() for s in args.scaffolds.split(",") if s.strip())
        jobs = [
            generate_job(
                args.out,
                n_trials=args.trials,
                seed=args.seed,
                max_turns=args.max_turns,
                scaffolds=scaffolds,
                payload_bytes=payload,
                with_truth=False,
            )
        ]
    elapsed = time.perf_counter() - started
    for job in jobs:
        print(
            f"{job.job_dir}: {len(job.trials)} trials, {job.bytes_written / 2**20:.2f} MB, scaffolds {list(job.scaffolds)}"
        )
    print(f"done in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
