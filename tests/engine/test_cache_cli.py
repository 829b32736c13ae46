"""`sft cache`: entries are touched on use, pruned by last use, and a pruned trial is simply recomputed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sft.config.paths import conversion_cache_dir
from sft.engine.cache_cli import CacheFiles, main
from tests.engine.conftest import N_TRIALS, engine_config, make_job, make_root, run

DAY_S = 86_400


def _age(paths: list[Path], days: float) -> None:
    then = time.time() - days * DAY_S
    for path in paths:
        os.utime(path, (then, then))


def test_prune_removes_only_entries_unused_for_n_days_and_a_pruned_trial_is_recomputed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, root = make_job(tmp_path / "job"), make_root(tmp_path / "root")
    first, _ = run(engine_config(), job, root, tmp_path / "a")
    cache = conversion_cache_dir(root)
    results = CacheFiles.scan(cache).results
    assert len(results) == N_TRIALS

    _age(results, 40)
    _, report = run(engine_config(), job, root, tmp_path / "b")  # every trial hits: each entry is touched
    assert report["cache"]["hits"] == N_TRIALS
    assert all(time.time() - p.stat().st_mtime < DAY_S for p in results)

    _age(results[:5], 40)
    assert main(["--project", str(root), "prune", "--unused-days", "30", "--dry-run"]) == 0
    assert "would remove 5 cache entries" in capsys.readouterr().out and all(p.exists() for p in results)
    assert main(["--project", str(root), "prune", "--unused-days", "30"]) == 0
    assert "removed 5 cache entries" in capsys.readouterr().out
    assert sorted(CacheFiles.scan(cache).results) == sorted(results[5:])

    files, report = run(engine_config(), job, root, tmp_path / "c")
    assert (report["cache"]["hits"], report["cache"]["misses"]) == (N_TRIALS - 5, 5) and files == first


def test_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job, root = make_job(tmp_path / "job", n_trials=3), make_root(tmp_path / "root")
    run(engine_config(), job, root, tmp_path / "a")
    assert main(["--project", str(root), "info"]) == 0
    out = capsys.readouterr().out
    assert "results: 3 entries" in out and "stat index: 3 entries" in out and "last used" in out
    assert main(["--project", str(root), "clear"]) == 0
    assert not conversion_cache_dir(root).exists()
    assert main(["--project", str(root), "info"]) == 0
    assert "results: 0 entries" in capsys.readouterr().out


def test_a_negative_age_is_refused_with_the_option_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--project", str(tmp_path), "prune", "--unused-days", "-1"])
    assert "--unused-days -1" in capsys.readouterr().err
