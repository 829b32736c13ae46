"""rule_score: each sub-metric on crafted trajectories, the key set and the weighting."""

from __future__ import annotations

import pytest

from sft.rules.score import (
    WEIGHTS,
    deleted_paths,
    edited_paths,
    ran_tests,
    rule_score,
    scaffold_median_steps,
)
from tests.convert.builders import assistant, call, simple, tool, traj, user

REFERENCE_KEYS = {
    "scaffold",
    "assistant_turns",
    "total_tool_calls",
    "error_retry_cycles",
    "a1_error_retry",
    "a2_step_count_ratio",
    "b1_action_diversity",
    "b2_observation_utilization",
    "c1_tool_success_rate",
    "c2_tool_parallelism",
    "d1_submission_completeness",
    "d2_test_verification",
    "e1_file_edit_concentration",
    "e2_delete_then_modify",
    "efficiency_score",
    "style_score",
    "tool_mastery_score",
    "completion_score",
    "precision_score",
    "composite_score_v3",
    "composite_score_v4",
    "composite_score",
}


def bash(command: str, id: str) -> object:
    return call("bash", {"command": command}, id=id)


def test_subagent_has_no_score() -> None:
    assert rule_score(traj(user(), assistant("x"), agent_type="subagent"), median_steps=3) is None


def test_all_reference_keys_present_and_in_range() -> None:
    score = rule_score(simple(), median_steps=2)
    assert score is not None
    assert REFERENCE_KEYS <= set(score)
    for key in REFERENCE_KEYS - {"scaffold", "assistant_turns", "total_tool_calls", "error_retry_cycles"}:
        assert 0.0 <= score[key] <= 1.0, key
    assert (
        score["scaffold"] == "claude-code"
        and score["assistant_turns"] == 2
        and score["total_tool_calls"] == 1
    )


def test_a1_counts_retries_in_later_turns_only() -> None:
    t = traj(
        user(),
        assistant(calls=[bash("bad", "a"), bash("also", "b")]),
        tool("fail", id="a", is_error=True),
        tool("ok", id="b"),
        assistant(calls=[bash("retry", "c")]),
        tool("<tool_use_error>again</tool_use_error>", id="c"),
        assistant(calls=[call("read_file", {"path": "x"}, id="d")]),
        tool("x", id="d"),
        assistant(calls=[bash("retry2", "e")]),
        tool("ok", id="e"),
        assistant("done"),
    )
    score = rule_score(t, median_steps=None)
    assert score is not None
    # a -> next bash call is b (same turn: not a retry); c failed -> e is a later bash: one cycle.
    assert score["error_retry_cycles"] == 1
    assert score["a1_error_retry"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("median", "expected"), [(2, 0.8), (4, 1.0), (10, 1.0), (1, 0.4), (0.5, 0.0), (None, 0.8)]
)
def test_a2_step_ratio_normalisation(median: float | None, expected: float) -> None:
    score = rule_score(simple(), median_steps=median)  # 2 assistant turns
    assert score is not None and score["a2_step_count_ratio"] == pytest.approx(expected)


def test_b1_action_diversity() -> None:
    balanced = traj(
        user(),
        assistant(calls=[bash("ls", "a")]),
        tool(id="a"),
        assistant(calls=[call("read_file", {"path": "x"}, id="b")]),
        tool(id="b"),
        assistant("d"),
    )
    single = traj(
        user(),
        assistant(calls=[bash("ls", "a")]),
        tool(id="a"),
        assistant(calls=[bash("pwd", "b")]),
        tool(id="b"),
        assistant("d"),
    )
    assert rule_score(balanced, median_steps=None)["b1_action_diversity"] == pytest.approx(1.0)
    assert rule_score(single, median_steps=None)["b1_action_diversity"] == pytest.approx(0.0)
    no_calls = traj(user(), assistant("just text"))
    assert rule_score(no_calls, median_steps=None)["b1_action_diversity"] == 0.0


def test_b2_observation_utilization() -> None:
    t = traj(
        user(),
        assistant(calls=[bash("run", "a")]),
        tool("foo_func raised ValueError inside parser_module", id="a"),
        assistant("I will fix foo_func in parser_module"),
    )
    score = rule_score(t, median_steps=None)
    # keywords: foo_func, raised, valueerror, inside, parser_module -> 2 of 5 reappear
    assert score is not None and score["b2_observation_utilization"] == pytest.approx(0.4)


def test_c1_success_rate_and_c2_parallelism() -> None:
    t = traj(
        user(),
        assistant(calls=[bash("a", "a")]),
        tool(id="a", is_error=True),
        assistant(calls=[bash("b", "b"), bash("c", "c"), bash("d", "d")]),
        tool(id="b"),
        tool(id="c"),
        tool(id="d"),
        assistant("done"),
    )
    score = rule_score(t, median_steps=None)
    assert score is not None
    assert score["c1_tool_success_rate"] == pytest.approx(0.75)
    assert score["c2_tool_parallelism"] == pytest.approx(0.25)  # (2 calls per turn - 1) / 4


@pytest.mark.parametrize(
    ("ending", "exception", "expected"),
    [
        ("text", None, 1.0),
        ("text", "AgentTimeoutError", 0.5),
        ("call", None, 0.5),
        ("call", "AgentTimeoutError", 0.0),
        ("finish", None, 1.0),
    ],
)
def test_d1_submission_completeness(ending: str, exception: str | None, expected: float) -> None:
    last = {
        "text": assistant("Fixed."),
        "call": assistant(calls=[bash("ls", "z")]),
        "finish": assistant(calls=[call("finish", {"message": "done"}, id="z")]),
    }[ending]
    t = traj(user(), assistant(calls=[bash("ls", "a")]), tool(id="a"), last, exception_type=exception)
    assert rule_score(t, median_steps=None)["d1_submission_completeness"] == expected


def test_d2_test_verification() -> None:
    wrote_and_ran = traj(
        user(),
        assistant(calls=[call("Write", {"file_path": "tests/test_bug.py", "content": "x"}, id="a")]),
        tool(id="a"),
        assistant(calls=[bash("python -m pytest tests/test_bug.py -q", "b")]),
        tool(id="b"),
        assistant("done"),
    )
    only_ran = traj(
        user(), assistant(calls=[bash("cd /repo && pytest -x", "b")]), tool(id="b"), assistant("done")
    )
    reproduce = traj(
        user(),
        assistant(calls=[bash("cat > reproduce_issue.py <<'EOF'\nprint(1)\nEOF", "a")]),
        tool(id="a"),
        assistant(calls=[bash("python reproduce_issue.py", "b")]),
        tool(id="b"),
        assistant("done"),
    )
    nothing = traj(user(), assistant(calls=[bash("ls", "b")]), tool(id="b"), assistant("done"))
    assert rule_score(wrote_and_ran, median_steps=None)["d2_test_verification"] == 1.0
    assert rule_score(only_ran, median_steps=None)["d2_test_verification"] == 0.5
    assert rule_score(reproduce, median_steps=None)["d2_test_verification"] == 1.0
    assert rule_score(nothing, median_steps=None)["d2_test_verification"] == 0.0


def test_e1_edit_concentration_and_e2_delete_then_modify() -> None:
    edits = [
        call("Edit", {"file_path": "a.py", "old_string": "x", "new_string": "y"}, id=f"e{i}")
        for i in range(3)
    ]
    t = traj(
        user(),
        assistant(calls=edits),
        *[tool(id=f"e{i}") for i in range(3)],
        assistant(
            calls=[call("str_replace_editor", {"command": "create", "path": "b.py", "file_text": ""}, id="f")]
        ),
        tool(id="f"),
        assistant(calls=[call("str_replace_editor", {"command": "view", "path": "c.py"}, id="g")]),
        tool(id="g"),
        assistant(calls=[bash("rm -f b.py", "h")]),
        tool(id="h"),
        assistant(calls=[call("Write", {"file_path": "b.py", "content": "z"}, id="i")]),
        tool(id="i"),
        assistant("done"),
    )
    score = rule_score(t, median_steps=None)
    assert score is not None
    # 5 edits (3 on a.py, 2 on b.py; the view does not count) over 2 files -> 2.5 per file
    assert score["e1_file_edit_concentration"] == pytest.approx(1 - 1.5 / 4)
    assert score["delete_then_modify_count"] == 1
    assert score["e2_delete_then_modify"] == pytest.approx(1 - 1 / 3, abs=1e-4)
    assert rule_score(simple(), median_steps=None)["e1_file_edit_concentration"] == 1.0


def test_shell_edit_delete_and_test_detection() -> None:
    assert edited_paths(bash("cat > foo.py <<'EOF'\nx\nEOF", "a")) == ["foo.py"]
    assert edited_paths(bash("echo hi >> log.txt 2>&1", "a")) == ["log.txt"]
    assert edited_paths(bash("sed -i 's/a/b/' src/x.py", "a")) == ["src/x.py"]
    assert edited_paths(bash("ls > /dev/null", "a")) == []
    assert edited_paths(call("TodoWrite", {"todos": []}, id="t")) == []
    assert edited_paths(
        call("apply_patch", {"input": "*** Begin Patch\n*** Update File: src/a.py\n@@"}, id="p")
    ) == ["src/a.py"]
    assert deleted_paths(bash("git rm -q old.py && ls", "a")) == ["old.py"]
    assert ran_tests(bash("go test ./...", "a")) and ran_tests(bash("npm test", "a"))
    assert not ran_tests(bash("cat test_file.txt", "a"))
    assert not ran_tests(call("read_file", {"path": "pytest.ini"}, id="r"))


def test_composite_is_the_weighted_sum_of_dimensions() -> None:
    score = rule_score(simple(), median_steps=3)
    assert score is not None
    expected = sum(WEIGHTS[d] * score[f"{d}_score"] for d in WEIGHTS)
    assert score["composite_score"] == pytest.approx(expected, abs=1e-3)
    assert score["efficiency_score"] == pytest.approx(
        0.8 * score["a1_error_retry"] + 0.2 * score["a2_step_count_ratio"], abs=1e-3
    )
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_scaffold_median_steps_uses_main_rows_only() -> None:
    rows = [
        simple(),
        traj(user(), assistant("a")),
        traj(
            user(),
            assistant("a"),
            user(),
            assistant("b"),
            user(),
            assistant("c"),
            user(),
            assistant("d"),
            agent_type="subagent",
        ),
        traj(user(), assistant("a"), scaffold="terminus2"),
    ]
    assert scaffold_median_steps(rows) == {"claude-code": 1.5, "terminus2": 1.0}


def test_results_are_paired_per_turn_when_ids_repeat() -> None:
    # Some scaffolds number calls per turn (call_0 in every turn): pairing must not be global.
    t = traj(
        user(),
        assistant(calls=[bash("bad", "call_0")]),
        tool("boom", id="call_0", is_error=True),
        assistant(calls=[bash("good", "call_0")]),
        tool("fine", id="call_0"),
        assistant("done"),
    )
    assert rule_score(t, median_steps=None)["error_retry_cycles"] == 1
