"""Builders for hand-made Harbor trial dirs and LiteLLM log records (used through the ``harbor`` fixture)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "harbor"


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


class HarborBuilder:
    """Writes trial dirs under one job dir and builds proxy-log records in OpenAI and Anthropic shape."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        job_dir.mkdir(parents=True, exist_ok=True)
        self._clock = 1_700_000_000_000

    # -- trial dirs ----------------------------------------------------------------------------------------

    def trial(
        self,
        name: str,
        *,
        instance_id: str = "django__django-12345",
        agent_name: str | None = "claude-code",
        model: str = "MiniMax-M2.7",
        rewards: dict[str, Any] | None = None,
        exception_type: str | None = None,
        write_config: bool = True,
        write_result: bool = True,
        step_results: list[dict[str, Any]] | None = None,
        agent: bool = True,
    ) -> Path:
        trial_dir = self.job_dir / name
        trial_dir.mkdir(parents=True, exist_ok=True)
        task_path = f"/abs/tasks/{instance_id}"
        if write_config:
            _dump(
                trial_dir / "config.json",
                {"task": {"path": task_path}, "trial_name": name, "agent": {"name": agent_name}},
            )
        if write_result:
            result: dict[str, Any] = {
                "id": "00000000-0000-0000-0000-000000000000",
                "task_name": instance_id,
                "trial_name": name,
                "trial_uri": f"file:///elsewhere/jobs/j/{name}",
                "task_id": {"path": task_path},
                "agent_info": {
                    "name": agent_name,
                    "version": "1.0",
                    "model_info": {"name": model, "provider": "openai"},
                },
                "agent_result": {
                    "n_input_tokens": 100,
                    "n_cache_tokens": 10,
                    "n_output_tokens": 20,
                    "cost_usd": None,
                },
                "verifier_result": {"rewards": rewards if rewards is not None else {"reward": 1.0}},
                "exception_info": (
                    {"exception_type": exception_type, "exception_message": "boom"}
                    if exception_type
                    else None
                ),
                "step_results": step_results,
            }
            _dump(trial_dir / "result.json", result)
        if agent and not step_results:
            (trial_dir / "agent").mkdir(exist_ok=True)
        return trial_dir

    @staticmethod
    def write_log(
        agent_dir: Path, records: list[Any], *, raw_tail: bytes = b"", newline_at_end: bool = True
    ) -> Path:
        agent_dir.mkdir(parents=True, exist_ok=True)
        path = agent_dir / "litellm-trajectory.jsonl"
        body = b"\n".join(json.dumps(r, ensure_ascii=False).encode("utf-8") for r in records)
        if records and newline_at_end:
            body += b"\n"
        path.write_bytes(body + raw_tail)
        return path

    @staticmethod
    def write_atif(agent_dir: Path, doc: dict[str, Any], name: str = "trajectory.json") -> Path:
        path = agent_dir / name
        _dump(path, doc)
        return path

    @staticmethod
    def copy_fixture(fixture_name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / fixture_name, dest)
        return dest

    # -- records -------------------------------------------------------------------------------------------

    @staticmethod
    def call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
        """An OpenAI tool call with JSON-string arguments, as a proxy log stores it."""
        return oai_call(call_id, name, arguments)

    def _tick(self) -> int:
        self._clock += 1000
        return self._clock

    def oai_record(
        self,
        messages: list[dict[str, Any]],
        response: dict[str, Any],
        *,
        tools: list[str] | None = None,
        success: bool | None = True,
        request_time: int | None = None,
        model: str = "MiniMax-M2.7",
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "session_id": "django__django-12345",
            "request_time": request_time if request_time is not None else self._tick(),
            "request_body": {
                "model": model,
                "messages": messages,
                "tools": [oai_tool(t) for t in tools or []],
                "max_tokens": 4096,
                "temperature": 0.7,
                "top_p": 0.95,
            },
            "response_body": {
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", **response}}],
            },
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
        if success is not None:
            record["success"] = success
        if success is False:
            record["failure"] = {"status": 500}
            record["response_body"] = {"error": "upstream 500"}
        return record

    def anth_record(
        self,
        system: list[dict[str, Any]] | str,
        messages: list[dict[str, Any]],
        response_content: list[dict[str, Any]],
        *,
        tools: list[str] | None = None,
        success: bool | None = True,
        model: str = "claude-opus-4-6",
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "request_time": self._tick(),
            "request_body": {
                "model": model,
                "system": system,
                "messages": messages,
                "tools": [anth_tool(t) for t in tools or []],
                "max_tokens": 32000,
                "temperature": 1,
            },
            "response_body": {
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": response_content,
            },
        }
        if success is not None:
            record["success"] = success
        return record


def oai_tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {}},
        },
    }


def anth_tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} tool",
        "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"},
    }


def oai_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


@pytest.fixture
def harbor(tmp_path: Path) -> HarborBuilder:
    return HarborBuilder(tmp_path / "job")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
