"""Status rules, log parsing and run discovery edge cases (sft.dashboard.runs)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from sft.dashboard.runs import (
    IndexEntry,
    JsonlFollower,
    RunStore,
    decide_status,
    estimate_eta,
    merge_series,
    parse_duration,
    tail_text,
)
from sft.dashboard.safety import ProjectFiles
from tests.dashboard.fake_project import FINISHED, LIVE, FakeProject, age, log_line, write_yaml

NOW = 1_750_000_000.0


def entry(status: str, completed_at: str | None = "2025-06-15T15:06:40Z") -> IndexEntry:
    return IndexEntry(
        id="run_009",
        status=status,
        started_at=None,
        completed_at=completed_at,
        notes="",
        archive_dir=None,
        output_name="r",
        run_name="r",
        training_log=None,
        metadata={},
    )


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # running: fresh log below 100 %
        ({"log_mtime": NOW - 60, "percentage": 40.0, "results_mtime": None, "entry": None}, "running"),
        # 3 minutes is the limit
        ({"log_mtime": NOW - 181, "percentage": 40.0, "results_mtime": None, "entry": None}, "unknown"),
        # a fresh log at 100 % is not running
        ({"log_mtime": NOW - 10, "percentage": 100.0, "results_mtime": None, "entry": None}, "finished"),
        # results file = finished
        (
            {"log_mtime": NOW - 9000, "percentage": 50.0, "results_mtime": NOW - 9000, "entry": None},
            "finished",
        ),
        # index says failed / interrupted
        (
            {"log_mtime": NOW - 9000, "percentage": 50.0, "results_mtime": None, "entry": entry("failed")},
            "failed",
        ),
        (
            {
                "log_mtime": NOW - 9000,
                "percentage": 50.0,
                "results_mtime": None,
                "entry": entry("interrupted"),
            },
            "interrupted",
        ),
        # index says completed without a results file
        (
            {"log_mtime": NOW - 9000, "percentage": 50.0, "results_mtime": None, "entry": entry("completed")},
            "finished",
        ),
        # no log at all, index only
        ({"log_mtime": None, "percentage": None, "results_mtime": None, "entry": entry("failed")}, "failed"),
        ({"log_mtime": None, "percentage": None, "results_mtime": None, "entry": None}, "unknown"),
    ],
)
def test_decide_status(kwargs: dict, expected: str) -> None:
    status, reason = decide_status(now=NOW, **kwargs)
    assert status == expected, reason


def test_a_resumed_run_is_running_again_after_its_failed_entry() -> None:
    failed_an_hour_ago = entry("failed", completed_at=iso(NOW - 3600))
    status, _ = decide_status(
        now=NOW, log_mtime=NOW - 20, percentage=60.0, results_mtime=None, entry=failed_an_hour_ago
    )
    assert status == "running"


def test_a_log_written_before_the_failure_was_recorded_is_not_running() -> None:
    failed_just_now = entry("failed", completed_at=iso(NOW - 5))
    status, _ = decide_status(
        now=NOW, log_mtime=NOW - 30, percentage=60.0, results_mtime=None, entry=failed_just_now
    )
    assert status == "failed"


def test_results_written_after_a_failed_attempt_mean_finished() -> None:
    status, _ = decide_status(
        now=NOW,
        log_mtime=NOW - 9000,
        percentage=100.0,
        results_mtime=NOW - 100,
        entry=entry("failed", completed_at=iso(NOW - 5000)),
    )
    assert status == "finished"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0:00:02", 2.0),
        ("12:03:04", 43384.0),
        ("1 day, 2:00:00", 93600.0),
        ("3 days, 0:00:01", 259201.0),
        (12.5, 12.5),
        ("soon", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_duration(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_merge_series_prefers_the_later_line_of_a_resumed_step() -> None:
    rows = [log_line(s, 10, loss=2.0) for s in (1, 2, 3)] + [
        log_line(3, 10, loss=1.5),
        log_line(4, 10, loss=1.4),
    ]
    merged = merge_series(rows, None)
    assert [r["step"] for r in merged] == [1, 2, 3, 4]
    assert merged[2]["loss"] == 1.5


def test_merge_series_adds_eval_points_from_trainer_state() -> None:
    rows = [log_line(s, 10, loss=2.0) for s in (1, 2)]
    history = [
        {"step": 1, "loss": 2.0, "grad_norm": 0.7, "learning_rate": 1e-5, "epoch": 0.1},
        {"step": 2, "eval_loss": 1.9, "epoch": 0.2},
        {"step": 2, "train_loss": 1.8, "train_runtime": 10.0},
    ]
    merged = merge_series(rows, history)
    assert merged[0]["grad_norm"] == 0.7
    assert merged[1]["eval_loss"] == 1.9 and merged[1]["loss"] == 2.0


def test_merge_series_uses_log_history_when_there_is_no_log() -> None:
    history = [
        {"step": s, "loss": 3.0 - s / 10, "grad_norm": 1.0, "learning_rate": 1e-5, "epoch": s / 10}
        for s in range(1, 6)
    ]
    merged = merge_series([], history)
    assert [r["loss"] for r in merged] == [2.9, 2.8, 2.7, 2.6, 2.5]


def test_eta_is_median_step_time_times_steps_left() -> None:
    rows = merge_series([log_line(s, 100, loss=1.0, seconds_per_step=30.0) for s in range(1, 11)], None)
    assert estimate_eta(rows, 100) == 90 * 30.0
    assert estimate_eta([], 100) is None


def test_follower_reads_only_appended_lines_and_restarts_on_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    path.write_text(json.dumps({"current_steps": 1}) + "\n" + "{not json}\n")
    follower = JsonlFollower(path)
    assert len(follower.read()) == 1 and follower.bad_lines == 1
    with path.open("a") as fh:
        fh.write(json.dumps({"current_steps": 2}) + "\n")
    assert [r["current_steps"] for r in follower.read()] == [1, 2]
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(json.dumps({"current_steps": 7}) + "\n")
    os.replace(replacement, path)  # overwrite_output_dir: a fresh file
    assert [r["current_steps"] for r in follower.read()] == [7]


def test_tail_keeps_last_frame_of_carriage_return_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("a\n 1%|\r 50%|\r100%|\nb\n")
    assert tail_text(log, 10) == (["a", "100%|", "b"], False)


def test_index_entry_is_joined_through_the_archived_output_dir(project: FakeProject) -> None:
    runs, problems = RunStore(ProjectFiles.at(project.root)).discover()
    assert problems == []
    assert [e.id for e in runs[FINISHED].entries] == ["run_001"]
    assert runs["run_003"].model_dir is None


def test_several_attempts_of_one_output_dir_use_the_last(project: FakeProject) -> None:
    index = project.root / "artifacts/index.yaml"
    doc = yaml.safe_load(index.read_text())
    archive = project.root / "artifacts/archives/run_004"
    write_yaml(
        archive / "metadata.yaml",
        {"id": "run_004", "output_dir": str(project.model(FINISHED)), "run_name": FINISHED},
    )
    doc["runs"].append(
        {
            "id": "run_004",
            "started_at": "2030-01-01T00:00:00Z",
            "completed_at": "2030-01-01T01:00:00Z",
            "status": "interrupted",
            "archive": "artifacts/archives/run_004/",
            "notes": "resumed then ^C",
        }
    )
    write_yaml(index, doc)
    store = RunStore(ProjectFiles.at(project.root))
    run = store.get(FINISHED)
    assert run is not None and [e.id for e in run.entries] == ["run_001", "run_004"]
    assert store.summary(run)["status"] == "interrupted"  # recorded after the results file was written


def test_broken_index_is_reported_not_fatal(project: FakeProject) -> None:
    (project.root / "artifacts/index.yaml").write_text("runs: [unclosed\n")
    runs, problems = RunStore(ProjectFiles.at(project.root)).discover()
    assert FINISHED in runs and problems and "index.yaml" in problems[0]


def test_live_run_turns_unknown_when_its_log_goes_quiet(project: FakeProject) -> None:
    store = RunStore(ProjectFiles.at(project.root))
    run = store.get(LIVE)
    assert run is not None and store.summary(run)["status"] == "running"
    age(project.model(LIVE) / "trainer_log.jsonl", 600)
    assert store.summary(run)["status"] == "unknown"
