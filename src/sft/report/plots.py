"""Dataset plots: token lengths against the cutoff, turns, tool calls per turn, rows per repository.

Built on ``matplotlib.figure.Figure`` directly (the object API, no pyplot state and no GUI backend), so they
render headless in the pipeline and in tests; the catalog's ``AtomicFigureDataset`` (sft.datasets.plots) saves them as PNG.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from matplotlib.figure import Figure

FIGSIZE = (7.0, 4.0)
CUTOFF_COLOR = "#d62728"


def _empty(fig: Figure, ax: Any, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def token_length_histogram(per_sample: list[dict[str, Any]], cutoff_len: int) -> Figure:
    """Total tokens per sample, with ``cutoff_len`` marked and the number of samples beyond it."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    lengths = [s["total_tokens"] for s in per_sample if s.get("total_tokens") is not None]
    if not lengths:
        return _empty(fig, ax, "no token counts (tokenizer unavailable)")
    ax.hist(lengths, bins=min(50, max(5, len(lengths) // 2)), color="#1f77b4")
    ax.axvline(cutoff_len, color=CUTOFF_COLOR, linestyle="--", label=f"cutoff_len {cutoff_len:,}")
    over = sum(1 for n in lengths if n > cutoff_len)
    ax.set_title(f"Tokens per sample ({len(lengths)} samples, {over} over cutoff)")
    ax.set_xlabel("tokens (as LLaMA-Factory renders them)")
    ax.set_ylabel("samples")
    ax.legend()
    return fig


def turns_histogram(per_sample: list[dict[str, Any]]) -> Figure:
    """Assistant turns per trajectory."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    turns = [s.get("assistant_turns", 0) for s in per_sample]
    if not turns:
        return _empty(fig, ax, "no samples")
    ax.hist(turns, bins=min(50, max(5, len(set(turns)))), color="#2ca02c")
    ax.set_title("Assistant turns per trajectory")
    ax.set_xlabel("assistant turns")
    ax.set_ylabel("trajectories")
    return fig


def tool_calls_per_turn_bar(per_sample: list[dict[str, Any]]) -> Figure:
    """How many calls each tool-calling turn makes (parallel calls show as > 1)."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    counts = Counter(n for s in per_sample for n in s.get("tool_calls_per_turn", []))
    if not counts:
        return _empty(fig, ax, "no tool calls")
    keys = sorted(counts)
    ax.bar([str(k) for k in keys], [counts[k] for k in keys], color="#9467bd")
    ax.set_title("Tool calls per tool-calling turn")
    ax.set_xlabel("calls in the turn")
    ax.set_ylabel("turns")
    return fig


def per_repo_bar(top: list[dict[str, Any]], total_repos: int | None = None) -> Figure:
    """Rows per repository (the top entries, largest first)."""
    fig = Figure(figsize=(7.0, max(3.0, 0.3 * len(top) + 1.0)))
    ax = fig.add_subplot()
    if not top:
        return _empty(fig, ax, "no repository information")
    names = [t["name"] for t in top][::-1]
    ax.barh(names, [t["rows"] for t in top][::-1], color="#ff7f0e")
    ax.set_title(f"Rows per repository (top {len(top)}" + (f" of {total_repos})" if total_repos else ")"))
    ax.set_xlabel("rows")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def dataset_plots(per_sample: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Figure]:
    """All dataset plots, keyed by file name (an ``AtomicFigureDataset`` with a folder path saves each)."""
    repos = stats.get("per_repo") or {}
    cutoff = (
        (stats.get("settings") or {}).get("cutoff_len")
        or (stats.get("statistics") or {}).get("cutoff_len")
        or 0
    )
    return {
        "token_lengths.png": token_length_histogram(per_sample, int(cutoff)),
        "turns_per_trajectory.png": turns_histogram(per_sample),
        "tool_calls_per_turn.png": tool_calls_per_turn_bar(per_sample),
        "rows_per_repo.png": per_repo_bar(repos.get("top", []), repos.get("repos")),
    }
