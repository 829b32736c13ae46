"""Source model turns counted at extraction (sft.sources.harbor.turns) and the trial's turn accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sft.core.turns import TurnLedger, after_validation
from sft.rules.validate import repair_and_validate
from sft.sources.harbor import atif
from sft.sources.harbor.trial import extract_trial
from sft.sources.harbor.turns import count_atif_turns


def _ledger_report(extraction: Any) -> dict[str, Any]:
    """The trial through validation (as the engine does) into a ledger, and its model_turns."""
    records = {r.uid: r for r in extraction.turns.trajectories}
    for traj in extraction.trajectories:
        repaired, issues = repair_and_validate(traj, drop_tool_errors=False)
        after_validation(records[traj.uid], traj, repaired, issues)
    ledger = TurnLedger()
    ledger.add("t", extraction.turns, [r.model_dump() for r in extraction.rejects])
    return ledger.report()["model_turns"]


def test_proxy_log_retry_failed_call_and_history_copies(harbor) -> None:
    """4 successful calls, one failed: the retried answer the client discarded is the one lost turn."""
    trial_dir = harbor.trial("t__1", agent_name="openhands-sdk")
    system = {"role": "system", "content": "You are an agent."}
    user = {"role": "user", "content": "Fix it."}
    a1 = {"role": "assistant", "content": "", "tool_calls": [harbor.call("c1", "bash", {"cmd": "ls"})]}
    t1 = {"role": "tool", "tool_call_id": "c1", "content": "a.py"}
    a2 = {"role": "assistant", "content": "", "tool_calls": [harbor.call("c2", "bash", {"cmd": "cat a.py"})]}
    t2 = {"role": "tool", "tool_call_id": "c2", "content": "print(1)"}
    tools = ["bash"]
    records = [
        harbor.oai_record([system, user], {k: v for k, v in a1.items() if k != "role"}, tools=tools),
        harbor.oai_record(
            [system, user, a1, t1],
            {"content": "", "tool_calls": [harbor.call("c9", "bash", {"cmd": "pwd"})]},
            tools=tools,
        ),  # answered, then retried: the client never continued from it
        harbor.oai_record([system, user, a1, t1], {"content": "x"}, tools=tools, success=False),
        harbor.oai_record([system, user, a1, t1], {k: v for k, v in a2.items() if k != "role"}, tools=tools),
        harbor.oai_record([system, user, a1, t1, a2, t2], {"content": "Fixed."}, tools=tools),
    ]
    harbor.write_log(trial_dir / "agent", records)
    extraction = extract_trial(trial_dir, harbor.job_dir, "openhands-sdk")
    assert not extraction.rejects
    assert extraction.counters["model_turns_source_litellm"] == 4  # the failed call returned nothing
    assert extraction.turns.source == {"openhands-sdk/main": 4}
    assert extraction.turns.lost == {"openhands-sdk/main": {"extract:not_in_any_trajectory": 1}}
    model_turns = _ledger_report(extraction)
    assert (model_turns["source"], model_turns["output"]) == (4, 3)


def test_terminus2_summarisation_continuation_real_golden_files(harbor) -> None:
    """Harbor's golden linear-history run: 3 + 4 model steps (one copied step in the continuation is not a
    turn). Today the continuation segment is rejected at validation (issue 13: its copied hand-off context),
    so its 4 turns are lost with that reason; once the segment is kept they are output: either way all 7
    are accounted for."""
    trial_dir = harbor.trial("hello-world__L", instance_id="hello-world", agent_name="terminus-2")
    agent = trial_dir / "agent"
    harbor.copy_fixture("terminus2_linear_history.trajectory.json", agent / "trajectory.json")
    harbor.copy_fixture("terminus2_linear_history.trajectory.cont-1.json", agent / "trajectory.cont-1.json")
    assert count_atif_turns(agent) == {"main": 7}
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    assert extraction.turns.source == {"terminus2/main": 7} and extraction.turns.lost == {}
    model_turns = _ledger_report(extraction)
    assert model_turns["source"] == 7 and model_turns["output"] >= 3
    assert model_turns["output"] + sum(model_turns["lost"].values()) == 7
    assert all(reason.startswith("validate:") for reason in model_turns["lost"])


def test_claude_code_atif_sidechains_embedded_and_subagent_files(harbor) -> None:
    """Sidechain steps, embedded sub-agents and other trajectory.*.json files are sub-agent turns; copied
    context and llm_call_count == 0 dispatches are no turns; every counted turn is in a trajectory."""
    trial_dir = harbor.trial("cc__1", agent_name="claude-code")
    agent = trial_dir / "agent"

    def step(step_id: int, source: str, text: str, **fields: Any) -> dict[str, Any]:
        return {"step_id": step_id, "source": source, "message": text, **fields}

    sub_doc = {
        "schema_version": "ATIF-v1.7",
        "session_id": "s2",
        "agent": {"name": "claude-code", "version": "1"},
        "steps": [step(1, "user", "look around"), step(2, "agent", "seen it")],
    }
    main_doc = {
        "schema_version": "ATIF-v1.7",
        "session_id": "s1",
        "agent": {"name": "claude-code", "version": "1"},
        "steps": [
            step(1, "user", "fix it"),
            step(2, "agent", "on it"),
            step(3, "user", "side task", extra={"is_sidechain": True, "agent_id": "a1"}),
            step(4, "agent", "side answer", extra={"is_sidechain": True, "agent_id": "a1"}),
            step(5, "user", "more"),
            step(6, "agent", "dispatched", llm_call_count=0),
            step(7, "user", "and?"),
            step(8, "agent", "done"),
        ],
        "subagent_trajectories": [sub_doc],
    }
    harbor.write_atif(agent, main_doc)
    file_doc = {
        **sub_doc,
        "session_id": "s3",
        "steps": [step(1, "user", "read docs"), step(2, "agent", "read")],
    }
    harbor.write_atif(agent, file_doc, name="trajectory.explore-1.json")
    assert count_atif_turns(agent) == {"main": 2, "subagent": 3}
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code", trajectory_source="atif")
    assert not extraction.rejects
    turns = extraction.turns
    assert turns.source == {"claude-code/main": 2, "claude-code/subagent": 3}
    assert turns.lost == {} and turns.unsourced == {}
    skipped = extract_trial(
        trial_dir, harbor.job_dir, "claude-code", trajectory_source="atif", include_subagents=False
    )
    assert skipped.turns.lost == {"claude-code/subagent": {"extract:subagents_skipped": 3}}


def test_a_trial_rejected_after_reading_loses_its_source_turns_with_the_reject_reason(harbor) -> None:
    trial_dir = harbor.trial("t__2", agent_name="claude-code")
    user = {"role": "user", "content": "hi"}
    records = [
        harbor.oai_record([user], {"content": "hello"}),
        harbor.oai_record([user], {"content": "again"}),
    ]
    harbor.write_log(trial_dir / "agent", records)  # no tools offered: not a claude-code log
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert [r.reason for r in extraction.rejects] == ["scaffold_mismatch"]
    assert extraction.turns.source == {"claude-code/main": 2}
    assert extraction.turns.lost == {"claude-code/main": {"scaffold:scaffold_mismatch": 2}}


@pytest.mark.parametrize(
    ("fixture", "agent", "scaffold", "steps"),
    [
        ("claude_code_trajectory_pass.json", "claude-code", "claude-code", 11),
        ("claude_code_hello_world.trajectory.json", "claude-code", "claude-code", 2),
        ("terminus2_invalid_json.trajectory.json", "terminus-2", "terminus2", 4),
    ],
)
def test_real_harbor_atif_files_every_agent_step_is_output_or_lost(
    harbor, fixture: str, agent: str, scaffold: str, steps: int
) -> None:
    """Real Harbor ATIF files (tests/fixtures/harbor/SOURCES.md): each model step is a source turn and ends up
    output or lost with a reason. The claude-code runs keep all. The terminus-2 run is default-mode ATIF (text
    rebuilt as Analysis/Plan with synthetic calls): refused while reading by ``rebuilt_atif: drop`` (the default),
    so its turns are lost as ``parse:rebuilt_atif``, the reject's reason (not as turns no trajectory holds);
    with ``rebuilt_atif: keep`` all of them are output (its results without source_call_id are paired)."""
    trial_dir = harbor.trial("real__1", agent_name=agent)
    harbor.copy_fixture(fixture, trial_dir / "agent" / "trajectory.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, scaffold)
    assert extraction.turns.source == {f"{scaffold}/main": steps}
    model_turns = _ledger_report(extraction)
    assert model_turns["output"] + sum(model_turns["lost"].values()) == steps
    if scaffold == "claude-code":
        assert (model_turns["output"], model_turns["lost"]) == (steps, {})
        return
    assert [r.reason for r in extraction.rejects] == ["rebuilt_atif"]
    assert (model_turns["output"], model_turns["lost"]) == (0, {"parse:rebuilt_atif": steps})
    assert (
        extraction.counters["rebuilt_atif_dropped_turns"]
        == extraction.counters["atif_rejected_model_turns"]
        == steps
    )
    auto = extract_trial(trial_dir, harbor.job_dir, "auto")  # the label is the adapter's, not "auto"
    assert auto.turns.source == {f"{scaffold}/main": steps} and auto.turns.lost == {}
    assert _ledger_report(auto)["per_agent"] == {
        f"{scaffold}/main": {
            "source": steps,
            "output": 0,
            "lost": {"parse:rebuilt_atif": steps},
            "unsourced": 0,
        }
    }
    kept = extract_trial(trial_dir, harbor.job_dir, scaffold, rebuilt_atif="keep")
    assert not kept.rejects
    assert _ledger_report(kept)["output"] == steps


def _step(step_id: int, source: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"step_id": step_id, "source": source, "message": text, **fields}


def _call(call_id: str, command: str) -> dict[str, Any]:
    return {"tool_call_id": call_id, "function_name": "bash", "arguments": {"command": command}}


def test_a_conversation_refused_while_reading_loses_its_turns_with_the_reject_reason(harbor) -> None:
    """A trial whose main conversation converts and whose sub-agent file cannot be paired up (two results
    without source_call_id for three calls: ambiguous): the sub-agent's turns are lost as
    ``parse:ambiguous_results_without_id`` (the reject line's reason), not as ``extract:not_in_any_trajectory``;
    the main conversation's turns are output."""
    trial_dir = harbor.trial("gm__1", agent_name="gemini-cli")
    agent = trial_dir / "agent"
    main_doc = {
        "schema_version": "ATIF-v1.6",
        "session_id": "m",
        "agent": {"name": "gemini-cli", "version": "1"},
        "steps": [
            _step(1, "user", "fix it"),
            _step(
                2,
                "agent",
                "looking",
                tool_calls=[_call("c1", "ls")],
                observation={"results": [{"source_call_id": "c1", "content": "a.py"}]},
            ),
            _step(3, "agent", "done"),
        ],
    }
    sub_doc = {
        "schema_version": "ATIF-v1.6",
        "session_id": "s",
        "agent": {"name": "gemini-cli", "version": "1"},
        "steps": [
            _step(1, "user", "explore"),
            _step(
                2,
                "agent",
                "three reads",
                tool_calls=[_call("r1", "cat a"), _call("r2", "cat b"), _call("r3", "cat c")],
                observation={"results": [{"content": "A"}, {"content": "B"}]},
            ),
            _step(3, "agent", "read them"),
        ],
    }
    harbor.write_atif(agent, main_doc)
    harbor.write_atif(agent, sub_doc, name="trajectory.explore-1.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, "auto")
    assert [r.reason for r in extraction.rejects] == ["ambiguous_results_without_id"]
    assert extraction.counters["atif_rejected_model_turns"] == 2
    assert extraction.turns.source == {"gemini-cli/main": 2, "gemini-cli/subagent": 2}
    assert extraction.turns.lost == {}  # nothing is lost at extraction: the refused sub-agent holds its turns
    model_turns = _ledger_report(extraction)
    assert model_turns["per_agent"] == {
        "gemini-cli/main": {"source": 2, "output": 2, "lost": {}, "unsourced": 0},
        "gemini-cli/subagent": {
            "source": 2,
            "output": 0,
            "lost": {"parse:ambiguous_results_without_id": 2},
            "unsourced": 0,
        },
    }


def test_copied_context_is_no_source_turn_and_no_loss(harbor) -> None:
    """A summarisation sub-agent repeats the main conversation as ``is_copied_context`` steps: those are copies
    of turns trained in the main conversation, so they are neither source turns nor lost, with
    ``copied_context: drop`` (removed, repair ``dropped_copied_context``) and with ``context`` (kept: the same
    turn, with the same history, as the main one's)."""
    trial_dir = harbor.trial("t2__1", agent_name="terminus-2")
    agent = trial_dir / "agent"
    main_steps = [
        _step(1, "user", "fix it"),
        _step(2, "agent", "step one"),
        _step(3, "user", "screen 1"),
        _step(4, "agent", "step two"),
    ]
    copies = [dict(s, is_copied_context=True) for s in main_steps]
    sub_steps = [*copies, _step(5, "user", "Summarise."), _step(6, "agent", "I did one and two.")]
    doc = {"schema_version": "ATIF-v1.7", "session_id": "m", "agent": {"name": "terminus-2", "version": "1"}}
    harbor.write_atif(agent, {**doc, "steps": main_steps})
    harbor.write_atif(
        agent, {**doc, "session_id": "s", "steps": sub_steps}, name="trajectory.summarization-1-summary.json"
    )
    assert count_atif_turns(agent) == {"main": 2, "subagent": 1}
    for mode in ("drop", "context"):
        extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2", copied_context=mode)
        assert not extraction.rejects, mode
        repairs = [
            t.meta.extra.get("repairs", {}).get("dropped_copied_context", 0) for t in extraction.trajectories
        ]
        assert repairs == ([0, 2] if mode == "drop" else [0, 0]), mode
        model_turns = _ledger_report(extraction)
        assert model_turns["per_agent"] == {
            "terminus2/main": {"source": 2, "output": 2, "lost": {}, "unsourced": 0},
            "terminus2/subagent": {"source": 1, "output": 1, "lost": {}, "unsourced": 0},
        }, mode


def test_each_atif_file_is_parsed_once_per_trial(harbor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn count and the reader share the parsed documents (a continuation chain: two files), and the
    problems a parse notes (bad UTF-8 here) still reach the reader's report."""
    trial_dir = harbor.trial("hello-world__P", instance_id="hello-world", agent_name="terminus-2")
    agent = trial_dir / "agent"
    harbor.copy_fixture("terminus2_linear_history.trajectory.json", agent / "trajectory.json")
    harbor.copy_fixture("terminus2_linear_history.trajectory.cont-1.json", agent / "trajectory.cont-1.json")
    main = agent / "trajectory.json"
    main.write_bytes(main.read_bytes().replace(b"NORMALIZED_SESSION_ID", b"NORMALIZED_SESSION_ID\xff", 1))
    parsed: list[str] = []
    real = atif.loads_lenient

    def counting(data: bytes, where: str, problems: list[str]) -> Any:
        parsed.append(Path(where).name)
        return real(data, where, problems)

    monkeypatch.setattr(atif, "loads_lenient", counting)
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    assert sorted(parsed) == ["trajectory.cont-1.json", "trajectory.json"]
    assert extraction.turns.source == {"terminus2/main": 7}
    assert any("trajectory.json" in note and "UTF-8" in note for note in extraction.problems), (
        extraction.problems
    )
