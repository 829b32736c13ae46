"""Catalog datasets for LLaMA-Factory's own file formats.

``LlamaFactoryDataset`` writes the ShareGPT rows as a JSON array (one row per line, so it streams and
diffs well) plus, optionally, a Parquet copy with the same rows; both atomically.
``DatasetInfoDataset`` merges entries into ``dataset_info.json`` under a file lock, so two runs that
register different datasets never lose each other's entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from kedro.io import AbstractDataset, DatasetError

from sft.core.io_utils import atomic_writer, file_lock
from sft.core.spool import SpooledRows, iter_row_bytes


def write_json_array(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as a JSON array, one row per line; returns the row count. Streams: spooled rows are
    copied as bytes, never parsed or held together."""
    count = 0
    with atomic_writer(path) as fh:
        fh.write(b"[")
        for data in iter_row_bytes(rows):
            fh.write(b"\n" if count == 0 else b",\n")
            fh.write(data)
            count += 1
        fh.write(b"\n]\n" if count else b"]\n")
    return count


# A row group of the streamed Parquet copy holds about this much JSON: bounded memory, large enough groups.
PARQUET_BATCH_BYTES = 64 << 20


def write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as Parquet (columns in first-seen order; string columns typed as strings).

    A list is written as one table. Spooled rows (a Harbor conversion, possibly GBs) are streamed in row
    groups of ~``PARQUET_BATCH_BYTES``: the schema comes from the first rows (their columns are fixed by
    ``render_lf_row``) and Arrow's own JSON reader parses each group's bytes (several times faster than
    building Python dicts, and nothing is held but one group).
    """
    import pyarrow.parquet as pq

    if not isinstance(rows, SpooledRows):
        table = _arrow_table(list(rows))
        with atomic_writer(path) as fh:
            pq.write_table(table, fh)
        return
    schema = _arrow_table(rows[:SCHEMA_SAMPLE_ROWS]).schema
    with atomic_writer(path) as fh, pq.ParquetWriter(fh, schema) as writer:
        batch: list[bytes] = []
        size = 0
        for data in rows.iter_bytes():
            batch.append(data)
            size += len(data)
            if size >= PARQUET_BATCH_BYTES:
                writer.write_table(_arrow_table_from_json(batch, schema))
                batch, size = [], 0
        if batch or not len(rows):
            writer.write_table(_arrow_table_from_json(batch, schema))


# Rows whose columns and types fix the streamed Parquet schema.
SCHEMA_SAMPLE_ROWS = 64


def _arrow_table_from_json(lines: list[bytes], schema: Any) -> Any:
    import pyarrow as pa
    import pyarrow.json as pa_json

    if not lines:
        return schema.empty_table()
    data = b"\n".join(lines)
    try:
        return pa_json.read_json(
            pa.py_buffer(data),
            read_options=pa_json.ReadOptions(block_size=max(len(data) + 1, 1 << 20)),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        )
    except pa.ArrowInvalid as exc:
        raise ValueError(
            f"a row does not fit the Parquet schema {schema.names} taken from the first "
            f"{SCHEMA_SAMPLE_ROWS} rows ({exc})"
        ) from exc


def _arrow_table(rows: list[Mapping[str, Any]]) -> Any:
    import pyarrow as pa

    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return pa.table({c: pa.array([row.get(c) for row in rows], type=_arrow_type(rows, c)) for c in columns})


def _arrow_type(rows: list[Mapping[str, Any]], column: str) -> Any:
    import pyarrow as pa

    sample = next((r[column] for r in rows if r.get(column) is not None), None)
    if isinstance(sample, str) or sample is None:
        return pa.string()
    return None  # let Arrow infer (lists of {from, value} structs)


class LlamaFactoryDataset(AbstractDataset[Sequence[dict[str, Any]], list[dict[str, Any]]]):
    def __init__(self, filepath: str, parquet: bool = True, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self._parquet = parquet
        self.metadata = metadata

    @property
    def parquet_path(self) -> Path:
        return self._filepath.with_suffix(".parquet")

    def load(self) -> list[dict[str, Any]]:
        if not self._filepath.is_file():
            raise DatasetError(f"{self._filepath} does not exist: run `kedro run --pipeline=convert` first")
        text = self._filepath.read_bytes()
        stripped = text.lstrip()
        if stripped.startswith(b"["):
            return json.loads(text)
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    def save(self, data: Sequence[dict[str, Any]]) -> None:
        rows = data if isinstance(data, SpooledRows) else list(data)
        write_json_array(self._filepath, rows)
        if self._parquet:
            write_parquet(self.parquet_path, rows)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(PurePosixPath(self._filepath)), "parquet": self._parquet}


class DatasetInfoDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """LLaMA-Factory's ``dataset_info.json``. ``save`` MERGES the given entries (locked, atomic)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _read(self) -> dict[str, Any]:
        if not self._filepath.is_file():
            return {}
        try:
            data = json.loads(self._filepath.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{self._filepath}: not valid JSON ({exc}). Fix or delete the file; sft will recreate it."
            ) from exc
        if not isinstance(data, dict):
            raise DatasetError(f"{self._filepath}: expected a JSON object of dataset entries")
        return data

    def load(self) -> dict[str, Any]:
        return self._read()

    def save(self, data: dict[str, Any]) -> None:
        with file_lock(self._filepath):
            merged = self._read()
            merged.update(data)
            with atomic_writer(self._filepath) as fh:
                fh.write(json.dumps(merged, indent=4, ensure_ascii=False).encode("utf-8") + b"\n")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(PurePosixPath(self._filepath))}
