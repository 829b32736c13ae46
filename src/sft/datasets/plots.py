"""Matplotlib figures saved atomically (the catalog's plots).

kedro-datasets' ``MatplotlibDataset`` with ``overwrite: true`` deletes the whole plot folder and then writes
each file in place, so a crash (or a figure that fails to render) midway leaves no plots, or half a PNG.
Here every figure is rendered to memory first, each file replaces its old version (locally atomically; on
an object store such as ``s3://`` or ``gs://``, through fsspec, an object is replaced whole), and files of
an earlier run that the new set no longer has are removed last.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePath
from typing import Any

import matplotlib.pyplot as plt
from kedro.io import DatasetError
from matplotlib.figure import Figure

from sft.datasets.files import _FileDataset

Figures = Figure | list[Figure] | dict[str, Figure]


class AtomicFigureDataset(_FileDataset):
    """One figure to ``filepath``, or a list / dict of figures into the folder ``filepath``
    (``<index>.png`` / the dict keys as file names). Write-only, like ``MatplotlibDataset``."""

    def __init__(
        self,
        filepath: str,
        save_args: dict[str, Any] | None = None,
        overwrite: bool = True,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._save_args = dict(save_args or {})
        self._overwrite = overwrite

    def load(self) -> None:
        raise DatasetError(
            f"{self._describe()['filepath']}: plots are write-only; open the image files instead"
        )

    def save(self, data: Figures) -> None:
        try:
            rendered = self._render(data)  # nothing on disk changes unless every figure renders
        finally:
            plt.close("all")
        for path, png in rendered.items():
            with self._writer(path) as fh:
                fh.write(png)
        if self._overwrite and isinstance(data, list | dict) and self._fs.isdir(self._path):
            names = {path.name for path in rendered}
            for entry in self._fs.ls(self._path, detail=True):
                name = PurePath(entry["name"]).name
                if entry["type"] == "file" and name not in names and not name.startswith("."):
                    self._fs.rm_file(entry["name"])

    def _render(self, data: Figures) -> dict[PurePath, bytes]:
        if isinstance(data, Figure):
            return {self._filepath: self._png(data)}
        items = enumerate(data) if isinstance(data, list) else data.items()
        rendered: dict[PurePath, bytes] = {}
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
        return bool(self._fs.exists(self._path))  # a figure file or a folder of them

    def _describe(self) -> dict[str, Any]:
        return {
            **super()._describe(),
            "save_args": self._save_args,
            "overwrite": self._overwrite,
        }
