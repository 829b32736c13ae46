"""Parallel conversion writes exactly the bytes a single worker writes (issue 7: deterministic order)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sft.engine.harbor as engine
from tests.engine.conftest import N_TRIALS, engine_config, make_root, run


def test_two_workers_write_the_same_lf_im_and_reject_bytes_as_one(small_job: Path, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    cfg = engine_config(use_cache=False)
    single, single_report = run(cfg, small_job, root, tmp_path / "one", workers=1)
    parallel, parallel_report = run(cfg, small_job, root, tmp_path / "two", workers=2)
    assert parallel == single
    assert parallel_report["workers"] == 2 and single_report["workers"] == 1
    # the comparison is not vacuous: rows, IM lines and rejects (outcome + exclusion) are all present
    assert single["lf.json"].count(b"\n") > 3
    assert single["im.jsonl"].strip() and single["rejects.jsonl"].strip()
    reasons = single_report["rejects_by_reason"]
    assert any(r.startswith("outcome:") for r in reasons) and "repo_exclusion:excluded_repo" in reasons
    assert single_report["funnel"]["trials_found"] == N_TRIALS


@pytest.mark.parametrize("chunk", [1, 3], ids=["one-trial-tasks", "chunked-tasks"])
def test_every_trial_is_parsed_in_parallel_when_no_filter_applies(
    small_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(engine, "MAX_CHUNK_TRIALS", chunk)
    monkeypatch.setattr(engine, "MIN_CHUNKS_PER_WORKER", 1)  # chunks of `chunk` trials even on this small job
    monkeypatch.setattr(engine, "WINDOW_PER_WORKER", 1)  # results wait for a slower earlier chunk
    root = make_root(tmp_path / "root")
    cfg = engine_config(use_cache=False, instance_status="all", exclude_repos_file="")
    single, report = run(cfg, small_job, root, tmp_path / "one", workers=1)
    parallel, _ = run(cfg, small_job, root, tmp_path / "two", workers=2)
    assert parallel == single
    assert report["funnel"]["trials_parsed"] == N_TRIALS
    assert report["cache"] == {"enabled": False, "hits": 0, "misses": 0}


def test_filtered_trials_are_rejected_before_their_logs_are_read(small_job: Path, tmp_path: Path) -> None:
    """Outcome and repo-exclusion filters need only result.json: such trials are never parsed."""
    root = make_root(tmp_path / "root")
    _, report = run(engine_config(use_cache=False), small_job, root, tmp_path / "out")
    funnel = report["funnel"]
    filtered = (funnel["trials_found"] - funnel["trials_outcome_kept"]) + funnel["trials_repo_excluded"]
    assert filtered > 0
    assert funnel["trials_parsed"] == funnel["trials_found"] - filtered
    assert report["sources_used"] and sum(report["sources_used"].values()) == funnel["trials_parsed"]
