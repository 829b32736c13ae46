"""Fixtures for the ready-made dataset sources (local_lf / hf_lf): settings, sample rows, file writers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.config.schema import RuntimeInput

TOOLS_JSON = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run a shell command",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
            },
        }
    ]
)

FROM_VALUE_TAGS = None  # LLaMA-Factory's defaults: no tags block
ROLE_CONTENT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
OPENAI_TAGS = {**ROLE_CONTENT_TAGS, "observation_tag": "tool"}


def sharegpt_row(i: int, **extra: Any) -> dict[str, Any]:
    """A valid ShareGPT from/value row with one tool call (function_call + observation)."""
    return {
        "conversations": [
            {"from": "human", "value": f"task {i}"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "bash", "arguments": {"command": f"ls {i}"}}),
            },
            {"from": "observation", "value": f"out {i}"},
            {"from": "gpt", "value": f"done {i}"},
        ],
        "system": "You are an agent.",
        "tools": TOOLS_JSON,
        **extra,
    }


def role_content_row(i: int, **extra: Any) -> dict[str, Any]:
    """The reference's LF shape: 'messages' with role/content, tool calls as text."""
    return {
        "messages": [
            {"role": "system", "content": "You are an agent."},
            {"role": "user", "content": f"task {i}"},
            {"role": "assistant", "content": '<tool_call>\n{"name": "bash", "arguments": {}}\n</tool_call>'},
            {"role": "user", "content": f"<tool_response>\nout {i}\n</tool_response>"},
            {"role": "assistant", "content": f"done {i}"},
        ],
        **extra,
    }


def openai_row(i: int, **extra: Any) -> dict[str, Any]:
    """OpenAI messages with tool_calls (string arguments) and a tool message."""
    return {
        "messages": [
            {"role": "system", "content": "You are an agent."},
            {"role": "user", "content": f"task {i}"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": "bash", "arguments": json.dumps({"command": f"ls {i}"})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"out {i}"},
            {"role": "assistant", "content": f"done {i}"},
        ],
        "tools": TOOLS_JSON,
        **extra,
    }


def write_json(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_settings(source: dict[str, Any], **conversion: Any) -> RuntimeInput:
    conv = {"data_name": "ready_test", "exclude_repos_file": "", "max_instances": 0, "seed": 42}
    conv.update(conversion)
    return RuntimeInput.model_validate(
        {
            "source": source,
            "conversion": conv,
            "model": {"model_name_or_path": "unused"},
            "training": {"output_dir": "out", "template": "qwen3_nothink"},
        }
    )


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """An empty project root (artifacts/ is created by the code under test)."""
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture
def local_settings() -> Callable[..., RuntimeInput]:
    def build(path: Path, **conversion: Any) -> RuntimeInput:
        return make_settings({"type": "local_lf", "lf_path": str(path)}, **conversion)

    return build


@pytest.fixture
def no_credentials() -> Credentials:
    return Credentials()
