"""Ready-made LLaMA-Factory datasets: ``source.type: local_lf`` (a file) and ``hf_lf`` (the Hugging Face Hub).

Conversion is skipped for these sources, but the rows go through the same gate as converted data, so a
user who brings their own data gets the same guarantees (docs/config-contract.md §3.1, §3.3, §15.1):

1. **Read** ``.json`` (array or JSON lines), ``.jsonl`` or ``.parquet``; an unreadable, empty or
   unrecognised file is a ``ReadyDataError`` naming the file and the first offending row.
2. **Adapt** layouts LLaMA-Factory 0.9.5's ShareGPT/OpenAI converters cannot take as they are
   (``adapt_rows``): alpaca rows (``instruction``/``input``/``output``) become single-turn ShareGPT rows
   with LLaMA-Factory's own alpaca mapping; LLaMA-Factory v1 typed-part messages (``content: [{"type":
   "text"|"reasoning"|"tool_call", "value": ...}]``) become OpenAI messages (``reasoning_content``,
   ``tool_calls``) and are always normalised. Multimodal rows (``images``/``videos``/``audios`` or media
   parts) are refused and counted (stage ``multimodal``): this stage trains text-only models.
   **Detect** the layout (ShareGPT ``conversations``/``from``/``value``, ShareGPT ``role``/``content``,
   OpenAI ``messages`` with ``tool_calls``) with ``sft.rules.lf_rules.detect_format``.
3. **Check every row** against LLaMA-Factory's converter rules (``check_lf_row``). A row LLaMA-Factory
   would drop, or that would abort the run, goes into the rejects (stage ``lf_rules``) with the row index
   and the problem. Warnings are counted, the row is kept. ``tools == "[]"`` is rewritten to ``""`` in
   every mode (repair ``empty_tools_array``, see ``_repair_empty_tools`` for why that is provably harmless).
4. **Repo exclusion** where the rows carry instance ids (``_instance_id``, ``instance_id`` or ``_meta``).
5. **Normalise** (``conversion.normalize_ready_data: true``): each row becomes a canonical trajectory,
   is scrubbed (``conversion.scrub_secrets``), repaired/validated and rendered exactly like converted
   Harbor data (``conversations``/``from``/``value`` + ``system`` + ``tools`` string).
6. **Subsample** (``max_instances > 0``): a seeded choice (``conversion.seed``) without replacement among
   the rows that passed; N larger than the data keeps every row once, with a warning. Never
   ``num_samples`` for data we can read.

Invalid rows when NOT normalising (a decision): they are not an error, because LLaMA-Factory would drop
them anyway (or die on them). They are removed, reported (rejects, funnel, a warning in the log) and the
**filtered copy** ``artifacts/data/lf_data/<data_name>.json`` is registered, so the registered data is
exactly what was checked and what is trained on. The original file is registered as-is (absolute path,
the reference's behaviour) only when nothing was removed, sampled or redacted. Only when no row survives
is it an error (LLaMA-Factory would abort with "Cannot find valid samples").

The run's own credentials (``HF_TOKEN``...) are never written: exact occurrences in rows are redacted in
every mode, and the token is only ever passed to huggingface_hub / datasets as ``token=``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sft.config.credentials import Credentials
from sft.config.paths import lf_json_path
from sft.config.schema import RuntimeInput
from sft.core.canonical import Message, Reject, ToolCall, Trajectory, TrajectoryMeta, issue_code
from sft.core.results import ConversionResult
from sft.engine.workspace import ConversionWorkspace, load_exclusions
from sft.rules.filters import ExclusionList
from sft.rules.lf_rules import (
    THOUGHT_WORDS,
    TOOL_CALL_WORDS,
    FormatInfo,
    check_column_types,
    check_lf_row,
    detect_format,
    is_fatal,
    parse_function_call_value,
    resolve_columns,
    resolve_tags,
    violation_code,
)
from sft.rules.render import (
    DEFAULT_SYSTEM,
    OBSERVATION_SEPARATOR,
    RenderError,
    dataset_info_entry,
    lf_meta_of_row,
    render_im_row,
    render_lf_row,
)
from sft.rules.secrets import MIN_EXTRA_VALUE_LENGTH, SecretScrubber, scrub_trajectory
from sft.rules.validate import repair_and_validate
from sft.sources import hub
from sft.sources.handle import SourceHandle

logger = logging.getLogger(__name__)

READY_SUFFIXES = (".json", ".jsonl", ".parquet")
CREDENTIAL_MARK = "[REDACTED:credential]"
MAX_LISTED_INDICES = 10000  # selection indices are listed in the report up to this many (always hashed)


class ReadyDataError(ValueError):
    """A ready-made dataset that cannot be used; the message names the file, the row and the fix."""


# ================================================================================================ reading


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a ``.json`` (array or JSON lines), ``.jsonl`` or ``.parquet`` file, as dicts."""
    suffix = path.suffix.lower()
    if suffix not in READY_SUFFIXES:
        raise ReadyDataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use .json (a JSON array or JSON lines), "
            ".jsonl or .parquet"
        )
    rows = _read_parquet(path) if suffix == ".parquet" else _read_json_file(path)
    if not rows:
        raise ReadyDataError(f"{path}: the file holds no rows; point source.lf_path at a non-empty dataset")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ReadyDataError(
                f"{path}: row {index} is a {type(row).__name__} ({_preview(row)}), expected a JSON object "
                "per row (a ShareGPT or OpenAI-messages sample)"
            )
    return rows


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReadyDataError(
            f"{path}: cannot read the file ({exc.strerror or exc}); check the path and permissions"
        ) from exc


def _read_json_file(path: Path) -> list[Any]:
    raw = _read_bytes(path)
    raw = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw  # a UTF-8 byte-order mark
    stripped = raw.lstrip()
    if not stripped.strip():
        raise ReadyDataError(f"{path}: the file is empty; point source.lf_path at a non-empty dataset")
    if stripped.startswith(b"["):  # datasets' json builder reads an array whatever the extension
        return _parse_json_array(path, raw)
    if stripped.startswith(b"{"):
        return _parse_json_lines(path, raw)
    raise ReadyDataError(
        f"{path}: neither a JSON array of rows nor JSON lines (the file starts with {_preview(stripped[:40])}); "
        "write one JSON object per line or a single JSON array"
    )


def _parse_json_array(path: Path, raw: bytes) -> list[Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            raise ReadyDataError(
                f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); the first "
                "offending row is the one around that line"
            ) from None
        raise ReadyDataError(f"{path}: not valid UTF-8 JSON; re-save the file as UTF-8") from None
    if not isinstance(value, list):  # pragma: no cover - a '[' start always parses to a list
        raise ReadyDataError(f"{path}: expected a JSON array of rows")
    return value


def _parse_json_lines(path: Path, raw: bytes) -> list[Any]:
    rows: list[Any] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            hint = _single_object_hint(raw) if number == 1 else ""
            raise ReadyDataError(
                f"{path}: line {number} (row {len(rows)}) is not valid JSON ({exc}){hint}; write one JSON object "
                "per line (JSON lines) or a JSON array"
            ) from None
    return rows


def _single_object_hint(raw: bytes) -> str:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(value, dict):
        return f"; the file is ONE JSON object with keys {sorted(value)[:8]}, not a list of rows"
    return ""


def _read_parquet(path: Path) -> list[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        size = path.stat().st_size if path.exists() else 0
        what = "the file is empty" if size == 0 else f"not a readable Parquet file ({exc})"
        raise ReadyDataError(f"{path}: {what}; point source.lf_path at a valid .parquet dataset") from exc


# ========================================================================================== adaptation

MEDIA_COLUMNS = ("images", "videos", "audios")  # LLaMA-Factory's multimodal columns
MEDIA_PART_TYPES = ("image_url", "video_url", "audio_url")  # LLaMA-Factory v1 media content parts
ALPACA_KEYS = ("instruction", "input", "output", "system", "history")
MULTIMODAL_HINT = (
    "sft trains text-only models: with a text template LLaMA-Factory cannot feed the media to the model and "
    "the row would be trained as text with its placeholders ('<image>'...) and without what they stand for. "
    "Remove the multimodal rows (or train them outside sft with a vision-language model and template)"
)
_THINK_TAG = re.compile(r"</?think>")


class _RowProblem(ValueError):
    """A row that cannot be adapted: ``stage`` (format | multimodal), ``reason`` and ``detail``."""

    def __init__(self, stage: str, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.stage, self.reason, self.detail = stage, reason, detail


@dataclass
class Adapted:
    """``rows`` in a layout ``detect_format`` knows (same length and order as the input; problem rows as-is)."""

    rows: list[dict[str, Any]]
    problems: dict[int, _RowProblem]
    layout: str | None = None  # alpaca | typed_parts | None (already a ShareGPT / OpenAI layout)
    normalise: bool = (
        False  # the adapted rows must be normalised (LLaMA-Factory 0.9.5 cannot read the original)
    )
    note: str = ""


def _is_alpaca(rows: Sequence[Mapping[str, Any]]) -> bool:
    head = rows[:200]
    return all(
        not isinstance(row.get("conversations"), list)
        and not isinstance(row.get("messages"), list)
        and "instruction" in row
        and "output" in row
        for row in head
    )


def _has_typed_parts(rows: Sequence[Mapping[str, Any]]) -> bool:
    for row in rows[:200]:
        messages = row.get("messages")
        for message in messages if isinstance(messages, list) else []:
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, list) and any(isinstance(p, Mapping) and "type" in p for p in content):
                return True
    return False


def adapt_rows(rows: Sequence[dict[str, Any]]) -> Adapted:
    """Alpaca and typed-part rows in a layout LLaMA-Factory's ShareGPT/OpenAI converters read; media refused."""
    if _is_alpaca(rows):
        adapted = Adapted(rows=list(rows), problems={}, layout="alpaca")
        adapted.note = (
            "alpaca rows (instruction/input/output) converted to single-turn ShareGPT rows with LLaMA-Factory "
            "0.9.5's alpaca mapping (user turn = instruction + '\\n' + input, history pairs before it, system kept)"
        )
        convert = _alpaca_row
    elif _has_typed_parts(rows):
        adapted = Adapted(rows=list(rows), problems={}, layout="typed_parts", normalise=True)
        adapted.note = (
            "LLaMA-Factory v1 typed-part messages (content: [{type, value}]) converted to OpenAI messages "
            "(text parts -> content, reasoning parts -> the <think> block, tool_call parts -> tool_calls) and "
            "normalised: LLaMA-Factory 0.9.5's converters cannot read typed parts"
        )
        convert = _typed_part_row
    else:
        adapted = Adapted(rows=list(rows), problems={})
        convert = None
    for index, row in enumerate(rows):
        try:
            if convert is not None:
                adapted.rows[index] = convert(row)
            _refuse_media(adapted.rows[index])
        except _RowProblem as problem:
            adapted.problems[index] = problem
    return adapted


def _refuse_media(row: Mapping[str, Any]) -> None:
    for column in MEDIA_COLUMNS:
        value = row.get(column)
        if value:  # a non-empty list of files (or one path): LLaMA-Factory would pass them to an mm plugin
            count = len(value) if isinstance(value, list) else 1
            raise _RowProblem(
                "multimodal",
                "multimodal_row",
                f"column {column!r} holds {count} file(s) ({_preview(value, 60)}); {MULTIMODAL_HINT}",
            )


def _alpaca_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory 0.9.5's ``AlpacaDatasetConverter`` as a ShareGPT row: the same prompt, response, system.

    Why convert instead of refusing: alpaca is one of LLaMA-Factory's two SFT formats and the mapping is its
    own (``"\\n".join`` of the non-empty instruction and input, ``history`` pairs as earlier turns), so the
    trained tokens are exactly what LLaMA-Factory trains from the alpaca file (tested against its loader),
    and the rows then pass the same checks, exclusion and fidelity report as any ShareGPT row.
    """
    for key in ("instruction", "input", "system"):
        if row.get(key) is not None and not isinstance(row.get(key), str):
            raise _RowProblem(
                "format", "alpaca_bad_field", f"{key!r} is {_preview(row.get(key))}, not a string"
            )
    output = row.get("output")
    if not isinstance(
        output, str
    ):  # LLaMA-Factory treats it as unsupervised (or ranking) data: no SFT target
        raise _RowProblem(
            "format",
            "alpaca_output_not_string",
            f"'output' is {_preview(output)}; an SFT row needs the response as a string (a list is ranking data)",
        )
    turns: list[dict[str, str]] = []
    history = row.get("history")
    for pair in history if isinstance(history, list) else []:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise _RowProblem(
                "format", "alpaca_bad_history", f"history entry {_preview(pair)} is not [query, answer]"
            )
        turns += [{"from": "human", "value": pair[0]}, {"from": "gpt", "value": pair[1]}]
    prompt = "\n".join(v for v in (row.get("instruction"), row.get("input")) if v)
    turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": output}]
    converted: dict[str, Any] = {"conversations": turns}
    if "system" in row:
        converted["system"] = row.get("system") or ""
    converted.update({k: v for k, v in row.items() if k not in ALPACA_KEYS})
    return converted


def _typed_part_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A LLaMA-Factory v1 row as OpenAI messages; the parts are joined the way v1's qwen3 renderer joins them
    (``_split_assistant_content``: text parts concatenated, reasoning parts concatenated, one call per part)."""
    raw_messages = row.get("messages")
    if not isinstance(raw_messages, list):
        raise _RowProblem("format", "no_messages", f"'messages' is {_preview(raw_messages)}, not a list")
    messages = [_typed_part_message(m, position) for position, m in enumerate(raw_messages)]
    _refuse_shared_results(messages)
    return {"messages": messages, **{k: v for k, v in row.items() if k != "messages"}}


def _refuse_shared_results(messages: list[dict[str, Any]]) -> None:
    """Several calls answered by fewer tool messages (e.g. one message holding a JSON list of all results).

    LLaMA-Factory v1 trains that as one ``<tool_response>``; a served model gets one tool message per call,
    and which part of the text answers which call is a guess, so the row is refused rather than re-cut.
    """
    for position, message in enumerate(messages):
        calls = len(message.get("tool_calls") or [])
        results = 0
        while (
            position + 1 + results < len(messages) and messages[position + 1 + results].get("role") == "tool"
        ):
            results += 1
        if calls and 0 < results < calls:
            raise _RowProblem(
                "format",
                "fewer_results_than_calls",
                f"message {position} makes {calls} tool calls but only {results} tool message(s) follow (e.g. one "
                "message holding every result); write one tool message per call, in call order",
            )


def _typed_part_message(message: Any, position: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise _RowProblem("format", "bad_message", f"message {position} is {_preview(message)}")
    role, content = message.get("role"), message.get("content")
    weight = message.get("loss_weight")
    expected = 1.0 if role == "assistant" else 0.0
    if (
        isinstance(weight, int | float) and float(weight) != expected
    ):  # LLaMA-Factory 0.9.5 has no per-turn weight
        raise _RowProblem(
            "format",
            "loss_weight_not_representable",
            f"message {position} ({role}) has loss_weight {weight}; LLaMA-Factory 0.9.5 trains every assistant "
            "turn (weight 1) and no other turn (weight 0), so this row cannot be trained as written",
        )
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _RowProblem("format", "bad_content", f"message {position} content is {_preview(content)}")
    text, reasoning, calls = "", "", []
    for part in content:
        kind, value = _checked_typed_part(part, role, position)
        if kind == "text":
            text += value
        elif kind == "reasoning":
            reasoning += value
        else:
            calls.append(_typed_tool_call(value, position))
    converted: dict[str, Any] = {"role": role, "content": text}
    if reasoning:
        converted["reasoning_content"] = reasoning
    if calls:
        converted["tool_calls"] = calls
    return converted


def _checked_typed_part(part: Any, role: Any, position: int) -> tuple[str, str]:
    """``(type, value)`` of one typed content part, or the reason the row cannot be converted."""
    kind = part.get("type") if isinstance(part, Mapping) else None
    value = part.get("value") if isinstance(part, Mapping) else None
    if kind in MEDIA_PART_TYPES:
        raise _RowProblem(
            "multimodal", "multimodal_row", f"message {position} has a {kind!r} part; {MULTIMODAL_HINT}"
        )
    if not isinstance(value, str) or kind not in ("text", "reasoning", "tool_call"):
        raise _RowProblem(
            "format",
            "unsupported_content_part",
            f"message {position} ({role}) part {_preview(part)}: expected type text, reasoning or tool_call "
            "with a string value",
        )
    if kind != "text" and role != "assistant":
        raise _RowProblem(
            "format", "unsupported_content_part", f"message {position} ({role}) has a {kind!r} part"
        )
    found = _THINK_TAG.search(value) if kind != "tool_call" else None
    if found:
        # reasoning has its own part here, so a think tag inside a part is leaked text: Qwen3's reasoning
        # parser would split the served answer at it, and the trained text would differ from it
        around = value[max(0, found.start() - 40) : found.end() + 20]
        raise _RowProblem(
            "format",
            "think_tag_in_text",
            f"message {position} ({role}) {kind} part contains {found.group(0)!r} at character {found.start()} "
            f"({around!r}); remove the stray tag from the data",
        )
    return kind, value


def _typed_tool_call(value: str, position: int) -> dict[str, Any]:
    try:
        call = json.loads(value)
    except json.JSONDecodeError as exc:
        raise _RowProblem(
            "format", "invalid_tool_call_part", f"message {position}: {exc.msg} in {_preview(value)}"
        ) from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise _RowProblem(
            "format", "invalid_tool_call_part", f"message {position}: {_preview(call)} has no 'name'"
        )
    return {"type": "function", "function": {"name": call["name"], "arguments": call.get("arguments", {})}}


# ============================================================================================== detection


def layout_name(info: FormatInfo) -> str:
    """A short name of the detected layout for reports."""
    if info.formatting == "openai":
        return "openai_messages"
    if info.tags is None or info.tags.get("role_tag") == "from":
        return "sharegpt_from_value"
    return "sharegpt_role_content"


def detect_layout(rows: Sequence[Mapping[str, Any]], label: str) -> FormatInfo:
    """``detect_format`` with an error that names the source and the first row that does not fit."""
    try:
        return detect_format(rows)
    except ValueError as exc:
        index, keys = _first_offending_row(rows)
        raise ReadyDataError(
            f"{label}: no known dataset format ({exc}); first offending row: {index} (keys {keys}). Expected "
            "ShareGPT ('conversations' with from/value), 'messages' with role/content, or OpenAI 'messages' "
            "with tool_calls"
        ) from exc


def _first_offending_row(rows: Sequence[Mapping[str, Any]]) -> tuple[int, list[str]]:
    for index, row in enumerate(rows):
        lists = [row.get(c) for c in ("conversations", "messages") if isinstance(row.get(c), list)]
        if not lists:
            return index, sorted(row)
        message_keys = {k for m in lists[0] if isinstance(m, Mapping) for k in m}
        if not ({"from", "value"} <= message_keys or {"role", "content"} <= message_keys):
            return index, sorted(row)
    return 0, sorted(rows[0]) if rows else []


# ============================================================================================== subsample


def seeded_subsample(available: int, n: int, seed: int) -> tuple[list[int], str | None]:
    """Positions of a seeded choice of ``n`` of ``available`` items, without replacement, in file order.

    ``n <= 0`` keeps everything; ``n >= available`` keeps everything once and, when ``n`` is larger,
    returns a warning sentence (LLaMA-Factory's ``num_samples`` would draw duplicates instead).
    """
    if n <= 0:
        return list(range(available)), None
    if n >= available:
        warning = None
        if n > available:
            warning = (
                f"max_instances={n} exceeds the {available} usable row(s): every row is used once "
                "(no duplicates are drawn)"
            )
        return list(range(available)), warning
    return sorted(random.Random(seed).sample(range(available), n)), None


# ========================================================================================= normalisation


class _NormaliseError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_STRICT_THINK_PREFIX = re.compile(
    "^" + re.escape(THOUGHT_WORDS[0]) + "(.*?)" + re.escape(THOUGHT_WORDS[1]), re.DOTALL
)
_LOOSE_THINK_PREFIX = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
_THOUGHT_ANYWHERE = re.compile(re.escape(THOUGHT_WORDS[0]) + "(.*?)" + re.escape(THOUGHT_WORDS[1]), re.DOTALL)
_TOOL_CALL_BLOCK = re.compile(
    re.escape(TOOL_CALL_WORDS[0]) + "(.*?)" + re.escape(TOOL_CALL_WORDS[1]), re.DOTALL
)


def split_reasoning(text: str) -> tuple[str, str]:
    """``(reasoning, rest)`` of a turn that starts with a ``<think>`` block; ``("", text)`` otherwise."""
    match = _STRICT_THINK_PREFIX.match(text)
    if match:
        return match.group(1), text[match.end() :]
    match = _LOOSE_THINK_PREFIX.match(text)
    if match:
        return match.group(1).strip("\n"), text[match.end() :]
    return "", text


def _arguments(value: Any) -> Any:
    """OpenAI argument strings become objects (LLaMA-Factory would double-encode them)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, dict) else value
    return value


def _function_call_message(value: str) -> Message:
    """A ShareGPT ``function_call`` value (bare or tagged form) as an assistant message with calls."""
    try:
        calls = parse_function_call_value(value)
    except ValueError as exc:
        raise _NormaliseError("invalid_function_json", str(exc)) from exc
    block = _TOOL_CALL_BLOCK.search(value)
    if block is not None:
        reasoning, narration = split_reasoning(value[: block.start()] + value[block.end() :])
        narration = narration[:-1] if narration.endswith("\n") else narration
    else:
        thought = _THOUGHT_ANYWHERE.search(value)
        reasoning, narration = (thought.group(1) if thought else ""), ""
    tool_calls = [ToolCall(name=str(name), arguments=_arguments(arguments)) for name, arguments in calls]
    return Message(role="assistant", content=narration, reasoning_content=reasoning, tool_calls=tool_calls)


def _openai_tool_calls(raw_calls: Any) -> list[ToolCall]:
    calls = []
    for raw in raw_calls:
        function = raw.get("function") if isinstance(raw, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name"):
            raise _NormaliseError(
                "bad_tool_calls", f"tool_calls entry without a named 'function': {_preview(raw)}"
            )
        calls.append(
            ToolCall(
                id=str(raw.get("id") or ""),
                name=str(function["name"]),
                arguments=_arguments(function.get("arguments", {})),
            )
        )
    return calls


def _assistant_message(content: Any, raw: Mapping[str, Any], openai: bool) -> Message:
    text = content if isinstance(content, str) else ""
    reasoning = raw.get("reasoning_content") if isinstance(raw.get("reasoning_content"), str) else ""
    if not reasoning:
        reasoning, text = split_reasoning(text)
    calls = _openai_tool_calls(raw["tool_calls"]) if openai and raw.get("tool_calls") else []
    return Message(role="assistant", content=text, reasoning_content=reasoning, tool_calls=calls)


def _observation_messages(
    content: str, previous: Message | None, raw: Mapping[str, Any], openai: bool
) -> list[Message]:
    """ShareGPT joins parallel results with the separator; split them back, one tool message per call."""
    if openai:
        call_id = raw.get("tool_call_id")
        return [Message(role="tool", content=content, tool_call_id=str(call_id) if call_id else None)]
    n_calls = len(previous.tool_calls) if previous is not None and previous.role == "assistant" else 0
    parts = content.split(OBSERVATION_SEPARATOR)
    if n_calls <= 1:
        return [Message(role="tool", content=content)]
    if len(parts) != n_calls:
        raise _NormaliseError(
            "observation_split_mismatch",
            f"an observation after {n_calls} parallel calls holds {len(parts)} result(s) joined by "
            f"{OBSERVATION_SEPARATOR!r}; cannot pair results with calls",
        )
    return [Message(role="tool", content=part) for part in parts]


def _parse_tools(value: Any) -> list[dict[str, Any]]:
    if not value:
        return []
    parsed = json.loads(value) if isinstance(value, str) else value
    tools = []
    for tool in parsed if isinstance(parsed, list) else []:
        if (
            isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(tool.get("function"), dict)
        ):
            tools.append(tool)
        elif isinstance(tool, dict):
            tools.append({"type": "function", "function": tool})
    return tools


def row_to_trajectory(row: Mapping[str, Any], info: FormatInfo, meta: TrajectoryMeta) -> Trajectory:
    """One valid row (``check_lf_row`` found nothing fatal) as a canonical trajectory."""
    cols, tags = resolve_columns(info.columns), resolve_tags(info.tags)
    openai = info.formatting == "openai"
    raw_messages = list(row[cols["messages"]])
    system: Any = row.get(cols["system"]) if cols["system"] else ""
    if raw_messages and tags["system_tag"] and raw_messages[0].get(tags["role_tag"]) == tags["system_tag"]:
        system = raw_messages.pop(0).get(tags["content_tag"])
    messages: list[Message] = (
        [Message(role="system", content=system)] if isinstance(system, str) and system else []
    )
    for raw in raw_messages:
        role, content = raw.get(tags["role_tag"]), raw.get(tags["content_tag"])
        content = content if isinstance(content, str) else ("" if content is None else str(content))
        previous = messages[-1] if messages else None
        if role == tags["user_tag"]:
            messages.append(Message(role="user", content=content))
        elif role == tags["assistant_tag"]:
            messages.append(_assistant_message(content, raw, openai))
        elif role == tags["function_tag"]:
            messages.append(
                _assistant_message(content, raw, openai) if openai else _function_call_message(content)
            )
        elif role == tags["observation_tag"]:
            messages.extend(_observation_messages(content, previous, raw, openai))
        else:
            raise _NormaliseError("unknown_role", f"role {role!r} is not one of the dataset's tags")
    tools = _parse_tools(row.get(cols["tools"])) if cols["tools"] else []
    return Trajectory(messages=messages, tools=tools, meta=meta)


# ================================================================================================== rows


def instance_id_of(row: Mapping[str, Any]) -> str | None:
    """The SWE instance id a row carries (``_instance_id``, ``instance_id`` or ``_meta.instance_id``)."""
    for key in ("_instance_id", "instance_id"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    value = lf_meta_of_row(row).get("instance_id")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _row_meta(row: Mapping[str, Any], index: int, source: ReadySource) -> TrajectoryMeta:
    """Provenance for a normalised row: our own ``_meta`` when the row has one, else the row's position."""
    extra = {"ready_source": source.label, "ready_row": index}
    meta = lf_meta_of_row(row)
    if meta:
        try:
            parsed = TrajectoryMeta.model_validate(meta)
            return parsed.model_copy(update={"extra": {**parsed.extra, **extra}})
        except ValueError:
            pass
    instance_id = instance_id_of(row) or f"{source.short}-{index:06d}"
    agent_type = row.get("_agent_type") if row.get("_agent_type") in ("main", "subagent") else "main"
    return TrajectoryMeta(
        instance_id=instance_id,
        trial_name=f"{source.short}#row{index}",
        scaffold="ready",
        agent_type=agent_type,
        source_kind="ready",
        source_file=source.label,
        extra=extra,
    )


def redact_credentials(value: Any, secrets: Sequence[str], counter: Counter[str]) -> Any:
    """``value`` with every exact occurrence of a run credential replaced; the same object when none occurs.

    Runs on every row in every mode (also without ``scrub_secrets``): the run's own token must never
    reach a file sft writes.
    """
    if not secrets:
        return value
    if isinstance(value, str):
        if not any(secret in value for secret in secrets):
            return value
        for secret in secrets:
            counter["credential"] += value.count(secret)
            value = value.replace(secret, CREDENTIAL_MARK)
        return value
    if isinstance(value, dict):
        items = {k: redact_credentials(v, secrets, counter) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list):
        values = [redact_credentials(v, secrets, counter) for v in value]
        return value if all(a is b for a, b in zip(values, value, strict=True)) else values
    return value


@dataclass
class ReadySource:
    """Where the rows came from and how they may be registered."""

    type: str  # local_lf | hf_lf
    kind: str  # local_file | hub_file | hub_snapshot | datasets_cache | hub
    label: str  # the file path or hf://owner/name[subset]:split
    short: str  # a short name for reject lines and row ids
    original_file: Path | None = None  # a file that may be registered as-is (absolute path)
    hub: tuple[str, str, str] | None = None  # (repo, subset, split)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Kept:
    index: int
    lf_row: dict[str, Any]
    traj: Trajectory | None = None


@dataclass
class _Pass:
    """State of one pass over the rows."""

    rejects: list[dict[str, Any]] = field(default_factory=list)
    kept: list[_Kept] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    warnings_by_code: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)
    secrets: Counter[str] = field(default_factory=Counter)
    reasoning_turns: int = 0


def _reject(
    source: ReadySource, index: int, row: Mapping[str, Any], stage: str, reason: str, detail: str
) -> dict[str, Any]:
    return Reject(
        trial_name=f"{source.short}#row{index}",
        instance_id=instance_id_of(row),
        stage=stage,
        reason=reason,
        detail=f"{source.label} row {index}: {detail}",
    ).model_dump()


def _apply_adaptation(
    rows: Sequence[dict[str, Any]], adapted: Adapted, source: ReadySource, state: _Pass
) -> list[int]:
    """Indices of the rows that were adapted; the others become ``format`` / ``multimodal`` rejects."""
    for index, problem in sorted(adapted.problems.items()):
        state.rejects.append(
            _reject(source, index, rows[index], problem.stage, problem.reason, problem.detail)
        )
    return [i for i in range(len(rows)) if i not in adapted.problems]


def _repair_empty_tools(
    rows: list[dict[str, Any]], indices: list[int], info: FormatInfo, state: _Pass
) -> list[dict[str, Any]]:
    """``tools: "[]"`` becomes ``""`` in every mode, counted as repair ``empty_tools_array``.

    Why by default: it is provably harmless. ``[]`` and ``""`` both say "no tools", and an inference server
    given ``tools=[]`` renders exactly what it renders without tools (Qwen3's chat template tests ``if
    tools``), while LLaMA-Factory 0.9.5 treats the non-empty string ``"[]"`` as tools and trains a system
    block with an empty ``# Tools`` section the model never sees. The rewrite only removes that difference.
    """
    column = resolve_columns(info.columns)["tools"]
    if not column:
        return rows
    rows = list(rows)
    for index in indices:
        value = rows[index].get(column)
        if isinstance(value, str) and _is_empty_json_array(value):
            rows[index] = {**rows[index], column: ""}
            state.repairs["empty_tools_array"] += 1
    return rows


def _is_empty_json_array(value: str) -> bool:
    """``"[]"`` with any JSON whitespace, without parsing every (possibly large) tools string."""
    stripped = value.strip(" \t\r\n")
    return stripped.startswith("[") and stripped.endswith("]") and not stripped[1:-1].strip(" \t\r\n")


def _tools_without_system_warning(
    rows: Sequence[Mapping[str, Any]], info: FormatInfo, state: _Pass
) -> list[str]:
    """Rows registered as-is that offer tools without a system prompt: the fidelity check will fail on them.

    Not repaired by default (a decision): LLaMA-Factory renders ``<|im_start|>system\n\n\n# Tools`` (the
    empty system text + its ``\n\n# Tools`` block) where Qwen3's chat template renders
    ``<|im_start|>system\n# Tools``. No row content reproduces the chat template's text, and adding a system
    prompt (what ``normalize_ready_data`` does) changes the prompt the model trains under, which is the
    user's choice, not a provably harmless rewrite.
    """
    cols, tags = resolve_columns(info.columns), resolve_tags(info.tags)
    count = 0
    for row in rows:
        if not (cols["tools"] and row.get(cols["tools"])):
            continue
        messages = row.get(cols["messages"]) or []
        system = row.get(cols["system"]) if cols["system"] else None
        first = messages[0] if messages and isinstance(messages[0], Mapping) else {}
        if tags["system_tag"] and first.get(tags["role_tag"]) == tags["system_tag"]:
            system = first.get(tags["content_tag"])
        count += not (isinstance(system, str) and system)
    if not count:
        return []
    state.warnings_by_code["tools_without_system"] += count
    return [
        f"{count} row(s) offer tools but have no system prompt: LLaMA-Factory renders two newlines before "
        "'# Tools' that Qwen3's chat template does not, so the template fidelity check fails on them. Give the "
        "rows a system prompt, or set conversion.normalize_ready_data: true (it adds the default system prompt "
        f"{DEFAULT_SYSTEM!r})"
    ]


def _check_rows(
    rows: Sequence[dict[str, Any]], indices: list[int], info: FormatInfo, source: ReadySource, state: _Pass
) -> list[int]:
    """Indices of rows LLaMA-Factory keeps; the others become ``lf_rules`` rejects."""
    valid = []
    for index in indices:
        row = rows[index]
        violations = check_lf_row(row, columns=info.columns, tags=info.tags, formatting=info.formatting)
        fatal = [v for v in violations if is_fatal(v)]
        for warning in (v for v in violations if not is_fatal(v)):
            state.warnings_by_code[violation_code(warning)] += 1
        if violations and not fatal:
            state.counts["rows_with_warnings"] += 1
        if fatal:
            state.rejects.append(
                _reject(source, index, row, "lf_rules", violation_code(fatal[0]), "; ".join(fatal))
            )
            continue
        valid.append(index)
    return valid


def _exclusion(
    exclusions: ExclusionList | None, rows: Sequence[dict[str, Any]], indices: list[int]
) -> tuple[ExclusionList | None, dict[str, Any]]:
    """The exclusion list to apply (or None) and the report section that says what was done."""
    with_id = sum(1 for i in indices if instance_id_of(rows[i]))
    report: dict[str, Any] = {"file": "", "sha256": "", "rows_with_instance_id": with_id, "applied": False}
    if exclusions is None:
        report["note"] = "conversion.exclude_repos_file is empty: repo exclusion disabled"
        return None, report
    if not with_id:
        report["note"] = "not applied: no row carries an instance id (_instance_id, instance_id or _meta)"
        return None, report
    report.update(file=exclusions.source, sha256=exclusions.sha256, applied=True)
    return exclusions, report


def _apply_exclusion(
    rows: Sequence[dict[str, Any]], indices: list[int], exclusions: Any, source: ReadySource, state: _Pass
) -> list[int]:
    if exclusions is None:
        return indices
    kept = []
    for index in indices:
        instance_id = instance_id_of(rows[index])
        hit = exclusions.match(instance_id) if instance_id else None
        if hit:
            state.rejects.append(
                _reject(
                    source,
                    index,
                    rows[index],
                    "repo_exclusion",
                    "excluded_repo",
                    f"{instance_id} matches '{hit}' in the exclusion list",
                )
            )
            continue
        kept.append(index)
    return kept


def _normalise_rows(
    rows: Sequence[dict[str, Any]],
    indices: list[int],
    info: FormatInfo,
    settings: RuntimeInput,
    source: ReadySource,
    credentials: Credentials,
    state: _Pass,
) -> None:
    conv = settings.conversion
    keep_reasoning = settings.keeps_reasoning()
    scrubber = SecretScrubber(credentials.values()) if conv.scrub_secrets else None
    for index in indices:
        row = rows[index]
        try:
            traj = row_to_trajectory(row, info, _row_meta(row, index, source))
        except (_NormaliseError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, _NormaliseError) else "unparsable_row"
            state.rejects.append(_reject(source, index, row, "normalize", reason, str(exc)))
            continue
        state.reasoning_turns += sum(
            1 for m in traj.messages if m.role == "assistant" and m.reasoning_content
        )
        if scrubber is not None:
            traj = scrub_trajectory(traj, scrubber)
        repaired, issues = repair_and_validate(traj, drop_tool_errors=conv.drop_tool_errors)
        if repaired is None:
            state.rejects.append(
                _reject(source, index, row, "validate", issue_code(issues[0]), "; ".join(issues))
            )
            continue
        # kind -> count as validation recorded it on the row (the Harbor funnel counts the same way)
        state.repairs.update(repaired.meta.extra.get("repairs") or {})
        try:
            lf_row = render_lf_row(repaired, keep_reasoning=keep_reasoning)
        except RenderError as exc:
            state.rejects.append(_reject(source, index, row, "render", exc.reason, exc.detail))
            continue
        fatal = [v for v in check_lf_row(lf_row, columns=dataset_info_entry("")["columns"]) if is_fatal(v)]
        if fatal:  # defensive: our renderer must never produce a row LLaMA-Factory drops
            state.rejects.append(
                _reject(source, index, row, "lf_rules", violation_code(fatal[0]), "; ".join(fatal))
            )
            continue
        state.kept.append(_Kept(index, lf_row, repaired))
    if scrubber is not None:
        state.secrets.update(scrubber.counts)


def _keep_rows_as_is(rows: Sequence[dict[str, Any]], indices: list[int], state: _Pass) -> None:
    for index in indices:
        state.kept.append(_Kept(index, rows[index]))


# =========================================================================================== registration


def _registration(
    source: ReadySource,
    info: FormatInfo,
    copy: Path,
    *,
    changed: list[str],
    normalised: bool,
) -> dict[str, Any]:
    if normalised:
        _refuse_overwriting_source(source, copy)
        entry = dataset_info_entry(str(copy))
        return {
            "entry": entry,
            "registered": "normalized_copy",
            "file": str(copy),
            "note": f"normalised rows written to {copy} and registered (absolute path)",
        }
    offline_hub = source.original_file is None and hub.hub_offline()
    if changed or offline_hub:
        reasons = changed or [
            "HF_HUB_OFFLINE=1: offline, LLaMA-Factory (datasets) cannot load a Hub id from the Hub file cache"
        ]
        _refuse_overwriting_source(source, copy)
        return {
            "entry": info.dataset_info_entry(str(copy)),
            "registered": "filtered_copy",
            "file": str(copy),
            "note": f"registered the copy {copy} ({'; '.join(reasons)}), so the registered data is exactly "
            "the checked data that is trained on",
        }
    if source.original_file is not None:
        path = str(source.original_file.resolve())
        return {
            "entry": info.dataset_info_entry(path),
            "registered": "original_file",
            "file": path,
            "note": f"every row passed the checks; the file is registered as-is ({path})",
        }
    assert source.hub is not None
    repo, subset, split = source.hub
    entry = hub.native_hub_entry(
        repo, subset, split, formatting=info.formatting, columns=info.columns, tags=info.tags
    )
    return {
        "entry": entry,
        "registered": "hub",
        "file": "",
        "note": f"every row of the locally cached copy passed the checks; LLaMA-Factory loads '{repo}' from the "
        "Hub at train time (the latest revision, which may differ from the cached one)",
    }


def _refuse_overwriting_source(source: ReadySource, copy: Path) -> None:
    if source.original_file is None:
        return
    original = source.original_file.resolve()
    if original in (copy.resolve(), copy.with_suffix(".parquet").resolve()):
        raise ReadyDataError(
            f"source.lf_path {original} is the output file of conversion.data_name '{copy.stem}', which is "
            "rewritten with the checked rows; choose another conversion.data_name so the source is not overwritten"
        )


# ================================================================================================= report


def _selection_report(
    settings: RuntimeInput, available: int, chosen: list[int], kept: list[_Kept], warning: str | None
) -> dict[str, Any]:
    rows_chosen = [kept[i].index for i in chosen]
    digest = hashlib.sha256(orjson.dumps(rows_chosen)).hexdigest()
    report: dict[str, Any] = {
        "seed": settings.conversion.seed,
        "n": settings.conversion.max_instances,
        "available": available,
        "selected": len(chosen),
        "drawn_by": "sft" if settings.conversion.max_instances > 0 else None,
        "with_replacement": False,
        "rows_sha256": digest,
    }
    if len(rows_chosen) <= MAX_LISTED_INDICES:
        report["rows"] = rows_chosen
    if warning:
        report["warning"] = warning
    return report


def _format_report(info: FormatInfo) -> dict[str, Any]:
    return {
        "layout": layout_name(info),
        "formatting": info.formatting,
        "columns": dict(info.columns),
        "tags": dict(info.tags) if info.tags is not None else None,
    }


def _openai_warning(info: FormatInfo, normalised: bool) -> str | None:
    if info.formatting != "openai" or normalised:
        return None
    return (
        "OpenAI-messages rows are registered with LLaMA-Factory's 'openai' converter, which discards the "
        "assistant text that accompanies tool_calls, double-encodes string arguments and appends "
        "'detailed thinking off' to the system prompt of rows without tools; set "
        "conversion.normalize_ready_data: true to train native ShareGPT rows instead"
    )


# ================================================================================================ process


def _pass_warnings(
    rows_found: int,
    rows_invalid: int,
    selected: Sequence[_Kept],
    info: FormatInfo,
    state: _Pass,
    settings: RuntimeInput,
    *,
    normalise: bool,
    sample_warning: str | None,
) -> list[str]:
    """What the user is told about rows that are not trained, or trained differently than written."""
    warnings = [w for w in (sample_warning, _openai_warning(info, normalise)) if w]
    for stage, what in (("multimodal", "are multimodal"), ("format", "cannot be converted")):
        count = sum(1 for r in state.rejects if r["stage"] == stage)
        if count:
            warnings.append(
                f"{count} of {rows_found} row(s) {what} and are not trained; see the rejects file (stage {stage})"
            )
    if rows_invalid:
        warnings.append(
            f"{rows_invalid} of {rows_found} row(s) break LLaMA-Factory's rules and are not trained; "
            "see the rejects file (stage lf_rules)"
        )
    if not normalise:
        warnings.extend(_tools_without_system_warning([k.lf_row for k in selected], info, state))
    if normalise and state.reasoning_turns and not settings.keeps_reasoning():
        warnings.append(
            f"{state.reasoning_turns} assistant turn(s) carry <think> reasoning, which the normalised "
            f"rows drop (template {settings.training.template}); set conversion.keep_reasoning: true "
            "to train it"
        )
    return warnings


@dataclass(frozen=True)
class ReadyPlaces:
    """What the ready-data path uses besides the source: in a Kedro run, the catalog's ``repo_exclusions``,
    ``params:paths.lf_json`` (where ``lf_dataset`` writes the rows) and ``conversion_workspace``."""

    exclusions: ExclusionList | None
    copy_path: Path  # registered in dataset_info.json when the written rows differ from the source
    hub_dir: Path  # files fetched from the Hub

    @classmethod
    def from_config(cls, settings: RuntimeInput, root: Path) -> ReadyPlaces:
        """The project's defaults under ``root`` (library callers: tests, benchmarks)."""
        return cls(
            exclusions=load_exclusions(settings, root),
            copy_path=lf_json_path(root, settings.conversion.data_name),
            hub_dir=ConversionWorkspace.under(root).hub_dir,
        )


def process_rows(
    rows: Sequence[dict[str, Any]],
    source: ReadySource,
    settings: RuntimeInput,
    places: ReadyPlaces,
    *,
    credentials: Credentials,
) -> ConversionResult:
    """Check, exclude, (normalise), subsample and register rows that were read from ``source``."""
    conv = settings.conversion
    state = _Pass()
    secrets = [v for v in credentials.values() if len(v) >= MIN_EXTRA_VALUE_LENGTH]
    rows = [redact_credentials(row, secrets, state.secrets) for row in rows]
    adapted = adapt_rows(rows)
    rows = adapted.rows
    adaptable = _apply_adaptation(rows, adapted, source, state)
    normalise = conv.normalize_ready_data or adapted.normalise
    if not adaptable:
        _raise_nothing_left(source, state.rejects)
    info = detect_layout([rows[i] for i in adaptable], source.label)
    rows = _repair_empty_tools(rows, adaptable, info, state)
    valid = _check_rows(rows, adaptable, info, source, state)
    rows_invalid = len(adaptable) - len(valid)
    exclusions, exclusion_report = _exclusion(places.exclusions, rows, valid)
    candidates = _apply_exclusion(rows, valid, exclusions, source, state)
    if normalise:
        _normalise_rows(rows, candidates, info, settings, source, credentials, state)
    else:
        _keep_rows_as_is(rows, candidates, state)
    if not state.kept:
        _raise_nothing_left(source, state.rejects)
    if not normalise:
        _check_uniform_types([k.lf_row for k in state.kept], source)

    chosen, sample_warning = seeded_subsample(len(state.kept), conv.max_instances, conv.seed)
    selected = [state.kept[i] for i in chosen]
    changed = _changes(len(selected), state, adapted)
    registration = _registration(source, info, places.copy_path, changed=changed, normalised=normalise)

    warnings = _pass_warnings(
        len(rows),
        rows_invalid,
        selected,
        info,
        state,
        settings,
        normalise=normalise,
        sample_warning=sample_warning,
    )
    for warning in warnings:
        logger.warning("%s: %s", source.label, warning)

    funnel = {
        "rows_found": len(rows),
        "rows_multimodal": sum(1 for r in state.rejects if r["stage"] == "multimodal"),
        "rows_unconvertible": sum(1 for r in state.rejects if r["stage"] == "format"),
        "rows_invalid": rows_invalid,
        "rows_repo_excluded": sum(1 for r in state.rejects if r["stage"] == "repo_exclusion"),
        "rows_normalize_rejected": sum(
            1 for r in state.rejects if r["stage"] in ("normalize", "validate", "render")
        ),
        "rows_valid": len(state.kept),
        "rows_selected": len(selected),
        "rows_written": len(selected),
        "rows_with_warnings": state.counts["rows_with_warnings"],
    }
    report = {
        "source": {
            "type": source.type,
            "kind": source.kind,
            "location": source.label,
            "notes": list(source.notes),
        },
        "format": {**_format_report(info), "converted_from": adapted.layout, "conversion_note": adapted.note},
        "funnel": funnel,
        "rejects_by_stage": dict(Counter(r["stage"] for r in state.rejects)),
        "rejects_by_reason": dict(Counter(f"{r['stage']}:{r['reason']}" for r in state.rejects)),
        "warnings_by_code": dict(state.warnings_by_code),
        "registration": registration,
        "selection": _selection_report(settings, len(state.kept), chosen, state.kept, sample_warning),
        "exclusion": exclusion_report,
        "normalized": normalise,
        "repairs": dict(state.repairs),
        "secrets_redacted": dict(state.secrets),
        "reasoning": {
            "turns_with_reasoning": state.reasoning_turns,
            "kept": settings.keeps_reasoning(),
            "template": settings.training.template,
        }
        if normalise
        else None,
        "warnings": warnings,
    }
    if adapted.note:
        logger.info("%s: %s", source.label, adapted.note)
    logger.info(
        "%s: %d row(s) found, %d invalid, %d written; %s",
        source.label,
        len(rows),
        rows_invalid,
        len(selected),
        registration["note"],
    )
    trajectories = [k.traj for k in selected if k.traj is not None]
    return ConversionResult(
        lf_rows=[k.lf_row for k in selected],
        im_rows=[render_im_row(t) for t in trajectories],
        rejects=state.rejects,
        funnel=report,
        kept=trajectories,
    )


def _changes(written: int, state: _Pass, adapted: Adapted) -> list[str]:
    """Why the rows to train differ from the source (empty: the source can be registered as-is)."""
    changes = []
    if adapted.layout:
        changes.append(f"converted from {adapted.layout}")
    if state.repairs.get("empty_tools_array"):
        changes.append(f"{state.repairs['empty_tools_array']} tools column(s) '[]' written as ''")
    if state.rejects:
        changes.append(f"{len(state.rejects)} row(s) removed")
    if written < len(state.kept):
        changes.append(f"seeded subsample of {written} row(s)")
    if state.secrets:
        changes.append(f"{sum(state.secrets.values())} credential occurrence(s) redacted")
    return changes


def _raise_nothing_left(source: ReadySource, rejects: list[dict[str, Any]]) -> None:
    first = rejects[0] if rejects else None
    where = f"; first offending row: {first['detail']}" if first else ""
    stages = Counter(r["stage"] for r in rejects)
    by_stage = ", ".join(f"{n} {stage}" for stage, n in stages.most_common())
    # No hint to normalize_ready_data: it only rewrites rows that passed the checks, so it rescues none of these.
    if stages.get("multimodal") == len(rejects):
        hint = "the dataset is multimodal; sft trains text-only models, so there is nothing to train"
    else:
        hint = "fix the data (see the rejects file, one line per row with its reason)"
    raise ReadyDataError(
        f"{source.label}: no usable row is left ({len(rejects)} rejected: {by_stage}){where}. LLaMA-Factory would "
        f"abort with 'Cannot find valid samples'; {hint}"
    )


def _check_uniform_types(rows: Iterable[Mapping[str, Any]], source: ReadySource) -> None:
    problems = check_column_types(rows)
    if problems:
        raise ReadyDataError(
            f"{source.label}: {'; '.join(problems)}; Arrow cannot load a column whose type changes between rows. "
            "Make each column one type (e.g. tools always a JSON string) or set conversion.normalize_ready_data: true"
        )


# ================================================================================================ sources


def prepare_ready_dataset(
    handle: SourceHandle,
    settings: RuntimeInput,
    root: Path,
    *,
    credentials: Credentials,
    places: ReadyPlaces | None = None,
) -> ConversionResult:
    """The convert pipeline's entry point for ``local_lf`` and ``hf_lf`` sources (``places``: what the catalog
    hands the node; by default the project's files under ``root``)."""
    places = places or ReadyPlaces.from_config(settings, root)
    if handle.type == "local_lf":
        if handle.path is None:
            raise ReadyDataError(
                "source.lf_path: no file was resolved; set runtime_info.input.source.lf_path"
            )
        return prepare_local_file(handle.path, settings, root, credentials=credentials, places=places)
    if handle.type == "hf_lf":
        return prepare_hub_dataset(settings, root, credentials=credentials, places=places)
    raise ReadyDataError(
        f"source.type {handle.type!r} is not a ready-made dataset (expected local_lf or hf_lf)"
    )


def prepare_local_file(
    path: Path,
    settings: RuntimeInput,
    root: Path,
    *,
    credentials: Credentials,
    kind: str = "local_file",
    notes: Sequence[str] = (),
    places: ReadyPlaces | None = None,
) -> ConversionResult:
    """A local ``.json`` / ``.jsonl`` / ``.parquet`` file of LLaMA-Factory rows."""
    places = places or ReadyPlaces.from_config(settings, root)
    path = path.resolve()
    rows = read_rows(path)
    source = ReadySource(
        type=settings.source.type,
        kind=kind,
        label=str(path),
        short=path.stem,
        original_file=path,
        notes=list(notes),
    )
    return process_rows(rows, source, settings, places, credentials=credentials)


def prepare_hub_dataset(
    settings: RuntimeInput, root: Path, *, credentials: Credentials, places: ReadyPlaces | None = None
) -> ConversionResult:
    """A Hub dataset: one downloaded file (``hf_file_name``), the local caches, or the native entry."""
    places = places or ReadyPlaces.from_config(settings, root)
    src = settings.source
    token = credentials.hf_token or None
    if src.hf_file_name:
        local, note = hub.download_hub_file(src.hf_hub_url, src.hf_file_name, places.hub_dir, token=token)
        return prepare_local_file(
            local, settings, root, credentials=credentials, kind="hub_file", notes=[note], places=places
        )
    cached = hub.load_cached_rows(src.hf_hub_url, src.hf_subset, src.hf_split, token=token)
    label = f"hf://{src.hf_hub_url}" + (f"[{src.hf_subset}]" if src.hf_subset else "") + f":{src.hf_split}"
    if cached is not None:
        if not cached.rows:
            raise ReadyDataError(f"{label}: the cached split holds no rows ({cached.detail})")
        source = ReadySource(
            type="hf_lf",
            kind=cached.origin,
            label=label,
            short=hub.repo_folder(src.hf_hub_url),
            hub=(src.hf_hub_url, src.hf_subset, src.hf_split),
            notes=[f"rows read from the {cached.detail}, no network used"],
        )
        return process_rows(cached.rows, source, settings, places, credentials=credentials)
    if hub.hub_offline():
        raise hub.not_cached_error(src.hf_hub_url, src.hf_subset, src.hf_split)
    return _unvalidated_hub_result(settings, label)


def _unvalidated_hub_result(settings: RuntimeInput, label: str) -> ConversionResult:
    """Online and not cached: LLaMA-Factory's native entry, rows unchecked until train time."""
    src, conv = settings.source, settings.conversion
    n = conv.max_instances if conv.max_instances > 0 else None
    entry = hub.native_hub_entry(
        src.hf_hub_url,
        src.hf_subset,
        src.hf_split,
        formatting="sharegpt",
        columns=hub.REFERENCE_COLUMNS,
        tags=hub.REFERENCE_TAGS,
        num_samples=n,
    )
    notes = [
        f"'{src.hf_hub_url}' is not in the local Hub cache, so its rows were not read or checked here; "
        "LLaMA-Factory downloads it at train time",
        "layout assumed to be the reference's ('messages' with role/content); for another layout run once with "
        "the dataset in the Hub cache or set source.hf_file_name",
    ]
    if n is not None:
        notes.append(
            f"max_instances={n} became num_samples: LLaMA-Factory draws the {n} rows itself from numpy's "
            f"global RNG (unseeded, not reproducible) and with replacement when {n} exceeds the dataset size"
        )
    if conv.normalize_ready_data:
        notes.append("conversion.normalize_ready_data has no effect: the rows are not available locally")
    for note in notes:
        logger.warning("%s: %s", label, note)
    report = {
        "source": {"type": "hf_lf", "kind": "hub", "location": label, "notes": notes},
        "format": {
            "layout": "unknown (assumed sharegpt_role_content)",
            "formatting": "sharegpt",
            "columns": dict(hub.REFERENCE_COLUMNS),
            "tags": dict(hub.REFERENCE_TAGS),
            "converted_from": None,
            "conversion_note": "",
        },
        "funnel": {
            "rows_found": None,
            "rows_multimodal": None,
            "rows_unconvertible": None,
            "rows_invalid": None,
            "rows_repo_excluded": None,
            "rows_normalize_rejected": None,
            "rows_valid": None,
            "rows_selected": n,
            "rows_written": 0,
            "rows_with_warnings": None,
        },
        "rejects_by_stage": {},
        "rejects_by_reason": {},
        "warnings_by_code": {},
        "registration": {"entry": entry, "registered": "hub", "file": "", "note": " ".join(notes)},
        "selection": {
            "seed": None,
            "n": conv.max_instances,
            "available": None,
            "selected": n,
            "drawn_by": "llamafactory" if n is not None else None,
            "with_replacement": n is not None,
        },
        "exclusion": {"applied": False, "note": "not applied: rows not available locally"},
        "normalized": False,
        "repairs": {},
        "secrets_redacted": {},
        "reasoning": None,
        "warnings": notes,
    }
    return ConversionResult(lf_rows=[], im_rows=[], rejects=[], funnel=report, kept=[])


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
