"""Catalog datasets for LLaMA-Factory's own file formats.

``LlamaFactoryDataset`` writes the ShareGPT rows as a JSON array (one row per line, so it streams and
diffs well) plus, optionally, a Parquet copy with the same rows; both atomically.
``DatasetInfoDataset`` merges entries into ``dataset_info.json`` under a file lock, so two runs that
register different datasets never lose each other's entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from kedro.io import AbstractDataset, DatasetError

from sft.io_utils import atomic_writer, file_lock


def write_json_array(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as a JSON array, one row per line; returns the row count."""
    count = 0
    with atomic_writer(path) as fh:
        fh.write(b"[")
        for row in rows:
            fh.write(b"\n" if count == 0 else b",\n")
            fh.write(orjson.dumps(row))
            count += 1
        fh.write(b"\n]\n" if count else b"]\n")
    return count


def write_parquet(path: Path, rows: list[Mapping[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    table = pa.table({c: pa.array([row.get(c) for row in rows], type=_arrow_type(rows, c)) for c in columns})
    with atomic_writer(path) as fh:
        pq.write_table(table, fh)


def _arrow_type(rows: list[Mapping[str, Any]], column: str) -> Any:
    import pyarrow as pa

    sample = next((r[column] for r in rows if r.get(column) is not None), None)
    if isinstance(sample, str) or sample is None:
        return pa.string()
    return None  # let Arrow infer (lists of {from, value} structs)


class LlamaFactoryDataset(AbstractDataset[list[dict[str, Any]], list[dict[str, Any]]]):
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

    def save(self, data: list[dict[str, Any]]) -> None:
        rows = list(data)
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
