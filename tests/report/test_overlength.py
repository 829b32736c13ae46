"""Each over-length mode on crafted samples, and the convert-side node that applies it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sft.config.kedro_bridge import run_paths
from sft.core.canonical import Message, Trajectory, TrajectoryMeta
from sft.core.results import ConversionResult
from sft.pipelines.convert.nodes import apply_length_policy
from sft.report.overlength import apply_overlength_policy, overlength_summary, turns_that_fit
from sft.report.tokens import token_stats
from tests.report.conftest import agent_row, role_content_entry, role_content_row, settings_for


@pytest.fixture
def crafted(tokenizer: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """short (fits), long (6 steps, over), huge_first (first turn alone over the cutoff)."""
    rows = [agent_row("short#0", 1), agent_row("long#0", 6), agent_row("huge#0", 1, observation="word " * 10)]
    rows[2]["conversations"][0]["value"] = "describe " * 400  # the first prompt alone exceeds the cutoff
    per_sample, _ = token_stats(rows, tokenizer, cutoff_len=10**9, template="qwen3")
    short, long_ = per_sample[0]["total_tokens"], per_sample[1]["total_tokens"]
    cutoff = (short + long_) // 2
    assert short < cutoff < long_ and per_sample[2]["pair_lengths"][0][0] > cutoff
    per_sample, _ = token_stats(rows, tokenizer, cutoff_len=cutoff, template="qwen3")
    return rows, per_sample, cutoff


def test_turns_that_fit_counts_whole_pairs() -> None:
    assert turns_that_fit([(10, 5), (4, 3), (6, 2)], 22) == (2, 22)
    assert turns_that_fit([(10, 5), (4, 3)], 14) == (0, 0)
    assert turns_that_fit([(1, 1)], 5) == (1, 2)


def test_drop_removes_every_sample_over_cutoff(crafted: Any) -> None:
    rows, per_sample, cutoff = crafted
    kept, rejects, decisions = apply_overlength_policy(rows, per_sample, policy="drop", cutoff_len=cutoff)
    assert [r["_uid"] for r in kept] == ["short#0"]
    assert [(r["trajectory"], r["stage"], r["reason"]) for r in rejects] == [
        ("long#0", "overlength", "over_cutoff_len"),
        ("huge#0", "overlength", "over_cutoff_len"),
    ]
    assert [d["action"] for d in decisions] == ["kept", "dropped", "dropped"]
    summary = overlength_summary(decisions, policy="drop", cutoff_len=cutoff)
    assert (summary["over_cutoff"], summary["dropped"], summary["truncated"]) == (2, 2, 0)


def test_truncate_turns_cuts_at_last_whole_assistant_turn(crafted: Any, tokenizer: Any) -> None:
    rows, per_sample, cutoff = crafted
    kept, rejects, decisions = apply_overlength_policy(
        rows, per_sample, policy="truncate_turns", cutoff_len=cutoff, tokenizer=tokenizer, template="qwen3"
    )
    assert [r["_uid"] for r in kept] == ["short#0", "long#0"]
    cut = kept[1]
    roles = [t["from"] for t in cut["conversations"]]
    assert roles[-1] in ("gpt", "function_call") and len(roles) % 2 == 0  # never a trailing tool result
    assert len(roles) < len(rows[1]["conversations"])
    # whole messages only: every kept turn is unchanged
    assert cut["conversations"] == rows[1]["conversations"][: len(roles)]
    (recount,), _ = token_stats([cut], tokenizer, cutoff_len=cutoff, template="qwen3")
    assert recount["total_tokens"] <= cutoff
    # one more pair would not have fit: the cut is at the LAST assistant turn that fits
    pairs = per_sample[1]["pair_lengths"]
    kept_pairs = len(roles) // 2
    assert recount["total_tokens"] == sum(s + t for s, t in pairs[:kept_pairs])
    assert recount["total_tokens"] + sum(pairs[kept_pairs]) > cutoff
    note = json.loads(cut["_meta"])["extra"]["overlength"]
    assert (
        note["tokens_before"] == per_sample[1]["total_tokens"]
        and note["tokens_after"] == recount["total_tokens"]
    )
    # the sample whose first assistant turn cannot fit is dropped
    assert [(r["trajectory"], r["reason"]) for r in rejects] == [("huge#0", "first_turn_over_cutoff_len")]
    assert [d["action"] for d in decisions] == ["kept", "truncated", "dropped"]


def test_keep_leaves_rows_and_reports_what_llamafactory_will_cut(crafted: Any) -> None:
    rows, per_sample, cutoff = crafted
    kept, rejects, decisions = apply_overlength_policy(rows, per_sample, policy="keep", cutoff_len=cutoff)
    assert kept == rows and rejects == []
    assert [d["action"] for d in decisions] == ["kept", "kept_over_cutoff", "kept_over_cutoff"]
    summary = overlength_summary(decisions, policy="keep", cutoff_len=cutoff)
    expected_cut = sum(s["total_tokens"] - cutoff for s in per_sample[1:])
    assert summary["tokens_lf_will_cut"] == expected_cut
    assert summary["samples_losing_final_eos"] == 2 and summary["kept_over_cutoff"] == 2


def test_unknown_policy_and_misaligned_inputs_are_rejected(crafted: Any) -> None:
    rows, per_sample, cutoff = crafted
    with pytest.raises(ValueError, match="conversion.overlength"):
        apply_overlength_policy(rows, per_sample, policy="cut", cutoff_len=cutoff)
    with pytest.raises(ValueError, match="3 rows but 2"):
        apply_overlength_policy(rows, per_sample[:2], policy="drop", cutoff_len=cutoff)


def _trajectory(uid: str) -> Trajectory:
    trial, index = uid.split("#")
    return Trajectory(
        messages=[Message(role="user", content="q"), Message(role="assistant", content="a")],
        meta=TrajectoryMeta(
            instance_id="octo__widgets-1",
            trial_name=trial,
            scaffold="claude-code",
            source_kind="atif",
            source_file="x",
            trajectory_index=int(index),
        ),
    )


def test_apply_length_policy_node_updates_rows_rejects_and_funnel(crafted: Any, tiny_model_dir: Path) -> None:
    rows, _, cutoff = crafted
    kept_trajs = [_trajectory(r["_uid"]) for r in rows]
    result = ConversionResult(
        lf_rows=rows,
        im_rows=[t.model_dump(mode="json") for t in kept_trajs],
        rejects=[],
        funnel={"funnel": {"rows_written": 3}},
        kept=kept_trajs,
    )
    settings = settings_for(
        tiny_model_dir, **{"conversion.overlength": "drop", "training.cutoff_len": cutoff}
    )
    out = apply_length_policy(
        result, settings, str(tiny_model_dir.parent), run_paths(settings, Path(tiny_model_dir.parent))
    )
    assert [r["_uid"] for r in out.lf_rows] == ["short#0"]
    assert [t.uid for t in out.kept] == ["short#0"] and len(out.im_rows) == 1
    assert out.funnel["funnel"]["rows_written"] == 1 and out.funnel["funnel"]["rows_after_overlength"] == 1
    assert out.funnel["overlength"]["applied"] is True and out.funnel["overlength"]["dropped"] == 2
    assert out.funnel["rejects_by_stage"] == {"overlength": 2}


def test_apply_length_policy_without_tokenizer_passes_rows_and_says_so(crafted: Any, tmp_path: Path) -> None:
    rows, _, _ = crafted
    result = ConversionResult(lf_rows=rows, im_rows=[], rejects=[], funnel={"funnel": {}}, kept=[])
    settings = settings_for(tmp_path / "no-such-model")
    out = apply_length_policy(result, settings, str(tmp_path), run_paths(settings, Path(tmp_path)))
    assert out.lf_rows == rows
    assert out.funnel["overlength"]["applied"] is False
    assert "no-such-model" in out.funnel["overlength"]["reason"]


def test_truncate_turns_keeps_a_leading_system_message_and_drops_uncuttable_openai_rows(
    tokenizer: Any,
) -> None:
    row = role_content_row(agent_row("long#0", 6))
    entry = role_content_entry()
    (sample,), _ = token_stats([row], tokenizer, cutoff_len=10**9, template="qwen3", dataset_entry=entry)
    cutoff = sum(sum(p) for p in sample["pair_lengths"][:3])
    (sample,), _ = token_stats([row], tokenizer, cutoff_len=cutoff, template="qwen3", dataset_entry=entry)
    kept, _, decisions = apply_overlength_policy(
        [row],
        [sample],
        policy="truncate_turns",
        cutoff_len=cutoff,
        tokenizer=tokenizer,
        template="qwen3",
        dataset_entry=entry,
    )
    assert decisions[0]["action"] == "truncated"
    assert kept[0]["messages"] == row["messages"][: 1 + 2 * 3]  # system + three whole pairs
    openai_entry = {"formatting": "openai", "columns": {"messages": "messages"}}
    _, rejects, decisions = apply_overlength_policy(
        [row], [sample], policy="truncate_turns", cutoff_len=cutoff, dataset_entry=openai_entry
    )
    assert decisions[0]["action"] == "dropped" and rejects[0]["reason"] == "over_cutoff_len_uncuttable"


def test_changed_ready_data_is_registered_as_the_written_copy(
    crafted: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows, _, cutoff = crafted
    funnel = {
        "funnel": {},
        "registration": {
            "registered": "original_file",
            "file": "/data/mine.json",
            "entry": {
                "file_name": "/data/mine.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
            },
        },
    }
    result = ConversionResult(lf_rows=rows, im_rows=[], rejects=[], funnel=funnel, kept=[])
    settings = settings_for(tiny_model_dir, **{"training.cutoff_len": cutoff})
    out = apply_length_policy(result, settings, str(tmp_path), run_paths(settings, Path(tmp_path)))
    registration = out.funnel["registration"]
    copy = str(tmp_path / "artifacts" / "data" / "lf_data" / "report_test.json")
    assert registration["registered"] == "filtered_copy" and registration["entry"]["file_name"] == copy
    assert registration["entry"]["columns"] == funnel["registration"]["entry"]["columns"]


@pytest.mark.parametrize("policy", ["truncate_turns", "drop", "keep"])
def test_the_report_reuses_the_counts_of_the_length_node_and_they_equal_a_recount(
    crafted: Any, tiny_model_dir: Path, policy: str, tmp_path: Path
) -> None:
    """One tokenization per dataset: the report takes the convert side's numbers for exactly the rows written
    (checked against the file's bytes, never parsing it); an edited file or other settings are counted again."""
    from sft.datasets.llamafactory import write_json_array
    from sft.pipelines.convert.nodes import split_conversion_result
    from sft.pipelines.report.nodes import compute_token_statistics

    rows, _, cutoff = crafted
    trajs = [_trajectory(r["_uid"]) for r in rows]
    result = ConversionResult(
        lf_rows=rows,
        im_rows=[t.model_dump(mode="json") for t in trajs],
        rejects=[],
        funnel={"funnel": {"rows_written": 3}},
        kept=trajs,
    )
    settings = settings_for(
        tiny_model_dir, **{"conversion.overlength": policy, "training.cutoff_len": cutoff}
    )
    root = str(tmp_path)
    lf_rows, _, _, funnel, _, handover = split_conversion_result(
        apply_length_policy(result, settings, root, run_paths(settings, Path(root)))
    )
    path = Path(run_paths(settings, Path(root))["lf_json"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_array(path, lf_rows)  # as the catalog writes it
    reused, reused_summary = compute_token_statistics(
        handover, funnel, settings, root, run_paths(settings, Path(root))
    )
    recount, recount_summary = compute_token_statistics(
        [], funnel, settings, root, run_paths(settings, Path(root))
    )
    assert reused_summary["counted_by"] == "apply_length_policy_node" and "counted_by" not in recount_summary
    assert reused == recount and len(reused) == len(lf_rows)
    drop_run_fields = {"elapsed_s", "tokens_per_s", "counted_by"}
    assert {k: v for k, v in reused_summary.items() if k not in drop_run_fields} == {
        k: v for k, v in recount_summary.items() if k not in drop_run_fields
    }
    other = settings_for(
        tiny_model_dir, **{"conversion.overlength": policy, "training.cutoff_len": cutoff + 1}
    )
    assert (
        "counted_by"
        not in compute_token_statistics(handover, funnel, other, root, run_paths(other, Path(root)))[1]
    )
    # rows that differ from the counted ones (an edited file) are counted again
    edited = json.loads(json.dumps(list(lf_rows)))
    edited[0]["conversations"][0]["value"] += " edited"
    write_json_array(path, edited)
    assert (
        "counted_by"
        not in compute_token_statistics(handover, funnel, settings, root, run_paths(settings, Path(root)))[1]
    )
