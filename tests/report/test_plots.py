"""The dataset plots are produced and saved by the catalog's MatplotlibDataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro_datasets.matplotlib import MatplotlibDataset
from matplotlib.figure import Figure

from sft.report.plots import dataset_plots
from sft.report.tokens import token_stats
from tests.report.conftest import agent_row


def test_plots_are_figures_and_save_as_png(tokenizer: Any, tmp_path: Path) -> None:
    rows = [agent_row(f"r{n}#0", n + 1, repo=f"o/r{n % 3}") for n in range(6)]
    per_sample, _ = token_stats(rows, tokenizer, cutoff_len=300, template="qwen3")
    stats = {"settings": {"cutoff_len": 300},
             "per_repo": {"repos": 3, "top": [{"name": "o/r0", "rows": 2}, {"name": "o/r1", "rows": 2}]}}
    plots = dataset_plots(per_sample, stats)
    assert set(plots) == {"token_lengths.png", "turns_per_trajectory.png", "tool_calls_per_turn.png", "rows_per_repo.png"}
    assert all(isinstance(fig, Figure) for fig in plots.values())
    hist_ax = plots["token_lengths.png"].axes[0]
    assert any(line.get_xdata()[0] == 300 for line in hist_ax.get_lines())  # the cutoff line
    assert "over cutoff" in hist_ax.get_title()
    MatplotlibDataset(filepath=str(tmp_path / "plots"), overwrite=True).save(plots)
    for name in plots:
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")


def test_plots_without_token_counts_still_render(tmp_path: Path) -> None:
    plots = dataset_plots([{"assistant_turns": 2, "tool_calls_per_turn": [1]}], {"settings": {"cutoff_len": 10}})
    MatplotlibDataset(filepath=str(tmp_path / "p"), overwrite=True).save(plots)
    assert len(list((tmp_path / "p").glob("*.png"))) == 4
