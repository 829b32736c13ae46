"""The conversion's rows wait on disk (``sft.core.spool``), not in the parent, until they are written."""

from __future__ import annotations

import dataclasses
import os
import tracemalloc
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from sft.core import spool as spool_module
from sft.core.spool import (
    Spool,
    SpooledRows,
    iter_row_bytes,
    open_object_suffix,
    select_rows,
    spool_open_object,
    spool_row,
)
from sft.datasets.files import AtomicJSONLinesDataset
from sft.datasets.llamafactory import LlamaFactoryDataset
from sft.engine.harbor import convert_job
from tests.engine.conftest import engine_config, make_root
from tests.support.jobgen import generate_job

ROWS = [{"a": 1, "text": "x" * 70_000, "uni": "ü😀"}, {"a": 2, "nested": {"k": [1, 2.5, None]}}, {"a": 3}]


def _spooled(tmp_path: Path) -> SpooledRows:
    spool = Spool(tmp_path / "spool")
    refs = [spool_row(spool, orjson.dumps(r), uid=f"t#{i}", instance_id=f"i{i}") for i, r in enumerate(ROWS)]
    return SpooledRows(spool, refs)


def test_spooled_rows_read_back_as_the_rows_they_hold(tmp_path: Path) -> None:
    rows = _spooled(tmp_path)
    assert len(rows) == 3 and rows == ROWS and list(rows) == ROWS
    assert rows[0] == ROWS[0] and rows[-1] == ROWS[2] and rows[1:] == ROWS[1:]
    assert list(iter_row_bytes(rows)) == [orjson.dumps(r) for r in ROWS]
    assert rows.uids == ["t#0", "t#1", "t#2"] and rows.instance_ids == ["i0", "i1", "i2"]
    with pytest.raises(IndexError):
        rows[3]
    assert rows != ROWS[:2]


def test_a_suffix_adds_the_last_member_exactly_as_orjson_would(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    head = orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": []})
    ref = dataclasses.replace(
        spool_open_object(spool, head), suffix=open_object_suffix("meta", {"score": None, "k": "ü"})
    )
    rows = SpooledRows(spool, [ref])
    expected = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [],
        "meta": {"score": None, "k": "ü"},
    }
    assert rows.row_bytes(0) == orjson.dumps(expected)


def test_edited_rows_keep_order_drop_and_replace_without_touching_the_original(tmp_path: Path) -> None:
    rows = _spooled(tmp_path)
    edited = select_rows(rows, [2, 0], {0: {"a": "cut"}})
    assert isinstance(edited, SpooledRows)
    assert list(edited) == [ROWS[2], {"a": "cut"}] and edited.uids == ["t#2", "t#0"]
    assert list(rows) == ROWS
    assert select_rows(list(ROWS), [1], {}) == [ROWS[1]]


def test_the_spool_file_is_never_visible_on_disk(tmp_path: Path) -> None:
    rows = _spooled(tmp_path)
    assert rows[0] == ROWS[0]
    assert os.listdir(tmp_path / "spool") == []  # unlinked at creation: a killed run leaves nothing behind


LF_ROWS = [
    {
        "conversations": [{"from": "human", "value": "ü" * 300}, {"from": "gpt", "value": "ok"}],
        "system": "s",
        "tools": "[]",
        "_uid": f"t#{i}",
        "_meta": "{}",
    }
    for i in range(3)
]


def test_writers_stream_spooled_rows_to_the_same_files_as_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sft.datasets.llamafactory.PARQUET_BATCH_BYTES", 100)  # one row group per row
    spool = Spool(tmp_path / "spool")
    rows = SpooledRows(spool, [spool_row(spool, orjson.dumps(r)) for r in LF_ROWS])
    LlamaFactoryDataset(str(tmp_path / "s.json")).save(rows)
    LlamaFactoryDataset(str(tmp_path / "l.json")).save(list(LF_ROWS))
    assert (tmp_path / "s.json").read_bytes() == (tmp_path / "l.json").read_bytes()
    assert LlamaFactoryDataset(str(tmp_path / "s.json")).load() == LF_ROWS
    streamed = pq.ParquetFile(tmp_path / "s.parquet")
    assert streamed.metadata.num_row_groups == 3
    assert streamed.schema_arrow == pq.read_schema(tmp_path / "l.parquet")
    assert streamed.read().to_pylist() == pq.read_table(tmp_path / "l.parquet").to_pylist() == LF_ROWS
    AtomicJSONLinesDataset(str(tmp_path / "s.jsonl")).save(rows)
    AtomicJSONLinesDataset(str(tmp_path / "l.jsonl")).save(list(LF_ROWS))
    assert (tmp_path / "s.jsonl").read_bytes() == (tmp_path / "l.jsonl").read_bytes()


def test_a_column_that_appears_after_the_schema_rows_is_an_error_not_a_silent_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sft.datasets.llamafactory.SCHEMA_SAMPLE_ROWS", 1)
    rows = _spooled(tmp_path)
    with pytest.raises(Exception, match=r"does not fit the Parquet schema \['a', 'text', 'uni'\]"):
        LlamaFactoryDataset(str(tmp_path / "s.json")).save(rows)
    assert not (tmp_path / "s.parquet").exists()  # atomic: nothing half-written


def test_the_engine_parent_holds_offsets_not_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peak Python memory of the parent stays far below the output it produces: the rows are on disk."""
    job = tmp_path / "job"
    generate_job(job, n_trials=100, max_turns=6, payload_bytes=60_000, seed=3, with_truth=False)
    root = make_root(tmp_path / "root")
    appended: list[int] = []
    real_append = spool_module.Spool.append
    monkeypatch.setattr(
        spool_module.Spool, "append", lambda self, data: appended.append(len(data)) or real_append(self, data)
    )
    tracemalloc.start()
    try:
        result = convert_job(
            engine_config(use_cache=False, instance_status="all"), job, root, num_workers=2, progress=False
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result.lf_rows, SpooledRows) and isinstance(result.im_rows, SpooledRows)
    output = sum(len(b) for b in iter_row_bytes(result.lf_rows)) + sum(
        len(b) for b in iter_row_bytes(result.im_rows)
    )
    assert len(result.lf_rows) >= 4 and output > 5_000_000  # not vacuous: MBs of rows
    assert sum(appended) >= output * 0.9  # the rows went through the spool ...
    # ... and were never all in the parent at once (it held all of them, and more, before the spool)
    assert peak < output / 3, (peak, output)


def test_spooled_rows_refuse_to_cross_processes_with_a_clear_error(tmp_path: Path) -> None:
    import pickle

    with pytest.raises(TypeError, match="SequentialRunner"):
        pickle.dumps(_spooled(tmp_path))


def test_a_full_disk_names_the_spool_directory_and_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    spool = Spool(tmp_path / "spool")

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "pwrite", full)
    with pytest.raises(OSError, match=r"row spool in .*spool \(No space left on device\)") as caught:
        spool.append(b"{}")
    assert caught.value.errno == errno.ENOSPC
