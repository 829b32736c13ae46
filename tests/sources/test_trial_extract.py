"""extract_trial: source choice, multi-step trials, and that every failure is a Reject, never an exception."""

from __future__ import annotations

import pytest

from sft.sources.harbor.trial import extract_trial
from sft.sources.scaffolds.claude_code import ClaudeCodeAdapter


def _atif(message: str = "done") -> dict:
    return {
        "schema_version": "ATIF-v1.7",
        "agent": {"name": "claude-code", "version": "1", "model_name": "m"},
        "steps": [
            {"step_id": 1, "source": "user", "message": "task"},
            {"step_id": 2, "source": "agent", "message": message},
        ],
    }


def _log_records(harbor) -> list[dict]:
    history = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    first = harbor.oai_record(
        list(history), {"content": "", "tool_calls": [harbor.call("c1", "Edit", {"a": 1})]}, tools=["Edit"]
    )
    history += [
        {"role": "assistant", "content": "", "tool_calls": [harbor.call("c1", "Edit", {"a": 1})]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    return [first, harbor.oai_record(list(history), {"content": "from log"}, tools=["Edit"])]


def test_auto_prefers_log_and_falls_back_to_atif(harbor) -> None:
    trial_dir = harbor.trial("a__1")
    harbor.write_atif(trial_dir / "agent", _atif("from atif"))
    harbor.write_log(trial_dir / "agent", _log_records(harbor))
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert extraction.source_used == "litellm"
    assert extraction.trajectories[0].messages[-1].content == "from log"
    forced = extract_trial(trial_dir, harbor.job_dir, "claude-code", trajectory_source="atif")
    assert forced.source_used == "atif" and forced.trajectories[0].messages[-1].content == "from atif"
    # a log with only failed calls: auto falls back to ATIF and says so
    harbor.write_log(
        trial_dir / "agent",
        [harbor.oai_record([{"role": "user", "content": "x"}], {"content": "y"}, success=False)],
    )
    fallback = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert fallback.source_used == "atif" and fallback.counters["atif_fallbacks"] == 1
    assert any("falling back to trajectory.json" in p for p in fallback.problems)
    only_log = extract_trial(trial_dir, harbor.job_dir, "claude-code", trajectory_source="litellm")
    (reject,) = only_log.rejects
    assert (reject.stage, reject.reason) == ("parse", "empty_litellm_log")
    assert "litellm-trajectory.jsonl" in reject.detail


def test_missing_sources(harbor) -> None:
    trial_dir = harbor.trial("b__1")
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "claude-code").rejects
    assert reject.reason == "no_trajectory_source" and "trajectory.json" in reject.detail
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "claude-code", trajectory_source="litellm").rejects
    assert reject.reason == "no_litellm_log"
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "claude-code", trajectory_source="atif").rejects
    assert reject.reason == "no_trajectory_source" and reject.instance_id == "django__django-12345"
    no_agent = harbor.trial("b__2", agent=False)
    (reject,) = extract_trial(no_agent, harbor.job_dir, "claude-code").rejects
    assert reject.reason == "no_agent_dir"


@pytest.mark.parametrize(
    ("result_text", "stage", "reason"),
    [
        (None, "discover", "no_result_json"),
        ("{trunc", "parse", "invalid_result_json"),
        ('"str"', "parse", "invalid_result_json"),
    ],
)
def test_unreadable_trials_are_rejects(harbor, result_text: str | None, stage: str, reason: str) -> None:
    trial_dir = harbor.trial("c__1", write_result=False)
    if result_text is not None:
        (trial_dir / "result.json").write_text(result_text)
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    (reject,) = extraction.rejects
    assert (reject.stage, reject.reason, reject.trial_name) == (stage, reason, "c__1")
    assert "result.json" in reject.detail
    assert extraction.info is None and extraction.trajectories == []


def test_corrupt_atif_and_bad_arguments_are_rejects(harbor) -> None:
    trial_dir = harbor.trial("d__1")
    (trial_dir / "agent" / "trajectory.json").write_text("[1, 2]")
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "claude-code").rejects
    assert reject.reason == "invalid_atif" and "trajectory.json" in reject.detail
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "no-such-agent").rejects
    assert (reject.stage, reject.reason) == ("scaffold", "unknown_scaffold")
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "auto").rejects  # claude-code by result.json
    assert reject.reason == "invalid_atif" and "a valid ATIF trajectory.json is needed" in reject.detail
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "claude-code", trajectory_source="both").rejects
    assert reject.reason == "bad_trajectory_source"


def test_unexpected_errors_never_escape(harbor, monkeypatch: pytest.MonkeyPatch) -> None:
    trial_dir = harbor.trial("e__1")
    harbor.write_log(trial_dir / "agent", _log_records(harbor))

    def explode(*args: object, **kwargs: object) -> list:
        raise RuntimeError("kaput")

    monkeypatch.setattr(ClaudeCodeAdapter, "from_litellm", explode)
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    (reject,) = extraction.rejects
    assert reject.reason == "unexpected_error" and "RuntimeError: kaput" in reject.detail


def test_multistep_trial_is_read_per_step(harbor) -> None:
    steps = [{"step_name": "one"}, {"step_name": "two"}]
    trial_dir = harbor.trial("f__1", step_results=steps)
    harbor.write_atif(trial_dir / "steps" / "one" / "agent", _atif("first"))
    harbor.write_log(trial_dir / "steps" / "two" / "agent", _log_records(harbor))
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert extraction.rejects == []
    assert [t.meta.extra["step"] for t in extraction.trajectories] == ["one", "two"]
    assert [t.meta.trajectory_index for t in extraction.trajectories] == [0, 1]
    assert [t.meta.source_kind for t in extraction.trajectories] == ["atif", "litellm"]
    assert extraction.source_used == "mixed"
    assert extraction.trajectories[1].meta.source_file == "f__1/steps/two/agent/litellm-trajectory.jsonl"
