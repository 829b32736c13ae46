"""Output rows kept on disk until they are written: the conversion's parent holds offsets, not text.

Why: a job of several GB converts to GB of rows, and holding them in the parent until Kedro saves the
catalog outputs is what made peak memory grow with the job. The engine appends each candidate's serialised
row (as the worker produced it) to a ``Spool``, an anonymous scratch file, and hands on ``SpooledRows``: an
ordered list of references. The job-wide columns computed at the end (the score in the IM row's ``meta``,
the LF row's ``_meta``) are small and kept in memory as a byte suffix that replaces the spooled row's closing
brace, so a row's bytes are exactly ``orjson.dumps`` of the dict the engine used to build.

``SpooledRows`` is a read-only ``Sequence[dict]`` (rows are parsed on access), so code that reads rows keeps
working; writers call ``iter_row_bytes`` and never parse.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import orjson


class Spool:
    """An append-only scratch file. It is unlinked as soon as it is created, so the space comes back when the
    process ends, however it ends (a killed conversion leaves no stale GB behind)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._file = tempfile.TemporaryFile(dir=directory, prefix="sft-spool-")  # lives with self
        self._fd = self._file.fileno()
        self._end = 0

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; returns its offset."""
        offset = self._end
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(self._fd, view[written:], offset + written)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot write the conversion's row spool in {self._directory} ({exc.strerror}) after "
                f"{offset / 1e6:,.0f} MB: the rows wait there until the outputs are written, so that "
                "filesystem needs about the size of the output dataset free",
            ) from exc
        self._end += len(view)
        return offset

    def read(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        done = 0
        while done < length:
            chunk = os.pread(self._fd, length - done, offset + done)
            if not chunk:
                raise OSError(f"spool file ended at {offset + done} while reading {length} bytes at {offset}")
            parts.append(chunk)
            done += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __getstate__(self) -> None:
        raise TypeError(
            "spooled conversion rows live in an unlinked scratch file of this process and cannot be pickled "
            "to another one: run the pipeline with Kedro's default SequentialRunner (or ThreadRunner), not "
            "ParallelRunner"
        )


@dataclass(frozen=True)
class RowRef:
    """One row: ``length`` spooled bytes at ``offset``, then ``suffix`` (kept in memory)."""

    offset: int
    length: int
    suffix: bytes = b""
    uid: str = ""
    instance_id: str | None = None


def spool_row(spool: Spool, row_bytes: bytes, *, uid: str = "", instance_id: str | None = None) -> RowRef:
    """Spool a complete serialised row."""
    return RowRef(spool.append(row_bytes), len(row_bytes), b"", uid, instance_id)


def spool_open_object(spool: Spool, data: bytes) -> RowRef:
    """Spool a serialised JSON object; the ref leaves out its closing brace, so ``open_object_suffix`` can
    append members to it."""
    if not data.endswith(b"}"):
        raise ValueError("expected a serialised JSON object")
    return RowRef(spool.append(data), len(data) - 1)


def open_object_suffix(key: str, value: Any) -> bytes:
    """The bytes that add ``key: value`` as the LAST member of a serialised JSON object whose closing brace was
    cut off (``RowRef.length`` excludes it). Same bytes as ``orjson.dumps`` of the dict with that key last."""
    return b"," + orjson.dumps(key) + b":" + orjson.dumps(value) + b"}"


class SpooledRows(Sequence[dict[str, Any]]):
    """Rows in a spool, in output order. Read-only; each access parses the row."""

    def __init__(self, spool: Spool, refs: list[RowRef]) -> None:
        self._spool = spool
        self._refs = refs

    def __len__(self) -> int:
        return len(self._refs)

    def mean_row_bytes(self) -> int:
        """The mean serialised size of a row (0 when empty): lets readers size their batches by bytes."""
        return sum(ref.length + len(ref.suffix) for ref in self._refs) // len(self._refs) if self._refs else 0

    def row_bytes(self, index: int) -> bytes:
        ref = self._refs[index]
        data = self._spool.read(ref.offset, ref.length)
        return data + ref.suffix if ref.suffix else data

    def iter_bytes(self) -> Iterator[bytes]:
        for index in range(len(self._refs)):
            yield self.row_bytes(index)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [orjson.loads(self.row_bytes(i)) for i in range(*index.indices(len(self._refs)))]
        if index < 0:
            index += len(self._refs)
        if not 0 <= index < len(self._refs):
            raise IndexError(index)
        return orjson.loads(self.row_bytes(index))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for data in self.iter_bytes():
            yield orjson.loads(data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence, like list

    def __repr__(self) -> str:
        return f"SpooledRows({len(self._refs)} rows)"

    @property
    def uids(self) -> list[str]:
        """Each row's uid (the engine's ``_uid`` / the IM row's ``<trial>#<index>``), without parsing."""
        return [ref.uid for ref in self._refs]

    @property
    def instance_ids(self) -> list[str | None]:
        return [ref.instance_id for ref in self._refs]

    def edited(
        self, keep: Iterable[int], replacements: Mapping[int, dict[str, Any]] | None = None
    ) -> SpooledRows:
        """The rows at the ``keep`` indices (in that order); a row in ``replacements`` is spooled anew."""
        replacements = replacements or {}
        refs: list[RowRef] = []
        for index in keep:
            ref = self._refs[index]
            if index in replacements:
                ref = spool_row(
                    self._spool, orjson.dumps(replacements[index]), uid=ref.uid, instance_id=ref.instance_id
                )
            refs.append(ref)
        return SpooledRows(self._spool, refs)


def iter_row_bytes(rows: Iterable[Any]) -> Iterator[bytes]:
    """Each row serialised with ``orjson.dumps`` (spooled rows are already bytes: never parsed)."""
    if isinstance(rows, SpooledRows):
        yield from rows.iter_bytes()
        return
    for row in rows:
        yield row if isinstance(row, bytes) else orjson.dumps(row)


def rows_sha256(rows: Iterable[Any]) -> str:
    """sha256 over the rows' serialised bytes (the manifest's ``rows_sha256``): equal iff the written rows are."""
    digest = hashlib.sha256()
    for data in iter_row_bytes(rows):
        digest.update(data)
    return digest.hexdigest()


def select_rows(
    rows: Sequence[dict[str, Any]],
    keep: Iterable[int],
    replacements: Mapping[int, dict[str, Any]] | None = None,
) -> Sequence[dict[str, Any]]:
    """The rows at ``keep`` with ``replacements``: a ``SpooledRows`` stays spooled, a list stays a list."""
    if isinstance(rows, SpooledRows):
        return rows.edited(keep, replacements)
    replacements = replacements or {}
    return [replacements.get(i, rows[i]) for i in keep]
