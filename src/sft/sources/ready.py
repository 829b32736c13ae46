"""Ready-made LLaMA-Factory datasets: ``source.type: local_lf`` (a file) and ``hf_lf`` (the Hugging Face Hub).

Conversion is skipped for these sources, but the rows go through the same gate as converted data, so a
user who brings their own data gets the same guarantees (docs/config-contract.md §3.1, §3.3, §15.1):

1. **Read** ``.json`` (array or JSON lines), ``.jsonl`` or ``.parquet``; an unreadable, empty or
   unrecognised file is a ``ReadyDataError`` naming the file and the first offending row.
2. **Detect** the layout (ShareGPT ``conversations``/``from``/``value``, ShareGPT ``role``/``content``,
   OpenAI ``messages`` with ``tool_calls``) with ``sft.convert.lf_rules.detect_format``.
3. **Check every row** against LLaMA-Factory's converter rules (``check_lf_row``). A row LLaMA-Factory
   would drop, or that would abort the run, goes into the rejects (stage ``lf_rules``) with the row index
   and the problem. Warnings (e.g. ``tools == "[]"``) are counted, the row is kept.
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
from sft.config.schema import RuntimeInput
from sft.convert.canonical import Message, Reject, ToolCall, Trajectory, TrajectoryMeta
from sft.convert.engine import ConversionResult
from sft.convert.lf_rules import (
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
from sft.convert.render import (
    OBSERVATION_SEPARATOR,
    RenderError,
    dataset_info_entry,
    lf_meta_of_row,
    render_im_row,
    render_lf_row,
)
from sft.convert.secrets import MIN_EXTRA_VALUE_LENGTH, SecretScrubber, scrub_trajectory
from sft.convert.validate import is_repair, issue_code, repair_and_validate
from sft.datasets.source import SourceHandle
from sft.sources import hub

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


def _check_rows(
    rows: Sequence[dict[str, Any]], info: FormatInfo, source: ReadySource, state: _Pass
) -> list[int]:
    """Indices of rows LLaMA-Factory keeps; the others become ``lf_rules`` rejects."""
    valid = []
    for index, row in enumerate(rows):
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
    settings: RuntimeInput, root: Path, rows: Sequence[dict[str, Any]], indices: list[int]
) -> tuple[Any, dict[str, Any]]:
    """The exclusion list to apply (or None) and the report section that says what was done."""
    from sft.convert.filters import ExclusionList

    configured = settings.conversion.exclude_repos_file
    with_id = sum(1 for i in indices if instance_id_of(rows[i]))
    report: dict[str, Any] = {"file": "", "sha256": "", "rows_with_instance_id": with_id, "applied": False}
    if not configured:
        report["note"] = "conversion.exclude_repos_file is empty: repo exclusion disabled"
        return None, report
    if not with_id:
        report["note"] = "not applied: no row carries an instance id (_instance_id, instance_id or _meta)"
        return None, report
    path = Path(configured) if Path(configured).is_absolute() else root / configured
    exclusions = ExclusionList.load(path)
    report.update(file=str(path), sha256=exclusions.sha256, applied=True)
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
        state.repairs.update(issue_code(i) for i in issues if is_repair(i))
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


def lf_copy_path(settings: RuntimeInput, root: Path) -> Path:
    """Where the catalog writes the returned rows (``paths.lf_json`` in sft.config.kedro_bridge)."""
    return root / "artifacts" / "data" / "lf_data" / f"{settings.conversion.data_name}.json"


def _registration(
    source: ReadySource,
    info: FormatInfo,
    settings: RuntimeInput,
    root: Path,
    *,
    changed: list[str],
    normalised: bool,
) -> dict[str, Any]:
    copy = lf_copy_path(settings, root)
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


def process_rows(
    rows: Sequence[dict[str, Any]],
    source: ReadySource,
    settings: RuntimeInput,
    root: Path,
    *,
    credentials: Credentials,
) -> ConversionResult:
    """Check, exclude, (normalise), subsample and register rows that were read from ``source``."""
    conv = settings.conversion
    info = detect_layout(rows, source.label)
    state = _Pass()
    secrets = [v for v in credentials.values() if len(v) >= MIN_EXTRA_VALUE_LENGTH]
    rows = [redact_credentials(row, secrets, state.secrets) for row in rows]
    valid = _check_rows(rows, info, source, state)
    rows_invalid = len(rows) - len(valid)
    exclusions, exclusion_report = _exclusion(settings, root, rows, valid)
    candidates = _apply_exclusion(rows, valid, exclusions, source, state)
    if conv.normalize_ready_data:
        _normalise_rows(rows, candidates, info, settings, source, credentials, state)
    else:
        _keep_rows_as_is(rows, candidates, state)
    if not state.kept:
        _raise_nothing_left(source, state.rejects)
    if not conv.normalize_ready_data:
        _check_uniform_types([k.lf_row for k in state.kept], source)

    chosen, sample_warning = seeded_subsample(len(state.kept), conv.max_instances, conv.seed)
    selected = [state.kept[i] for i in chosen]
    changed = _changes(len(selected), state)
    registration = _registration(
        source, info, settings, root, changed=changed, normalised=conv.normalize_ready_data
    )

    warnings = [w for w in (sample_warning, _openai_warning(info, conv.normalize_ready_data)) if w]
    if rows_invalid:
        warnings.append(
            f"{rows_invalid} of {len(rows)} row(s) break LLaMA-Factory's rules and are not trained; "
            "see the rejects file (stage lf_rules)"
        )
    if conv.normalize_ready_data and state.reasoning_turns and not settings.keeps_reasoning():
        warnings.append(
            f"{state.reasoning_turns} assistant turn(s) carry <think> reasoning, which the normalised "
            f"rows drop (template {settings.training.template}); set conversion.keep_reasoning: true "
            "to train it"
        )
    for warning in warnings:
        logger.warning("%s: %s", source.label, warning)

    funnel = {
        "rows_found": len(rows),
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
        "format": _format_report(info),
        "funnel": funnel,
        "rejects_by_stage": dict(Counter(r["stage"] for r in state.rejects)),
        "rejects_by_reason": dict(Counter(f"{r['stage']}:{r['reason']}" for r in state.rejects)),
        "warnings_by_code": dict(state.warnings_by_code),
        "registration": registration,
        "selection": _selection_report(settings, len(state.kept), chosen, state.kept, sample_warning),
        "exclusion": exclusion_report,
        "normalized": conv.normalize_ready_data,
        "repairs": dict(state.repairs),
        "secrets_redacted": dict(state.secrets),
        "reasoning": {
            "turns_with_reasoning": state.reasoning_turns,
            "kept": settings.keeps_reasoning(),
            "template": settings.training.template,
        }
        if conv.normalize_ready_data
        else None,
        "warnings": warnings,
    }
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


def _changes(written: int, state: _Pass) -> list[str]:
    """Why the rows to train differ from the source (empty: the source can be registered as-is)."""
    changes = []
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
    raise ReadyDataError(
        f"{source.label}: no usable row is left ({len(rejects)} rejected){where}. LLaMA-Factory would abort with "
        "'Cannot find valid samples'; fix the data (see the rejects) or use conversion.normalize_ready_data"
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
    handle: SourceHandle, settings: RuntimeInput, root: Path, *, credentials: Credentials
) -> ConversionResult:
    """The convert pipeline's entry point for ``local_lf`` and ``hf_lf`` sources."""
    if handle.type == "local_lf":
        if handle.path is None:
            raise ReadyDataError(
                "source.lf_path: no file was resolved; set runtime_info.input.source.lf_path"
            )
        return prepare_local_file(handle.path, settings, root, credentials=credentials)
    if handle.type == "hf_lf":
        return prepare_hub_dataset(settings, root, credentials=credentials)
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
) -> ConversionResult:
    """A local ``.json`` / ``.jsonl`` / ``.parquet`` file of LLaMA-Factory rows."""
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
    return process_rows(rows, source, settings, root, credentials=credentials)


def prepare_hub_dataset(settings: RuntimeInput, root: Path, *, credentials: Credentials) -> ConversionResult:
    """A Hub dataset: one downloaded file (``hf_file_name``), the local caches, or the native entry."""
    src = settings.source
    token = credentials.hf_token or None
    if src.hf_file_name:
        local, note = hub.download_hub_file(src.hf_hub_url, src.hf_file_name, root, token=token)
        return prepare_local_file(
            local, settings, root, credentials=credentials, kind="hub_file", notes=[note]
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
        return process_rows(cached.rows, source, settings, root, credentials=credentials)
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
        },
        "funnel": {
            "rows_found": None,
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
