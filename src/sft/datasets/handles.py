"""The base of catalog entries that hand a node a set of local paths instead of data.

Some stages write their files themselves, while they run (the conversion engine from worker processes, the
training stage before, during and after LLaMA-Factory's launch). Their catalog entries (``conversion_workspace``,
``training_files``) load as a small typed handle naming those paths, so that the paths still come from the
catalog; the files are the entry's side files (docs/catalog.md §3). Nothing is saved through them.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import PurePosixPath
from typing import Any, Generic, TypeVar

from kedro.io import AbstractDataset, DatasetError

Handle = TypeVar("Handle")


class HandleDataset(AbstractDataset[None, Handle], Generic[Handle]):
    """Loads ``self._handle`` (a dataclass of paths, set by the subclass); refuses ``save``."""

    _handle: Handle  # a dataclass whose fields are paths
    # Who writes the side files, for the error when a node tries to save the entry.
    _written_by = "the stage that uses it"

    def load(self) -> Handle:
        return self._handle

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{type(self).__name__}: its files are written by {self._written_by}, not saved by a node"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {f.name: str(PurePosixPath(getattr(self._handle, f.name))) for f in fields(self._handle)}
