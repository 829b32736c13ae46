"""sft.datasets.llamafactory on any fsspec filesystem: the LLaMA-Factory rows (JSON array + Parquet copy) and
``dataset_info.json`` round-trip on ``memory://`` (so s3:// and gs:// take the same code path) with exactly the
bytes a local write produces, and local writes keep the bytes of the path-only writers they replaced (the
literals below were produced by that code, commit f415de8, on the same rows)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from kedro.io import DataCatalog, DatasetError

from sft.core.spool import Spool, SpooledRows, spool_row
from sft.datasets.llamafactory import DatasetInfoDataset, LlamaFactoryDataset, write_json_array, write_parquet

ROWS: list[dict[str, Any]] = [
    {
        "conversations": [{"from": "human", "value": "hi ü"}, {"from": "gpt", "value": "yo ✓"}],
        "system": "s",
        "tools": "",
    },
    {
        "conversations": [{"from": "human", "value": "2"}, {"from": "gpt", "value": "x"}],
        "system": None,
        "tools": "[]",
    },
]
# One row per line, as LlamaFactoryDataset wrote before fsspec (report readers rely on this layout).
ROWS_JSON = (
    b"[\n"
    b'{"conversations":[{"from":"human","value":"hi \xc3\xbc"},{"from":"gpt","value":"yo \xe2\x9c\x93"}],'
    b'"system":"s","tools":""},\n'
    b'{"conversations":[{"from":"human","value":"2"},{"from":"gpt","value":"x"}],"system":null,"tools":"[]"}\n'
    b"]\n"
)
INFO_JSON = (
    '{\n    "a": {\n        "file_name": "a.json"\n    },\n'
    '    "b": {\n        "file_name": "b.json",\n        "note": "ü"\n    }\n}\n'
).encode()


def _spooled(tmp_path: Path) -> SpooledRows:
    spool = Spool(tmp_path / "spool")
    return SpooledRows(spool, [spool_row(spool, orjson.dumps(row)) for row in ROWS])


def test_local_lf_files_keep_their_bytes_and_leave_no_temp_files(tmp_path: Path) -> None:
    LlamaFactoryDataset(str(tmp_path / "lf" / "d.json")).save(ROWS)
    LlamaFactoryDataset(str(tmp_path / "lf" / "e.json"), parquet=False).save([])
    assert (tmp_path / "lf" / "d.json").read_bytes() == ROWS_JSON
    assert (tmp_path / "lf" / "e.json").read_bytes() == b"[]\n"
    assert pq.read_table(tmp_path / "lf" / "d.parquet").to_pylist() == ROWS
    assert sorted(p.name for p in (tmp_path / "lf").iterdir()) == ["d.json", "d.parquet", "e.json"]


@pytest.mark.parametrize("spooled", [False, True], ids=["list", "spooled"])
def test_lf_dataset_on_memory_holds_the_local_bytes(
    spooled: bool, memory_fs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "sft.datasets.llamafactory.PARQUET_BATCH_BYTES", 100
    )  # spooled: one row group per row
    rows = _spooled(tmp_path) if spooled else ROWS
    LlamaFactoryDataset(str(tmp_path / "d.json")).save(rows)
    remote = LlamaFactoryDataset("memory://bucket/lf/d.json")
    assert not remote.exists()
    remote.save(rows)
    assert remote.exists()
    assert remote.parquet_path.as_posix() == "/bucket/lf/d.parquet"
    assert memory_fs.cat_file("/bucket/lf/d.json") == (tmp_path / "d.json").read_bytes() == ROWS_JSON
    assert memory_fs.cat_file("/bucket/lf/d.parquet") == (tmp_path / "d.parquet").read_bytes()
    assert pq.read_table(io.BytesIO(memory_fs.cat_file("/bucket/lf/d.parquet"))).to_pylist() == ROWS
    assert remote.load() == ROWS
    assert str(remote).count("memory://bucket/lf/d.json") == 1


def test_lf_dataset_loads_json_lines_from_memory_and_names_a_missing_file(memory_fs: Any) -> None:
    memory_fs.pipe_file("/bucket/in.jsonl", b"".join(orjson.dumps(r) + b"\n" for r in ROWS) + b"\n")
    assert LlamaFactoryDataset("memory://bucket/in.jsonl").load() == ROWS
    with pytest.raises(DatasetError, match=r"memory://bucket/none\.json does not exist yet: run `kedro run"):
        LlamaFactoryDataset("memory://bucket/none.json").load()
    LlamaFactoryDataset("memory://bucket/np.json", parquet=False).save(ROWS)
    assert not memory_fs.exists("/bucket/np.parquet")


def test_writers_take_a_binary_file_or_a_local_path(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    assert write_json_array(buffer, ROWS) == 2
    assert write_json_array(tmp_path / "a.json", ROWS) == 2
    assert buffer.getvalue() == (tmp_path / "a.json").read_bytes() == ROWS_JSON
    for rows in (ROWS, _spooled(tmp_path)):
        buffer = io.BytesIO()
        write_parquet(buffer, rows)
        write_parquet(str(tmp_path / "a.parquet"), rows)
        assert buffer.getvalue() == (tmp_path / "a.parquet").read_bytes()
        assert pq.read_table(tmp_path / "a.parquet").to_pylist() == ROWS


def test_credentials_and_fs_args_reach_the_filesystem(memory_fs: Any) -> None:
    catalog = DataCatalog.from_config(
        {
            "lf_dataset": {
                "type": "sft.datasets.llamafactory.LlamaFactoryDataset",
                "filepath": "memory://bucket/x/d.json",
                "credentials": {"key": "K"},
                "fs_args": {"region": "R"},
            },
            "dataset_info": {
                "type": "sft.datasets.llamafactory.DatasetInfoDataset",
                "filepath": "memory://bucket/x/dataset_info.json",
            },
        }
    )
    catalog.save("lf_dataset", ROWS)
    catalog.save("dataset_info", {"d": {"file_name": "d.json"}})
    assert catalog.load("lf_dataset") == ROWS
    assert catalog.load("dataset_info") == {"d": {"file_name": "d.json"}}
    dataset = LlamaFactoryDataset("memory://b/d.json", credentials={"key": "K"}, fs_args={"region": "R"})
    assert dataset._fs.storage_options == {"key": "K", "region": "R"}


def test_dataset_info_merges_with_the_local_bytes(memory_fs: Any, tmp_path: Path) -> None:
    local = DatasetInfoDataset(str(tmp_path / "dataset_info.json"))
    remote = DatasetInfoDataset("memory://bucket/lf/dataset_info.json")
    assert remote.load() == {} and not remote.exists()
    for dataset in (local, remote):
        dataset.save({"a": {"file_name": "a.json"}})
        dataset.save({"b": {"file_name": "b.json", "note": "ü"}})  # merged, not replaced
    assert (tmp_path / "dataset_info.json").read_bytes() == INFO_JSON
    assert memory_fs.cat_file("/bucket/lf/dataset_info.json") == INFO_JSON
    assert (
        remote.load()
        == local.load()
        == {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json", "note": "ü"}}
    )
    # the local merge runs under <file>.lock; an object store has no lock (and no lock object is left there)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json", "dataset_info.json.lock"]
    assert memory_fs.find("/bucket") == ["/bucket/lf/dataset_info.json"]


def test_dataset_info_errors_name_the_remote_file(memory_fs: Any) -> None:
    memory_fs.pipe_file("/bucket/bad.json", b"{not json")
    with pytest.raises(
        DatasetError, match=r"memory://bucket/bad\.json: not valid JSON .*Fix or delete the file"
    ):
        DatasetInfoDataset("memory://bucket/bad.json").save({"x": {}})
    memory_fs.pipe_file("/bucket/list.json", b"[1]")
    with pytest.raises(DatasetError, match=r"memory://bucket/list\.json: expected a JSON object"):
        DatasetInfoDataset("memory://bucket/list.json").load()
    assert memory_fs.cat_file("/bucket/bad.json") == b"{not json"  # a failed merge writes nothing


def test_lf_dataset_table_entry_reads_the_parquet_copy_as_a_dataframe(memory_fs: Any, tmp_path: Path) -> None:
    catalog_yml = Path(__file__).resolve().parents[2] / "conf" / "base" / "catalog.yml"
    entries = yaml.safe_load(catalog_yml.read_text(encoding="utf-8"))
    entry = entries["lf_dataset_table"]
    assert entry["type"] == "pandas.ParquetDataset"  # kedro-datasets'
    assert entry["filepath"] == "${cfg:paths.lf_parquet}"
    assert Path(entries["lf_dataset"]["filepath"].replace("lf_json", "lf_parquet")) == Path(entry["filepath"])
    # memory:/// (three slashes): kedro's path parsing drops a memory:// URL's first folder (s3/gs keep the bucket)
    for where in (str(tmp_path / "lf" / "d.json"), "memory:///bucket/lf/d.json"):
        LlamaFactoryDataset(where).save(ROWS)
        catalog = DataCatalog.from_config(
            {"lf_dataset_table": {**entry, "filepath": where[: -len(".json")] + ".parquet"}}
        )
        table = catalog.load("lf_dataset_table")
        assert table.shape == (2, 3) and list(table.columns) == ["conversations", "system", "tools"]
        assert table["system"].tolist() == ["s", None]
        assert table["conversations"][0].tolist() == ROWS[0]["conversations"]
