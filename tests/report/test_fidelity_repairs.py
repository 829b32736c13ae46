"""The repair registry and the fidelity report's ``repairs`` section: every repair kind the code can write is
documented, repaired rows are checked and explained, a real mismatch on a repaired row still fails, and a
``by_design`` repair explains only the difference its verifier recognises."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sft.report.card import build_stats, render_card
from sft.report.fidelity import TemplateFidelityError, check_template_fidelity, enforce_fidelity
from sft.report.repairs import REPAIRS, RepairRule, repairs_section, row_repairs
from sft.rules.render import render_lf_row
from sft.rules.validate import repair_and_validate
from tests.convert.builders import assistant, call, system, tool, traj, user
from tests.report.conftest import agent_row, settings_for
from tests.report.test_fidelity import narrated_row

SRC = Path(__file__).resolve().parents[2] / "src" / "sft"
# How the code writes a repair kind: a counter keyed by it (ctx.repairs["k"], state.repairs["k"], counted["k"])
# or a repair_and_validate note code ("repair_k", f"repair_k: ...").
_KIND_PATTERNS = (
    re.compile(r"""(?:repairs|counted)\[\s*["']([a-z][a-z0-9_]*)["']\s*\]"""),
    re.compile(r"""["']repair_([a-z][a-z0-9_]*)[:"']"""),
)


def kinds_written_by(code: str) -> set[str]:
    return {match for pattern in _KIND_PATTERNS for match in pattern.findall(code)}


def test_every_repair_kind_the_code_writes_is_registered() -> None:
    written: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for kind in kinds_written_by(path.read_text(encoding="utf-8")):
            written.setdefault(kind, set()).add(str(path.relative_to(SRC)))
    assert len(written) >= 15, written  # the scan sees the code's repairs (not vacuous)
    missing = {k: sorted(v) for k, v in written.items() if k not in REPAIRS}
    assert not missing, (
        f"repair kinds without an entry in sft.report.repairs.REPAIRS (document them): {missing}"
    )
    stale = sorted(set(REPAIRS) - set(written))
    assert not stale, f"registered repair kinds no code writes any more: {stale}"
    for rule in REPAIRS.values():
        assert rule.model_saw and rule.written and rule.why, rule.kind
        assert (rule.fidelity == "by_design") == (rule.verify is not None), rule.kind


def test_an_unregistered_kind_fails_the_registry_scan_and_is_flagged_in_the_report() -> None:
    planted = 'ctx.repairs["brand_new_fix"] += 1\nnotes.append(f"repair_other_new_fix: {n}")'
    assert kinds_written_by(planted) - set(REPAIRS) == {"brand_new_fix", "other_new_fix"}
    section = repairs_section([{"repairs": {"brand_new_fix": 1}, "status": "equal"}])
    assert section["unregistered"] == ["brand_new_fix"] and section["all_explained"] is False
    assert section["kinds"]["brand_new_fix"]["registered"] is False


def _row(trajectory: Any) -> dict[str, Any]:
    fixed, issues = repair_and_validate(trajectory, drop_tool_errors=True)
    assert fixed is not None, issues
    return render_lf_row(fixed, keep_reasoning=True)


def _repaired_rows() -> list[dict[str, Any]]:
    """Rows with the repairs' output shapes, made the way the converter makes them (repair_and_validate,
    render_lf_row); the extraction repairs' counts are set as the ATIF reader sets them."""
    batched = traj(
        system(),
        user(),
        assistant("two keystroke batches", calls=[call(id="a"), call(id="b")]),
        tool("$ ls\nfoo.py", id="a"),
        tool("", id="b"),
        assistant("Done."),
        trial_name="batched",
        extra={"repairs": {"paired_result_without_id": 1, "empty_result_for_batched_call": 1}},
    )
    placeholder = traj(
        system("provider prompt"),
        system("<env>cwd: /app</env>"),
        user(),
        assistant(calls=[call()]),
        tool("(empty)"),
        assistant("Nothing there."),
        tool("stray output"),
        trial_name="placeholder",
    )
    unordered = traj(
        system(),
        user(),
        assistant(calls=[call(id="x"), call("read_file", {"path": "a"}, id="y")]),
        tool("a", id="y"),
        tool("ls", id="x"),
        assistant("", calls=[call(id="z")]),
        tool("boom", id="z", is_error=True),
        assistant("ok"),
        trial_name="unordered",
    )
    return [_row(t) for t in (batched, placeholder, unordered)]


def test_repaired_rows_carry_their_repairs_and_each_kind_is_equal_or_by_design(tiny_model_dir: Path) -> None:
    rows = _repaired_rows()
    assert row_repairs(rows[1]) == {
        "empty_tool_output": 1,
        "filled_tool_call_ids": 1,
        "merged_system_messages": 1,
        "trimmed_tail": 1,
    }  # validate's repairs reach the row's _meta
    report = check_template_fidelity(rows, str(tiny_model_dir), template="qwen3")
    section = report["repairs"]
    assert set(section["kinds"]) == {
        "paired_result_without_id",
        "empty_result_for_batched_call",
        "empty_tool_output",
        "filled_tool_call_ids",
        "merged_system_messages",
        "trimmed_tail",
        "reordered_tool_results",
        "dropped_tool_errors",
    }
    for kind, entry in section["kinds"].items():
        assert entry["registered"] and entry["explanation"] == REPAIRS[kind].why
        assert entry["checked"] == entry["rows"] >= 1
        assert all(s == "equal" or s.startswith("by_design:") for s in entry["statuses"]), (kind, entry)
    assert section["all_explained"] is True and report["passed"] is True
    assert [s.get("repairs") is not None for s in report["samples"]] == [True, True, True]


def test_a_real_mismatch_on_a_repaired_row_still_fails(tiny_model_dir: Path) -> None:
    bad = agent_row("bad#0", 1, system="")  # tools without a system prompt: a real template difference
    meta = json.loads(bad["_meta"])
    meta["extra"] = {"repairs": {"merged_user_turns": 1}}
    bad["_meta"] = json.dumps(meta)
    report = check_template_fidelity([agent_row("good#0", 1), bad], str(tiny_model_dir), template="qwen3")
    entry = report["repairs"]["kinds"]["merged_user_turns"]
    assert entry["statuses"] == {"mismatch": 1} and report["repairs"]["mismatching"] == ["merged_user_turns"]
    assert report["repairs"]["all_explained"] is False and report["passed"] is False
    with pytest.raises(TemplateFidelityError):
        enforce_fidelity(report, report_path="r.json", max_mismatch=0.0)


def test_a_by_design_repair_explains_only_the_difference_its_verifier_recognises(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def two_extra_newlines(lf_ids: list[int], hf_ids: list[int], tokenizer: Any) -> bool:
        lf, hf = tokenizer.decode(lf_ids), tokenizer.decode(hf_ids)
        return lf.replace("system\n\n\n# Tools", "system\n# Tools", 1) == hf

    rule = RepairRule(
        kind="planted_by_design",
        stage="extraction",
        model_saw="x",
        written="y",
        fidelity="by_design",
        why="planted: two newlines before # Tools",
        verify=two_extra_newlines,
    )
    monkeypatch.setitem(REPAIRS, rule.kind, rule)

    def with_kind(row: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(row["_meta"])
        meta["extra"] = {"repairs": {rule.kind: 1}}
        return {**row, "_meta": json.dumps(meta)}

    explained = with_kind(agent_row("explained#0", 1, reasoning=True, system=""))
    report = check_template_fidelity([explained], str(tiny_model_dir), template="qwen3")
    assert report["summary"]["statuses"] == {"by_design:repair:planted_by_design": 1}
    assert report["passed"] is True and report["by_design"] == {"repair:planted_by_design": rule.why}
    assert report["repairs"]["kinds"][rule.kind]["statuses"] == {"by_design:repair:planted_by_design": 1}
    # another difference on a row with the same repair is not what the verifier documents: a mismatch
    other = with_kind(
        narrated_row("other#0")
    )  # two newlines between narration and call: the template has one
    other["conversations"][1]["value"] = other["conversations"][1]["value"].replace(
        ".\n<tool_call>", ".\n\n<tool_call>"
    )
    report = check_template_fidelity([explained, other], str(tiny_model_dir), template="qwen3")
    assert report["summary"]["statuses"] == {"by_design:repair:planted_by_design": 1, "mismatch": 1}
    assert report["passed"] is False


def test_the_card_shows_the_repairs_section(tiny_model_dir: Path) -> None:
    report = check_template_fidelity(_repaired_rows(), str(tiny_model_dir), template="qwen3")
    card = render_card(
        build_stats(
            per_sample=[],
            token_summary={},
            conversion_report={},
            settings=settings_for(tiny_model_dir),
            fidelity_report=report,
        )
    )
    assert "Repaired rows against the chat template" in card
    assert re.search(
        r"\| `empty_result_for_batched_call` \| 1 \| 1 \| (equal|by_design:\w+) 1 \| equal \|", card
    )
