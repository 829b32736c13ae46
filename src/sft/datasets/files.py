"""Atomic file datasets for the catalog (JSON, JSON Lines, text).

kedro-datasets' own JSON/text datasets write in place; a crash mid-write leaves half a file. These write
through ``sft.core.io_utils.atomic_writer`` instead, and keep the kedro-datasets constructor shape
(``filepath``, ``metadata``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from kedro.io import AbstractDataset, DatasetError

from sft.core.io_utils import atomic_writer
from sft.core.spool import iter_row_bytes


class _FileDataset(AbstractDataset[Any, Any]):
    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    @property
    def filepath(self) -> Path:
        return self._filepath

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(PurePosixPath(self._filepath))}

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _check_exists(self) -> None:
        if not self._filepath.is_file():
            raise DatasetError(f"{self._filepath} does not exist yet: run the pipeline that produces it")


class AtomicJSONDataset(_FileDataset):
    """One JSON document (dict or list), indented, UTF-8, written atomically."""

    def load(self) -> Any:
        self._check_exists()
        return json.loads(self._filepath.read_bytes())

    def save(self, data: Any) -> None:
        with atomic_writer(self._filepath) as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")


class AtomicJSONLinesDataset(_FileDataset):
    """JSON Lines: a list (or any iterable) of dicts, one per line, written atomically. ``missing_ok``: an
    absent file loads as ``[]`` (for optional hand-overs between pipelines)."""

    def __init__(
        self, filepath: str, missing_ok: bool = False, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(filepath, metadata)
        self._missing_ok = missing_ok

    def load(self) -> list[Any]:
        if self._missing_ok and not self._filepath.exists():
            return []
        self._check_exists()
        with self._filepath.open("rb") as fh:
            return [orjson.loads(line) for line in fh if line.strip()]

    def save(self, data: Iterable[Any]) -> None:
        with atomic_writer(self._filepath) as fh:
            for row in iter_row_bytes(data):  # spooled rows are copied as bytes, never parsed
                fh.write(row)
                fh.write(b"\n")


class AtomicTextDataset(_FileDataset):
    def load(self) -> str:
        self._check_exists()
        return self._filepath.read_text(encoding="utf-8")

    def save(self, data: str) -> None:
        with atomic_writer(self._filepath, "w", encoding="utf-8") as fh:
            fh.write(data)
