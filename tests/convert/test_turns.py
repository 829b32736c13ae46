"""sft.core.turns: turn identity, the ledger's fates, the over-length hook and the report's invariant."""

from __future__ import annotations

import pytest

from sft.core.canonical import Message, ToolCall, Trajectory, TrajectoryMeta
from sft.core.turns import (
    RefusedConversation,
    TrajectoryTurns,
    TrialTurns,
    TurnLedger,
    account_extraction,
    after_validation,
    apply_overlength,
    check_invariant,
    summary_line,
    turn_keys,
)
from sft.rules.validate import repair_and_validate


def _traj(messages: list[Message], index: int = 0, agent_type: str = "main", **extra: object) -> Trajectory:
    meta = TrajectoryMeta(
        instance_id="acme__w-1",
        trial_name="t1",
        scaffold="claude-code",
        agent_type=agent_type,
        source_kind="litellm",
        source_file="t1/agent/litellm-trajectory.jsonl",
        trajectory_index=index,
        extra=dict(extra),
    )
    return Trajectory(messages=messages, meta=meta)


def _call(call_id: str, name: str = "bash") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments={"cmd": call_id})


U = Message(role="user", content="fix the bug")
A1 = Message(role="assistant", content="look", reasoning_content="think", tool_calls=[_call("c1")])
T1 = Message(role="tool", content="out1", tool_call_id="c1")
A2 = Message(role="assistant", content="", tool_calls=[_call("c2")])
T2 = Message(role="tool", content="out2", tool_call_id="c2")
A3 = Message(role="assistant", content="done")


def test_the_same_turn_with_the_same_history_has_one_key_reasoning_aside() -> None:
    short, _ = turn_keys(_traj([U, A1, T1, A2]))
    echoed = A1.model_copy(update={"reasoning_content": ""})  # a later request did not echo the reasoning
    long, _ = turn_keys(_traj([U, echoed, T1, A2, T2, A3]))
    assert len(short) == 2 and len(long) == 3 and long[:2] == short
    other, _ = turn_keys(_traj([Message(role="user", content="another task"), A1, T1, A2]))
    assert not set(other) & set(long)  # equal text after another history is another turn


def test_trainable_turns_after_the_first_untrainable_one_are_cut() -> None:
    copied = A1.model_copy(update={"trainable": False})
    kept, cut = turn_keys(_traj([U, A2, T2, copied, T1, A3]))
    assert len(kept) == 1 and len(cut) == 1


def test_shared_turns_count_once_and_survive_a_rejected_first_owner() -> None:
    first, second = _traj([U, A1, T1, A2], 0), _traj([U, A1, T1, A2, T2, A3], 1)
    counters = {"model_turns_source_litellm": 3}
    turns = account_extraction([first, second], [], counters, "claude-code")
    assert turns.source == {"claude-code/main": 3} and turns.lost == {} and turns.unsourced == {}
    ledger = TurnLedger()
    ledger.add("t1", turns.model_dump(), [])
    ledger.set_fates([{"trajectory": "t1#0", "stage": "dedup", "reason": "exact_duplicate"}])
    model_turns = ledger.report()["model_turns"]
    assert (model_turns["source"], model_turns["output"], model_turns["lost"]) == (3, 3, {})
    ledger.set_fates([{"trajectory": "t1#1", "stage": "min_score", "reason": "below_min_score"}])
    model_turns = ledger.report()["model_turns"]
    # the two shared turns go with the first trajectory's reason, the third with the second's
    assert model_turns["lost"] == {"dedup:exact_duplicate": 2, "min_score:below_min_score": 1}
    assert model_turns["output"] == 0


def test_extraction_losses_side_calls_skipped_subagents_repairs_and_unsourced_turns() -> None:
    main = _traj(
        [U, A1, T1, A3], 0, dropped_model_turns={"aborted_final_turn": 1}, repairs={"merged_system": 1}
    )
    sub = _traj([Message(role="user", content="explore"), A3], 1, agent_type="subagent")
    counters = {"model_turns_source_litellm": 7, "side_calls_dropped": 1}
    turns = account_extraction([main], [sub], counters, "claude-code")
    assert turns.source == {"claude-code/main": 6, "claude-code/subagent": 1}
    assert turns.lost == {
        "claude-code/main": {
            "extract:not_in_any_trajectory": 2,
            "extract:side_call": 1,
            "repair:aborted_final_turn": 1,
        },
        "claude-code/subagent": {"extract:subagents_skipped": 1},
    }
    assert turns.trajectories[0].repairs == {"merged_system": 1}
    # more turns in the trajectories than calls in the log: the difference is "unsourced", never negative loss
    few = account_extraction([main], [], {"model_turns_source_litellm": 1}, "claude-code")
    assert few.unsourced == {"claude-code/main": 2} and few.lost == {
        "claude-code/main": {"repair:aborted_final_turn": 1}
    }
    ledger = TurnLedger()
    ledger.add("t1", few, [])
    report = ledger.report()
    assert report["model_turns"]["unsourced"] == 2 and report["repairs"] == {"merged_system": 1}


def test_validation_reject_and_dropped_failed_calls() -> None:
    failing = Message(role="tool", content="<tool_use_error>no</tool_use_error>", tool_call_id="c2")
    traj = _traj([U, A1, T1, A2, failing, A3])
    turns = account_extraction([traj], [], {"model_turns_source_litellm": 3}, "claude-code")
    record = turns.trajectories[0]
    repaired, notes = repair_and_validate(traj, drop_tool_errors=True)
    after_validation(record, traj, repaired, notes)
    assert len(record.keys) == 2 and list(record.lost.values()) == ["repair:dropped_tool_errors"]
    assert record.repairs == {"dropped_tool_errors": 1}
    # an empty final turn (the last request was aborted) is repaired, not rejected: that turn is lost as
    # repair:aborted_empty_response, the turns before it are kept
    aborted = _traj([U, A1, T1, Message(role="assistant")], 1)
    record = account_extraction([aborted], [], {"model_turns_source_litellm": 2}, "claude-code").trajectories[
        0
    ]
    repaired, notes = repair_and_validate(aborted, drop_tool_errors=False)
    after_validation(record, aborted, repaired, notes)
    assert record.fate is None and len(record.keys) == 1
    assert list(record.lost.values()) == ["repair:aborted_empty_response"]
    assert record.repairs == {"trimmed_aborted_final_turn": 1, "trimmed_tail": 1}
    # an empty turn in the middle is a defect of the data: the trajectory is rejected with that issue
    middle = _traj([U, A1, T1, Message(role="assistant"), Message(role="user", content="go on"), A3], 2)
    bad = account_extraction([middle], [], {"model_turns_source_litellm": 3}, "claude-code").trajectories[0]
    repaired, issues = repair_and_validate(middle, drop_tool_errors=False)
    after_validation(bad, middle, repaired, issues)
    assert repaired is None and bad.fate == "validate:empty_assistant_turn"
    ledger = TurnLedger()
    ledger.add("t1", TrialTurns(source={"claude-code/main": 3}, trajectories=[bad]), [])
    assert ledger.report()["model_turns"]["lost"] == {"validate:empty_assistant_turn": 3}


def test_refused_conversations_lose_their_turns_with_the_reject_reason() -> None:
    """A conversation refused while reading (ATIF rebuilt_atif, unanswered_tool_call, ...) holds its turns
    with its reject's reason from the start: they are not turns that no trajectory holds."""
    kept = _traj([U, A1, T1, A3], 0)
    refused = RefusedConversation(
        "t1#sub.json#explore",
        "claude-code",
        "subagent",
        "parse:unanswered_tool_call",
        [Message(role="user", content="explore"), A2, T2, A3],
    )
    counters = {"model_turns_source_litellm": 2, "model_turns_source_atif_subagent": 2}
    turns = account_extraction([kept], [], counters, "claude-code", refused=[refused])
    assert turns.lost == {} and turns.unsourced == {}
    assert turns.trajectories[-1].fate == "parse:unanswered_tool_call"
    ledger = TurnLedger()
    ledger.add(
        "t1",
        turns,
        [{"trajectory": "t1#sub.json#explore", "stage": "parse", "reason": "unanswered_tool_call"}],
    )
    model_turns = ledger.report()["model_turns"]
    assert model_turns["per_agent"]["claude-code/subagent"] == {
        "source": 2,
        "output": 0,
        "lost": {"parse:unanswered_tool_call": 2},
        "unsourced": 0,
    }
    assert model_turns["per_agent"]["claude-code/main"]["output"] == 2
    # every conversation refused: the trial's turns are still labelled with the adapter's name
    alone = account_extraction(
        [], [], {"model_turns_source_atif_subagent": 2}, "claude-code", refused=[refused]
    )
    assert alone.source == {"claude-code/subagent": 2} and alone.lost == {}


def test_a_later_reject_keeps_the_repair_reason_of_turns_already_removed() -> None:
    """The aborted final turn a repair removed stays lost as the repair when the over-length policy later drops
    the row: the row's reject takes only the turns the row held."""
    aborted = _traj([U, A1, T1, A2, T2, Message(role="assistant")], 0)
    turns = account_extraction([aborted], [], {"model_turns_source_litellm": 3}, "claude-code")
    repaired, notes = repair_and_validate(aborted, drop_tool_errors=False)
    after_validation(turns.trajectories[0], aborted, repaired, notes)
    ledger = TurnLedger()
    ledger.add("t1", turns, [])
    report = apply_overlength(
        ledger,
        [{"uid": "t1#0", "action": "dropped"}],
        [{"trajectory": "t1#0", "stage": "overlength", "reason": "over_cutoff_len"}],
    )
    assert report is not None
    assert report["model_turns"]["lost"] == {
        "overlength:over_cutoff_len": 2,
        "repair:aborted_empty_response": 1,
    }


def test_overlength_drops_and_truncations_are_accounted() -> None:
    turns = account_extraction(
        [_traj([U, A1, T1, A2, T2, A3], 0), _traj([U, A3], 1)],
        [],
        {"model_turns_source_litellm": 4},
        "claude-code",
    )
    ledger = TurnLedger()
    ledger.add("t1", turns, [])
    assert ledger.report()["model_turns"]["output"] == 4
    decisions = [
        {"uid": "t1#0", "action": "truncated", "assistant_turns_removed": 2},
        {"uid": "t1#1", "action": "dropped"},
    ]
    rejects = [{"trajectory": "t1#1", "stage": "overlength", "reason": "over_cutoff_len"}]
    report = apply_overlength(ledger, decisions, rejects)
    assert report is not None
    assert report["model_turns"]["output"] == 1
    assert report["model_turns"]["lost"] == {"overlength:over_cutoff_len": 1, "overlength:truncated": 2}
    assert apply_overlength(None, decisions, rejects) is None


def test_filtered_trials_are_counted_as_trials_only() -> None:
    ledger = TurnLedger()
    ledger.add("t9", None, [{"trajectory": None, "stage": "outcome", "reason": "not_resolved"}])
    model_turns = ledger.report()["model_turns"]
    assert model_turns["trials_not_counted"] == {"outcome:not_resolved": 1} and model_turns["source"] == 0
    assert summary_line(model_turns) == (
        "model turns: kept 0 of 0 (n/a), lost: none; 1 filtered trial(s) not counted"
    )


def test_invariant_violation_is_reported() -> None:
    with pytest.raises(AssertionError, match="does not add up"):
        check_invariant({"source": 3, "output": 1, "lost": {"x": 1}, "unsourced": 0, "per_agent": {}})
    TrialTurns.model_validate({"source": {"a/main": 1}})  # the cached dict form round-trips


def test_repairs_become_kinds_with_counts() -> None:
    """Extraction's repairs (on the trajectory) and validation's (filled ids, trimmed tail) add up by kind."""
    call_without_id = Message(role="assistant", tool_calls=[ToolCall(name="bash", arguments={})])
    result = Message(role="tool", content="ok")
    traj = _traj([U, call_without_id, result, A3, U])
    traj.meta.extra["repairs"] = {"stripped_harbor_decorations": 2}
    record = TrajectoryTurns(uid=traj.uid, agent="x/main", keys=["k1", "k2"])
    repaired, notes = repair_and_validate(traj, drop_tool_errors=False)
    assert repaired is not None
    after_validation(record, traj, repaired, notes)
    assert record.repairs == {"filled_tool_call_ids": 1, "stripped_harbor_decorations": 2, "trimmed_tail": 1}
    # validation's own counted repairs: the note and meta.extra["repairs"] say the same count
    three = _traj(
        [
            Message(role="system", content="a"),
            Message(role="system", content="b"),
            Message(role="system", content="c"),
            U,
            A3,
        ]
    )
    repaired, notes = repair_and_validate(three, drop_tool_errors=False)
    assert repaired is not None
    assert notes[0].startswith("repair_merged_system_messages: 2 ")
    assert repaired.meta.extra["repairs"] == {"merged_system_messages": 2}


def test_a_validation_repair_that_records_dropped_model_turns_names_the_reason() -> None:
    aborted = Message(role="assistant")
    before = _traj([U, A1, T1, aborted])
    record = account_extraction([before], [], {"model_turns_source_litellm": 2}, "claude-code").trajectories[
        0
    ]
    after = _traj([U, A1], extra_marker=1)
    after.meta.extra["dropped_model_turns"] = {"aborted_final_turn": 1}
    after.meta.extra["repairs"] = {"trimmed_tail": 1}  # as repair_and_validate records it beside its note
    after_validation(record, before, after, ["repair_trimmed_tail: 1 trailing tool/user message(s) removed"])
    assert len(record.keys) == 1 and list(record.lost.values()) == ["repair:aborted_final_turn"]
    assert record.repairs == {"trimmed_tail": 1}
