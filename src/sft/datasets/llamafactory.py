"""Catalog datasets for LLaMA-Factory's own file formats, on any fsspec filesystem (see sft.datasets.files).

``LlamaFactoryDataset`` writes the ShareGPT rows as a JSON array (one row per line, so it streams and
diffs well) plus, optionally, a Parquet copy with the same rows (``<stem>.parquet`` beside it); locally
both atomically, on an object store (``s3://``, ``gs://``...) each object is replaced whole.
``DatasetInfoDataset`` merges entries into ``dataset_info.json``; locally under a file lock, so two runs
that register different datasets never lose each other's entry.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson
from kedro.io import DatasetError

from sft.core.io_utils import atomic_writer, file_lock
from sft.core.spool import SpooledRows, iter_row_bytes
from sft.datasets.files import _FileDataset

# Where the writers put their bytes: a local path (written atomically) or an open binary file (an fsspec
# object being uploaded, a buffer).
Target = str | os.PathLike[str] | IO[bytes]


@contextlib.contextmanager
def _open_target(target: Target) -> Iterator[IO[bytes]]:
    if isinstance(target, str | os.PathLike):
        with atomic_writer(target) as fh:
            yield fh
    else:
        yield target


def write_json_array(target: Target, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as a JSON array, one row per line, to a local path (atomically) or a writable binary file;
    returns the row count. Streams: spooled rows are copied as bytes, never parsed or held together."""
    count = 0
    with _open_target(target) as fh:
        fh.write(b"[")
        for data in iter_row_bytes(rows):
            fh.write(b"\n" if count == 0 else b",\n")
            fh.write(data)
            count += 1
        fh.write(b"\n]\n" if count else b"]\n")
    return count


# A row group of the streamed Parquet copy holds about this much JSON: bounded memory, large enough groups.
PARQUET_BATCH_BYTES = 64 << 20


def write_parquet(target: Target, rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as Parquet (columns in first-seen order; string columns typed as strings), to a local path
    (atomically) or a writable binary file.

    A list is written as one table. Spooled rows (a Harbor conversion, possibly GBs) are streamed in row
    groups of ~``PARQUET_BATCH_BYTES``: the schema comes from the first rows (their columns are fixed by
    ``render_lf_row``) and Arrow's own JSON reader parses each group's bytes (several times faster than
    building Python dicts, and nothing is held but one group).
    """
    import pyarrow.parquet as pq

    if not isinstance(rows, SpooledRows):
        table = _arrow_table(list(rows))
        with _open_target(target) as fh:
            pq.write_table(table, fh)
        return
    schema = _arrow_table(rows[:SCHEMA_SAMPLE_ROWS]).schema
    with _open_target(target) as fh, pq.ParquetWriter(fh, schema) as writer:
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


class LlamaFactoryDataset(_FileDataset):
    """The ShareGPT rows: a JSON array (one row per line) at ``filepath`` and, with ``parquet``, the same
    rows as ``<stem>.parquet`` beside it. Loads a JSON array or JSON Lines."""

    _produced_by = "`kedro run --pipeline=convert` first"

    def __init__(
        self,
        filepath: str,
        parquet: bool = True,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._parquet = parquet

    @property
    def parquet_path(self) -> Path | PurePosixPath:
        return self._filepath.with_suffix(".parquet")

    def load(self) -> list[dict[str, Any]]:
        text = self._read_bytes()
        if text.lstrip().startswith(b"["):
            return json.loads(text)
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    def save(self, data: Sequence[dict[str, Any]]) -> None:
        rows = data if isinstance(data, SpooledRows) else list(data)
        with self._writer() as fh:
            write_json_array(fh, rows)
        if self._parquet:
            with self._writer(self.parquet_path) as fh:
                write_parquet(fh, rows)

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "parquet": self._parquet}


class DatasetInfoDataset(_FileDataset):
    """LLaMA-Factory's ``dataset_info.json``. ``save`` MERGES the given entries into the file.

    Locally the read-merge-write runs under a file lock (``<file>.lock``) and the write is atomic, so two
    runs registering different datasets keep both entries. On an object store (``s3://``, ``gs://``...)
    there is no lock: objects are replaced whole, so concurrent registrations there are last-writer-wins
    (register one run at a time, or keep ``dataset_info.json`` on a local or shared POSIX disk).
    """

    def _read(self) -> dict[str, Any]:
        if not self._exists():
            return {}
        where = self._describe()["filepath"]
        try:
            data = json.loads(self._read_bytes().decode("utf-8") or "{}")
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{where}: not valid JSON ({exc}). Fix or delete the file; sft will recreate it."
            ) from exc
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: expected a JSON object of dataset entries")
        return data

    def load(self) -> dict[str, Any]:
        return self._read()

    def save(self, data: dict[str, Any]) -> None:
        with file_lock(self._filepath) if self._local else contextlib.nullcontext():
            merged = self._read()
            merged.update(data)
            with self._writer() as fh:
                fh.write(json.dumps(merged, indent=4, ensure_ascii=False).encode("utf-8") + b"\n")
