"""stats.json and the dataset card carry the model-turn accounting and the repairs (sft.core.turns)."""

from __future__ import annotations

import json
from pathlib import Path

from sft.report.card import build_stats, dryrun_lines, render_card
from sft.report.tokens import counts_only_stats
from tests.report.conftest import agent_row, settings_for

MODEL_TURNS = {
    "source": 12,
    "output": 9,
    "unsourced": 0,
    "lost": {"extract:side_call": 1, "overlength:truncated": 2},
    "per_agent": {
        "claude-code/main": {"source": 8, "output": 6, "unsourced": 0, "lost": {"overlength:truncated": 2}},
        "claude-code/subagent": {"source": 0, "output": 0, "unsourced": 0, "lost": {}},
        "open-code/main": {"source": 4, "output": 3, "unsourced": 0, "lost": {"extract:side_call": 1}},
    },
    "trials_counted": 3,
    "trials_not_counted": {"outcome:not_resolved": 2},
}


def test_stats_and_card_show_model_turns_and_repairs(tmp_path: Path) -> None:
    rows = [agent_row("w#0", 2, repo="octo/widgets", score=0.5)]
    per_sample, summary = counts_only_stats(rows, cutoff_len=4096, reason="no tokenizer")
    report = {"funnel": {"rows_written": 1}, "model_turns": MODEL_TURNS, "repairs": {"trimmed_tail": 2}}
    stats = build_stats(
        per_sample=per_sample,
        token_summary=summary,
        settings=settings_for("/nope"),
        conversion_report=report,
        fidelity_report={"skipped": True, "reason": "x"},
    )
    assert stats["model_turns"] == MODEL_TURNS and stats["repairs"] == {"trimmed_tail": 2}
    json.dumps(stats)
    card = render_card(stats)
    assert "## Model turns" in card
    assert (
        "model turns: kept 9 of 12 (75.0%), lost: overlength:truncated 2, extract:side_call 1; "
        "2 filtered trial(s) not counted."
    ) in card
    assert "| claude-code/main | 8 | 6 | 75.0% | overlength:truncated 2 |" in card
    assert "| claude-code/subagent | 0 | 0 | – | – |" in card
    assert "Repairs in the written rows (kind: count): trimmed_tail 2." in card
    assert any(line.startswith("model turns: kept 9 of 12 (75.0%)") for line in dryrun_lines(stats))


def test_ready_made_data_has_no_model_turns(tmp_path: Path) -> None:
    rows = [agent_row("w#0", 1, repo="octo/widgets", score=None)]
    per_sample, summary = counts_only_stats(rows, cutoff_len=4096, reason="no tokenizer")
    stats = build_stats(
        per_sample=per_sample,
        token_summary=summary,
        settings=settings_for("/nope"),
        conversion_report={"funnel": {}},
    )
    assert stats["model_turns"] is None and stats["repairs"] == {}
    assert "Not counted: the source is a ready-made dataset" in render_card(stats)
    assert not any(line.startswith("model turns") for line in dryrun_lines(stats))
