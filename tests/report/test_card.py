"""stats.json contents and the dataset card, with and without a tokenizer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sft.report.card import build_stats, dryrun_lines, render_card
from sft.report.fidelity import check_template_fidelity
from sft.report.tokens import counts_only_stats, token_stats
from sft.rules.filters import ExclusionList
from sft.sources.harbor.job import harbor_version
from tests.report.conftest import agent_row, settings_for


def _rows() -> list[dict[str, Any]]:
    rows = [agent_row(f"w{n}#0", 1 + n % 3, repo="octo/widgets", score=0.5 + n / 10) for n in range(4)]
    rows += [
        agent_row("g#0", 2, repo="acme/gears", score=0.9),
        agent_row("s#1", 1, repo="acme/gears", score=None),
    ]
    return rows


def test_stats_hold_source_funnel_settings_statistics_repos_scores_versions(
    tokenizer: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    exclusion = tmp_path / "excluded_repos.txt"
    exclusion.write_text("# eval repos\nastropy/astropy\ndjango/django\n", encoding="utf-8")
    settings = settings_for(
        tiny_model_dir,
        **{
            "conversion.exclude_repos_file": str(exclusion),
            "conversion.overlength": "keep",
            "training.cutoff_len": 350,
        },
    )
    rows = _rows()
    per_sample, summary = token_stats(rows, tokenizer, cutoff_len=350, template="qwen3")
    fidelity = check_template_fidelity(rows, str(tiny_model_dir), template="qwen3")
    funnel = {"funnel": {"trials_found": 9, "rows_written": 6}}
    rejects = [
        {"trial_name": "x", "stage": "outcome", "reason": "unresolved"},
        {"trial_name": "y", "stage": "dedup", "reason": "exact_duplicate"},
        {"trial_name": "z", "stage": "outcome", "reason": "unresolved"},
    ]
    stats = build_stats(
        per_sample=per_sample,
        token_summary=summary,
        settings=settings,
        conversion_report=funnel,
        rejects=rejects,
        fidelity_report=fidelity,
        exclusions=ExclusionList.load(exclusion),
    )
    assert stats["dataset"]["rows"] == 6 and stats["dataset"]["instances"] == 2
    assert stats["funnel"] == funnel["funnel"]
    assert stats["rejects"]["by_stage"] == {"outcome": 2, "dedup": 1}
    excl = stats["settings"]["exclusion"]
    assert excl["entries"] == 2 and excl["sha256"] == hashlib.sha256(exclusion.read_bytes()).hexdigest()
    assert (
        stats["settings"]["overlength"],
        stats["settings"]["template"],
        stats["settings"]["cutoff_len"],
    ) == ("keep", "qwen3", 350)
    assert stats["per_repo"] == {
        "repos": 2,
        "top": [{"name": "octo/widgets", "rows": 4}, {"name": "acme/gears", "rows": 2}],
    }
    assert stats["source"]["teacher_models"] == {"glm-5": 6}
    assert stats["scores"]["count"] == 5 and stats["scores"]["max"] == 0.9 and stats["scores"]["min"] == 0.5
    assert stats["scores"]["dimensions"]["tool_mastery_score"]["mean"] == 0.9
    assert stats["statistics"]["tokens"]["total"] == sum(s["total_tokens"] for s in per_sample)
    over = [s for s in per_sample if s["total_tokens"] > 350]
    assert stats["overlength"]["applied"] is False and stats["overlength"]["over_cutoff"] == len(over)
    assert stats["template_fidelity"]["passed"] is True
    assert set(stats["versions"]) >= {"sft", "llamafactory", "transformers"}
    assert stats["versions"]["llamafactory"] == "0.9.5"
    # the reference's sidecar keys, same meaning
    assert stats["count"] == 6 and stats["total_tokens"] == stats["statistics"]["tokens"]["total"]
    assert stats["token_lens"]["max"] == max(s["total_tokens"] for s in per_sample)
    assert stats["n_turns"]["gte_100"] == 0
    json.dumps(stats)  # serialisable as-is

    card = render_card(stats)
    for heading in (
        "# report_test",
        "## Source",
        "## Funnel",
        "## Settings",
        "## Token statistics",
        "## Over-length policy",
        "## Template fidelity",
        "## Repositories",
        "## Rule score",
        "## Versions",
    ):
        assert heading in card
    assert excl["sha256"] in card and "| octo/widgets | 4 |" in card and "llamafactory: 0.9.5" in card
    lines = dryrun_lines(stats)
    assert any(line.startswith("over-length (keep)") for line in lines)
    assert any(line.startswith("template fidelity: ok") for line in lines)


def test_without_tokenizer_the_card_says_counts_are_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = _rows()
    per_sample, summary = counts_only_stats(
        rows, cutoff_len=4096, reason="model.model_name_or_path='/nope': missing"
    )
    settings = settings_for("/nope")
    stats = build_stats(
        per_sample=per_sample,
        token_summary=summary,
        settings=settings,
        fidelity_report={"skipped": True, "reason": "no tokenizer"},
    )
    assert stats["token_lens"]["max"] is None and stats["total_tokens"] is None
    assert stats["statistics"]["distributions"]["assistant_turns"]["max"] == 4
    card = render_card(stats)
    assert "**Token counts unavailable:** model.model_name_or_path='/nope'" in card
    assert "**Skipped:** no tokenizer" in card
    assert any(line.startswith("WARN tokens") for line in dryrun_lines(stats))


def test_harbor_version_comes_from_the_job_lock(tmp_path: Path) -> None:
    (tmp_path / "lock.json").write_text(json.dumps({"harbor": {"version": "0.26.0"}}), encoding="utf-8")
    assert harbor_version(tmp_path) == "0.26.0"
    assert harbor_version(tmp_path / "missing") is None
