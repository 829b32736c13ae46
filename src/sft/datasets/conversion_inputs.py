"""Catalog datasets for what the conversion engine uses besides the trajectories themselves.

``ExclusionListDataset`` (``repo_exclusions``): the eval-leak exclusion list, read once by the catalog (any
fsspec path) and handed to the engine, which matches every trial / row against it in its workers.

``ConversionWorkspaceDataset`` (``conversion_workspace``): the folders the engine keeps during and between
runs. Loading hands the engine a ``ConversionWorkspace``; the files in it are this dataset's side files,
written by the engine itself because they are written per trial, from worker processes, while the run goes
(docs/catalog.md §3):

- ``<cache_dir>/<key[:2]>/<key>.trial``: one converted trial, keyed by the trial's content and the settings;
- ``<cache_dir>/trial-index/``: the stat index of trial content hashes (size, mtime, ctime, inode);
- ``<spool_dir>/.spool-*``: the run's rows waiting to be written (removed when the run ends);
- ``<hub_dir>/<owner>__<name>/<file>``: a file fetched from the Hugging Face Hub (``source.hf_file_name``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import fsspec
from kedro.io import AbstractDataset, DatasetError

from sft.datasets.handles import HandleDataset
from sft.engine.workspace import ConversionWorkspace
from sft.rules.filters import ExclusionList


class ExclusionListDataset(AbstractDataset[None, ExclusionList | None]):
    """``owner/repo`` lines (``#`` comments and blank lines ignored). ``filepath: ""`` (the setting
    ``conversion.exclude_repos_file: ""``) loads as None: exclusion disabled. Read-only."""

    def __init__(
        self,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = str(filepath)
        self._fs_options = {**(credentials or {}), **(fs_args or {})}
        self.metadata = metadata

    def load(self) -> ExclusionList | None:
        if not self._filepath:
            return None
        fs, path = fsspec.core.url_to_fs(self._filepath, **self._fs_options)
        if not fs.isfile(path):
            raise DatasetError(
                f"conversion.exclude_repos_file: {self._filepath} does not exist. Restore it, point the setting "
                'at your list, or set it to "" to disable eval-leak protection (not recommended).'
            )
        with fs.open(path, "rb") as fh:
            data = fh.read()
        return ExclusionList.from_text(
            data.decode("utf-8"), source=self._filepath, sha256=hashlib.sha256(data).hexdigest()
        )

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._filepath}: the exclusion list is an input; edit the file itself")

    def _exists(self) -> bool:
        if not self._filepath:
            return True
        fs, path = fsspec.core.url_to_fs(self._filepath, **self._fs_options)
        return bool(fs.isfile(path))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath or "(disabled)"}


class ConversionWorkspaceDataset(HandleDataset[ConversionWorkspace]):
    """The engine's cache, spool and Hub download folders (local paths: the engine writes them from worker
    processes with plain file I/O, and scratch space belongs on a local disk). Read-only: loading creates
    nothing; the engine creates what it writes."""

    _written_by = "the conversion engine"

    def __init__(
        self, spool_dir: str, cache_dir: str, hub_dir: str, metadata: dict[str, Any] | None = None
    ) -> None:
        for name, value in (("spool_dir", spool_dir), ("cache_dir", cache_dir), ("hub_dir", hub_dir)):
            protocol, _ = fsspec.core.split_protocol(str(value))
            if protocol not in (None, "file", "local"):
                raise DatasetError(
                    f"conversion_workspace.{name}: {value} is not a local path. The conversion cache and spool "
                    "are written from worker processes on local disk; point it at a local folder"
                )
        self._handle = ConversionWorkspace(
            spool_dir=Path(spool_dir), cache_dir=Path(cache_dir), hub_dir=Path(hub_dir)
        )
        self.metadata = metadata
