"""Matplotlib figures saved atomically (the catalog's plots).

kedro-datasets' ``MatplotlibDataset`` with ``overwrite: true`` deletes the whole plot folder and then writes
each file in place, so a crash (or a figure that fails to render) midway leaves no plots, or half a PNG.
Here every figure is rendered to memory first, each file replaces its old version atomically, and files of
an earlier run that the new set no longer has are removed last.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any

import matplotlib.pyplot as plt
from kedro.io import AbstractDataset, DatasetError
from matplotlib.figure import Figure

from sft.core.io_utils import atomic_write_bytes

Figures = Figure | list[Figure] | dict[str, Figure]


class AtomicFigureDataset(AbstractDataset[Figures, None]):
    """One figure to ``filepath``, or a list / dict of figures into the folder ``filepath``
    (``<index>.png`` / the dict keys as file names). Write-only, like ``MatplotlibDataset``."""

    def __init__(
        self,
        filepath: str,
        save_args: dict[str, Any] | None = None,
        overwrite: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = Path(filepath)
        self._save_args = dict(save_args or {})
        self._overwrite = overwrite
        self.metadata = metadata

    def load(self) -> None:
        raise DatasetError(f"{self._filepath}: plots are write-only; open the image files instead")

    def save(self, data: Figures) -> None:
        try:
            rendered = self._render(data)  # nothing on disk changes unless every figure renders
        finally:
            plt.close("all")
        for path, png in rendered.items():
            atomic_write_bytes(path, png)
        if self._overwrite and isinstance(data, list | dict):
            for stale in self._filepath.iterdir():
                if stale.is_file() and stale not in rendered and not stale.name.startswith("."):
                    stale.unlink()

    def _render(self, data: Figures) -> dict[Path, bytes]:
        if isinstance(data, Figure):
            return {self._filepath: self._png(data)}
        items = enumerate(data) if isinstance(data, list) else data.items()
        rendered: dict[Path, bytes] = {}
        for name, figure in items:
            file_name = f"{name}.png" if isinstance(data, list) else str(name)
            if Path(file_name).name != file_name or file_name in {"", ".", ".."}:
                raise DatasetError(f"{self._filepath}: plot name {file_name!r} must be a plain file name")
            rendered[self._filepath / file_name] = self._png(figure)
        return rendered

    def _png(self, figure: Figure) -> bytes:
        buffer = io.BytesIO()
        figure.savefig(buffer, **self._save_args)
        return buffer.getvalue()

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(PurePosixPath(self._filepath)),
            "save_args": self._save_args,
            "overwrite": self._overwrite,
        }
