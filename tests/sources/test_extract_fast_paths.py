"""Extraction shortcuts give what the plain path gave.

- ``extract_trial(..., info=read_trial_info(trial))`` (the engine passes the metadata it read for the outcome
  filter) gives the same extraction as reading it again, and then reads result.json/config.json once;
- reasoning recovery over the prefix up to the last turn without reasoning fills the same turns as
  ``litellm.recover_reasoning`` over the whole request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sft.sources.harbor import litellm
from sft.sources.harbor import trial as trial_module
from sft.sources.harbor.job import read_trial_info
from sft.sources.harbor.trial import extract_trial
from sft.sources.scaffolds import ADAPTERS, adapter_for_agent, base

ROOT = Path(__file__).resolve().parents[2]
DEMO_JOB = ROOT / "data" / "01_raw" / "demo_job"


def _demo_trials() -> list[Path]:
    return sorted(p for p in DEMO_JOB.iterdir() if (p / "result.json").is_file())


def _scaffold(trial_dir: Path) -> str:
    """The scaffold ``auto`` picks: a proxy-log adapter, else the agent's own (ATIF) name."""
    return adapter_for_agent(read_trial_info(trial_dir).agent_name).name


def _comparable(extraction: Any) -> dict[str, Any]:
    return {
        "trajectories": [t.model_dump() for t in extraction.trajectories],
        "rejects": [r.model_dump() for r in extraction.rejects],
        "info": extraction.info.model_dump() if extraction.info else None,
        "source_used": extraction.source_used,
        "problems": extraction.problems,
        "counters": extraction.counters,
    }


@pytest.mark.parametrize("trial_dir", _demo_trials(), ids=lambda p: p.name)
def test_passing_the_trial_info_gives_the_same_extraction(
    trial_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scaffold = _scaffold(trial_dir)
    plain = _comparable(extract_trial(trial_dir, DEMO_JOB, scaffold))
    info = read_trial_info(trial_dir)
    reads: list[Path] = []
    monkeypatch.setattr(
        trial_module, "read_trial_info", lambda path: reads.append(path) or read_trial_info(path)
    )
    given = _comparable(extract_trial(trial_dir, DEMO_JOB, scaffold, info=info))
    assert given == plain
    assert reads == [], "extract_trial read the trial metadata again although it was given"


def test_the_trial_info_is_read_when_not_given(harbor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    trial_dir = harbor.trial("t__1", agent_name="claude-code", write_result=False)
    reads: list[Path] = []
    monkeypatch.setattr(
        trial_module, "read_trial_info", lambda path: reads.append(path) or read_trial_info(path)
    )
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert reads == [trial_dir]
    assert [r.reason for r in extraction.rejects] == ["no_result_json"]


# --------------------------------------------------------------------------------------- reasoning recovery


def _records(harbor: Any, echoed: list[bool]) -> list[dict[str, Any]]:
    """One OpenAI-shape conversation; turn k echoes its reasoning back in later requests iff echoed[k]."""
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "You are opencode."},
        {"role": "user", "content": "Make tests pass"},
    ]
    records = []
    for k, echo in enumerate(echoed):
        response = {
            "content": f"step {k}",
            "reasoning_content": f"thought {k}",
            "tool_calls": [harbor.call(f"call_{k}", "bash", {"command": f"echo {k}"})],
        }
        records.append(harbor.oai_record(list(history), response, tools=["bash", "edit"]))
        history += [
            {
                "role": "assistant",
                **{key: v for key, v in response.items() if echo or key != "reasoning_content"},
            },
            {"role": "tool", "tool_call_id": f"call_{k}", "content": f"{k}\n"},
        ]
    records.append(
        harbor.oai_record(list(history), {"content": "done", "reasoning_content": "end"}, tools=["bash"])
    )
    return records


def _conversations(records: list[dict[str, Any]], adapter_name: str) -> tuple[list[Any], dict[str, int]]:
    adapter = ADAPTERS[adapter_name]()
    report = base.AdapterReport()
    conversations = adapter.cumulative_conversations(records, report)
    return [(c.order, [m.model_dump() for m in c.messages], c.extra) for c in conversations], dict(
        report.counters
    )


def _both_ways(
    records: list[dict[str, Any]], adapter_name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    fast = _conversations(records, adapter_name)
    with monkeypatch.context() as patch:  # the whole-request recovery, as before the shortcut
        patch.setattr(base, "_recover_reasoning", litellm.recover_reasoning)
        slow = _conversations(records, adapter_name)
    return fast, slow


@pytest.mark.parametrize(
    "echoed",
    [
        [False, False, False],  # nothing echoed: every turn recovered
        [True, True, True],  # everything echoed: nothing to recover, no hashing
        [False, True, True, True],  # the usual shape: only early turns lack reasoning
        [True, True, False],  # the last turn lacks it: the whole prefix is needed
        [True, False, True, False, True],
    ],
)
def test_prefix_recovery_fills_the_same_turns(
    harbor: Any, echoed: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = _both_ways(_records(harbor, echoed), "open-code", monkeypatch)
    assert fast == slow
    conversations, counters = fast
    assert counters.get("reasoning_turns_recovered", 0) == echoed.count(False)
    ((_, messages, _),) = conversations
    assert [m["reasoning_content"] for m in messages if m["role"] == "assistant"] == [
        *(f"thought {k}" for k in range(len(echoed))),
        "end",
    ]


def test_prefix_recovery_hashes_only_the_prefix(harbor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _records(harbor, [False, True, True, True, True])
    lengths: list[int] = []
    original = litellm.rolling_hashes
    monkeypatch.setattr(litellm, "rolling_hashes", lambda view: lengths.append(len(view)) or original(view))
    _conversations(records, "open-code")
    # the first assistant turn (position 2) was produced from system + user: two messages hashed, not all 12
    assert lengths == [2]


def _cumulative_log_trials() -> list[Path]:
    """Demo trials with a proxy log whose calls repeat the conversation (openhands-sdk reads the last call only)."""
    return [
        t
        for t in _demo_trials()
        if (t / "agent" / "litellm-trajectory.jsonl").is_file() and _scaffold(t) != "openhands-sdk"
    ]


@pytest.mark.parametrize("trial_dir", _cumulative_log_trials(), ids=lambda p: p.name)
def test_prefix_recovery_on_the_demo_job(trial_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = trial_dir / "agent" / "litellm-trajectory.jsonl"
    scaffold = _scaffold(trial_dir)
    records = litellm.read_log(log).records
    fast, slow = _both_ways(records, scaffold, monkeypatch)
    assert fast == slow
