"""LLaMA-Factory 0.9.5's acceptance rules for one dataset row, checked before training instead of after.

LLaMA-Factory silently drops malformed rows (and, on a datasets-cache hit, without even a warning), and a
single bad ``function_call`` or ``tools`` value aborts the whole run inside ``dataset.map``
(docs/llamafactory-rules.md §2). This module re-implements what ``SharegptDatasetConverter`` /
``OpenAIDatasetConverter`` (``data/converter.py``), ``DatasetAttr.join`` (``data/parser.py``),
``FunctionFormatter`` / ``ToolFormatter`` (``data/formatter.py``) and the supervised processor do with a
row, so that our own rendered rows and user-supplied datasets (``hf_lf`` / ``local_lf``) are checked the
same way and every loss is reported.

A violation is a string ``"<severity>:<code>: <detail>"``:

- ``abort``: LLaMA-Factory raises and the training run dies (bad JSON in a call, bad tools, a non-string
  value);
- ``drop``: LLaMA-Factory skips the row ("Skipping this abnormal example" / "Dropped invalid example");
- ``warn``: the row loads but does not render as intended (``tools == "[]"``, string ``arguments``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Defaults of every LLaMA-Factory template (data/template.py) and of DatasetAttr (data/parser.py).
THOUGHT_WORDS = ("<think>\n", "\n</think>\n\n")
TOOL_CALL_WORDS = ("<tool_call>", "</tool_call>")
TAG_NAMES = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)
COLUMN_NAMES = (
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "chosen",
    "rejected",
    "kto_tag",
)
DEFAULT_TAGS: dict[str, str] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
DEFAULT_COLUMNS: dict[str, str | None] = {"messages": "conversations", "system": None, "tools": None}
SEVERITIES = ("abort", "drop", "warn")

_TOOL_CALL_RE = re.compile(rf"{re.escape(TOOL_CALL_WORDS[0])}(.*?){re.escape(TOOL_CALL_WORDS[1])}", re.DOTALL)
_THOUGHT_RE = re.compile(rf"{re.escape(THOUGHT_WORDS[0])}(.*?){re.escape(THOUGHT_WORDS[1])}", re.DOTALL)


def violation_severity(violation: str) -> str:
    """``abort`` | ``drop`` | ``warn``."""
    return violation.split(":", 1)[0]


def violation_code(violation: str) -> str:
    """The machine-friendly code, e.g. ``invalid_role_tag``."""
    parts = violation.split(":", 2)
    return parts[1] if len(parts) > 1 else violation


def is_fatal(violation: str) -> bool:
    """True when LLaMA-Factory would lose the row or the run (everything but a warning)."""
    return violation_severity(violation) != "warn"


def _v(severity: str, code: str, detail: str) -> str:
    return f"{severity}:{code}: {detail}"


def _preview(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_columns(columns: Mapping[str, Any] | None) -> dict[str, Any]:
    """Column mapping as ``DatasetAttr.join`` sees it: a ``columns`` block replaces every default.

    (With a block present, a name it omits becomes None, e.g. ``messages`` falls back to nothing.)
    """
    if columns is None:
        return dict(DEFAULT_COLUMNS)
    return {name: columns.get(name) for name in COLUMN_NAMES}


def resolve_tags(tags: Mapping[str, Any] | None) -> dict[str, Any]:
    """Tags as ``DatasetAttr.join`` sees them: a ``tags`` block sets every tag, omitted ones to None."""
    if tags is None:
        return dict(DEFAULT_TAGS)
    return {name: tags.get(name) for name in TAG_NAMES}


# --------------------------------------------------------------------------------------------------
# function_call values and tools
# --------------------------------------------------------------------------------------------------


def parse_function_call_value(content: str) -> list[tuple[Any, Any]]:
    """Parse a ``function_call`` value exactly as ``FunctionFormatter.apply`` does; return (name, arguments).

    Raises ``ValueError`` where LLaMA-Factory raises (invalid JSON, missing keys, wrong shapes).
    """
    tool_call_match = _TOOL_CALL_RE.search(content)
    if tool_call_match is None:
        thought_match = _THOUGHT_RE.search(content)
        json_part = content.replace(thought_match.group(0), "") if thought_match else content
    else:
        json_part = tool_call_match.group(1)
    try:
        calls = json.loads(json_part)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"invalid JSON ({error.msg} at char {error.pos}) in {_preview(json_part)}"
        ) from error
    if not isinstance(calls, list):
        calls = [calls]
    parsed: list[tuple[Any, Any]] = []
    for call in calls:
        if not isinstance(call, dict) or "name" not in call or "arguments" not in call:
            raise ValueError(f"each call must be an object with 'name' and 'arguments', got {_preview(call)}")
        parsed.append((call["name"], call["arguments"]))
    return parsed


def check_function_call_value(content: str, where: str) -> list[str]:
    """Violations of one ``function_call`` value (abort on unparsable, warn on string arguments)."""
    try:
        calls = parse_function_call_value(content)
    except ValueError as error:
        hint = ""
        if "<think>" in content and not content.startswith(THOUGHT_WORDS[0]):
            hint = "; a reasoning prefix must be exactly '<think>\\n...\\n</think>\\n\\n' or use a <tool_call> block"
        return [_v("abort", "invalid_function_json", f"{where}: {error}{hint}")]
    problems = []
    for name, arguments in calls:
        if not isinstance(arguments, dict):
            problems.append(
                _v(
                    "warn",
                    "non_object_arguments",
                    f"{where}: call {name!r} has arguments of type {type(arguments).__name__} "
                    f"({_preview(arguments)}); LLaMA-Factory renders them double-encoded",
                )
            )
        if not isinstance(name, str) or not name:
            problems.append(_v("warn", "bad_function_name", f"{where}: call name is {_preview(name)}"))
    return problems


def check_tools_value(tools: Any, column: str) -> list[str]:
    """The ``tools`` column must be a JSON-array string of tool objects, or ``""`` / None."""
    if tools is None or tools == "":
        return []
    if not isinstance(tools, str):
        return [
            _v(
                "abort",
                "tools_not_string",
                f"column {column!r} is a {type(tools).__name__}, must be a JSON string (json.dumps the list)",
            )
        ]
    try:
        parsed = json.loads(tools)
    except json.JSONDecodeError as error:
        return [_v("abort", "invalid_tools_json", f"column {column!r}: {error.msg} in {_preview(tools)}")]
    if isinstance(parsed, list) and not parsed:
        return [
            _v(
                "warn",
                "empty_tools_array",
                f"column {column!r} is '[]': write '' for no tools "
                "(an empty array still emits an empty system block)",
            )
        ]
    if not isinstance(parsed, list) or not all(isinstance(tool, dict) for tool in parsed):
        return [
            _v(
                "abort",
                "tools_not_object_array",
                f"column {column!r} must be a JSON array of tool objects, got {_preview(parsed)}",
            )
        ]
    problems = []
    for position, tool in enumerate(parsed):
        function = tool.get("function") if tool.get("type") == "function" else tool
        if not isinstance(function, dict) or not function.get("name"):
            problems.append(
                _v("warn", "tool_without_name", f"column {column!r} tool {position}: {_preview(tool)}")
            )
    return problems


# --------------------------------------------------------------------------------------------------
# message alignment (the two converters)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Aligned:
    system: Any = ""
    turns: list[tuple[str, Any]] = field(
        default_factory=list
    )  # (user|assistant|observation|function, content)
    problems: list[str] = field(default_factory=list)
    broken: bool = False


def _split_system(
    messages: list[Any], row: Mapping[str, Any], cols: dict, tags: dict
) -> tuple[Any, list[Any]]:
    first = messages[0] if messages else None
    if (
        tags["system_tag"]
        and isinstance(first, Mapping)
        and first.get(tags["role_tag"]) == tags["system_tag"]
    ):
        return first.get(tags["content_tag"]), messages[1:]
    return (row.get(cols["system"]) if cols["system"] else ""), messages


def _role_map(tags: dict) -> dict[Any, str]:
    return {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["observation_tag"]: "observation",
        tags["function_tag"]: "function",
        tags["system_tag"]: "system",
    }


def _align_sharegpt(messages: list[Any], tags: dict) -> _Aligned:
    aligned = _Aligned()
    mapping = _role_map(tags)
    accept = ((tags["user_tag"], tags["observation_tag"]), (tags["assistant_tag"], tags["function_tag"]))
    for index, message in enumerate(messages):
        role = message.get(tags["role_tag"]) if isinstance(message, Mapping) else None
        if role is None or role not in accept[index % 2]:
            expected = " or ".join(repr(t) for t in accept[index % 2])
            aligned.problems.append(
                _v(
                    "drop",
                    "invalid_role_tag",
                    f"message {index} has role {role!r}, expected {expected} at that position",
                )
            )
            aligned.broken = True
            break
        aligned.turns.append((mapping[role], message.get(tags["content_tag"])))
    return aligned


def _align_openai(messages: list[Any], tags: dict) -> _Aligned:
    aligned = _Aligned()
    mapping = _role_map(tags)
    responses: list[Any] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            aligned.problems.append(
                _v("abort", "message_not_object", f"message {index}: {_preview(message)}")
            )
            aligned.broken = True
            return aligned
        role, content = message.get(tags["role_tag"]), message.get(tags["content_tag"])
        tool_calls = message.get("tool_calls")
        if role in (tags["assistant_tag"], tags["function_tag"]) and tool_calls:
            try:
                content = json.dumps([call["function"] for call in tool_calls], ensure_ascii=False)
            except (TypeError, KeyError):
                aligned.problems.append(
                    _v(
                        "abort",
                        "bad_tool_calls",
                        f"message {index}: tool_calls entries need "
                        f"a 'function' object, got {_preview(tool_calls)}",
                    )
                )
                aligned.broken = True
                return aligned
            role = tags["function_tag"]
        if role == tags["observation_tag"]:
            responses.append(content)
            continue
        if responses:
            joined = "\n</tool_response>\n<tool_response>\n".join(str(r) for r in responses)
            aligned.turns.append(("observation", joined))
            responses = []
        if role not in mapping:
            aligned.problems.append(
                _v(
                    "abort",
                    "unknown_role",
                    f"message {index} has role {role!r}, not one of {sorted(str(k) for k in mapping if k)}",
                )
            )
            aligned.broken = True
            return aligned
        aligned.turns.append((mapping[role], content))
    odd, even = ("user", "observation"), ("assistant", "function")
    for index, (role, _content) in enumerate(aligned.turns):
        if role not in (odd, even)[index % 2]:
            aligned.problems.append(
                _v("drop", "invalid_role_tag", f"turn {index} (after merging tool results) is {role!r}")
            )
            aligned.broken = True
            break
    return aligned


# --------------------------------------------------------------------------------------------------
# the row check
# --------------------------------------------------------------------------------------------------


def _content_problems(aligned: _Aligned) -> list[str]:
    problems = []
    for index, (role, content) in enumerate(aligned.turns):
        where = f"turn {index} ({role})"
        if not isinstance(content, str):
            problems.append(
                _v(
                    "abort",
                    "non_string_value",
                    f"{where}: value is {type(content).__name__} "
                    f"{_preview(content)}; every value must be a string",
                )
            )
        elif role == "function":
            problems.extend(check_function_call_value(content, where))
    return problems


def check_lf_row(
    row: Mapping[str, Any],
    *,
    columns: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    formatting: str = "sharegpt",
) -> list[str]:
    """Every way LLaMA-Factory 0.9.5 would drop this row or abort on it (plus rendering warnings).

    ``columns`` / ``tags`` are the dataset_info.json blocks (None = the block is absent). Content and
    function-call checks run only when the row's structure survives, as in LLaMA-Factory, which never
    formats a dropped row.
    """
    cols, tag_map = resolve_columns(columns), resolve_tags(tags)
    if not isinstance(row, Mapping):
        return [_v("abort", "row_not_object", f"row is a {type(row).__name__}")]
    if not cols["messages"] or cols["messages"] not in row:
        return [
            _v(
                "abort",
                "no_messages_column",
                f"column {cols['messages']!r} is not in the row (keys: {sorted(row)}); set columns.messages",
            )
        ]
    messages = row[cols["messages"]]
    if not isinstance(messages, list):
        return [_v("abort", "messages_not_list", f"column {cols['messages']!r} is {type(messages).__name__}")]
    system, body = _split_system(messages, row, cols, tag_map)
    aligned = _align_openai(body, tag_map) if formatting == "openai" else _align_sharegpt(body, tag_map)
    problems = list(aligned.problems)
    if len(aligned.turns) % 2 != 0 and not aligned.broken:
        problems.append(
            _v(
                "drop",
                "odd_message_count",
                f"{len(aligned.turns)} turns after the system message: "
                "a sample must end on an assistant or function_call turn",
            )
        )
        aligned.broken = True
    if not aligned.turns and not aligned.broken:
        problems.append(_v("drop", "empty_conversation", "no turns besides the system message"))
        aligned.broken = True
    if system is not None and not isinstance(system, str):
        problems.append(_v("abort", "system_not_string", f"system is {type(system).__name__}"))
    if cols["tools"]:
        problems.extend(check_tools_value(row.get(cols["tools"]), cols["tools"]))
    if not aligned.broken:
        problems.extend(_content_problems(aligned))
    return problems


def check_column_types(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns whose Python type differs between rows (None aside): Arrow cannot load such a file."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                seen.setdefault(key, set()).add(type(value).__name__)
    return [
        _v("abort", "mixed_column_types", f"column {key!r} holds {sorted(types)} across rows")
        for key, types in sorted(seen.items())
        if len(types) > 1
    ]


# --------------------------------------------------------------------------------------------------
# format detection for ready-made datasets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormatInfo:
    """What dataset_info.json needs to read a file: ``formatting``, ``columns`` and ``tags`` (None = default)."""

    formatting: str
    columns: dict[str, str]
    tags: dict[str, str] | None

    def dataset_info_entry(self, file_name: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "file_name": file_name,
            "formatting": self.formatting,
            "columns": dict(self.columns),
        }
        if self.tags is not None:
            entry["tags"] = dict(self.tags)
        return entry


def _messages_column(rows: Sequence[Mapping[str, Any]]) -> str:
    for candidate in ("conversations", "messages"):
        if all(isinstance(row.get(candidate), list) for row in rows):
            return candidate
    keys = sorted({k for row in rows for k in row})
    raise ValueError(
        f"no message list column: expected 'conversations' or 'messages' holding a list "
        f"in every row, found columns {keys}"
    )


def detect_format(rows: Sequence[Mapping[str, Any]], sample: int = 200) -> FormatInfo:
    """Recognise ShareGPT from/value, ShareGPT role/content and OpenAI messages (with ``tool_calls``).

    Looks at the first ``sample`` rows. Raises ``ValueError`` naming the keys found when none fits.
    """
    head = list(rows[:sample])
    if not head:
        raise ValueError("cannot detect the format of an empty dataset")
    messages_col = _messages_column(head)
    messages = [m for row in head for m in row[messages_col] if isinstance(m, Mapping)]
    keys = {k for m in messages for k in m}
    columns: dict[str, str] = {"messages": messages_col}
    for optional in ("system", "tools"):
        if any(optional in row for row in head):
            columns[optional] = optional
    if {"from", "value"} <= keys:
        return FormatInfo("sharegpt", columns, None)  # LLaMA-Factory's default tags
    if {"role", "content"} <= keys:
        roles = {m.get("role") for m in messages}
        openai = "tool" in roles or any(m.get("tool_calls") for m in messages)
        tags = {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "observation_tag": "tool" if openai or "tool" in roles else "observation",
            "function_tag": "function_call",
            "system_tag": "system",
        }
        return FormatInfo("openai" if openai else "sharegpt", columns, tags)
    raise ValueError(f"unrecognised message keys {sorted(keys)}: expected from/value or role/content")
