"""Render a validated canonical trajectory to one LLaMA-Factory 0.9.5 ShareGPT row (and to the IM row).

The row follows docs/llamafactory-rules.md §3 and §14.1 so that LLaMA-Factory keeps it and renders exactly
what Qwen3's own chat template would show the model:

- ``human``/``observation`` at even positions, ``gpt``/``function_call`` at odd ones, ending on an
  assistant-side turn (``repair_and_validate`` guarantees the shape).
- An assistant turn with calls is ONE ``function_call`` turn: a bare JSON object (one call) or list
  (parallel calls) with ``arguments`` as objects, optionally behind the exact ``<think>\\n..\\n</think>\\n\\n``
  wrapper. When the turn also carries narration (or reasoning the bare form cannot carry safely), the
  tagged form is used: ``[<think>..</think>\\n\\n][narration\\n]<tool_call>\\n{JSON}\\n</tool_call>`` with a
  single block. LLaMA-Factory renders both forms to the same text.
- Consecutive tool results are ONE ``observation`` joined with ``\\n</tool_response>\\n<tool_response>\\n``.
- Inside call JSON the literal tags ``<tool_call>``, ``</tool_call>``, ``<think>``, ``</think>`` are written
  with ``\\u003c`` for ``<``: still the same JSON value, but LLaMA-Factory's tag regexes cannot match inside
  it (a file edit that contains ``</tool_call>`` would otherwise abort the whole training run).

Untrainable assistant turns (``trainable=False``: copied context, deterministic dispatches): LLaMA-Factory
trains every ``gpt``/``function_call`` turn and has no per-turn mask, so the only faithful choice is not to
show them as assistant turns. We **cut the sample before the first untrainable assistant turn** and end it
on the last assistant turn before that cut; ``repair_and_validate`` already rejects a trajectory whose
first assistant turn is untrainable (reason ``no_trainable_prefix``).

``RenderError`` (with a ``reason`` code) is raised only for content LLaMA-Factory cannot take faithfully:
a literal ``<tool_call>`` in the reasoning or narration of a call turn, or an assistant turn that is left
with nothing to say once reasoning is removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sft.core.canonical import Message, Trajectory, first_untrainable_assistant

# qwen3 / qwen3_nothink have no default system prompt; LLaMA-Factory then emits two stray newlines before
# "# Tools" (docs/llamafactory-rules.md §5.1). A short neutral default keeps the rendering identical to Qwen3's.
DEFAULT_SYSTEM = "You are a helpful assistant."
THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n\n"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
OBSERVATION_SEPARATOR = "\n</tool_response>\n<tool_response>\n"
_TAGS_TO_ESCAPE = ("<tool_call>", "</tool_call>", "<think>", "</think>")
# ``json.dumps(value, ensure_ascii=False[, sort_keys=True])`` is ``JSONEncoder(<those options>).encode(value)``
# with a new encoder per call; these are built once (an encoder keeps no state between calls), so the
# text is the same and ~15k encoder constructions per 300 trials are saved.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_SORTED_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


class RenderError(ValueError):
    """The trajectory cannot be written as a faithful LLaMA-Factory row; ``reason`` is a Reject code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def dumps_call_json(value: Any) -> str:
    """``json.dumps(ensure_ascii=False)`` with the template tags inside strings escaped as ``\\u003c``."""
    text = _ENCODER.encode(value)
    for tag in _TAGS_TO_ESCAPE:
        if tag in text:
            text = text.replace(tag, "\\u003c" + tag[1:])
    return text


def think_block(reasoning: str) -> str:
    """The exact thought wrapper of the Qwen3 templates."""
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}"


def _calls_json(message: Message) -> str:
    calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    return dumps_call_json(calls[0] if len(calls) == 1 else calls)


def _render_function_call(message: Message, reasoning: str, index: int) -> str:
    # Qwen3's chat template drops leading newlines of the content after a think block and puts "\n"
    # between the content and the first <tool_call>.
    narration = message.content.lstrip("\n") if reasoning else message.content
    if TOOL_CALL_OPEN in reasoning or TOOL_CALL_OPEN in message.content:
        raise RenderError(
            "tool_call_tag_in_text",
            f"message {index}: the reasoning or narration of a tool-call turn contains a literal "
            f"'{TOOL_CALL_OPEN}'; LLaMA-Factory would parse it as the call",
        )
    prefix = think_block(reasoning) if reasoning else ""
    # The bare form is only safe when LLaMA-Factory's thought regex ends exactly at our wrapper.
    if not narration and THINK_CLOSE.strip() not in reasoning:
        return prefix + _calls_json(message)
    body = f"{narration}\n" if narration else ""
    return f"{prefix}{body}{TOOL_CALL_OPEN}\n{_calls_json(message)}\n{TOOL_CALL_CLOSE}"


def _render_gpt(message: Message, reasoning: str, index: int) -> str:
    if not message.content and not reasoning:
        raise RenderError(
            "empty_turn_without_reasoning",
            f"message {index}: the assistant turn only had reasoning, which keep_reasoning=False removes",
        )
    if reasoning:
        return think_block(reasoning) + message.content.lstrip("\n")
    return message.content


def _trainable_messages(messages: list[Message]) -> list[Message]:
    """Cut before the first untrainable assistant turn and end on the last assistant turn before it."""
    cut = first_untrainable_assistant(messages)
    if cut is None:
        return messages
    head = messages[:cut]
    while head and head[-1].role != "assistant":
        head.pop()
    if not head:
        raise RenderError("no_trainable_prefix", f"message {cut}: the first assistant turn is not trainable")
    return head


def system_prompt(traj: Trajectory) -> str:
    """The trajectory's system message, or ``DEFAULT_SYSTEM`` when it has none (or an empty one)."""
    if traj.messages and traj.messages[0].role == "system" and traj.messages[0].content.strip():
        return traj.messages[0].content
    return DEFAULT_SYSTEM


def render_conversations(traj: Trajectory, *, keep_reasoning: bool) -> list[dict[str, str]]:
    """The ``conversations`` list: strict human/observation - gpt/function_call alternation."""
    messages = _trainable_messages(traj.messages)
    turns: list[dict[str, str]] = []
    pending_results: list[str] = []
    for index, message in enumerate(messages):
        if message.role == "tool":
            pending_results.append(message.content)
            continue
        if pending_results:
            turns.append({"from": "observation", "value": OBSERVATION_SEPARATOR.join(pending_results)})
            pending_results = []
        if message.role == "user":
            turns.append({"from": "human", "value": message.content})
        elif message.role == "assistant":
            reasoning = message.reasoning_content.strip("\n") if keep_reasoning else ""
            if message.tool_calls:
                turns.append(
                    {"from": "function_call", "value": _render_function_call(message, reasoning, index)}
                )
            else:
                turns.append({"from": "gpt", "value": _render_gpt(message, reasoning, index)})
    return turns  # trailing results cannot occur: the trajectory ends on an assistant turn


def tools_column(traj: Trajectory) -> str:
    """The ``tools`` column: a JSON array string, or ``""`` when there are none (never ``"[]"``)."""
    return _ENCODER.encode(traj.tools) if traj.tools else ""


def render_lf_row(traj: Trajectory, *, keep_reasoning: bool) -> dict[str, str]:
    """One ShareGPT row; every column is a string so Arrow types every row the same way.

    Metadata columns start with ``_`` (LLaMA-Factory ignores unmapped columns): ``_uid``,
    ``_instance_id``, ``_agent_type`` and ``_meta`` (the TrajectoryMeta as a JSON string).
    """
    row = render_lf_body(traj, keep_reasoning=keep_reasoning)
    row["_meta"] = lf_meta_column(traj.meta.model_dump(mode="json"))
    return row


def render_lf_body(traj: Trajectory, *, keep_reasoning: bool) -> dict[str, Any]:
    """Every column of ``render_lf_row`` except ``_meta``, in the same order.

    Why separate: the body depends on the trajectory and ``keep_reasoning`` only, so the conversion
    worker renders it (in parallel, cached); ``_meta`` carries the job-wide score and is appended in the
    parent with ``lf_meta_column`` once the score is known.
    """
    return {
        "conversations": render_conversations(traj, keep_reasoning=keep_reasoning),
        "system": system_prompt(traj),
        "tools": tools_column(traj),
        "_uid": traj.uid,
        "_instance_id": traj.meta.instance_id,
        "_agent_type": traj.meta.agent_type,
    }


def lf_meta_column(meta: dict[str, Any]) -> str:
    """The ``_meta`` column from ``TrajectoryMeta.model_dump(mode="json")`` (sorted keys: order-independent)."""
    return _SORTED_ENCODER.encode(meta)


def lf_meta_of_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ``_meta`` as a dict (the JSON string ``lf_meta_column`` writes, or a dict); {} when absent or bad."""
    meta = row.get("_meta")
    if isinstance(meta, dict):
        return meta
    if isinstance(meta, str) and meta:
        try:
            parsed = json.loads(meta)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def render_im_row(traj: Trajectory) -> dict[str, Any]:
    """The canonical intermediate JSONL row: messages, tools and meta exactly as validated."""
    return traj.model_dump(mode="json")


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for a file of rows written by ``render_lf_row``."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }
