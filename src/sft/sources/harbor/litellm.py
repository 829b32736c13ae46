"""The trajgen LiteLLM trajectory log (``agent/litellm-trajectory.jsonl``): reading, normalising, dedup.

One JSON object per LLM call (docs/input-formats.md §8). The log is cumulative: every call repeats the
whole conversation so far, so a trial with N calls holds O(N^2) messages. Everything here is therefore
built to be linear in the size of the log:

* lines are parsed with orjson; the slow paths (invalid UTF-8, lone surrogate escapes) only run for the
  lines that need them; the messages (and tools) a line repeats byte for byte from a recent line are not
  parsed again: the record gets that line's objects (``PrefixSharingParser``), so records share message
  dicts and must never be mutated in place;
* ``dedup_conversations`` hashes the raw message dicts (never pydantic objects), each distinct message
  once per log (memoised by its raw bytes: every call repeats the earlier ones), keeps rolling prefix
  hashes and decides with set lookups which calls are prefixes of others;
* ``normalize_request`` / ``normalize_response`` (the expensive pydantic conversion) run only for the
  survivors.

Requests and responses come in three shapes: OpenAI chat completions, Anthropic messages (top-level
``system``, content blocks, ``response_body.content``) and, for completeness, the OpenAI Responses API
(``input`` items, ``response_body.output``).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sft.core.canonical import Message, ToolCall
from sft.core.gc import gc_paused

logger = logging.getLogger(__name__)

TOOL_USE_ERROR_PREFIX = "<tool_use_error>"
INVALID_ARGUMENTS_PREFIX = "The arguments provided to the tool are invalid"
_STRIP_KEYS = frozenset({"cache_control", "signature", "generation"})
# Keys and block types ignored when comparing conversations: per-request cache markers, signatures and
# reasoning that scaffolds echo back inconsistently (or not at all) on later calls.
_HASH_DROP_KEYS = _STRIP_KEYS | {
    "reasoning_content",
    "reasoning",
    "thinking_blocks",
    "provider_specific_fields",
}
_HASH_DROP_BLOCK_TYPES = frozenset({"thinking", "redacted_thinking", "reasoning"})
_SLOW_PATH_MARKERS = (
    b"cache_control",
    b"signature",
    b'"generation"',
    b"thinking",
    b"reasoning",
    b"provider_specific",
)
# Per-request values in Claude Code's billing header (``cc_version=<v>.<hash>; ... cch=<hex>;``) would
# otherwise make every call look like a new conversation (rule 5 of ``model_view``).
_CCH_RE = re.compile(r"\b(cch|cc_version)=[^;\"\\\n]*;")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "summary_text", "reasoning_text"})


class LogShapeError(ValueError):
    """A record whose request or response has none of the supported shapes."""


# ----------------------------------------------------------------------------------------------------------
# reading


@dataclass
class LogReadResult:
    """The usable records of a log (success != false, in file order) and what was wrong with the rest."""

    records: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)  # 1-based line of each record
    failed_dropped: int = 0  # success == false
    invalid_lines: int = 0  # not JSON / not an object / truncated
    n_lines: int = 0


def _replace_surrogates(value: Any) -> Any:
    """Replace lone UTF-16 surrogates (from ``\\ud800`` escapes) with U+FFFD so the text can be encoded."""
    if isinstance(value, str):
        return _SURROGATE_RE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def loads_lenient(raw: bytes, where: str, problems: list[str]) -> Any:
    """Parse JSON that orjson refuses: invalid UTF-8 bytes, lone surrogate escapes, NaN/Infinity literals.

    Each repair is recorded in ``problems`` (prefixed with ``where``); raises ValueError when the text is
    not JSON at all (e.g. a truncated line).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        problems.append(f"{where}: invalid UTF-8 bytes replaced with U+FFFD")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    value = json.loads(text)  # accepts lone surrogate escapes and NaN; raises ValueError when truly invalid
    cleaned = _replace_surrogates(value)
    if _SURROGATE_ESCAPE_RE.search(text):
        problems.append(f"{where}: lone UTF-16 surrogate escape(s) replaced with U+FFFD")
    else:
        problems.append(f"{where}: parsed with the lenient JSON parser (non-standard literals such as NaN)")
    return cleaned


def is_failed(record: dict[str, Any]) -> bool:
    """``success`` false (HTTP failure, timeout, rejection). Older loggers omit the key: missing = success."""
    success = record.get("success", True)
    return success is False or (isinstance(success, str) and success.strip().lower() == "false")


def read_log(path: str | Path) -> LogReadResult:
    """Read a LiteLLM trajectory log; never raises for bad content, only for an unreadable file.

    Tolerates a truncated last line (the proxy was still writing), invalid lines, invalid UTF-8 and lone
    surrogate escapes; each is recorded in ``problems`` with its line number. Records with
    ``success: false`` are dropped and counted. Each record equals ``orjson.loads`` of its line, but
    records share the message objects (and tools list) their lines repeat: treat them as read-only.
    """
    path = Path(path)
    data = path.read_bytes()
    with gc_paused():
        return _read_lines(path, data)


def _read_lines(path: Path, data: bytes) -> LogReadResult:
    """Parse ``data`` line by line without splitting it: a line is a (begin, end) span of the one buffer
    and only what orjson must see is copied (``PrefixSharingParser``; the plain path copies the line)."""
    result = LogReadResult(records=[])
    # a line that holds the last non-whitespace byte of an unterminated log was cut off mid-write
    truncated_at = _last_content_byte(data) if not data.endswith(b"\n") else -1
    parser = PrefixSharingParser(data)
    size = len(data)
    begin = index = 0
    while True:
        end = data.find(b"\n", begin)
        if end < 0:
            end = size
        if end > begin and (data[begin] not in _WHITESPACE or not data[begin:end].isspace()):
            result.n_lines += 1
            record = parser.parse(begin, end)
            if record is None:  # not the expected shape, or not valid JSON: the plain path decides
                truncated = begin <= truncated_at < end
                record = _parse_line(data[begin:end], f"{path}:{index + 1}", result, truncated)
            if record is not None:
                _keep_record(record, index, path, result)
        if end == size:
            break
        begin = end + 1
        index += 1
    if result.failed_dropped:
        result.problems.append(f"{path}: {result.failed_dropped} failed request(s) (success: false) dropped")
    return result


_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")  # exactly the bytes that bytes.isspace() treats as whitespace


def _last_content_byte(data: bytes) -> int:
    """Offset of the last non-whitespace byte of ``data`` (-1 if none)."""
    position = len(data) - 1
    while position >= 0 and data[position] in _WHITESPACE:
        position -= 1
    return position


def _parse_line(raw: bytes, where: str, result: LogReadResult, truncated: bool) -> Any:
    """``orjson.loads``, else the lenient parser; None (and the problem recorded) when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return loads_lenient(raw, where, result.problems)
    except ValueError as exc:
        result.invalid_lines += 1
        if truncated:
            result.problems.append(f"{where}: truncated last line ignored (the log was still being written)")
        else:
            result.problems.append(f"{where}: invalid JSON ignored ({exc})")
        return None


def _keep_record(record: Any, index: int, path: Path, result: LogReadResult) -> None:
    """Add a parsed line to ``result``: an object that did not fail, else count why not."""
    if not isinstance(record, dict):
        result.invalid_lines += 1
        result.problems.append(
            f"{path}:{index + 1}: a JSON {type(record).__name__}, expected an object; ignored"
        )
        return
    if is_failed(record):
        result.failed_dropped += 1
        return
    result.records.append(record)
    result.line_numbers.append(index + 1)


# ----------------------------------------------------------------------------------------------------------
# prefix-sharing parsing: each line of a cumulative log repeats the previous line's request array


# The request array keys, as they appear in compact JSON, in the order they are looked for. ``"key":[``
# with raw quotes only occurs as an object key (a quote inside a string is escaped, so ``s"`` cannot
# occur there); *which* object it belongs to is verified after parsing (``PrefixSharingParser.parse``).
_ARRAY_KEYS: tuple[tuple[bytes, str], ...] = ((b'"messages":[', "messages"), (b'"input":[', "input"))
_REQUEST_BODY_KEY = b'"request_body":{'
_COMMA, _CLOSE = ord(","), ord("]")
# Spliced in where the shared messages were cut out of a line. It is found back at
# ``request_body.<key>[0]`` only when the cut was made in that array: random per process, so no log line
# can hold it by chance or design.
_MARKER = "\x00sft-shared-prefix-" + secrets.token_hex(16)
_MARKER_JSON = orjson.dumps(_MARKER)
_MAX_BASES = 4  # recent arrays kept to share from (the main agent's calls interleave with side calls)
# The tool schemas repeat unchanged in every call: a tools array with the same bytes as a recent line's
# is cut out too (replaced by a second marker) and that line's list put back.
_TOOLS_KEY = b'"tools":['
_TOOLS_MARKER = "\x00sft-shared-tools-" + secrets.token_hex(16)
_TOOLS_MARKER_JSON = orjson.dumps(_TOOLS_MARKER)
_BRACE = ord("}")


@dataclass(eq=False)  # compared by identity: a base is removed from the recent list as that object
class _ParsedArray:
    """A parsed line's request array: its message objects and the byte lengths of some of its prefixes.

    ``data[start : start + ends[i]]`` is the array's first ``counts[i]`` elements (opening bracket
    included) and ``data[start + ends[i]]`` is the ``,`` or ``]`` after them. Only lengths proven
    byte-exact are kept; a later line shares elements with this one up to such a cut.
    """

    start: int  # offset of the array's "[" in the log
    key: str
    items: list[Any]
    counts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _SharedValue:
    """A parsed value whose exact bytes are ``data[start : start + length]`` (a line's tools array)."""

    start: int
    length: int
    value: Any


class PrefixSharingParser:
    """Parses the lines of one log, re-using the message objects of an earlier line with the same prefix.

    A cumulative log repeats the whole conversation in every request, so almost every byte of a line is
    a repeat of an earlier line. For each line the longest run of request messages whose raw bytes equal
    those of a recent line is found (memcmp, no copies), cut out and replaced by a marker string; orjson
    parses the rest (the new messages and everything outside the array) and the earlier line's message
    objects are put back in place of the marker. The result equals ``orjson.loads(line)``:

    * JSON is context-free: the bytes ``[m1,...,mk,`` parse to the same k values wherever such an array
      starts, and leave the parser in the same state as ``["<marker>",`` does; everything else in the
      line is parsed by orjson itself, byte for byte;
    * the marker must come back at ``request_body.<key>[0]``, which proves that the cut was made in that
      array (not in another object that happens to hold such a key);
    * element ends are only trusted where proven: ``orjson.dumps`` of a parsed element equal to its bytes
      in the line, or the end of the whole array located and re-parsed (``_add_tail_cuts``).

    Anything else (another key spelling, whitespace around the array, invalid JSON, invalid UTF-8, lone
    surrogates) returns None and the caller parses the line in full, with the same problems as before.
    Records built this way share message objects: the same dict is in every record whose request
    repeated that message, so nothing may mutate a record's messages in place (nothing in sft.sources
    does; ``_hash_conversations`` relies on it to hash each shared object once).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._view = memoryview(data)
        self._bases: list[_ParsedArray] = []
        self._tools: list[_SharedValue] = []

    def parse(self, begin: int, end: int) -> dict[str, Any] | None:
        """The record of the line ``data[begin:end]`` (equal to ``orjson.loads`` of it), or None."""
        data, view = self._data, self._view
        located = _locate_array(data, begin, end)
        if located is None:
            return None
        start, key = located
        base, cut = self._best_cut(start, end, key)
        if base is None:
            close = data[start + 1 : start + 2] == b"]"
            rest = start + 2 if close else start + 1
        else:
            close = data[start + base.ends[cut]] == _CLOSE
            rest = start + base.ends[cut] + 1
        head = (view[begin:start], b"[", _MARKER_JSON, b"]" if close else b",")
        record = None
        tools = self._repeated_tools(rest, end)
        if tools is not None:
            at, shared = tools
            record = _loads_or_none(
                b"".join((*head, view[rest:at], _TOOLS_MARKER_JSON, view[at + shared.length : end]))
            )
            if record is not None and not _put_back_tools(record, shared.value):
                record = None  # that "tools" key was not request_body's: parse again without the cut
        if record is None:
            tools = None
            record = _loads_or_none(b"".join((*head, view[rest:end])))
        array = _marked_array(record, key)
        if array is None:
            return None
        parsed = _ParsedArray(start, key, array)
        if base is None:
            del array[0]
            count = 0
        else:
            count = base.counts[cut]
            array[0:1] = base.items[:count]
            parsed.counts = base.counts[: cut + 1]
            parsed.ends = base.ends[: cut + 1]
        if not close:
            _add_tail_cuts(data, view, parsed, rest, end, count)
        self._remember(parsed, base, cut)
        if tools is None:
            self._remember_tools(record, rest, end)
        return record

    def _repeated_tools(self, rest: int, end: int) -> tuple[int, _SharedValue] | None:
        """Where the line's ``"tools":[`` array starts (searched after the shared messages) and the recent
        tools array with exactly its bytes; None if there is none. Tool schemas repeat in every call."""
        data = self._data
        found = data.find(_TOOLS_KEY, rest, end)
        if found < 0:
            return None
        at = found + len(_TOOLS_KEY) - 1
        for shared in self._tools:
            stop = at + shared.length
            if (
                stop < end
                and data[stop] in (_COMMA, _BRACE)
                and data.startswith(self._view[shared.start : shared.start + shared.length], at)
            ):
                return at, shared
        return None

    def _remember_tools(self, record: dict[str, Any], rest: int, end: int) -> None:
        """Keep the line's tools array for later lines when ``orjson.dumps`` of it is its exact bytes."""
        tools = record["request_body"].get("tools")
        if type(tools) is not list or not tools:
            return
        data = self._data
        found = data.find(_TOOLS_KEY, rest, end)
        if found < 0:
            return
        try:
            encoded = orjson.dumps(tools)
        except orjson.JSONEncodeError:
            return
        at = found + len(_TOOLS_KEY) - 1
        stop = at + len(encoded)
        if stop < end and data[stop] in (_COMMA, _BRACE) and data.startswith(encoded, at):
            self._tools.insert(0, _SharedValue(at, len(encoded), tools))
            del self._tools[_MAX_BASES:]

    def _best_cut(self, start: int, end: int, key: str) -> tuple[_ParsedArray | None, int]:
        """The recent array sharing the most leading elements with the one at ``start``, and that cut."""
        best: _ParsedArray | None = None
        best_cut = -1
        best_count = 0
        for base in self._bases:
            if base.key != key:
                continue
            cut = _matching_cut(self._data, self._view, base, start, end)
            if cut >= 0 and base.counts[cut] > best_count:
                best, best_cut, best_count = base, cut, base.counts[cut]
                if cut == len(base.counts) - 1:  # all of it repeats (the usual case): look no further
                    break
        return best, best_cut

    def _remember(self, parsed: _ParsedArray, base: _ParsedArray | None, cut: int) -> None:
        """Keep ``parsed`` first; drop the base it repeats entirely (its cuts are all in ``parsed``)."""
        bases = self._bases
        if base is not None and cut == len(base.counts) - 1:
            bases.remove(base)
        if parsed.counts:
            bases.insert(0, parsed)
            del bases[_MAX_BASES:]


def _locate_array(data: bytes, begin: int, end: int) -> tuple[int, str] | None:
    """Offset of the ``[`` of the line's request array (compact ``"messages":[`` or ``"input":[``), key.

    Searched from ``"request_body":{`` on when the line has it (a hint: ``parse`` verifies the place).
    """
    body = data.find(_REQUEST_BODY_KEY, begin, end)
    if body >= 0:
        begin = body
    for pattern, key in _ARRAY_KEYS:
        found = data.find(pattern, begin, end)
        if found >= 0:
            return found + len(pattern) - 1, key
    return None


def _loads_or_none(spliced: bytes) -> Any:
    try:
        return orjson.loads(spliced)
    except orjson.JSONDecodeError:
        return None


def _put_back_tools(record: Any, tools: list[Any]) -> bool:
    """Put the shared tools list at ``record.request_body.tools`` if the tools marker is there."""
    body = record.get("request_body") if type(record) is dict else None
    if type(body) is not dict:
        return False
    marker = body.get("tools")
    if type(marker) is not str or marker != _TOOLS_MARKER:
        return False
    body["tools"] = tools  # same key, same place in the dict: the record dumps exactly as the line
    return True


def _marked_array(record: Any, key: str) -> list[Any] | None:
    """``record.request_body.<key>`` when it is a list whose first element is the marker, else None."""
    if type(record) is not dict:
        return None
    body = record.get("request_body")
    if type(body) is not dict:
        return None
    array = body.get(key)
    if type(array) is not list or not array or type(array[0]) is not str or array[0] != _MARKER:
        return None
    return array


def _matching_cut(data: bytes, view: memoryview, base: _ParsedArray, start: int, end: int) -> int:
    """Index of the longest cut of ``base`` whose bytes also begin the array at ``start``; -1 if none.

    A match at one cut implies a match at every shorter one. Tried in the order of likelihood: all of
    it (a cumulative log), the first cut (a miss there rules out every other), all but the last cut
    (Anthropic-shaped logs move ``cache_control`` to the newest message), then bisection.
    """

    def matches(cut: int) -> bool:
        length = base.ends[cut]
        delimiter = start + length
        return (
            delimiter < end
            and data[delimiter] in (_COMMA, _CLOSE)
            and data.startswith(view[base.start : base.start + length], start)
        )

    last = len(base.ends) - 1
    if matches(last):
        return last
    if last == 0 or not matches(0):
        return -1
    low, high, found = 1, last - 1, 0
    if high >= low and matches(high):
        return high
    high -= 1
    while low <= high:
        middle = (low + high) // 2
        if matches(middle):
            found, low = middle, middle + 1
        else:
            high = middle - 1
    return found


def _add_tail_cuts(
    data: bytes, view: memoryview, parsed: _ParsedArray, rest: int, end: int, count: int
) -> None:
    """Record where the newly parsed elements ``parsed.items[count:]`` (from offset ``rest``) end.

    Per element where ``orjson.dumps`` reproduces the line's bytes (logs written by orjson or by
    ``json.dumps(separators=(",", ":"), ensure_ascii=False)``); otherwise only the end of the array.
    """
    items = parsed.items
    total = len(items)
    offset = rest
    for index in range(count, total):
        try:
            encoded = orjson.dumps(items[index])
        except orjson.JSONEncodeError:
            break
        if not data.startswith(encoded, offset, end):
            break
        offset += len(encoded)
        if data[offset : offset + 1] != (b"]" if index == total - 1 else b","):
            break
        parsed.counts.append(index + 1)
        parsed.ends.append(offset - parsed.start)
        offset += 1
    else:
        return
    close = _array_end(view, rest, end, total - count)
    if close is not None:
        parsed.counts.append(total)
        parsed.ends.append(close - parsed.start)


def _array_end(view: memoryview, rest: int, end: int, expected: int) -> int | None:
    """Offset of the ``]`` closing the array whose last ``expected`` elements start at ``rest``.

    orjson reports where the content after a complete document starts, in characters: parsing ``[`` +
    the rest of the line gives that position, which is converted to bytes and checked by parsing exactly
    the elements found. None when anything does not add up (the array then gets no cut there).
    """
    buffer = b"".join((b"[", view[rest:end]))
    try:
        orjson.loads(buffer)
    except orjson.JSONDecodeError as exc:
        position = exc.pos
    else:
        return None
    if not isinstance(position, int) or position <= 0:
        return None
    characters = buffer[: 4 * position + 4].decode("utf-8", "ignore")[:position]
    after = rest - 1 + len(characters.encode("utf-8"))  # the first byte after the array and its whitespace
    segment = bytes(view[rest:after]).rstrip(b" \t\r\n")
    if not segment.endswith(b"]"):
        return None
    try:
        elements = orjson.loads(b"[" + segment)
    except orjson.JSONDecodeError:
        return None
    if type(elements) is not list or len(elements) != expected:
        return None
    return rest + len(segment) - 1


# ----------------------------------------------------------------------------------------------------------
# raw record access (no pydantic)


def request_body(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("request_body")
    return body if isinstance(body, dict) else {}


def response_body(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("response_body")
    return body if isinstance(body, dict) else {}


def request_input(record: dict[str, Any]) -> list[Any]:
    """The conversation sent: ``request_body.input``, else ``extra_params.input``, else ``messages``."""
    body = request_body(record)
    for candidate in (
        body.get("input"),
        _as_dict(record.get("extra_params")).get("input"),
        body.get("messages"),
    ):
        if isinstance(candidate, list):
            return candidate
        if isinstance(candidate, str) and candidate:
            return [{"role": "user", "content": candidate}]
    return []


def request_system(record: dict[str, Any]) -> Any:
    """The out-of-band system prompt: Anthropic ``system`` or Responses ``instructions``; None if absent."""
    body = request_body(record)
    system = body.get("system")
    if system not in (None, "", []):
        return system
    instructions = body.get("instructions")
    return instructions if isinstance(instructions, str) and instructions else None


def request_tools(record: dict[str, Any]) -> list[Any]:
    tools = request_body(record).get("tools")
    return tools if isinstance(tools, list) else []


def request_time(record: dict[str, Any]) -> float | None:
    value = record.get("request_time")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sort_by_request_time(records: Sequence[dict[str, Any]]) -> list[int]:
    """Indices in ``request_time`` order; records without one keep their place after their predecessor."""
    keys: list[tuple[float, int]] = []
    last = float("-inf")
    for index, record in enumerate(records):
        value = request_time(record)
        if value is not None:
            last = value
        keys.append((last, index))
    return [index for _, index in sorted(keys)]


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def block_type(block: dict[str, Any]) -> Any:
    """``block["type"]``, safe to look up in a set: a damaged log can hold a list or an object there, and
    ``[...] in frozenset(...)`` raises TypeError; such a value becomes its (short) repr instead."""
    kind = block.get("type")
    return repr(kind)[:40] if isinstance(kind, dict | list) else kind


# ----------------------------------------------------------------------------------------------------------
# prefix deduplication


# What the model saw: ONE normalisation of a message, used to decide whether one logged request is a prefix of
# another, for both proxy-log shapes (Anthropic and OpenAI) and for the output check (``prefix_fragments``).
#
# A scaffold re-sends the whole conversation with every request, but not byte for byte: what changes from one
# request to the next without changing what the model is shown must not make a conversation look new (else
# every request survives de-duplication and the early turns are trained once per request). The rule, per
# message (``model_view``), and why each part is safe:
#
# 1. transport keys are ignored: ``cache_control`` (moves to the newest message on every request),
#    ``signature``, ``generation``, ``provider_specific_fields``, and keys whose value is null (null and
#    absent are the same request);
# 2. reasoning is ignored (``thinking``/``redacted_thinking``/``reasoning`` blocks, ``reasoning_content``,
#    ``thinking_blocks``): scaffolds echo it back inconsistently or not at all, and the chat templates we
#    train with do not render the reasoning of earlier turns;
# 3. content made only of text parts IS its text: ``[{"type":"text","text":X,...}]`` and the plain string
#    ``X`` are the same message (the OpenAI-shaped proxy log sends the newest message as a part list with
#    ``cache_control`` and the same message as a string one request later). Several text parts are joined
#    with "\n", exactly as the conversion joins them (``content_text``), so the comparison and the output
#    agree; a list that also holds non-text blocks (tool_use, tool_result) keeps its order, each text part
#    reduced to its text, nested tool_result content normalised the same way;
# 4. ``<system-reminder>…</system-reminder>`` text PARTS of a user-side message are ignored: Claude Code
#    attaches such parts to the newest turn and may re-attach them elsewhere on the next request; a reminder
#    inside a longer text is never touched (only whole parts are);
# 5. in a system message, lines starting with ``x-anthropic-billing-header:`` are ignored, and any other
#    ``cch=<hex>;`` / ``cc_version=<v>;`` value is blanked (the reference rule): Claude Code's first system text
#    part carries these per-request values;
# 6. the first user message is flattened to its text (scaffolds re-split the task prompt into blocks).
#
# The survivor's row keeps what its own request held (its billing line, its reminders): only the comparison
# ignores them. ``canonical_view`` is the same rule on canonical messages (the engine's prefix check).

_BILLING_PREFIX = "x-anthropic-billing-header:"
_REMINDER_OPEN, _REMINDER_CLOSE = "<system-reminder>", "</system-reminder>"
_USER_SIDE_ROLES = frozenset({"user", "tool", "function"})


def _is_reminder_part(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith(_REMINDER_OPEN) and stripped.endswith(_REMINDER_CLOSE)


def system_view(text: str) -> str:
    """A system text without Claude Code's per-request billing values (rule 5 of ``model_view``)."""
    if _BILLING_PREFIX in text:
        text = "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(_BILLING_PREFIX))
    if "cc" in text:
        text = _CCH_RE.sub(r"\1=;", text)
    return text


def _view_block(block: dict[str, Any]) -> dict[str, Any]:
    """A non-text block without null and volatile keys, its nested content viewed as user-side."""
    cleaned = {k: v for k, v in block.items() if v is not None and k not in _HASH_DROP_KEYS}
    if "content" in cleaned:
        cleaned["content"] = _view_content(cleaned["content"], True)
    if cleaned.get("is_error") is False:
        del cleaned["is_error"]
    return cleaned


def _view_content(content: Any, user_side: bool) -> Any:
    """Rules 1-4 on a content value (string, part list, or anything else a damaged log holds)."""
    if type(content) is not list:
        return content
    parts: list[Any] = []
    text_only = True
    for block in content:
        if type(block) is str:
            text = block
        elif type(block) is dict:
            kind = block_type(block)
            if kind in _HASH_DROP_BLOCK_TYPES:
                continue
            text = block.get("text")
            if not (kind in _TEXT_PART_TYPES or (kind is None and type(text) is str)):
                text_only = False
                parts.append(_view_block(block))
                continue
            text = "" if text is None else str(text)
        else:
            text_only = False
            parts.append(block)
            continue
        if user_side and _is_reminder_part(text):
            continue
        parts.append(text)
    if text_only:
        return "\n".join(parts)
    return [{"type": "text", "text": p} if type(p) is str else p for p in parts]


def _needs_view(message: dict[str, Any]) -> bool:
    """Whether ``model_view`` could change a raw message (structural: its cost does not grow with the text)."""
    if type(message.get("content")) is list or not _HASH_DROP_KEYS.isdisjoint(message):
        return True
    if message.get("role") in ("system", "developer"):
        return True
    return None in message.values()


def model_view(message: Any, *, first_user: bool = False) -> Any:
    """A raw request message as the model saw it (rules 1-6 above); the input is never mutated."""
    if type(message) is not dict or not (first_user or _needs_view(message)):
        return message
    view = {k: v for k, v in message.items() if v is not None and k not in _HASH_DROP_KEYS}
    role = view.get("role")
    if role == "developer":
        view["role"] = role = "system"
    if "content" in view:
        content = _view_content(view["content"], role in _USER_SIDE_ROLES)
        if first_user and type(content) is list:
            content = content_text(content)
        if role == "system" and type(content) is str:
            content = system_view(content)
        view["content"] = content
    return view


def canonical_view(message: Message) -> tuple[Any, ...]:
    """The same rule on a canonical message: what the comparison of output rows looks at (no reasoning,
    no billing lines in the system prompt, tool calls by name and arguments)."""
    content = system_view(message.content) if message.role == "system" else message.content
    calls = tuple(
        (c.name, orjson.dumps(c.arguments, option=orjson.OPT_SORT_KEYS)) for c in message.tool_calls
    )
    return (message.role, content, calls, message.tool_call_id if message.role == "tool" else None)


def message_digest(message: Any, *, first_user: bool = False) -> int:
    """Hash of a raw message's ``model_view`` (sorted-key JSON)."""
    return hash(orjson.dumps(model_view(message, first_user=first_user), option=orjson.OPT_SORT_KEYS))


def _is_user(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "user"


def rolling_hashes(conversation: Sequence[Any]) -> list[int]:
    """``h[k]`` = hash of the first k messages (k = 0..n); equal prefixes give equal hashes."""
    hashes = [0]
    current = 0
    seen_user = False
    for message in conversation:
        if seen_user:
            digest = message_digest(message)
        else:
            seen_user = _is_user(message)
            digest = message_digest(message, first_user=seen_user)
        current = hash((current, digest))
        hashes.append(current)
    return hashes


@dataclass
class DedupResult:
    """Which conversations survive prefix deduplication, and why the others did not."""

    kept: list[int]
    full_hashes: list[int]
    prefix_dropped: int = 0
    short_dropped: int = 0
    exact_dropped: int = 0


@dataclass(eq=False)
class _HashedConversation:
    """A conversation already hashed: its message objects (kept alive, so their ids stay unique), their
    ids (``_id_bytes``), its rolling hashes ``h[0..n]`` and the position of its first user message (n if
    none)."""

    messages: list[Any]
    ids: bytes
    hashes: list[int]
    first_user: int


_RECENT_CONVERSATIONS = 4  # conversations a new one may share leading message objects with
_ID_WIDTH = array("Q").itemsize  # bytes per id in ``_id_bytes``


def _id_bytes(messages: list[Any]) -> bytes:
    """The ``id()`` of every message, packed as machine words: equal ids <=> equal bytes at that slot, so
    a shared run of leading objects is one memcmp (``bytes.startswith``), without slicing id lists."""
    return array("Q", map(id, messages)).tobytes()


def _shared_length(ids: bytes, other: bytes, known: int = 0) -> int:
    """How many leading ids (``_id_bytes``) the two share, the first ``known`` counting as shared (the
    caller proved them equal some other way). All of it is tried first (the usual case), then all but the
    last, then windows of growing size find a short match quickly, then bisection; each try is a memcmp
    of a zero-copy view."""
    width = _ID_WIDTH
    size = min(len(ids), len(other)) // width
    if size <= known:
        return size
    view = memoryview(other)
    skip = known * width

    def same(count: int) -> bool:
        return ids.startswith(view[skip : count * width], skip)

    if same(size):
        return size
    # all but the last: Anthropic-shaped logs move ``cache_control`` to the newest message, so the one
    # that was newest in the earlier call is a new object in this one
    if size - 1 > known and same(size - 1):
        return size - 1
    low, high = known, size - 2 if size - 1 > known else size - 1  # first low ids match, first high + 1 not
    step = 1
    while low + step <= high and same(low + step):
        low += step
        step *= 2
    high = min(high, low + step - 1)
    while low < high:
        middle = (low + high + 1) // 2
        if same(middle):
            low = middle
        else:
            high = middle - 1
    return low


class _DigestMemo:
    """``message_digest`` once per message object (by ``id()``) and once per value (by plain bytes).

    The caller keeps every object it passes alive while the memo exists, so an id is never reused.
    """

    def __init__(self) -> None:
        self.by_id: tuple[dict[int, int], dict[int, int]] = ({}, {})  # [first_user] -> id -> digest
        self.by_bytes: tuple[dict[bytes, int], dict[bytes, int]] = ({}, {})  # [first_user] -> bytes -> digest

    def digest(self, message: Any, identity: int, first_user: bool, by_value: bool = True) -> int:
        """The digest, memoised by identity, and by value too unless ``by_value`` is False (a message no
        earlier conversation can hold: its plain encoding would only cost a dump and a bytes hash)."""
        by_id = self.by_id[first_user]
        digest = by_id.get(identity)
        if digest is None and not by_value:
            digest = by_id[identity] = message_digest(message, first_user=first_user)
        elif digest is None:
            try:
                raw = orjson.dumps(message)
            except orjson.JSONEncodeError:  # e.g. a lone surrogate the normalisation may strip: no memo
                digest = message_digest(message, first_user=first_user)
            else:
                by_bytes = self.by_bytes[first_user]
                digest = by_bytes.get(raw)
                if digest is None:
                    digest = by_bytes[raw] = message_digest(message, first_user=first_user)
            by_id[identity] = digest
        return digest


def _hash_conversations(conversations: Sequence[Sequence[Any]]) -> tuple[list[int], set[int]]:
    """Full hash of every conversation, and the set of all their proper-prefix hashes.

    A cumulative log repeats the whole conversation in every request, so without care every message is
    hashed once per later call. Three levels of re-use:

    * leading message *objects* shared with a recent conversation (``read_log`` gives every record that
      repeats a message the same dict, ``PrefixSharingParser``): that conversation's rolling hashes are
      taken as they are, and its proper-prefix hashes are already in the set. Found by comparing packed
      ``id()`` at C speed; message 0 may differ in object but not in digest (``hashing_view`` makes a
      fresh out-of-band system message for every record). Every object compared is held here, so equal
      ids mean the same object; records are never mutated, so the same object has the same digest;
    * per message object (``id()``): ``message_digest`` runs once per distinct object;
    * per message value, by its plain ``orjson.dumps`` (C speed, no key sorting, no normalisation), for
      equal dicts from lines parsed on their own. Equal bytes mean an identical value (types and key
      order included, unlike ``==``, for which ``1 == 1.0 == True``), hence an identical digest.
    """
    full_hashes: list[int] = []
    proper_prefixes: set[int] = set()
    add_prefix = proper_prefixes.add
    memo = _DigestMemo()
    recent: list[_HashedConversation] = []
    alive: list[list[Any]] = []  # every object keyed by id() stays alive until the end: ids stay unique
    for conversation in conversations:
        messages = conversation if type(conversation) is list else list(conversation)
        alive.append(messages)
        ids = _id_bytes(messages)
        base, shared = _best_shared_prefix(recent, messages, ids, memo)
        if base is None:
            hashes = [0]
            first_user_at = len(messages)
        else:
            # all of the base repeats (the usual case): it leaves ``recent`` below, so its list is taken
            # over instead of copied; nothing else holds it
            takes_all = shared == len(base.messages)
            hashes = base.hashes if takes_all else base.hashes[: shared + 1]
            first_user_at = base.first_user if base.first_user < shared else len(messages)
        current = hashes[-1]
        seen_user = first_user_at < shared
        # past the end of the base a cumulative log only holds new turns: no value memo (see _DigestMemo)
        new_from = len(base.messages) if base is not None else len(messages)
        for position in range(shared, len(messages)):
            message = messages[position]
            if position:
                add_prefix(current)
            first_user = False
            if not seen_user:
                seen_user = first_user = _is_user(message)
                if first_user:
                    first_user_at = position
            current = hash((current, memo.digest(message, id(message), first_user, position < new_from)))
            hashes.append(current)
        full_hashes.append(current)
        if base is not None and shared == len(base.messages):
            recent.remove(base)  # the new conversation repeats all of it
        recent.insert(0, _HashedConversation(messages, ids, hashes, first_user_at))
        del recent[_RECENT_CONVERSATIONS:]
    return full_hashes, proper_prefixes


def _best_shared_prefix(
    recent: list[_HashedConversation], messages: list[Any], ids: bytes, memo: _DigestMemo
) -> tuple[_HashedConversation | None, int]:
    """The recent conversation whose rolling hashes this one can take the most of, and how many."""
    best: _HashedConversation | None = None
    shared = 0
    if not messages:
        return best, shared
    head_user = _is_user(messages[0])
    head: int | None = None  # h[1] of this conversation, computed when first needed
    for candidate in recent:
        if not candidate.messages:
            continue
        if candidate.messages[0] is messages[0]:
            length = _shared_length(ids, candidate.ids)
        else:
            if head is None:
                head = hash((0, memo.digest(messages[0], id(messages[0]), head_user)))
            if candidate.hashes[1] != head or (candidate.first_user == 0) != head_user:
                continue
            length = _shared_length(ids, candidate.ids, known=1)
        if length > shared:
            best, shared = candidate, length
            if length == len(candidate.messages):  # all of it repeats (the usual case): look no further
                break
    return best, shared


def dedup_conversations(
    conversations: Sequence[Sequence[Any]],
    *,
    min_messages: int = 3,
    lengths: Sequence[int] | None = None,
) -> DedupResult:
    """Keep conversations that are not a proper prefix of another, have >= ``min_messages``, and are unique.

    Linear in the total number of messages: each message is hashed once, every proper-prefix hash goes into
    one set, and a conversation survives iff its full hash is not in that set. Exact duplicates keep the
    **last** occurrence (a retried call whose earlier answer the client never used). ``lengths`` overrides
    the message count used for the ``min_messages`` rule (the reference counts the request's own
    ``messages`` list, without an out-of-band system prompt).
    """
    with gc_paused():
        full_hashes, proper_prefixes = _hash_conversations(conversations)
    result = DedupResult(kept=[], full_hashes=full_hashes)
    kept_hashes: set[int] = set()
    for index in reversed(range(len(conversations))):
        full = full_hashes[index]
        size = lengths[index] if lengths is not None else len(conversations[index])
        if full in proper_prefixes:
            result.prefix_dropped += 1
        elif size < min_messages:
            result.short_dropped += 1
        elif full in kept_hashes:
            result.exact_dropped += 1
        else:
            kept_hashes.add(full)
            result.kept.append(index)
    result.kept.reverse()
    return result


def prefix_dedup(conversations: Sequence[Sequence[Any]], min_messages: int = 3) -> list[int]:
    """Indices (ascending) of the conversations that survive ``dedup_conversations``."""
    return dedup_conversations(conversations, min_messages=min_messages).kept


def hashing_view(record: dict[str, Any]) -> list[Any]:
    """The record's input as compared by dedup: an out-of-band system prompt counts as message 0."""
    messages = request_input(record)
    system = request_system(record)
    if system is None:
        return messages
    return [{"role": "system", "content": system}, *messages]


# ----------------------------------------------------------------------------------------------------------
# normalisation to canonical messages


def content_text(content: Any, problems: list[str] | None = None) -> str:
    """Text of a string or a list of content parts/blocks (text parts joined with newlines)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return str(content)
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = _part_text(part, problems)
            if text is not None:
                texts.append(text)
    return "\n".join(texts)


def _part_text(part: dict[str, Any], problems: list[str] | None) -> str | None:
    """Text of one content part; None for a part without text (a non-text part is noted in ``problems``)."""
    kind = block_type(part)
    if kind in _TEXT_PART_TYPES or (kind is None and isinstance(part.get("text"), str)):
        return str(part.get("text") or "")
    if kind == "tool_result":
        return content_text(part.get("content"), problems)
    if kind not in _HASH_DROP_BLOCK_TYPES and problems is not None:
        problems.append(f"content part of type {kind!r} has no text; dropped")
    return None


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as an object: JSON strings are parsed; unparsable strings are kept verbatim.

    An empty string means "no arguments" (some providers send it for parameterless calls) and becomes {}.
    """
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            try:
                parsed = json.loads(arguments)
            except ValueError:
                return arguments
            parsed = _replace_surrogates(parsed)
        return parsed
    if arguments is None:
        return {}
    return arguments


def is_error_text(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith(TOOL_USE_ERROR_PREFIX) or stripped.startswith(INVALID_ARGUMENTS_PREFIX)


def _split_inline_think(content: str) -> tuple[str, str]:
    """``<think>r</think>c`` -> (r, c) for providers that inline reasoning in the content."""
    stripped = content.lstrip()
    if not stripped.startswith("<think>"):
        return "", content
    end = stripped.find("</think>")
    if end < 0:
        return "", content
    return stripped[len("<think>") : end].strip("\n"), stripped[end + len("</think>") :].lstrip("\n")


def _reasoning_of(message: dict[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    blocks = message.get("thinking_blocks")
    if isinstance(blocks, list):
        texts = [str(b.get("thinking") or "") for b in blocks if isinstance(b, dict) and b.get("thinking")]
        if texts:
            return "\n".join(texts)
    return ""


def _openai_tool_call(call: dict[str, Any]) -> ToolCall:
    function = _as_dict(call.get("function"))
    name = function.get("name") if function else call.get("name")
    arguments = function.get("arguments") if function else call.get("arguments", call.get("input"))
    return ToolCall(
        id=str(call.get("id") or call.get("call_id") or ""),
        name=str(name or ""),
        arguments=parse_arguments(arguments),
    )


def _sort_assistant_block(
    block: dict[str, Any],
    texts: list[str],
    reasoning: list[str],
    tool_calls: list[ToolCall],
    problems: list[str] | None,
) -> None:
    """One Anthropic assistant block into the text, reasoning or call list (redacted thinking is skipped)."""
    kind = block_type(block)
    if kind in _TEXT_PART_TYPES:
        texts.append(str(block.get("text") or ""))
    elif kind == "thinking":
        if block.get("thinking"):
            reasoning.append(str(block["thinking"]))
    elif kind in ("tool_use", "server_tool_use"):
        tool_calls.append(
            ToolCall(
                id=str(block.get("id") or ""),
                name=str(block.get("name") or ""),
                arguments=parse_arguments(block.get("input")),
            )
        )
    elif kind != "redacted_thinking" and problems is not None:
        problems.append(f"assistant content block of type {kind!r} dropped")


def _assistant_message(message: dict[str, Any], problems: list[str] | None) -> Message:
    """OpenAI or Anthropic assistant message (string content or thinking/text/tool_use blocks)."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[ToolCall] = []
    content = message.get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, dict):
                _sort_assistant_block(block, texts, reasoning, tool_calls, problems)
    elif content is not None:
        texts.append(content if isinstance(content, str) else content_text(content, problems))
    tool_calls_raw = message.get("tool_calls")
    for call in (
        tool_calls_raw if isinstance(tool_calls_raw, list) else []
    ):  # a damaged log may hold any value
        if isinstance(call, dict):
            tool_calls.append(_openai_tool_call(call))
    reasoning_text = _reasoning_of(message) or "\n".join(reasoning)
    text = "\n".join(texts)
    if not reasoning_text:
        reasoning_text, text = _split_inline_think(text)
    return Message(role="assistant", content=text, reasoning_content=reasoning_text, tool_calls=tool_calls)


def _tool_message(tool_call_id: Any, content: Any, is_error: Any, problems: list[str] | None) -> Message:
    text = content_text(content, problems)
    return Message(
        role="tool",
        content=text,
        tool_call_id=str(tool_call_id) if tool_call_id is not None else None,
        is_error=bool(is_error) or is_error_text(text),
    )


def _user_messages(message: dict[str, Any], problems: list[str] | None) -> list[Message]:
    """A user message; Anthropic tool_result blocks become tool messages, in block order."""
    content = message.get("content")
    if not isinstance(content, list):
        return [Message(role="user", content=content_text(content, problems))]
    out: list[Message] = []
    pending_text: list[Any] = []

    def flush() -> None:
        if pending_text:
            out.append(Message(role="user", content=content_text(pending_text, problems)))
            pending_text.clear()

    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            flush()
            out.append(
                _tool_message(block.get("tool_use_id"), block.get("content"), block.get("is_error"), problems)
            )
        else:
            pending_text.append(block)
    flush()
    return out


def _add_function_call(item: dict[str, Any], out: list[Message], pending_reasoning: list[str]) -> None:
    """A Responses ``function_call`` joins the assistant turn before it, unless new reasoning starts a turn."""
    call = ToolCall(
        id=str(item.get("call_id") or item.get("id") or ""),
        name=str(item.get("name") or ""),
        arguments=parse_arguments(item.get("arguments")),
    )
    if out and out[-1].role == "assistant" and not (out[-1].tool_calls and pending_reasoning):
        out[-1].tool_calls.append(call)
    else:
        out.append(
            Message(role="assistant", tool_calls=[call], reasoning_content="\n".join(pending_reasoning))
        )
        pending_reasoning.clear()


def _responses_message(
    item: dict[str, Any], pending_reasoning: list[str], problems: list[str] | None
) -> list[Message]:
    """A Responses ``message`` item; an assistant one takes the reasoning items before it."""
    if item.get("role") != "assistant":
        return convert_message(item, problems)
    message = _assistant_message(item, problems)
    if pending_reasoning and not message.reasoning_content:
        message.reasoning_content = "\n".join(pending_reasoning)
    pending_reasoning.clear()
    return [message]


def _responses_items(items: Iterable[Any], problems: list[str] | None) -> list[Message]:
    """OpenAI Responses API items (message / function_call / function_call_output / reasoning)."""
    out: list[Message] = []
    pending_reasoning: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "reasoning":
            summary = content_text(item.get("summary"), None) or content_text(item.get("content"), None)
            if summary:
                pending_reasoning.append(summary)
        elif kind == "function_call":
            _add_function_call(item, out, pending_reasoning)
        elif kind == "function_call_output":
            out.append(_tool_message(item.get("call_id"), item.get("output"), False, problems))
        elif kind in (None, "message"):
            out.extend(_responses_message(item, pending_reasoning, problems))
        elif problems is not None:
            problems.append(f"Responses API item of type {kind!r} dropped")
    return out


_RESPONSES_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def is_responses_input(items: Sequence[Any]) -> bool:
    """OpenAI Responses API input (typed items) rather than chat/Anthropic role messages."""
    return any(isinstance(item, dict) and block_type(item) in _RESPONSES_ITEM_TYPES for item in items)


def convert_message(message: Any, problems: list[str] | None = None) -> list[Message]:
    """One raw request message (OpenAI or Anthropic) -> one or more canonical messages."""
    if not isinstance(message, dict):
        if problems is not None:
            problems.append(f"request message is a {type(message).__name__}, not an object; dropped")
        return []
    role = message.get("role")
    if message.get("type") in ("function_call", "function_call_output", "reasoning"):
        return _responses_items([message], problems)
    if role in ("system", "developer"):
        return [Message(role="system", content=content_text(message.get("content"), problems))]
    if role == "user":
        return _user_messages(message, problems)
    if role == "assistant":
        return [_assistant_message(message, problems)]
    if role in ("tool", "function"):
        return [
            _tool_message(
                message.get("tool_call_id"), message.get("content"), message.get("is_error"), problems
            )
        ]
    if problems is not None:
        problems.append(f"request message with role {role!r} dropped")
    return []


def _strip_markers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_markers(v) for k, v in value.items() if k not in _STRIP_KEYS}
    if isinstance(value, list):
        return [_strip_markers(v) for v in value]
    return value


def normalize_tools(tools: Any, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Tool schemas in OpenAI form ``{type: function, function: {name, description, parameters}}``.

    Accepts OpenAI chat tools, Anthropic ``{name, description, input_schema}`` and Responses API flat
    function tools; ``cache_control`` markers are removed. Anthropic server tools (no schema) are dropped.
    """
    out: list[dict[str, Any]] = []
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        tool = _strip_markers(tool)
        if isinstance(tool.get("function"), dict):
            out.append({"type": "function", "function": tool["function"]})
        elif "input_schema" in tool or ("name" in tool and tool.get("type") in (None, "custom")):
            function: dict[str, Any] = {"name": tool.get("name", "")}
            if tool.get("description") is not None:
                function["description"] = tool["description"]
            function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
            out.append({"type": "function", "function": function})
        elif tool.get("type") == "function" and "name" in tool:
            function = {k: v for k, v in tool.items() if k != "type"}
            out.append({"type": "function", "function": function})
        elif problems is not None:
            problems.append(f"tool {tool.get('name') or tool.get('type')!r} has no function schema; dropped")
    return out


def normalize_request(
    record: dict[str, Any], problems: list[str] | None = None
) -> tuple[list[Message], list[dict[str, Any]]]:
    """The messages (system first) and tool schemas a logged request sent, in canonical form."""
    messages: list[Message] = []
    system = request_system(record)
    if system is not None:
        messages.append(Message(role="system", content=content_text(system, problems)))
    items = request_input(record)
    if is_responses_input(items):
        messages.extend(_responses_items(items, problems))
    else:
        for raw in items:
            messages.extend(convert_message(raw, problems))
    return messages, normalize_tools(request_tools(record), problems)


def normalize_response(record: dict[str, Any], problems: list[str] | None = None) -> Message:
    """The assistant message a logged call returned (OpenAI ``choices``, Anthropic ``content``, Responses ``output``).

    Raises LogShapeError when the response has none of these shapes (e.g. an error body).
    """
    body = response_body(record)
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        first = choices[0] if isinstance(choices[0], dict) else {}
        message = first.get("message")
        if isinstance(message, dict):
            return _assistant_message(message, problems)
        raise LogShapeError("response_body.choices[0] has no message object")
    if isinstance(body.get("content"), list) and body.get("type", "message") == "message":
        return _assistant_message({"content": body["content"]}, problems)
    output = body.get("output")
    if isinstance(output, list):
        converted = [m for m in _responses_items(output, problems) if m.role == "assistant"]
        if not converted:
            return Message(role="assistant")
        merged = converted[0]
        for extra in converted[1:]:
            merged.content = "\n".join(t for t in (merged.content, extra.content) if t)
            merged.tool_calls.extend(extra.tool_calls)
            merged.reasoning_content = merged.reasoning_content or extra.reasoning_content
        return merged
    keys = sorted(body)[:8]
    raise LogShapeError(f"response_body has neither choices, content blocks nor output (keys: {keys})")


@dataclass
class BuiltConversation:
    """A surviving call turned into canonical form: its request messages followed by its response."""

    messages: list[Message]
    tools: list[dict[str, Any]]
    assistant_at: dict[int, Message]  # hashing_view position -> the assistant message built from it
    has_response: bool


def build_conversation(record: dict[str, Any], problems: list[str] | None = None) -> BuiltConversation:
    """Request messages + response message; the response is missing (and noted) when its shape is unknown."""
    messages: list[Message] = []
    assistant_at: dict[int, Message] = {}
    position = 0
    system = request_system(record)
    if system is not None:
        messages.append(Message(role="system", content=content_text(system, problems)))
        position = 1
    items = request_input(record)
    if is_responses_input(items):  # items do not map 1:1 to messages; no per-turn reasoning recovery
        messages.extend(_responses_items(items, problems))
        items = []
    for raw in items:
        converted = convert_message(raw, problems)
        if isinstance(raw, dict) and raw.get("role") == "assistant" and len(converted) == 1:
            assistant_at[position] = converted[0]
        messages.extend(converted)
        position += 1
    has_response = True
    try:
        messages.append(normalize_response(record, problems))
    except LogShapeError as exc:
        has_response = False
        if problems is not None:
            problems.append(f"response missing: {exc}")
    return BuiltConversation(
        messages, normalize_tools(request_tools(record), problems), assistant_at, has_response
    )


def _same_turn(a: Message, b: Message) -> bool:
    if a.content.strip() != b.content.strip() or len(a.tool_calls) != len(b.tool_calls):
        return False
    for x, y in zip(a.tool_calls, b.tool_calls, strict=True):
        if x.name != y.name or (x.id and y.id and x.id != y.id):
            return False
    return True


def recover_reasoning(
    view: Sequence[Any],
    built: BuiltConversation,
    producer_of: dict[int, dict[str, Any]],
) -> int:
    """Fill reasoning that later requests did not echo back, from the response of the call that produced it.

    The assistant message at view position j was produced by the call whose input was ``view[:j]``; its
    hash is looked up in ``producer_of`` (full input hash -> record). Only filled when that response has
    the same text and tool calls, and the message has no reasoning of its own. Returns how many turns.
    """
    if not built.assistant_at:
        return 0
    prefix_hashes = rolling_hashes(view)
    recovered = 0
    for position, message in built.assistant_at.items():
        if message.reasoning_content:
            continue
        producer = producer_of.get(prefix_hashes[position])
        if producer is None:
            continue
        try:
            produced = normalize_response(producer)
        except LogShapeError:
            continue
        if produced.reasoning_content and _same_turn(message, produced):
            message.reasoning_content = produced.reasoning_content
            recovered += 1
    return recovered


GEN_PARAM_KEYS = (
    "model",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "temperature",
    "top_p",
    "top_k",
    "reasoning_effort",
    "thinking",
)


def gen_params(record: dict[str, Any]) -> dict[str, Any]:
    """Sampling parameters of the request (model, max_tokens, temperature, top_p, ...), as sent."""
    body = request_body(record)
    return {key: body[key] for key in GEN_PARAM_KEYS if key in body and body[key] is not None}


def response_model(record: dict[str, Any]) -> str | None:
    """The model that answered (response), else the model requested."""
    for value in (response_body(record).get("model"), request_body(record).get("model")):
        if isinstance(value, str) and value:
            return value
    return None


def record_usage(record: dict[str, Any]) -> dict[str, Any]:
    usage = record.get("usage")
    if isinstance(usage, dict):
        return usage
    usage = response_body(record).get("usage")
    return usage if isinstance(usage, dict) else {}
