"""The per-trial conversion cache: keyed by trial content + worker settings, invisible in the output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import sft.engine.harbor as engine
from tests.engine.conftest import N_TRIALS, engine_config, make_job, make_root, run


def _cache(report: dict[str, Any]) -> tuple[int, int]:
    return report["cache"]["hits"], report["cache"]["misses"]


@pytest.fixture
def job(tmp_path: Path) -> Path:
    return make_job(tmp_path / "job")  # per test: some tests edit the job


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the trials actually converted (cache misses), recorded in-process (num_workers=1)."""
    seen: list[str] = []
    real = engine._convert_trial

    def counting(trial_dir: Path, settings: engine.WorkerSettings) -> engine.TrialOutcome:
        seen.append(trial_dir.name)
        return real(trial_dir, settings)

    monkeypatch.setattr(engine, "_convert_trial", counting)
    return seen


def _clean(job: Path, tmp_path: Path, **conversion: Any) -> dict[str, bytes]:
    """Output of a run without any cache (the reference for every cached run)."""
    clean_root = make_root(tmp_path / "clean_root")
    excl = clean_root / "artifacts" / "data" / "excluded_repos.txt"
    excl.write_bytes((tmp_path / "root" / "artifacts" / "data" / "excluded_repos.txt").read_bytes())
    files, _ = run(engine_config(use_cache=False, **conversion), job, clean_root, tmp_path / "clean")
    return files


def test_rerun_on_unchanged_job_converts_nothing_and_writes_the_same_bytes(
    job: Path, root: Path, tmp_path: Path, conversions: list[str]
) -> None:
    first, report = run(engine_config(), job, root, tmp_path / "a")
    assert _cache(report) == (0, N_TRIALS)
    assert len(conversions) == N_TRIALS
    conversions.clear()
    second, report = run(engine_config(), job, root, tmp_path / "b")
    assert conversions == []
    assert _cache(report) == (N_TRIALS, 0)
    assert second == first == _clean(job, tmp_path)
    assert (root / "data" / "02_intermediate" / "conversion_cache").is_dir()


def test_a_changed_trial_file_reconverts_only_that_trial(
    job: Path, root: Path, tmp_path: Path, conversions: list[str]
) -> None:
    run(engine_config(), job, root, tmp_path / "a")
    trials = sorted(p for p in job.iterdir() if p.is_dir())
    logged = [t for t in trials if (t / "agent" / "litellm-trajectory.jsonl").is_file()]
    # 1) a log that gained a byte (a blank line: same conversation, different content hash)
    with (logged[0] / "agent" / "litellm-trajectory.jsonl").open("ab") as fh:
        fh.write(b"\n")
    # 2) a verifier verdict flipped in result.json: the trial must move between output and rejects
    flipped = next(t for t in logged[1:] if orjson.loads((t / "result.json").read_bytes())["verifier_result"])
    result = orjson.loads((flipped / "result.json").read_bytes())
    rewards = result["verifier_result"]["rewards"]
    rewards["reward"] = 0.0 if rewards["reward"] else 1.0
    (flipped / "result.json").write_bytes(orjson.dumps(result))
    conversions.clear()
    files, report = run(engine_config(), job, root, tmp_path / "b")
    assert sorted(conversions) == sorted([logged[0].name, flipped.name])
    assert _cache(report) == (N_TRIALS - 2, 2)
    assert files == _clean(job, tmp_path)


@pytest.mark.parametrize(
    "change",
    [{"drop_tool_errors": True}, {"include_subagents": False}, {"instance_status": "all"}],
    ids=lambda c: next(iter(c)),
)
def test_a_changed_worker_setting_reconverts_every_trial(
    change: dict[str, Any], job: Path, root: Path, tmp_path: Path, conversions: list[str]
) -> None:
    run(engine_config(), job, root, tmp_path / "a")
    conversions.clear()
    files, report = run(engine_config(**change), job, root, tmp_path / "b")
    assert _cache(report) == (0, N_TRIALS)
    assert len(conversions) == N_TRIALS
    assert files == _clean(job, tmp_path, **change)
    conversions.clear()
    _, report = run(engine_config(**change), job, root, tmp_path / "c")  # and that result is cached in turn
    assert _cache(report) == (N_TRIALS, 0) and conversions == []


def test_a_changed_exclusion_list_reconverts_every_trial(
    job: Path, root: Path, tmp_path: Path, conversions: list[str]
) -> None:
    first, _ = run(engine_config(), job, root, tmp_path / "a")
    excl = root / "artifacts" / "data" / "excluded_repos.txt"
    excl.write_text(excl.read_text() + "\nacme/widgets\n")
    conversions.clear()
    files, report = run(engine_config(), job, root, tmp_path / "b")
    assert _cache(report) == (0, N_TRIALS)
    assert files == _clean(job, tmp_path)
    assert files != first  # the new entry removed acme/widgets rows from the output
    assert b"acme__widgets" in files["rejects.jsonl"] and b"acme__widgets" not in files["lf.json"]


def test_parent_only_settings_keep_the_cache(
    job: Path, root: Path, tmp_path: Path, conversions: list[str]
) -> None:
    """Selection, caps, dedup and rendering run in the parent on cached outcomes: no trial is re-read."""
    run(engine_config(), job, root, tmp_path / "a")
    conversions.clear()
    change = {"max_instances": 2, "seed": 3, "dedup": False, "keep_reasoning": False}
    files, report = run(engine_config(**change), job, root, tmp_path / "b")
    assert conversions == [] and _cache(report) == (N_TRIALS, 0)
    assert report["funnel"]["instances_selected"] == 2
    assert files == _clean(job, tmp_path, **change)


def test_added_trials_are_the_only_ones_converted_and_the_output_matches_a_clean_run(
    tmp_path: Path, root: Path, conversions: list[str]
) -> None:
    job = make_job(tmp_path / "job", n_trials=N_TRIALS)
    run(engine_config(), job, root, tmp_path / "a")
    before = {p.name for p in job.iterdir() if p.is_dir()}
    make_job(job, n_trials=N_TRIALS + 4)  # same seed: the first trials are byte-identical, 4 are new
    added = sorted(p.name for p in job.iterdir() if p.is_dir() and p.name not in before)
    assert len(added) == 4
    conversions.clear()
    incremental, report = run(engine_config(), job, root, tmp_path / "b", workers=2)
    assert _cache(report) == (N_TRIALS, 4)
    assert report["funnel"]["trials_found"] == N_TRIALS + 4
    assert incremental == _clean(job, tmp_path)


def test_a_damaged_cache_entry_is_recomputed(job: Path, root: Path, tmp_path: Path) -> None:
    first, _ = run(engine_config(), job, root, tmp_path / "a")
    entries = sorted((root / "data" / "02_intermediate" / "conversion_cache").rglob("*.trial"))
    assert len(entries) == N_TRIALS
    entries[0].write_bytes(b"{not json")
    files, report = run(engine_config(), job, root, tmp_path / "b")
    assert _cache(report) == (N_TRIALS - 1, 1)
    assert files == first


def _hashed_trials(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Trials whose bytes were read to compute their content hash (in-process, num_workers=1)."""
    from sft.engine import trial_index

    hashed: list[str] = []
    real = trial_index._hash_trial
    monkeypatch.setattr(trial_index, "_hash_trial", lambda d: hashed.append(d.name) or real(d))
    return hashed


def test_a_rerun_on_an_aged_unchanged_job_reads_no_trial_bytes(
    job: Path, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat index proves a trial unchanged without reading it; off, every trial is hashed again."""
    from sft.engine import trial_index

    # The job was written just now; a real job is older than the index's racy margin (ctime cannot be aged).
    monkeypatch.setattr(trial_index, "RACY_MARGIN_NS", 0)
    first, _ = run(engine_config(), job, root, tmp_path / "a")
    hashed = _hashed_trials(monkeypatch)
    files, report = run(engine_config(), job, root, tmp_path / "b")
    assert hashed == [] and _cache(report) == (N_TRIALS, 0) and files == first
    files, report = run(engine_config(cache_trust_file_stats=False), job, root, tmp_path / "c")
    assert len(hashed) == N_TRIALS and _cache(report) == (N_TRIALS, 0) and files == first
