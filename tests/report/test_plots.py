"""The dataset plots are produced and saved (atomically) by the catalog's AtomicFigureDataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kedro.io import DatasetError
from matplotlib.figure import Figure

from sft.datasets.plots import AtomicFigureDataset
from sft.report.plots import dataset_plots
from sft.report.tokens import token_stats
from tests.report.conftest import agent_row


def test_plots_are_figures_and_save_as_png(tokenizer: Any, tmp_path: Path) -> None:
    rows = [agent_row(f"r{n}#0", n + 1, repo=f"o/r{n % 3}") for n in range(6)]
    per_sample, _ = token_stats(rows, tokenizer, cutoff_len=300, template="qwen3")
    stats = {
        "settings": {"cutoff_len": 300},
        "per_repo": {"repos": 3, "top": [{"name": "o/r0", "rows": 2}, {"name": "o/r1", "rows": 2}]},
    }
    plots = dataset_plots(per_sample, stats)
    assert set(plots) == {
        "token_lengths.png",
        "turns_per_trajectory.png",
        "tool_calls_per_turn.png",
        "rows_per_repo.png",
    }
    assert all(isinstance(fig, Figure) for fig in plots.values())
    hist_ax = plots["token_lengths.png"].axes[0]
    assert any(line.get_xdata()[0] == 300 for line in hist_ax.get_lines())  # the cutoff line
    assert "over cutoff" in hist_ax.get_title()
    AtomicFigureDataset(filepath=str(tmp_path / "plots"), overwrite=True).save(plots)
    for name in plots:
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")


def test_plots_without_token_counts_still_render(tmp_path: Path) -> None:
    plots = dataset_plots(
        [{"assistant_turns": 2, "tool_calls_per_turn": [1]}], {"settings": {"cutoff_len": 10}}
    )
    AtomicFigureDataset(filepath=str(tmp_path / "p"), overwrite=True).save(plots)
    assert len(list((tmp_path / "p").glob("*.png"))) == 4


def _figure(title: str) -> Figure:
    figure = Figure()
    figure.add_subplot().set_title(title)
    return figure


def test_a_new_set_of_plots_replaces_the_old_one_and_removes_plots_it_no_longer_has(tmp_path: Path) -> None:
    folder = tmp_path / "plots"
    AtomicFigureDataset(str(folder)).save({"a.png": _figure("a"), "b.png": _figure("b")})
    old_a = (folder / "a.png").read_bytes()
    AtomicFigureDataset(str(folder)).save({"a.png": _figure("a, again, longer title")})
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]
    assert (folder / "a.png").read_bytes() != old_a and (folder / "a.png").read_bytes().startswith(b"\x89PNG")


def test_a_figure_that_fails_to_render_leaves_the_previous_plots_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "plots"
    AtomicFigureDataset(str(folder)).save({"a.png": _figure("a"), "b.png": _figure("b")})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    broken = _figure("broken")
    broken.savefig = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("renderer died"))  # type: ignore[method-assign]
    with pytest.raises(DatasetError, match="renderer died"):
        AtomicFigureDataset(str(folder)).save({"a.png": _figure("new a"), "b.png": broken})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_single_figure_and_unsafe_names(tmp_path: Path) -> None:
    AtomicFigureDataset(str(tmp_path / "curve.png")).save(_figure("loss"))
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(DatasetError, match="plain file name"):
        AtomicFigureDataset(str(tmp_path / "p")).save({"../escape.png": _figure("x")})
    assert not (tmp_path / "escape.png").exists()
