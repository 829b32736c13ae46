"""sft.datasets.plots on any fsspec filesystem: a figure or a folder of figures saved to ``memory://`` holds the
PNG bytes a local save writes; a folder save removes the files an earlier save had and this one has not (last,
hidden files kept), locally and remotely alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kedro.io import DataCatalog, DatasetError
from matplotlib.figure import Figure

from sft.datasets.plots import AtomicFigureDataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _figure(title: str) -> Figure:
    figure = Figure()
    figure.add_subplot().set_title(title)
    return figure


def test_folder_of_figures_on_memory_matches_local_and_drops_stale_files(
    memory_fs: Any, tmp_path: Path
) -> None:
    local = AtomicFigureDataset(str(tmp_path / "plots"), save_args={"dpi": 40})
    remote = AtomicFigureDataset("memory://bucket/reports/plots", save_args={"dpi": 40})
    assert not remote.exists()
    for dataset in (local, remote):
        dataset.save({"a.png": _figure("a"), "b.png": _figure("b")})
    assert remote.exists()
    for name in ("a.png", "b.png"):
        remote_bytes = memory_fs.cat_file(f"/bucket/reports/plots/{name}")
        assert remote_bytes.startswith(PNG_MAGIC)
        assert remote_bytes == (tmp_path / "plots" / name).read_bytes()
    memory_fs.pipe_file("/bucket/reports/plots/.keep", b"")
    (tmp_path / "plots" / ".keep").write_bytes(b"")
    for dataset in (local, remote):
        dataset.save([_figure("only")])  # a list: 0.png; a.png and b.png are stale now
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [".keep", "0.png"]
    assert memory_fs.find("/bucket") == ["/bucket/reports/plots/.keep", "/bucket/reports/plots/0.png"]
    assert memory_fs.cat_file("/bucket/reports/plots/0.png") == (tmp_path / "plots" / "0.png").read_bytes()


def test_single_figure_from_the_catalog_on_memory(memory_fs: Any, tmp_path: Path) -> None:
    catalog = DataCatalog.from_config(
        {
            "curve": {
                "type": "sft.datasets.plots.AtomicFigureDataset",
                "filepath": "memory://bucket/run/training_curves.png",
                "save_args": {"dpi": 40},
                "credentials": {"token": "T"},
            }
        }
    )
    catalog.save("curve", _figure("loss"))
    AtomicFigureDataset(str(tmp_path / "curve.png"), save_args={"dpi": 40}).save(_figure("loss"))
    assert memory_fs.cat_file("/bucket/run/training_curves.png") == (tmp_path / "curve.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"]  # no temp file left beside it
    with pytest.raises(DatasetError, match=r"memory://bucket/run/training_curves\.png: plots are write-only"):
        catalog.load("curve")


def test_a_figure_that_fails_to_render_changes_nothing_remotely(memory_fs: Any) -> None:
    dataset = AtomicFigureDataset("memory://bucket/plots")
    dataset.save({"a.png": _figure("a")})
    before = memory_fs.cat_file("/bucket/plots/a.png")
    broken = _figure("broken")
    broken.savefig = None  # type: ignore[method-assign]  # rendering raises
    with pytest.raises(DatasetError, match="not callable"):
        dataset.save({"a.png": _figure("new a"), "b.png": broken})
    assert memory_fs.find("/bucket") == ["/bucket/plots/a.png"]
    assert memory_fs.cat_file("/bucket/plots/a.png") == before
