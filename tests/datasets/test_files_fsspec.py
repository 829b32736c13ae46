"""sft.datasets.files on any fsspec filesystem: a ``memory://`` path round-trips and holds exactly the bytes a
local write produces; local writes stay atomic (temp file + rename, nothing left beside the target)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kedro.io import DataCatalog, DatasetError

from sft.datasets.files import AtomicJSONDataset, AtomicJSONLinesDataset, AtomicTextDataset

DOC = {"funnel": {"rows_written": 3}, "note": "ünïcode ✓", 7: [1.5, None, True]}
ROWS = [{"a": 1, "b": "x"}, {"a": 2, "b": "ü"}, {"nested": {"k": [1, 2]}}]
TEXT = "# Dataset card\n\nünïcode ✓\n"
CASES: list[tuple[type[Any], Any, Any]] = [
    # (dataset, data saved, data loaded back): JSON keys come back as strings
    (AtomicJSONDataset, DOC, {"funnel": {"rows_written": 3}, "note": "ünïcode ✓", "7": [1.5, None, True]}),
    (AtomicJSONLinesDataset, ROWS, ROWS),
    (AtomicTextDataset, TEXT, TEXT),
]


@pytest.mark.parametrize(("dataset_type", "saved", "loaded"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_memory_path_round_trips_with_the_local_bytes(
    dataset_type: type[Any], saved: Any, loaded: Any, memory_fs: Any, tmp_path: Path
) -> None:
    local = tmp_path / "out" / "file"
    dataset_type(str(local)).save(saved)
    remote = dataset_type("memory://bucket/reports/file")
    assert not remote.exists()
    remote.save(saved)
    assert remote.exists()
    # the bucket / first folder is part of the path (kedro's get_protocol_and_path would drop it)
    assert memory_fs.cat_file("/bucket/reports/file") == local.read_bytes()
    assert remote.load() == loaded
    assert dataset_type(str(local)).load() == loaded
    assert sorted(p.name for p in local.parent.iterdir()) == ["file"]  # no temp file left beside it


def test_missing_files_load_as_empty_or_fail_naming_the_path(memory_fs: Any) -> None:
    assert AtomicJSONLinesDataset("memory://bucket/absent.jsonl", missing_ok=True).load() == []
    with pytest.raises(DatasetError, match=r"memory://bucket/absent\.json does not exist yet"):
        AtomicJSONDataset("memory://bucket/absent.json").load()


def test_local_paths_are_described_and_kept_as_given(tmp_path: Path) -> None:
    ds = AtomicJSONDataset(str(tmp_path / "a.json"))
    assert ds.filepath == tmp_path / "a.json"
    assert "a.json" in str(ds) and "memory://" not in str(ds)
    assert AtomicJSONDataset("rel/dir/a.json").filepath == Path("rel/dir/a.json")
    assert AtomicJSONDataset(f"file://{tmp_path}/b.json").filepath == tmp_path / "b.json"


def test_catalog_entry_on_memory_protocol(memory_fs: Any) -> None:
    catalog = DataCatalog.from_config(
        {
            "funnel": {
                "type": "sft.datasets.files.AtomicJSONDataset",
                "filepath": "memory://runs/x/funnel.json",
            },
            "rows": {
                "type": "sft.datasets.files.AtomicJSONLinesDataset",
                "filepath": "memory://runs/x/r.jsonl",
            },
        }
    )
    catalog.save("funnel", {"ok": True})
    catalog.save("rows", iter(ROWS))  # any iterable, as the pipeline hands over
    assert catalog.load("funnel") == {"ok": True}
    assert catalog.load("rows") == ROWS
    assert memory_fs.cat_file("/runs/x/funnel.json") == b'{\n  "ok": true\n}\n'
