"""Fixtures for the report tests: the tiny Qwen3 tokenizer, settings and hand-made LLaMA-Factory rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sft.config.schema import RuntimeInput

SYSTEM = "You are a helpful assistant."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "Bash",
            "description": "Run a shell command.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    }
]


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def call(command: str) -> dict[str, Any]:
    return {"name": "Bash", "arguments": {"command": command}}


def think(reasoning: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n"


def meta(uid: str, repo: str = "octo/widgets", score: float | None = 0.7, teacher: str = "glm-5") -> str:
    trial, index = uid.split("#")
    data: dict[str, Any] = {
        "instance_id": f"{repo.replace('/', '__')}-1",
        "repo": repo,
        "trial_name": trial,
        "scaffold": "claude-code",
        "agent_type": "main",
        "teacher_model": teacher,
        "source_kind": "atif",
        "source_file": f"{trial}/agent/trajectory.json",
        "trajectory_index": int(index),
        "extra": {},
    }
    if score is not None:
        data["score"] = {
            "version": "sft-rule-v5",
            "composite_score": score,
            "efficiency_score": 0.5,
            "style_score": 0.6,
            "tool_mastery_score": 0.9,
            "completion_score": 1.0,
            "precision_score": 0.8,
        }
    return json.dumps(data, sort_keys=True)


def agent_row(
    uid: str,
    steps: int,
    *,
    reasoning: bool = True,
    observation: str = "ok",
    repo: str = "octo/widgets",
    score: float | None = 0.7,
    system: str = SYSTEM,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """human, (function_call, observation) * steps, gpt: the shape render_lf_row writes."""
    conversations = [{"from": "human", "value": f"Fix the failing test in {repo}."}]
    for step in range(steps):
        prefix = think(f"step {step}: inspect the tree") if reasoning else ""
        conversations.append(
            {"from": "function_call", "value": prefix + json.dumps(call(f"ls -la dir{step}"))}
        )
        conversations.append({"from": "observation", "value": f"{observation} {step}"})
    conversations.append(
        {"from": "gpt", "value": (think("all done") if reasoning else "") + "The test passes now."}
    )
    return {
        "conversations": conversations,
        "system": system,
        "tools": json.dumps(TOOLS if tools is None else tools),
        "_uid": uid,
        "_instance_id": f"{repo.replace('/', '__')}-1",
        "_agent_type": "main",
        "_meta": meta(uid, repo, score),
    }


def settings_for(model_dir: Path | str, **overrides: Any) -> RuntimeInput:
    """A valid RuntimeInput for a local_lf source; ``overrides`` are 'block.key' -> value."""
    data: dict[str, Any] = {
        "source": {"type": "local_lf", "lf_path": "rows.json"},
        "conversion": {"data_name": "report_test", "exclude_repos_file": ""},
        "model": {"model_name_or_path": str(model_dir)},
        "training": {"output_dir": "out", "template": "qwen3", "cutoff_len": 4096, "deepspeed": None},
        "experiment": {"wandb_mode": "disabled"},
    }
    for dotted, value in overrides.items():
        block, key = dotted.split(".", 1)
        data.setdefault(block, {})[key] = value
    return RuntimeInput.model_validate(data)


def role_content_entry() -> dict[str, Any]:
    """A dataset_info.json entry for ShareGPT rows with role/content tags in a 'messages' column."""
    return {
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "system": "system", "tools": "tools"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "observation_tag": "tool",
            "function_tag": "function_call",
            "system_tag": "system",
        },
    }


def role_content_row(row: dict[str, Any]) -> dict[str, Any]:
    """The same conversation as ``role_content_entry`` rows: system as the first message, role/content tags."""
    roles = {"human": "user", "gpt": "assistant", "observation": "tool", "function_call": "function_call"}
    messages = [{"role": "system", "content": row["system"]}]
    messages += [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]
    return {"messages": messages, "tools": row["tools"], "_uid": row["_uid"]}
