"""Atomic file datasets for the catalog (JSON, JSON Lines, text), on any fsspec filesystem.

kedro-datasets' own JSON/text datasets write in place; a crash mid-write leaves half a file. On the local
filesystem these write through ``sft.core.io_utils.atomic_writer`` instead; any other fsspec protocol
(``s3://``, ``gs://``, ``memory://``...) is read and written through ``fsspec`` as kedro-datasets do (object
stores replace an object whole on upload, so there is no half file there either). The constructor keeps the
kedro-datasets shape (``filepath``, ``credentials``, ``fs_args``, ``metadata``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec
import orjson
from kedro.io import AbstractDataset, DatasetError

from sft.core.io_utils import atomic_writer
from sft.core.spool import iter_row_bytes

LOCAL_PROTOCOLS = ("file", "local")


class _FileDataset(AbstractDataset[Any, Any]):
    def __init__(
        self,
        filepath: str,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        protocol, _ = fsspec.core.split_protocol(str(filepath))
        self._protocol = protocol or "file"
        self._local = self._protocol in LOCAL_PROTOCOLS
        # fsspec's own parsing keeps a memory:// or s3:// path whole (bucket / first folder included)
        self._fs, self._path = fsspec.core.url_to_fs(str(filepath), **(credentials or {}), **(fs_args or {}))
        if self._local:  # kept as given (a relative path stays relative, as before)
            self._path = str(filepath).removeprefix(f"{protocol}://") if protocol else str(filepath)
        self._filepath = Path(self._path) if self._local else PurePosixPath(self._path)
        self.metadata = metadata

    @property
    def filepath(self) -> Path | PurePosixPath:
        return self._filepath

    def _describe(self) -> dict[str, Any]:
        path = str(PurePosixPath(self._filepath))
        return {"filepath": path if self._local else f"{self._protocol}://{path.lstrip('/')}"}

    def _exists(self) -> bool:
        return bool(self._fs.isfile(self._path))

    # What the "does not exist" error tells the user to run (subclasses name their pipeline).
    _produced_by = "the pipeline that produces it"

    def _check_exists(self) -> None:
        if not self._exists():
            raise DatasetError(f"{self._describe()['filepath']} does not exist yet: run {self._produced_by}")

    def _read_bytes(self) -> bytes:
        self._check_exists()
        with self._fs.open(self._path, "rb") as fh:
            return fh.read()

    @contextlib.contextmanager
    def _writer(self, path: Path | PurePosixPath | None = None) -> Iterator[IO[bytes]]:
        """Write ``path`` (default: ``filepath``; a side file such as a Parquet copy or a plot in the folder).

        Local: an atomic temp-file-and-rename write; elsewhere: fsspec's (an object is replaced whole)."""
        target = self._filepath if path is None else path
        if self._local:
            with atomic_writer(target) as fh:
                yield fh
            return
        parent = str(PurePosixPath(target).parent)
        if parent not in ("", "/", "."):
            self._fs.makedirs(parent, exist_ok=True)
        with self._fs.open(str(target), "wb") as fh:
            yield fh


class AtomicJSONDataset(_FileDataset):
    """One JSON document (dict or list), indented, UTF-8, written atomically."""

    def load(self) -> Any:
        return json.loads(self._read_bytes())

    def save(self, data: Any) -> None:
        with self._writer() as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")


class AtomicJSONLinesDataset(_FileDataset):
    """JSON Lines: a list (or any iterable) of dicts, one per line, written atomically. ``missing_ok``: an
    absent file loads as ``[]`` (for optional hand-overs between pipelines)."""

    def __init__(
        self,
        filepath: str,
        missing_ok: bool = False,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._missing_ok = missing_ok

    def load(self) -> list[Any]:
        if self._missing_ok and not self._exists():
            return []
        self._check_exists()
        with self._fs.open(self._path, "rb") as fh:  # streamed line by line: hand-overs can be large
            return [orjson.loads(line) for line in fh if line.strip()]

    def save(self, data: Iterable[Any]) -> None:
        with self._writer() as fh:
            for row in iter_row_bytes(data):  # spooled rows are copied as bytes, never parsed
                fh.write(row)
                fh.write(b"\n")


class AtomicTextDataset(_FileDataset):
    def load(self) -> str:
        return self._read_bytes().decode("utf-8")

    def save(self, data: str) -> None:
        with self._writer() as fh:
            fh.write(data.encode("utf-8"))
