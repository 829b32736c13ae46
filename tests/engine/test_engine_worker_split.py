"""Per-trajectory work moved into the worker (score features, LF body, dedup hash) changes no output byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

import sft.engine.harbor as engine
from sft.core.canonical import Trajectory
from sft.rules.filters import content_hash
from sft.rules.render import render_im_row, render_lf_row
from sft.rules.score import finalize_score, rule_score, scaffold_median_steps, score_features
from sft.sources.harbor.trial import extract_trial
from tests.convert.builders import assistant, call, simple, tool, traj, user
from tests.engine.conftest import engine_config, make_job, make_root, run

ALL = {"instance_status": "all", "exclude_repos_file": ""}


def _crafted() -> list[Trajectory]:
    bash = lambda command, id: call("bash", {"command": command}, id=id)  # noqa: E731
    return [
        simple(),
        traj(user(), assistant("x"), agent_type="subagent"),
        traj(
            user(),
            assistant(calls=[bash("pytest -q", "a"), bash("echo hi > tests/test_x.py", "b")]),
            tool("FAILED", id="a", is_error=True),
            tool("", id="b"),
            assistant(calls=[bash("rm src/a.py", "c")]),
            tool("ok", id="c"),
            assistant(calls=[call("Edit", {"file_path": "src/a.py"}, id="d")]),
            tool("done", id="d"),
            assistant("finished"),
        ),
    ]


def _job_trajectories(job: Path) -> list[Trajectory]:
    found: list[Trajectory] = []
    for trial in sorted(p for p in job.iterdir() if p.is_dir()):
        scaffold = engine.scaffold_of_trial(trial)
        if scaffold is not None:
            found.extend(extract_trial(trial, job, scaffold).trajectories)
    return found


@pytest.mark.parametrize("median", [None, 0.0, 1.0, 2.5, 7.0])
def test_features_then_finalize_equals_rule_score_after_a_json_round_trip(
    small_job: Path, median: float | None
) -> None:
    trajectories = _crafted() + _job_trajectories(small_job)
    assert (
        sum(t.meta.agent_type == "main" for t in trajectories) > 10
    )  # not vacuous: real shapes of 4 scaffolds
    for t in trajectories:
        cached = orjson.loads(orjson.dumps(score_features(t)))  # what the cache entry gives back
        assert finalize_score(cached, median_steps=median) == rule_score(t, median_steps=median), t.uid
    assert finalize_score(None, median_steps=3.0) is None


def test_rows_equal_one_shot_rendering_of_the_kept_trajectories(small_job: Path, tmp_path: Path) -> None:
    """LF rows (body from the worker + _meta from the parent) == render_lf_row of the final trajectory."""
    cfg = engine_config(use_cache=False, **ALL)
    result = engine.convert_job(cfg, small_job, make_root(tmp_path / "root"), num_workers=1, progress=False)
    kept = list(result.kept)
    assert len(kept) == len(result.lf_rows) == len(result.im_rows) > 10
    medians = scaffold_median_steps(kept)
    for trajectory, lf_row, im_row in zip(kept, result.lf_rows, result.im_rows, strict=True):
        expected_score = rule_score(trajectory, median_steps=medians.get(trajectory.meta.scaffold))
        assert trajectory.meta.score == expected_score
        assert lf_row == render_lf_row(trajectory, keep_reasoning=cfg.keeps_reasoning())
        assert im_row == render_im_row(trajectory)
    assert result.kept[0].uid == result.lf_rows[0]["_uid"] and len(result.kept[1:3]) == 2


def test_exact_duplicates_are_dropped_by_the_worker_hash(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", n_trials=6)
    original = sorted(p for p in job.iterdir() if p.is_dir())[0]
    shutil.copytree(original, job / "zzz-copy")  # same conversation under another trial name
    cfg = engine_config(use_cache=False, **ALL)
    result = engine.convert_job(cfg, job, make_root(tmp_path / "root"), num_workers=2, progress=False)
    dupes = [r for r in result.rejects if r["stage"] == "dedup"]
    assert dupes and all(r["trial_name"] == "zzz-copy" and r["reason"] == "exact_duplicate" for r in dupes)
    hashes = [content_hash(t) for t in result.kept]
    assert len(set(hashes)) == len(hashes)
    assert not any(row["_uid"].startswith("zzz-copy#") for row in result.lf_rows)


def test_cached_entry_is_rerendered_for_another_keep_reasoning_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(tmp_path / "job", n_trials=6)
    root = make_root(tmp_path / "root")
    with_reasoning, _ = run(engine_config(**ALL), job, root, tmp_path / "a")
    converted: list[str] = []
    real = engine._convert_trial
    monkeypatch.setattr(engine, "_convert_trial", lambda d, s: converted.append(d.name) or real(d, s))
    no_reasoning = engine_config(keep_reasoning=False, **ALL)
    files, report = run(no_reasoning, job, root, tmp_path / "b")
    assert converted == [] and report["cache"]["hits"] == 6
    clean, _ = run(
        engine_config(use_cache=False, keep_reasoning=False, **ALL),
        job,
        make_root(tmp_path / "r2"),
        tmp_path / "clean",
    )
    assert files == clean
    assert files["lf.json"] != with_reasoning["lf.json"]  # not vacuous: the job has reasoning to drop
    cache = root / "data" / "02_intermediate" / "conversion_cache"
    entries = [engine.TrialOutcome.from_bytes(p.read_bytes()) for p in cache.rglob("*.trial")]
    with_rows = [e for e in entries if e.candidates]
    assert with_rows and all(e.rendered_with_reasoning is False for e in with_rows)
