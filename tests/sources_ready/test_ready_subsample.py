"""max_instances > 0: a seeded subsample without replacement, written so the registered data is exactly what
is trained on; never num_samples for data we can read."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.engine.ready import prepare_local_file, seeded_subsample
from tests.sources_ready.conftest import sharegpt_row, write_json


def _tasks(result: Any) -> list[str]:
    return [r["conversations"][0]["value"] for r in result.lf_rows]


@pytest.fixture
def twenty(tmp_path: Path) -> Path:
    return write_json(tmp_path / "twenty.json", [sharegpt_row(i) for i in range(20)])


def test_same_seed_gives_the_same_rows(twenty: Path, proj: Path, local_settings: Any) -> None:
    first = prepare_local_file(
        twenty, local_settings(twenty, max_instances=5, seed=7), proj, credentials=Credentials()
    )
    second = prepare_local_file(
        twenty, local_settings(twenty, max_instances=5, seed=7), proj, credentials=Credentials()
    )
    assert _tasks(first) == _tasks(second)
    assert first.funnel["selection"] == second.funnel["selection"]
    assert len(_tasks(first)) == 5 and len(set(_tasks(first))) == 5


def test_different_seed_gives_different_rows(twenty: Path, proj: Path, local_settings: Any) -> None:
    a = prepare_local_file(
        twenty, local_settings(twenty, max_instances=5, seed=1), proj, credentials=Credentials()
    )
    b = prepare_local_file(
        twenty, local_settings(twenty, max_instances=5, seed=2), proj, credentials=Credentials()
    )
    assert set(_tasks(a)) != set(_tasks(b))


def test_subsample_is_in_file_order_recorded_and_registered_as_a_copy(
    twenty: Path, proj: Path, local_settings: Any
) -> None:
    result = prepare_local_file(
        twenty, local_settings(twenty, max_instances=6, seed=3), proj, credentials=Credentials()
    )
    chosen = result.funnel["selection"]["rows"]
    assert chosen == sorted(chosen) and len(chosen) == 6
    assert _tasks(result) == [f"task {i}" for i in chosen]
    assert result.funnel["selection"] | {"rows": None, "rows_sha256": None} == {
        "seed": 3,
        "n": 6,
        "available": 20,
        "selected": 6,
        "drawn_by": "sft",
        "with_replacement": False,
        "rows": None,
        "rows_sha256": None,
    }
    assert result.funnel["funnel"]["rows_selected"] == result.funnel["funnel"]["rows_written"] == 6
    registration = result.funnel["registration"]
    assert registration["registered"] == "filtered_copy"
    assert registration["entry"]["file_name"] == str(
        proj / "artifacts" / "data" / "lf_data" / "ready_test.json"
    )
    assert "num_samples" not in json.dumps(result.funnel)
    assert result.rejects == []  # rows not drawn are not errors: they are counted in the funnel


def test_more_than_available_keeps_every_row_once_with_a_warning(
    twenty: Path, proj: Path, local_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sft.engine.ready"):
        result = prepare_local_file(
            twenty, local_settings(twenty, max_instances=50), proj, credentials=Credentials()
        )
    assert _tasks(result) == [f"task {i}" for i in range(20)]
    assert "max_instances=50 exceeds the 20 usable row(s): every row is used once" in caplog.text
    assert "every row is used once" in result.funnel["selection"]["warning"]
    assert result.funnel["registration"]["registered"] == "original_file"
    assert "num_samples" not in result.funnel["registration"]["entry"]


def test_subsample_draws_among_valid_rows_only(tmp_path: Path, proj: Path, local_settings: Any) -> None:
    bad = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
    path = write_json(
        tmp_path / "some_bad.json", [bad, sharegpt_row(1), bad, sharegpt_row(3), sharegpt_row(4)]
    )
    result = prepare_local_file(path, local_settings(path, max_instances=3), proj, credentials=Credentials())
    assert sorted(_tasks(result)) == ["task 1", "task 3", "task 4"]
    assert result.funnel["selection"]["available"] == 3


def test_seeded_subsample_unit() -> None:
    assert seeded_subsample(4, 0, 1) == ([0, 1, 2, 3], None)
    assert seeded_subsample(4, -1, 1) == ([0, 1, 2, 3], None)
    assert seeded_subsample(4, 4, 1) == ([0, 1, 2, 3], None)
    picked, warning = seeded_subsample(1000, 10, 5)
    assert warning is None and len(set(picked)) == 10 and picked == sorted(picked)
    assert seeded_subsample(1000, 10, 5)[0] == picked
