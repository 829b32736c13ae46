"""The generic ATIF path for every Harbor agent and its repairs, on Harbor's own golden files where they
exist (tests/fixtures/harbor/SOURCES.md) and hand-made shapes for the rest. Each test states the exact
messages kept and that every model turn is either kept or counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sft.config.harbor_agents import HARBOR_AGENT_NAMES
from sft.config.schema import SourceConfig
from sft.core.canonical import Message, ToolCall
from sft.rules.validate import repair_and_validate
from sft.sources.harbor.trial import extract_trial
from sft.sources.scaffolds import AtifAgentAdapter, atif_hooks_for, get_adapter
from sft.sources.scaffolds.decorations import strip_harbor_decorations

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "harbor"


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _doc(steps: list[dict[str, Any]], agent: str, **extra: Any) -> dict[str, Any]:
    for index, step in enumerate(steps, start=1):
        step.setdefault("step_id", index)
    return {
        "schema_version": "ATIF-v1.6",
        "agent": {"name": agent, "version": "1", "model_name": "m1"},
        "steps": steps,
        **extra,
    }


def _valid(trajectory: Any) -> Any:
    repaired, issues = repair_and_validate(trajectory, drop_tool_errors=False)
    assert repaired is not None, issues
    return repaired


def _model_turns(doc: dict[str, Any]) -> int:
    return sum(1 for s in doc["steps"] if s["source"] == "agent" and not s.get("is_copied_context"))


# ---------------------------------------------------------------------------------------------------------
# every Harbor agent


def test_every_harbor_agent_name_is_a_valid_scaffold() -> None:
    assert (
        len(HARBOR_AGENT_NAMES) == 48 and "codex" in HARBOR_AGENT_NAMES and "qwen-coder" in HARBOR_AGENT_NAMES
    )
    for name in (*HARBOR_AGENT_NAMES, "auto", "claude-code", "open-code", "openhands-sdk", "terminus2"):
        assert SourceConfig(type="harbor_job", scaffold=name, job_dir="j").scaffold == name
    with pytest.raises(ValueError, match="unknown scaffold 'codexx'.*gemini-cli"):
        SourceConfig(type="harbor_job", scaffold="codexx", job_dir="j")
    assert isinstance(get_adapter("gemini-cli"), AtifAgentAdapter)
    assert get_adapter("openhands").name == "openhands"  # Harbor's openhands (no proxy-log adapter)
    assert get_adapter("openhands-sdk").name == "openhands-sdk"  # the proxy-log adapter
    assert atif_hooks_for("terminus-2-summarization-answers") is atif_hooks_for("terminus-2")


CODEX_STEPS: list[dict[str, Any]] = [
    {"source": "user", "message": "Fix the failing test in calc.py"},
    # Harbor's codex converter writes a response's message and its function_call as two agent steps
    {
        "source": "agent",
        "message": "I'll look at the file first.",
        "reasoning_content": "need to read",
        "llm_call_count": 1,
    },
    {
        "source": "agent",
        "message": "",
        "llm_call_count": 1,
        "tool_calls": [
            {"tool_call_id": "call_a", "function_name": "shell", "arguments": {"command": ["cat", "calc.py"]}}
        ],
        "observation": {
            "results": [{"source_call_id": "call_a", "content": "def add(a, b):\n    return a - b\n"}]
        },
    },
    {
        "source": "agent",
        "message": "",
        "llm_call_count": 1,
        "tool_calls": [
            {
                "tool_call_id": "call_b",
                "function_name": "apply_patch",
                "arguments": {
                    "input": "*** Begin Patch\n-    return a - b\n+    return a + b\n*** End Patch"
                },
            }
        ],
        "observation": {"results": [{"source_call_id": "call_b", "content": "Success. Updated calc.py"}]},
    },
    {"source": "agent", "message": "Fixed: add() now returns a + b.", "llm_call_count": 1},
]


@pytest.mark.parametrize("scaffold", ["auto", "codex"])
def test_codex_converts_through_generic_atif(harbor, scaffold: str) -> None:
    trial_dir = harbor.trial("calc__c1", instance_id="calc-1", agent_name="codex")
    harbor.write_atif(trial_dir / "agent", _doc(json.loads(json.dumps(CODEX_STEPS)), agent="codex"))
    # a proxy log next to it is not read: codex has no proxy-log adapter, and the reason says so
    (trial_dir / "agent" / "litellm-trajectory.jsonl").write_text("")
    extraction = extract_trial(trial_dir, harbor.job_dir, scaffold)
    assert extraction.rejects == []
    (trajectory,) = extraction.trajectories
    assert trajectory.messages == [
        Message(role="user", content="Fix the failing test in calc.py"),
        Message(
            role="assistant",
            content="I'll look at the file first.",
            reasoning_content="need to read",
            tool_calls=[ToolCall(id="call_a", name="shell", arguments={"command": ["cat", "calc.py"]})],
        ),
        Message(role="tool", content="def add(a, b):\n    return a - b\n", tool_call_id="call_a"),
        Message(
            role="assistant",
            content="",
            tool_calls=[
                ToolCall(
                    id="call_b",
                    name="apply_patch",
                    arguments={
                        "input": "*** Begin Patch\n-    return a - b\n+    return a + b\n*** End Patch"
                    },
                )
            ],
        ),
        Message(role="tool", content="Success. Updated calc.py", tool_call_id="call_b"),
        Message(role="assistant", content="Fixed: add() now returns a + b."),
    ]
    assert trajectory.meta.scaffold == "codex" and trajectory.meta.source_kind == "atif"
    assert trajectory.meta.extra["repairs"] == {"merged_consecutive_agent_steps": 1}
    assert trajectory.meta.extra["source_reason"] == (
        "atif: no proxy-log adapter for agent 'codex' (litellm-trajectory.jsonl present but not read)"
    )
    assert extraction.source_reason == trajectory.meta.extra["source_reason"]
    _valid(trajectory)
    # 4 agent steps, 3 model turns: the message+function_call pair is one response
    assert sum(m.role == "assistant" for m in trajectory.messages) == 3


def test_unlisted_agent_with_auto_and_litellm_only_source(harbor) -> None:
    trial_dir = harbor.trial("calc__n1", instance_id="calc-1", agent_name="brand-new-agent")
    harbor.write_atif(trial_dir / "agent", _doc(json.loads(json.dumps(CODEX_STEPS)), agent="brand-new-agent"))
    (trajectory,) = extract_trial(trial_dir, harbor.job_dir, "auto").trajectories
    assert trajectory.meta.scaffold == "brand-new-agent"
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "auto", trajectory_source="litellm").rejects
    assert reject.reason == "no_litellm_adapter" and "trajectory_source to auto or atif" in reject.detail


# ---------------------------------------------------------------------------------------------------------
# Harbor goldens


def test_openhands_golden_mid_run_system_steps_are_context(harbor) -> None:
    trial_dir = harbor.trial("hello-world__oh", instance_id="hello-world", agent_name="openhands")
    harbor.copy_fixture("openhands_hello_world.trajectory.json", trial_dir / "agent" / "trajectory.json")
    doc = _fixture("openhands_hello_world.trajectory.json")
    steps = doc["steps"]
    extraction = extract_trial(trial_dir, harbor.job_dir, "auto")
    assert extraction.rejects == []
    (trajectory,) = extraction.trajectories
    # the two mid-run system steps follow the user step: one user turn, never a second system message
    assert trajectory.messages == [
        Message(role="system", content=steps[0]["message"]),
        Message(role="user", content="\n\n".join(s["message"] for s in steps[1:4])),
        Message(
            role="assistant",
            content=steps[4]["message"],
            tool_calls=[
                ToolCall(
                    id="call_fake_1",
                    name="str_replace_editor",
                    arguments=steps[4]["tool_calls"][0]["arguments"],
                )
            ],
        ),
        Message(
            role="tool", content="File created successfully at: /app/hello.txt", tool_call_id="call_fake_1"
        ),
        Message(
            role="assistant",
            content=steps[5]["message"],
            tool_calls=[
                ToolCall(id="call_fake_2", name="finish", arguments=steps[5]["tool_calls"][0]["arguments"])
            ],
        ),
    ]
    assert trajectory.meta.extra["repairs"] == {"merged_user_turns": 2, "mid_run_system_to_context": 2}
    assert [t["function"]["name"] for t in trajectory.tools] == ["str_replace_editor", "finish"]
    assert trajectory.meta.scaffold == "openhands"
    _valid(trajectory)


def test_mid_run_system_step_after_a_tool_result_joins_the_observation(harbor) -> None:
    agent = harbor.trial("t__ms", agent_name="openhands") / "agent"
    steps = [
        {"source": "system", "message": "sys"},
        {"source": "user", "message": "task"},
        {
            "source": "agent",
            "message": "look",
            "tool_calls": [{"tool_call_id": "c1", "function_name": "run", "arguments": {}}],
            "observation": {"results": [{"source_call_id": "c1", "content": "out"}]},
        },
        {"source": "system", "message": "Added workspace context"},
        {"source": "agent", "message": "done"},
    ]
    harbor.write_atif(agent, _doc(steps, agent="openhands"))
    (trajectory,) = extract_trial(agent.parent, harbor.job_dir, "openhands").trajectories
    assert trajectory.messages[3] == Message(
        role="tool", content="out\n\nAdded workspace context", tool_call_id="c1"
    )
    assert [m.role for m in trajectory.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert trajectory.meta.extra["repairs"] == {"context_into_observation": 1, "mid_run_system_to_context": 1}
    _valid(trajectory)


def test_terminus2_timeout_golden_results_without_source_call_id(harbor) -> None:
    """ATIF-v1.5 terminus-2 (rebuilt mode): no result names its call; each step has one call."""
    trial_dir = harbor.trial("hello-world__to", instance_id="hello-world", agent_name="terminus-2")
    harbor.copy_fixture("terminus2_timeout.trajectory.json", trial_dir / "agent" / "trajectory.json")
    doc = _fixture("terminus2_timeout.trajectory.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2", rebuilt_atif="keep")
    assert extraction.rejects == []
    (trajectory,) = extraction.trajectories
    expected = [Message(role="user", content=doc["steps"][0]["message"])]
    for step in doc["steps"][1:]:
        call = step["tool_calls"][0]
        expected += [
            Message(
                role="assistant",
                content=step["message"],
                tool_calls=[
                    ToolCall(id=call["tool_call_id"], name="bash_command", arguments=call["arguments"])
                ],
            ),
            Message(
                role="tool",
                content=step["observation"]["results"][0]["content"],
                tool_call_id=call["tool_call_id"],
            ),
        ]
    assert trajectory.messages == expected
    assert trajectory.meta.extra["repairs"] == {"paired_result_without_id": 3}
    assert (
        _valid(trajectory).messages[-1].role == "assistant"
    )  # the trailing result is trimmed: 3 of 3 turns kept
    # default rebuilt_atif: drop -> the 3 turns are counted under the reject, not lost silently
    dropped = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    assert [r.reason for r in dropped.rejects] == ["rebuilt_atif"]
    assert dropped.counters["rebuilt_atif_dropped_turns"] == _model_turns(doc) == 3


def test_terminus2_summarisation_golden_with_sub_agents(harbor) -> None:
    trial_dir = harbor.trial("hello-world__cs", instance_id="hello-world", agent_name="terminus-2")
    agent = trial_dir / "agent"
    base = "terminus2_summarization.trajectory"
    harbor.copy_fixture(f"{base}.json", agent / "trajectory.json")
    for kind in ("summary", "questions", "answers"):
        harbor.copy_fixture(
            f"{base}.summarization-1-{kind}.json", agent / f"trajectory.summarization-1-{kind}.json"
        )
    main = _fixture(f"{base}.json")
    subs = {k: _fixture(f"{base}.summarization-1-{k}.json") for k in ("summary", "questions", "answers")}
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2", rebuilt_atif="keep")
    assert extraction.rejects == []
    by_id = {(t.meta.agent_id, t.meta.extra.get("segment")): t for t in extraction.trajectories}
    assert set(by_id) == {
        (None, 0),
        (None, 1),
        ("summarization-1-summary", None),
        ("summarization-1-questions", None),
        ("summarization-1-answers", None),
    }
    # the post-hand-off segment is its own conversation: its first user turn is the hand-off prompt
    after = by_id[(None, 1)]
    assert after.messages[0] == Message(role="user", content=main["steps"][5]["message"])
    assert [m.content for m in after.messages if m.role == "assistant"] == [
        s["message"] for s in main["steps"][6:]
    ]
    assert after.meta.extra["repairs"] == {"paired_result_without_id": 2}
    before = by_id[(None, 0)]
    assert [m.content for m in before.messages if m.role == "assistant"] == [
        s["message"] for s in main["steps"][1:4]
    ]
    # each sub-agent's own answer is trainable; the copied main turns are not trained a second time
    summary = by_id[("summarization-1-summary", None)]
    assert summary.messages == [
        Message(role="user", content=subs["summary"]["steps"][4]["message"]),
        Message(role="assistant", content=subs["summary"]["steps"][5]["message"]),
    ]
    assert summary.meta.extra["repairs"] == {"dropped_copied_context": 3}
    questions = by_id[("summarization-1-questions", None)]
    assert [m.content for m in questions.messages] == [s["message"] for s in subs["questions"]["steps"]]
    answers = by_id[("summarization-1-answers", None)]
    assert answers.messages == [
        Message(role="user", content=subs["answers"]["steps"][6]["message"]),
        Message(role="assistant", content=subs["answers"]["steps"][7]["message"]),
    ]
    assert answers.meta.extra["repairs"] == {"dropped_copied_context": 4}
    for trajectory in extraction.trajectories:
        _valid(trajectory)
    # every model turn of every file is kept exactly once: 3 + 2 main, one per sub-agent
    kept = sum(m.role == "assistant" for t in extraction.trajectories for m in t.messages)
    assert kept == _model_turns(main) + sum(_model_turns(d) for d in subs.values()) == 8
    # copied_context: context keeps the sub-agents' copied history as trained turns
    with_context = extract_trial(
        trial_dir, harbor.job_dir, "terminus2", rebuilt_atif="keep", copied_context="context"
    )
    (answers,) = [t for t in with_context.trajectories if t.meta.agent_id == "summarization-1-answers"]
    assert sum(m.role == "assistant" for m in answers.messages) == 5


# ---------------------------------------------------------------------------------------------------------
# results without source_call_id


def _step_with_results(calls: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "source": "agent",
        "message": "m",
        "tool_calls": [{"tool_call_id": c, "function_name": "run", "arguments": {"n": c}} for c in calls],
        "observation": {"results": results},
    }


def test_one_result_for_a_batch_of_calls(harbor) -> None:
    agent = harbor.trial("t__b", agent_name="mini-swe-agent") / "agent"
    steps = [
        {"source": "user", "message": "task"},
        _step_with_results(["c1", "c2", "c3"], [{"content": "screen"}]),
        {"source": "agent", "message": "done"},
    ]
    harbor.write_atif(agent, _doc(steps, agent="mini-swe-agent"))
    (trajectory,) = extract_trial(agent.parent, harbor.job_dir, "auto").trajectories
    assert [(m.tool_call_id, m.content) for m in trajectory.messages if m.role == "tool"] == [
        ("c1", "screen"),
        ("c2", ""),
        ("c3", ""),
    ]
    assert trajectory.meta.extra["repairs"] == {
        "empty_result_for_batched_call": 2,
        "paired_result_without_id": 1,
    }
    _valid(trajectory)


def test_results_without_id_in_call_order_and_partly_named(harbor) -> None:
    agent = harbor.trial("t__o", agent_name="goose") / "agent"
    steps = [
        {"source": "user", "message": "task"},
        _step_with_results(
            ["c1", "c2", "c3"],
            [{"source_call_id": "c2", "content": "two"}, {"content": "one"}, {"content": "three"}],
        ),
        {"source": "agent", "message": "done"},
    ]
    harbor.write_atif(agent, _doc(steps, agent="goose"))
    (trajectory,) = extract_trial(agent.parent, harbor.job_dir, "auto").trajectories
    assert [(m.tool_call_id, m.content) for m in trajectory.messages if m.role == "tool"] == [
        ("c1", "one"),
        ("c2", "two"),
        ("c3", "three"),
    ]
    assert trajectory.meta.extra["repairs"] == {"paired_result_without_id": 2}


def test_ambiguous_results_without_id_are_rejected_naming_the_step(harbor) -> None:
    agent = harbor.trial("t__a", agent_name="gemini-cli") / "agent"
    steps = [
        {"source": "user", "message": "task"},
        _step_with_results(["c1", "c2", "c3"], [{"content": "x"}, {"content": "y"}]),
        {"source": "agent", "message": "done"},
    ]
    harbor.write_atif(agent, _doc(steps, agent="gemini-cli"))
    extraction = extract_trial(agent.parent, harbor.job_dir, "auto")
    assert extraction.trajectories == []
    (reject,) = extraction.rejects
    assert reject.reason == "ambiguous_results_without_id"
    assert (
        "trajectory.json: step 2: 2 observation results have no source_call_id but 3 calls" in reject.detail
    )
    assert "set observation.results[].source_call_id" in reject.detail and "(2 model turns)" in reject.detail
    assert "have no result" not in reject.detail


# ---------------------------------------------------------------------------------------------------------
# Harbor's claude-code decorations


STDOUT_DECORATED = (
    "total 4\n-rw-r--r-- 1 root root 14 hello.txt\n\n"
    "[stdout]\ntotal 4\n-rw-r--r-- 1 root root 14 hello.txt\n"
    '[metadata] {"interrupted": false, "noOutputExpected": false}'
)


@pytest.mark.parametrize(
    ("decorated", "visible", "is_error"),
    [
        (STDOUT_DECORATED, "total 4\n-rw-r--r-- 1 root root 14 hello.txt", False),
        (
            '(Bash completed with no output)\n\n[metadata] {"noOutputExpected": false}',
            "(Bash completed with no output)",
            False,
        ),
        (
            "ls: cannot access 'x': No such file\n\n[stderr]\nls: cannot access 'x': No such file\n[exit_code] 2"
            "\n\n[error] tool reported failure",
            "ls: cannot access 'x': No such file",
            True,
        ),
        (
            '{"type": "text", "text": "line one\\nline two"}\n\n[metadata] {"type": "text"}',
            "line one\nline two",
            False,
        ),
        ("[error] tool reported failure", "", True),
    ],
)
def test_strip_harbor_decorations(decorated: str, visible: str, is_error: bool) -> None:
    stripped = strip_harbor_decorations(decorated)
    assert stripped is not None and (stripped.text, stripped.is_error) == (visible, is_error)


@pytest.mark.parametrize(
    "text",
    [
        "plain output",
        "output\n\n[metadata] not json",  # not Harbor's metadata line: real output is never cut
        "real\n\n[stdout]\nsomething else entirely",  # a [stdout] block that duplicates nothing
        '{"type": "text", "text": "x", "other": 1}',  # not a bare text part
    ],
)
def test_undecorated_text_is_left_alone(text: str) -> None:
    assert strip_harbor_decorations(text) is None


def test_claude_code_atif_without_raw_tool_result_is_stripped_and_noted(harbor) -> None:
    agent = harbor.trial("t__cc") / "agent"
    steps = [
        {"source": "user", "message": "list files"},
        {
            "source": "agent",
            "message": "",
            "tool_calls": [
                {"tool_call_id": "t1", "function_name": "Bash", "arguments": {"command": "ls -l"}}
            ],
            "observation": {"results": [{"source_call_id": "t1", "content": STDOUT_DECORATED}]},
        },
        {"source": "agent", "message": "One file."},
    ]
    harbor.write_atif(agent, _doc(steps, agent="claude-code"))
    (trajectory,) = extract_trial(agent.parent, harbor.job_dir, "claude-code").trajectories
    assert trajectory.messages[2].content == "total 4\n-rw-r--r-- 1 root root 14 hello.txt"
    assert trajectory.meta.extra["repairs"] == {"stripped_harbor_decorations": 1}
    assert trajectory.meta.extra["atif_caveats"] == (
        "no system prompt or tool schemas in ATIF; 1 tool results stripped of Harbor's [stdout]/[metadata] decorations"
    )


def test_calls_and_results_both_without_ids_pair_by_position(harbor) -> None:
    agent = harbor.trial("t__n", agent_name="mini-swe-agent") / "agent"
    steps = [
        {"source": "user", "message": "task"},
        {
            "source": "agent",
            "message": "m",
            "tool_calls": [{"function_name": "run", "arguments": {"n": 1}}],
            "observation": {"results": [{"content": "out"}]},
        },
        {"source": "agent", "message": "done"},
    ]
    harbor.write_atif(agent, _doc(steps, agent="mini-swe-agent"))
    (trajectory,) = extract_trial(agent.parent, harbor.job_dir, "auto").trajectories
    assert trajectory.messages[2] == Message(role="tool", content="out", tool_call_id=None)
    repaired = _valid(trajectory)  # the validator's id repair gives the call and its result one id
    assert repaired.messages[1].tool_calls[0].id == repaired.messages[2].tool_call_id == "call_000001"


def test_conversion_options_are_validated_with_the_choices() -> None:
    from sft.config.schema import ConversionConfig

    config = ConversionConfig(data_name="d")
    assert (config.copied_context, config.rebuilt_atif) == ("drop", "drop")
    with pytest.raises(ValueError, match="copied_context"):
        ConversionConfig(data_name="d", copied_context="train")
    with pytest.raises(ValueError, match="rebuilt_atif"):
        ConversionConfig(data_name="d", rebuilt_atif="yes")


def test_a_call_without_any_result_mid_run_is_rejected_naming_step_and_call(harbor) -> None:
    agent = harbor.trial("t__u", agent_name="codex") / "agent"
    steps = [
        {"source": "user", "message": "task"},
        {
            "source": "agent",
            "message": "m",
            "tool_calls": [{"tool_call_id": "c9", "function_name": "shell", "arguments": {}}],
        },
        {
            "source": "agent",
            "message": "next",
            "tool_calls": [{"tool_call_id": "c10", "function_name": "shell", "arguments": {}}],
        },
    ]
    harbor.write_atif(agent, _doc(steps, agent="codex"))
    (reject,) = extract_trial(agent.parent, harbor.job_dir, "auto").rejects
    assert reject.reason == "unanswered_tool_call"
    assert "trajectory.json: step 2: calls ['c9'] have no observation result" in reject.detail
    assert "add it to that step's observation.results" in reject.detail and "(2 model turns)" in reject.detail
    # the last step may end on its calls (the run stopped there): no reject
    harbor.write_atif(agent, _doc(steps[:2], agent="codex"))
    assert extract_trial(agent.parent, harbor.job_dir, "auto").rejects == []
