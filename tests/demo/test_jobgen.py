"""The synthetic Harbor job generator: shapes, cumulative proxy log, truth, coverage, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sft.core.canonical import Message, ToolCall
from tests.support.jobgen import (
    ATIF_VERSION,
    CLAUDE_REMINDER,
    EXCLUDED_REPOS,
    HARBOR_AGENT_NAME,
    TOOL_USE_ERROR,
    ExpectedConversation,
    GeneratedJob,
    demo_plans,
    generate_demo_job,
    generate_demo_jobs,
    generate_job,
    payload_for_target,
    trial_name_for,
)

FIXTURES = Path(__file__).parent / "fixtures"
BILLING = "x-anthropic-billing-header:"


# ---------------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedJob:
    return generate_demo_job(tmp_path_factory.mktemp("demo") / "demo_job")


@pytest.fixture(scope="module")
def per_scaffold(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GeneratedJob]:
    return generate_demo_jobs(tmp_path_factory.mktemp("split"))


def _schema(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.schema.json").read_text(encoding="utf-8"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _log_lines(job: GeneratedJob, trial_name: str) -> list[dict[str, Any]]:
    path = job.job_dir / trial_name / "agent" / "litellm-trajectory.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _text(content: Any) -> Any:
    """OpenAI text parts -> their text joined with "\n" (the generator's documented mapping); else as is."""
    if (
        isinstance(content, list)
        and content
        and all(isinstance(p, dict) and p.get("type") == "text" for p in content)
    ):
        return "\n".join(p["text"] for p in content)
    return content


def _strip(obj: Any, keys: frozenset[str] = frozenset({"cache_control"})) -> Any:
    """Without the per-request churn the generator documents: cache_control, the OpenAI-shape text parts of the
    newest message (a string one request later) and its reminder part, the billing part of the system prompt."""
    if isinstance(obj, dict):
        out = {k: _strip(v, keys) for k, v in obj.items() if k not in keys}
        if isinstance(out.get("content"), list) and out.get("role") in ("user", "tool", "system"):
            churn = (CLAUDE_REMINDER, BILLING)
            out["content"] = _text(
                [p for p in out["content"] if not str(p.get("text", "")).startswith(churn)]
            )
        return out
    if isinstance(obj, list):
        return [_strip(v, keys) for v in obj]
    return obj


def _system_text(body: dict[str, Any]) -> str:
    if "system" in body:
        return "\n".join(block["text"] for block in body["system"])
    systems = [m for m in body["messages"] if m["role"] == "system"]
    return "\n".join(_text(m["content"]) for m in systems)  # OpenCode's two system messages: joined with "\n"


def _conversation_key(body: dict[str, Any]) -> str:
    """Which conversation a proxy line belongs to: its system prompt (minus cch) and tool names."""
    system = re.sub(r"cch=[0-9a-f]+;", "cch=;", _system_text(body))
    system = re.sub(r"cc_version=[^;]+;", "", system)
    tools = [t.get("name") or t["function"]["name"] for t in body.get("tools", [])]
    first_user = next(m for m in body["messages"] if m["role"] == "user")
    title = "title" if "Generate a title" in json.dumps(first_user) else ""
    return f"{title}|{system}|{tools}"


def _response_as_request_message(line: dict[str, Any]) -> dict[str, Any]:
    body = line["response_body"]
    if "choices" in body:
        return body["choices"][0]["message"]
    return {"role": "assistant", "content": body["content"]}


# A tiny independent reader of the proxy log, following the mapping the jobgen docstring states.
def _canonical_from_line(line: dict[str, Any]) -> tuple[list[Message], list[dict[str, Any]]]:
    body = line["request_body"]
    messages: list[Message] = [Message(role="system", content=_system_text(body))]
    wire = [m for m in body["messages"] if m["role"] != "system"] + [_response_as_request_message(line)]
    for m in wire:
        if m["role"] in ("user", "tool") and isinstance(_text(m["content"]), str):
            m = {**m, "content": _text(m["content"])}  # the OpenAI shape's text parts
        if isinstance(m["content"], list):
            messages.extend(_from_blocks(m))
        elif m["role"] == "assistant":
            calls = [
                ToolCall(
                    id=c["id"], name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"])
                )
                for c in m.get("tool_calls") or []
            ]
            messages.append(
                Message(
                    role="assistant",
                    content=m["content"] or "",
                    reasoning_content=m.get("reasoning_content", ""),
                    tool_calls=calls,
                )
            )
        elif m["role"] == "tool":
            messages.append(Message(role="tool", content=m["content"], tool_call_id=m["tool_call_id"]))
        else:
            messages.append(Message(role=m["role"], content=m["content"]))
    last = messages[-1]
    if not (last.content or last.reasoning_content or last.tool_calls):  # an aborted final response
        messages.pop()
        while messages[-1].role in ("tool", "user"):
            messages.pop()
    tools = [
        t
        if "function" in t
        else {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in body.get("tools", [])
    ]
    return messages, tools


def _from_blocks(m: dict[str, Any]) -> list[Message]:
    blocks = m["content"]
    if m["role"] == "assistant":
        return [
            Message(
                role="assistant",
                content="".join(b["text"] for b in blocks if b["type"] == "text"),
                reasoning_content="".join(b["thinking"] for b in blocks if b["type"] == "thinking"),
                tool_calls=[
                    ToolCall(id=b["id"], name=b["name"], arguments=b["input"])
                    for b in blocks
                    if b["type"] == "tool_use"
                ],
            )
        ]
    if blocks[0]["type"] == "tool_result":
        return [
            Message(
                role="tool",
                content=b["content"],
                tool_call_id=b["tool_use_id"],
                is_error=b.get("is_error", False),
            )
            for b in blocks
        ]
    return [Message(role="user", content="".join(b["text"] for b in blocks))]


def _without_error_flags(messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI-shaped logs carry no is_error flag; compare everything else."""
    return [m.model_dump(exclude={"is_error"}) for m in messages]


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------------


def test_job_and_trial_results_validate_against_harbor_schemas(demo: GeneratedJob) -> None:
    jsonschema.validate(_load(demo.job_dir / "result.json"), _schema("JobResult"))
    trial_schema = _schema("TrialResult")
    for info in demo.trials:
        result = _load(demo.job_dir / info.trial_name / "result.json")
        jsonschema.validate(result, trial_schema)
        assert result["trial_name"] == info.trial_name
        assert result["agent_info"]["name"] == HARBOR_AGENT_NAME[info.scaffold]
        assert result["agent_info"]["model_info"] == {"name": "GLM-5-FP8", "provider": "openai"}


def test_trial_config_task_path_gives_the_instance_id(demo: GeneratedJob) -> None:
    for info in demo.trials:
        config = _load(demo.job_dir / info.trial_name / "config.json")
        assert Path(config["task"]["path"]).name == info.instance_id
        assert config["agent"]["name"] == HARBOR_AGENT_NAME[info.scaffold]
        assert info.trial_name == trial_name_for(info.instance_id, info.trial_name[-7:])
    long_names = [i for i in demo.trials if len(i.instance_id) > 32]
    assert long_names, "the demo must hold a trial whose dir name truncates the instance id"
    assert all(not i.trial_name.startswith(i.instance_id + "__") for i in long_names)


def test_atif_documents_validate_and_number_steps(demo: GeneratedJob) -> None:
    schema = _schema("Trajectory")
    for info in demo.trials:
        doc = _load(demo.job_dir / info.trial_name / "agent" / "trajectory.json")
        jsonschema.validate(doc, schema)
        assert doc["schema_version"] == ATIF_VERSION[info.scaffold]
        assert [s["step_id"] for s in doc["steps"]] == list(range(1, len(doc["steps"]) + 1))
        for step in doc["steps"]:
            call_ids = {c["tool_call_id"] for c in step.get("tool_calls", [])}
            for result in step.get("observation", {}).get("results", []):
                if "source_call_id" in result:
                    assert result["source_call_id"] in call_ids, (info.trial_name, step["step_id"])


def test_rewards_and_exceptions_agree_across_files_and_truth(demo: GeneratedJob) -> None:
    job_result = _load(demo.job_dir / "result.json")
    evals = job_result["stats"]["evals"]
    assert sorted(evals) == sorted(f"{HARBOR_AGENT_NAME[s]}__GLM-5-FP8__swe-demo" for s in demo.scaffolds)
    listed: dict[str, float] = {}
    excepted: dict[str, str] = {}
    for entry in evals.values():
        for value, names in entry["reward_stats"]["reward"].items():
            listed.update(dict.fromkeys(names, float(value)))
        for exc, names in entry["exception_stats"].items():
            excepted.update(dict.fromkeys(names, exc))
    for info in demo.trials:
        trial_dir = demo.job_dir / info.trial_name
        result = _load(trial_dir / "result.json")
        assert listed[info.trial_name] == info.reward
        assert result["verifier_result"]["rewards"]["reward"] == info.reward
        assert float((trial_dir / "verifier" / "reward.txt").read_text()) == info.reward
        assert excepted.get(info.trial_name) == info.exception_type
        assert (result["exception_info"] or {}).get("exception_type") == info.exception_type
        assert info.trial_name in demo.truth
    both = [i for i in demo.trials if i.exception_type and i.reward == 1.0]
    assert [i.exception_type for i in both] == ["AgentTimeoutError"]


def test_truth_is_not_written_into_the_job_dir(demo: GeneratedJob) -> None:
    names = {p.name for p in demo.job_dir.rglob("*")}
    assert not any("truth" in n or "expected" in n for n in names)


# ---------------------------------------------------------------------------------------------------
# proxy log
# ---------------------------------------------------------------------------------------------------


def test_every_log_line_is_json_with_the_documented_fields(demo: GeneratedJob) -> None:
    for info in demo.trials:
        if not info.has_litellm:
            assert not (demo.job_dir / info.trial_name / "agent" / "litellm-trajectory.jsonl").exists()
            continue
        lines = _log_lines(demo, info.trial_name)
        assert sum(1 for ln in lines if ln["success"]) >= info.n_model_calls
        for line in lines:
            assert {
                "session_id",
                "success",
                "request_time",
                "timestamp",
                "request_body",
                "response_body",
                "usage",
            } <= set(line)
            assert line["session_id"] == info.instance_id
            assert isinstance(line["request_time"], int) and line["request_time"] > 1_700_000_000_000
            if line["success"]:
                assert line["response_body"] and line["usage"]["total_tokens"] > 0
            else:
                assert line["response_body"] is None and line["failure"]["status_code"] == 504


def test_log_is_cumulative_per_conversation(demo: GeneratedJob) -> None:
    """Each call of a conversation repeats the previous request plus its response (modulo cache_control)."""
    checked = 0
    for info in demo.trials:
        if not info.has_litellm:
            continue
        by_conv: dict[str, list[dict[str, Any]]] = {}
        for line in sorted(_log_lines(demo, info.trial_name), key=lambda ln: ln["request_time"]):
            if line["success"]:
                by_conv.setdefault(_conversation_key(line["request_body"]), []).append(line)
        for lines in by_conv.values():
            for prev, nxt in zip(lines, lines[1:], strict=False):
                prev_msgs = _strip(prev["request_body"]["messages"]) + [
                    _strip(_response_as_request_message(prev))
                ]
                next_msgs = _strip(nxt["request_body"]["messages"])
                assert next_msgs[: len(prev_msgs)] == prev_msgs, info.trial_name
                assert len(next_msgs) > len(prev_msgs)
                checked += 1
    assert checked >= 30


def test_truth_equals_the_last_successful_call_of_each_conversation(demo: GeneratedJob) -> None:
    for info in demo.trials:
        if not info.has_litellm or info.scaffold == "terminus2":
            continue
        lines = sorted(
            (ln for ln in _log_lines(demo, info.trial_name) if ln["success"]),
            key=lambda ln: ln["request_time"],
        )
        last_by_conv: dict[str, dict[str, Any]] = {}
        for line in lines:
            last_by_conv[_conversation_key(line["request_body"])] = line
        convs = [ln for key, ln in last_by_conv.items() if not key.startswith("title|")]
        truth = demo.truth[info.trial_name]
        assert len(convs) == len(truth)
        for expected in truth:
            candidates = [_canonical_from_line(ln) for ln in convs]
            match = [c for c in candidates if c[1] == expected.tools and len(c[0]) == len(expected.messages)]
            assert match, f"{info.trial_name}: no log conversation matches the {expected.agent_type} truth"
            messages, tools = match[0]
            if "system" in convs[0]["request_body"]:  # Anthropic-shaped: tool_result blocks carry is_error
                assert messages == expected.messages
            else:
                assert _without_error_flags(messages) == _without_error_flags(expected.messages)


def test_terminus_truth_is_recoverable_from_raw_content_atif(demo: GeneratedJob) -> None:
    for info in (i for i in demo.trials if i.scaffold == "terminus2"):
        doc = _load(demo.job_dir / info.trial_name / "agent" / "trajectory.json")
        steps = doc["steps"]
        rebuilt = [Message(role="user", content=steps[0]["message"])]
        agent_steps = [s for s in steps if s["source"] == "agent"]
        for k, step in enumerate(agent_steps):
            assert "tool_calls" not in step
            json.loads(step["message"])  # the raw response is the JSON protocol text
            rebuilt.append(
                Message(
                    role="assistant",
                    content=step["message"],
                    reasoning_content=step.get("reasoning_content", ""),
                )
            )
            if k < len(agent_steps) - 1:
                rebuilt.append(Message(role="user", content=step["observation"]["results"][0]["content"]))
        (expected,) = demo.truth[info.trial_name]
        assert expected.source_kind == "atif" and expected.tools == []
        assert rebuilt == expected.messages


def test_atif_only_opencode_truth_matches_its_trajectory(demo: GeneratedJob) -> None:
    (info,) = [i for i in demo.trials if not i.has_litellm]
    assert info.scaffold == "open-code"
    doc = _load(demo.job_dir / info.trial_name / "agent" / "trajectory.json")
    (expected,) = demo.truth[info.trial_name]
    assert expected.source_kind == "atif" and expected.tools == []
    rebuilt: list[Message] = []
    for step in doc["steps"]:
        if step["source"] == "user":
            rebuilt.append(Message(role="user", content=step["message"]))
            continue
        calls = [
            ToolCall(id=c["tool_call_id"], name=c["function_name"], arguments=c["arguments"])
            for c in step.get("tool_calls", [])
        ]
        rebuilt.append(
            Message(
                role="assistant",
                content=step["message"],
                reasoning_content=step.get("reasoning_content", ""),
                tool_calls=calls,
            )
        )
        for result in step.get("observation", {}).get("results", []):
            rebuilt.append(
                Message(role="tool", content=result["content"], tool_call_id=result["source_call_id"])
            )
    assert _without_error_flags(rebuilt) == _without_error_flags(expected.messages)


# ---------------------------------------------------------------------------------------------------
# coverage of the demo
# ---------------------------------------------------------------------------------------------------


def _assistants(convs: list[ExpectedConversation]) -> list[Message]:
    return [m for c in convs for m in c.messages if m.role == "assistant"]


def test_demo_covers_every_documented_case(demo: GeneratedJob) -> None:
    trials = {i.trial_name: i for i in demo.trials}
    assert {i.scaffold for i in demo.trials} == {"claude-code", "open-code", "openhands-sdk", "terminus2"}
    assert {i.reward for i in demo.trials} == {0.0, 1.0}
    all_truth = [c for convs in demo.truth.values() for c in convs]
    assistants = _assistants(all_truth)
    assert any(len(m.tool_calls) >= 2 for m in assistants), "parallel tool calls"
    assert any(m.content and m.tool_calls for m in assistants), "narration + tool call"
    assert any(m.reasoning_content for m in assistants), "reasoning_content"
    text = json.dumps([m.model_dump() for c in all_truth for m in c.messages], ensure_ascii=False)
    assert re.search(r"[\u4e00-\u9fff]", text) and "🐛" in text, "CJK and emoji"
    assert any(m.is_error and m.content.startswith("<tool_use_error>") for c in all_truth for m in c.messages)
    assert any(c.agent_type == "subagent" for c in all_truth), "claude-code Task sub-agent"
    cc_trial = next(n for n, convs in demo.truth.items() if any(c.agent_type == "subagent" for c in convs))
    assert trials[cc_trial].scaffold == "claude-code"
    # claude-code lines are Anthropic-shaped, the others OpenAI-shaped, unless the plan names the other shape
    shapes = set()
    for info in demo.trials:
        if info.has_litellm:
            first = _log_lines(demo, info.trial_name)[0]
            anthropic = info.plan.proxy_shape == "anthropic" or (
                not info.plan.proxy_shape and info.scaffold == "claude-code"
            )
            assert ("system" in first["request_body"]) == anthropic
            assert ("choices" in (first["response_body"] or {"choices": 1})) == (not anthropic)
            shapes.add((info.scaffold, anthropic))
    # the real-world shapes of issue 13: claude-code in the OpenAI shape, open-code in both shapes with two
    # system prompts, aborted final requests (an empty response) in both shapes
    assert {
        ("claude-code", True),
        ("claude-code", False),
        ("open-code", True),
        ("open-code", False),
    } <= shapes
    assert {(i.plan.proxy_shape or "default") for i in demo.trials if i.plan.two_system} == {
        "default",
        "anthropic",
    }
    assert {i.plan.proxy_shape or "default" for i in demo.trials if i.plan.aborted_final} == {
        "default",
        "anthropic",
    }
    # open-code title-generator side call, logged before the earlier-started first main call
    oc = [i for i in demo.trials if i.scaffold == "open-code" and i.has_litellm]
    titles = [
        ln
        for i in oc
        for ln in _log_lines(demo, i.trial_name)
        if "title generator" in json.dumps(ln["request_body"])
    ]
    assert titles
    assert any(
        _log_lines(demo, i.trial_name)[0]["request_time"] > _log_lines(demo, i.trial_name)[1]["request_time"]
        for i in oc
    ), "file order differs from request_time order somewhere"
    # a failed proxy request followed by a successful retry of the same request
    retried = 0
    for info in demo.trials:
        if info.has_litellm:
            lines = sorted(_log_lines(demo, info.trial_name), key=lambda ln: ln["request_time"])
            for a, b in zip(lines, lines[1:], strict=False):
                if not a["success"]:
                    assert b["success"] and b["request_body"]["messages"] == a["request_body"]["messages"]
                    retried += 1
    assert retried >= 1
    # terminus2: JSON protocol text, no tools, no system
    for convs in (demo.truth[i.trial_name] for i in demo.trials if i.scaffold == "terminus2"):
        assert convs[0].messages[0].role == "user"
        assert all(not m.tool_calls for m in convs[0].messages)
        assert "analysis" in json.loads(convs[0].messages[1].content)
    # the timed-out trial ends on an unanswered tool call
    timed_out = next(i for i in demo.trials if i.exception_type)
    assert demo.truth[timed_out.trial_name][0].messages[-1].tool_calls
    # repo exclusion is exercised both ways
    excluded = {f"{o}__{r}" for o, r in EXCLUDED_REPOS}
    prefixes = {i.instance_id.rsplit("-", 1)[0] for i in demo.trials}
    assert prefixes & excluded and prefixes - excluded
    assert TOOL_USE_ERROR.startswith("<tool_use_error>")


def test_per_scaffold_demo_jobs_hold_one_agent_each(per_scaffold: dict[str, GeneratedJob]) -> None:
    assert sorted(per_scaffold) == sorted(["claude-code", "open-code", "openhands-sdk", "terminus2"])
    for scaffold, job in per_scaffold.items():
        assert job.job_dir.name == scaffold
        assert len(job.trials) == len(demo_plans()[scaffold]) >= 3 and {t.scaffold for t in job.trials} == {
            scaffold
        }
        evals = _load(job.job_dir / "result.json")["stats"]["evals"]
        assert list(evals) == [f"{HARBOR_AGENT_NAME[scaffold]}__GLM-5-FP8__swe-demo"]


# ---------------------------------------------------------------------------------------------------
# determinism and scale
# ---------------------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_jobs(tmp_path: Path) -> None:
    first = generate_demo_job(tmp_path / "a" / "demo_job")
    second = generate_demo_job(tmp_path / "b" / "demo_job")
    assert _all_files(first.job_dir) == _all_files(second.job_dir)
    assert first.truth == second.truth
    other_seed = generate_demo_job(tmp_path / "c" / "demo_job", seed=1)
    assert _all_files(other_seed.job_dir) != _all_files(first.job_dir)


def test_random_job_scales_and_is_deterministic(tmp_path: Path) -> None:
    kwargs = {"n_trials": 9, "seed": 3, "max_turns": 20, "payload_bytes": 3000}
    job = generate_job(tmp_path / "x" / "big", **kwargs)
    again = generate_job(tmp_path / "y" / "big", **kwargs, with_truth=False)
    assert _all_files(job.job_dir) == _all_files(again.job_dir)
    assert again.truth == {} and len(job.truth) == 9
    small = generate_job(tmp_path / "z" / "big", n_trials=9, seed=3, max_turns=20)
    assert job.bytes_written > 2 * small.bytes_written
    padded = next(t for t in job.trials if t.has_litellm)
    assert (
        "heartbeat ok" in (job.job_dir / padded.trial_name / "agent" / "litellm-trajectory.jsonl").read_text()
    )
    assert {t.scaffold for t in job.trials} == {"claude-code", "open-code", "openhands-sdk", "terminus2"}
    for info in job.trials:
        turns = sum(1 for m in job.truth[info.trial_name][0].messages if m.role == "assistant")
        assert 1 <= turns <= 20 + 2  # terminus2 adds the completion confirmation exchange


def test_payload_for_target_lands_near_the_requested_size(tmp_path: Path) -> None:
    target = 6 * 2**20
    payload = payload_for_target(target, 12, 16)
    job = generate_job(tmp_path / "sized", n_trials=12, max_turns=16, payload_bytes=payload, with_truth=False)
    assert target / 3 < job.bytes_written < target * 3


def test_single_scaffold_jobs_and_bad_arguments(tmp_path: Path) -> None:
    job = generate_job(tmp_path / "cc", n_trials=3, scaffolds=("claude-code",))
    assert {t.scaffold for t in job.trials} == {"claude-code"}
    with pytest.raises(ValueError, match="scaffolds"):
        generate_job(tmp_path / "bad", scaffolds=("openhands",))
    with pytest.raises(ValueError, match="max_turns"):
        generate_job(tmp_path / "bad", max_turns=1)


def test_make_demo_job_script_writes_a_padded_random_job(tmp_path: Path, project_root: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "cli_job"
    cmd = [sys.executable, str(project_root / "scripts" / "make_demo_job.py"), "--out", str(out)]
    cmd += ["--trials", "4", "--max-turns", "6", "--big-mb", "0.5", "--scaffolds", "open-code,terminus2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    trial_dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(trial_dirs) == 4
    evals = _load(out / "result.json")["stats"]["evals"]
    assert sorted(evals) == ["opencode__GLM-5-FP8__swe-demo", "terminus-2__GLM-5-FP8__swe-demo"]
    assert "4 trials" in proc.stdout


def test_claude_code_job_with_both_proxy_shapes(tmp_path: Path) -> None:
    """The benchmarks' cc shape: ``openai_proxy_every=2`` logs every other claude-code trial in the proxy's
    OpenAI translation (billing part in the system prompt, reminder parts), the rest in the Anthropic shape."""
    job = generate_job(
        tmp_path / "cc", n_trials=8, seed=3, max_turns=6, scaffolds=("claude-code",), openai_proxy_every=2
    )
    shapes = [t.plan.proxy_shape for t in job.trials]
    assert shapes == ["", "openai"] * 4
    assert [
        t.plan.proxy_shape
        for t in generate_job(
            tmp_path / "d", n_trials=8, seed=3, max_turns=6, scaffolds=("claude-code",)
        ).trials
    ] == [""] * 4 + ["openai"] + [""] * 3
    for info in job.trials:
        if not info.has_litellm:
            continue
        bodies = [ln["request_body"] for ln in _log_lines(job, info.trial_name) if ln["success"]]
        if info.plan.proxy_shape == "openai":
            assert all("system" not in b and b["messages"][0]["role"] == "system" for b in bodies)
            assert all(
                b["messages"][0]["content"][0]["text"].startswith("x-anthropic-billing-header")
                for b in bodies
            )
            assert any(json.dumps(CLAUDE_REMINDER)[1:-1] in json.dumps(b) for b in bodies)
        else:
            assert all("system" in b for b in bodies)
    with pytest.raises(ValueError, match="openai_proxy_every"):
        generate_job(tmp_path / "bad", openai_proxy_every=0)
