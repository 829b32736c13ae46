"""Secret-scrubbing throughput: ``scrub_trajectory`` over two corpora, optionally against another version.

Corpora (built once, the same for every scrubber measured):

- ``generated``: the conversations of a job from the repo's job generator (``tests.support.jobgen``), the
  shape the convert pipeline sees (tool outputs, reasoning, tool arguments, tool schemas);
- ``source-files``: trajectories whose tool outputs are real Python files of the installed environment
  (site-packages), i.e. what an agent's ``cat`` returns: URLs, ``token``/``aws``/``key`` words and
  base64 blobs occur as in real transcripts, so the pre-check is exercised on realistic text.

    python -m benchmarks.bench_secrets                                # the current sft.rules.secrets
    python -m benchmarks.bench_secrets --against /tmp/secrets_old.py  # A/B against a saved copy

Each scrubber is timed ``--repeats`` times per corpus, interleaved (alternating which goes first), in CPU
seconds of this process, and the best time is kept (the machine is shared; the minimum is the least
disturbed run). Throughput is MB of message text per CPU second.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: tests.support is not packaged
from sft.core.canonical import Message, Trajectory, TrajectoryMeta

CREDENTIALS = ["4f0c2d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d", "hf_RunOwnTokenZZ9yX8wV7uT6sR5qP4oN3mL2k"]


def _meta(name: str) -> TrajectoryMeta:
    return TrajectoryMeta(
        instance_id=name,
        repo="bench/bench",
        trial_name=name,
        scaffold="claude-code",
        source_kind="atif",
        source_file="agent/trajectory.json",
    )


def generated_corpus(n_trials: int) -> list[Trajectory]:
    from tests.support.jobgen import generate_job

    with tempfile.TemporaryDirectory() as tmp:
        job = generate_job(Path(tmp) / "job", n_trials=n_trials, seed=7, max_turns=60)
    return [
        Trajectory(messages=conv.messages, tools=conv.tools, meta=_meta(name))
        for name, convs in sorted(job.truth.items())
        for conv in convs
    ]


def source_file_corpus(n_files: int, files_per_traj: int = 20) -> list[Trajectory]:
    site = Path(json.__file__).parent  # stdlib first (always there), then site-packages
    roots = [p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()] + [site]
    files: list[Path] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.stat().st_size > 200:
                files.append(path)
            if len(files) >= n_files:
                break
        if len(files) >= n_files:
            break
    trajs = []
    for start in range(0, len(files), files_per_traj):
        messages = [Message(role="user", content="Read the sources and fix the bug.")]
        for path in files[start : start + files_per_traj]:
            messages.append(Message(role="assistant", content=f"Reading {path.name}."))
            messages.append(Message(role="tool", content=path.read_text(encoding="utf-8", errors="replace")))
        trajs.append(Trajectory(messages=messages, tools=[], meta=_meta(f"src{start}")))
    return trajs


def _size_mb(trajs: list[Trajectory]) -> float:
    return sum(len(m.content) + len(m.reasoning_content) for t in trajs for m in t.messages) / 1e6


def _load(path: str | None) -> ModuleType:
    if path is None:
        import sft.rules.secrets as current

        return current
    spec = importlib.util.spec_from_file_location(f"bench_secrets_{Path(path).stem}", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _time(module: ModuleType, trajs: list[Trajectory]) -> tuple[float, dict[str, int]]:
    scrubber = module.SecretScrubber(CREDENTIALS)
    start = time.process_time()  # CPU time of this process: less disturbed by other load than wall time
    for traj in trajs:
        module.scrub_trajectory(traj, scrubber)
    return time.process_time() - start, scrubber.counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", help="path of another secrets.py to compare with (e.g. a saved old copy)")
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    corpora = {"generated": generated_corpus(args.trials), "source-files": source_file_corpus(args.files)}
    scrubbers = {"current": _load(None)}
    if args.against:
        scrubbers["against"] = _load(args.against)
    results: dict[str, Any] = {}
    for corpus, trajs in corpora.items():
        mb = _size_mb(trajs)
        best = {name: float("inf") for name in scrubbers}
        counts: dict[str, dict[str, int]] = {}
        for repeat in range(args.repeats):
            order = list(scrubbers.items())
            for name, module in order if repeat % 2 == 0 else order[::-1]:  # alternate who goes first
                seconds, counts[name] = _time(module, trajs)
                best[name] = min(best[name], seconds)
        for name in scrubbers:
            results[f"{corpus}/{name}"] = {
                "trajectories": len(trajs),
                "mb": round(mb, 2),
                "best_s": round(best[name], 4),
                "mb_per_s": round(mb / best[name], 1),
                "hits": counts[name],
            }
            print(
                f"{corpus:13s} {name:8s} {len(trajs):5d} trajs {mb:7.1f} MB  best {best[name]:.3f}s  "
                f"{mb / best[name]:7.1f} MB/s  hits {counts[name]}"
            )
        if "against" in best:
            print(f"{corpus:13s} current / against time: {best['current'] / best['against']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
