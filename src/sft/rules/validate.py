"""Repair what can be repaired losslessly in a canonical trajectory, then reject what cannot be trained.

Every scaffold adapter hands its ``Trajectory`` here before filters, scoring and rendering. The repairs are
the ones the reference converters make (fill missing tool-call ids and match them to the results that
follow, trim a trailing tool/user tail, ``(empty)`` tool output -> ``""``, optionally drop failed tool
calls) plus two that keep the output writable (lone UTF-16 surrogates -> U+FFFD, results of parallel calls
put back in call order) and two where the intent is unambiguous (several leading system messages -> one system
prompt; an empty, aborted final assistant turn -> trimmed back to the last complete turn), which are also counted
in ``meta.extra`` (README, "Repair and normalisation rules"). The checks are the structural rules that LLaMA-Factory's ShareGPT converter and
our renderer rely on, so a trajectory that passes here always renders to a row LLaMA-Factory keeps.

Issues are strings ``"<code>: <detail>"``. Repair notes start with ``repair_``; anything else is a reason
the trajectory was rejected (then the returned trajectory is ``None``). ``issue_code`` extracts the code.
The function is pure: no I/O, the input is never mutated. It is also copy-on-write: the returned trajectory
is a new object with its own message list, but a message no repair touches is shared with the input (a
repair replaces a message with a changed copy instead of editing it). A deep copy of every trajectory was a
fifth of the conversion time, and every caller discards the input anyway.
"""

from __future__ import annotations

from typing import Any

import orjson

from sft.core.canonical import (
    Message,
    ToolCall,
    Trajectory,
    first_untrainable_assistant,
)
from sft.core.text import _SURROGATE, replace_lone_surrogates

# A tool result with one of these prefixes is a failed call even if the adapter did not set is_error
# (the markers the reference claude-code / open-code converters look for).
TOOL_ERROR_PREFIXES = ("<tool_use_error>", "The arguments provided to the tool are invalid")
EMPTY_TOOL_OUTPUT = "(empty)"


def is_tool_error(message: Message) -> bool:
    """A tool result that reports a failure (flag set by the adapter, or a known error prefix)."""
    if message.role != "tool":
        return False
    return message.is_error or message.content.lstrip().startswith(TOOL_ERROR_PREFIXES)


# --------------------------------------------------------------------------------------------------
# lone surrogates
# --------------------------------------------------------------------------------------------------


def _has_surrogates(value: Any) -> bool:
    """Does any string (or dict key) inside a JSON-like value hold a surrogate? Read-only, no copies."""
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _clean_value(value: Any, counter: list[int]) -> Any:
    """Recursively replace lone surrogates in strings (and dict keys) of a JSON-like value.

    The value itself is returned (not a rebuilt copy) when it holds no surrogate.
    """
    if not _has_surrogates(value):
        return value
    if isinstance(value, str):
        fixed, n = replace_lone_surrogates(value)
        counter[0] += n
        return fixed
    if isinstance(value, dict):
        return {_clean_value(k, counter): _clean_value(v, counter) for k, v in value.items()}
    return [_clean_value(v, counter) for v in value]


def _message_has_surrogates(message: Message) -> bool:
    return (
        _has_surrogates(message.content)
        or _has_surrogates(message.reasoning_content)
        or any(_has_surrogates(c.name) or _has_surrogates(c.arguments) for c in message.tool_calls)
    )


def _surely_surrogate_free(traj: Trajectory) -> bool:
    """True when no string of the messages, calls or tool schemas holds a surrogate; False: look closer.

    Why: almost no trajectory has one, and proving it string by string in Python was most of the repair
    time. orjson encodes every string and dict key to UTF-8 in C and refuses any surrogate, so its success
    is the proof. It also refuses what is not about surrogates (non-str keys, ints past 64 bits, unknown
    types): then the exact check below runs, as it always did.
    """
    parts: list[Any] = [traj.tools]
    for message in traj.messages:
        parts.append(message.content)
        parts.append(message.reasoning_content)
        for call in message.tool_calls:
            parts.append(call.name)
            parts.append(call.arguments)
    try:
        orjson.dumps(parts)
    except orjson.JSONEncodeError:
        return False
    return True


def _sanitize_surrogates(traj: Trajectory) -> int:
    """Fix lone surrogates over messages, tool calls and tool schemas; returns the count.

    A message with a surrogate is replaced by a fixed copy (calls copied too); the others stay as they are.
    """
    if _surely_surrogate_free(traj):
        return 0
    counter = [0]
    messages = traj.messages
    for index, message in enumerate(messages):
        if not _message_has_surrogates(message):
            continue
        calls = [
            call.model_copy(
                update={
                    "name": _clean_value(call.name, counter),
                    "arguments": _clean_value(call.arguments, counter),
                }
            )
            for call in message.tool_calls
        ]
        messages[index] = message.model_copy(
            update={
                "content": _clean_value(message.content, counter),
                "reasoning_content": _clean_value(message.reasoning_content, counter),
                "tool_calls": calls,
            }
        )
    traj.tools = _clean_value(traj.tools, counter)
    return counter[0]


# --------------------------------------------------------------------------------------------------
# repairs
# --------------------------------------------------------------------------------------------------


def _following_tool_block(messages: list[Message], start: int) -> list[Message]:
    """The run of tool messages right after index ``start - 1``.

    Walks by index: slicing ``messages[start:]`` first copied the rest of the conversation for every turn.
    """
    end = start
    while end < len(messages) and messages[end].role == "tool":
        end += 1
    return messages[start:end]


def _fill_tool_call_ids(traj: Trajectory) -> int:
    """Give every call an id and every following result the id of its call; returns calls filled.

    New ids are ``call_000001``, ``call_000002``, ... in conversation order, skipping ids already used.
    A call without id adopts the id of the result at the same position when that result names no other
    call of the turn. Results without id are matched to the turn's unanswered calls in order.
    """
    used = {c.id for m in traj.messages for c in m.tool_calls if c.id}
    used |= {m.tool_call_id for m in traj.messages if m.tool_call_id}
    next_number = 1
    filled = 0
    messages = traj.messages
    for index, message in enumerate(messages):
        if message.role != "assistant" or not message.tool_calls:
            continue
        block = _following_tool_block(messages, index + 1)
        if not all(c.id for c in message.tool_calls):  # copy-on-write: the calls below get ids
            message = message.model_copy(update={"tool_calls": [c.model_copy() for c in message.tool_calls]})
            messages[index] = message
        turn_ids = {c.id for c in message.tool_calls if c.id}
        for position, call in enumerate(message.tool_calls):
            if call.id:
                continue
            candidate = block[position].tool_call_id if position < len(block) else None
            if candidate and candidate not in turn_ids:
                call.id = candidate
            else:
                while f"call_{next_number:06d}" in used:
                    next_number += 1
                call.id = f"call_{next_number:06d}"
                used.add(call.id)
            turn_ids.add(call.id)
            filled += 1
        answered = {m.tool_call_id for m in block if m.tool_call_id}
        unanswered = [c.id for c in message.tool_calls if c.id not in answered]
        for offset, result in enumerate(block):
            if not result.tool_call_id and unanswered:
                messages[index + 1 + offset] = result.model_copy(update={"tool_call_id": unanswered.pop(0)})
    return filled


def _reorder_results(traj: Trajectory) -> int:
    """Put the results of parallel calls in call order when they are a permutation of the calls."""
    reordered = 0
    index = 0
    messages = traj.messages
    while index < len(messages):
        message = messages[index]
        if message.role == "assistant" and len(message.tool_calls) > 1:
            block = _following_tool_block(messages, index + 1)
            call_ids = [c.id for c in message.tool_calls]
            result_ids = [m.tool_call_id for m in block]
            unique = len(set(call_ids)) == len(call_ids)
            if unique and result_ids != call_ids and sorted(map(str, result_ids)) == sorted(call_ids):
                by_id = {m.tool_call_id: m for m in block}
                messages[index + 1 : index + 1 + len(block)] = [by_id[i] for i in call_ids]
                reordered += 1
        index += 1
    return reordered


def _blank_empty_tool_outputs(traj: Trajectory) -> int:
    """``(empty)`` is a scaffold placeholder, not tool output: the model saw nothing."""
    count = 0
    messages = traj.messages
    for index, message in enumerate(messages):
        if message.role == "tool" and message.content.strip() == EMPTY_TOOL_OUTPUT:
            messages[index] = message.model_copy(update={"content": ""})
            count += 1
    return count


def _drop_failed_calls(traj: Trajectory) -> int:
    """Remove each failed call together with its result; a turn left without calls goes entirely.

    Only results that can be paired with a call of the assistant turn right before their block are
    touched; anything else is left for validation to report.
    """
    dropped = 0
    kept: list[Message] = []
    index = 0
    messages = traj.messages
    while index < len(messages):
        message = messages[index]
        if message.role != "assistant" or not message.tool_calls:
            kept.append(message)
            index += 1
            continue
        block = _following_tool_block(messages, index + 1)
        failed_ids = {m.tool_call_id for m in block if is_tool_error(m) and m.tool_call_id}
        failed_ids &= {c.id for c in message.tool_calls}
        if not failed_ids:
            kept.append(message)
            index += 1
            continue
        dropped += len(failed_ids)
        remaining_calls = [c for c in message.tool_calls if c.id not in failed_ids]
        remaining_results = [m for m in block if m.tool_call_id not in failed_ids]
        if remaining_calls:
            kept.append(message.model_copy(update={"tool_calls": remaining_calls}))
            kept.extend(remaining_results)
        index += 1 + len(block)
    traj.messages = kept
    return dropped


SYSTEM_JOIN = "\n"


def _merge_leading_system(traj: Trajectory) -> int:
    """Several leading system messages -> one system prompt (their texts in order, joined with ``SYSTEM_JOIN``).

    Why: OpenCode sends two (its provider prompt, then the environment/instructions block; it caps system
    messages at two so both can be cached) and LLaMA-Factory has one system slot per row. The join is "\n", the
    join the conversion uses for the text blocks of one message, so OpenCode's two prompts give the same system
    text whether the proxy logged them as two OpenAI system messages or as two blocks of Anthropic's ``system``.
    What differs from what the model saw: a template that renders each system message as its own turn (Qwen3's
    own chat template does, ``<|im_end|>\n<|im_start|>system\n`` between them) is replaced by one "\n"; the
    words and their order are unchanged. Returns the number of system messages merged away.
    """
    messages = traj.messages
    count = 0
    while count < len(messages) and messages[count].role == "system":
        count += 1
    if count < 2:
        return 0
    texts = [m.content for m in messages[:count] if m.content]
    messages[:count] = [messages[0].model_copy(update={"content": SYSTEM_JOIN.join(texts)})]
    return count - 1


def _is_empty_assistant(message: Message) -> bool:
    return message.role == "assistant" and not (
        message.content.strip() or message.reasoning_content.strip() or message.tool_calls
    )


def _trim_aborted_final_turn(traj: Trajectory) -> int:
    """An empty final assistant turn (the last request was aborted: an empty response) is removed, so that the
    trajectory ends on its last complete turn (the tool/user tail before it is trimmed next). Only the final
    turn: an empty turn in the middle is a defect of the data and stays a reject. Returns turns removed."""
    messages = traj.messages
    if len(messages) > 1 and _is_empty_assistant(messages[-1]):
        messages.pop()
        return 1
    return 0


def _record(traj: Trajectory, repairs: dict[str, int], dropped: dict[str, int]) -> None:
    """Add extraction-style counters to ``meta.extra`` (``repairs``, ``dropped_model_turns``), copy-on-write."""
    extra = dict(traj.meta.extra)
    for key, counts in (("repairs", repairs), ("dropped_model_turns", dropped)):
        if counts:
            merged = dict(extra.get(key) or {})
            for kind, n in counts.items():
                merged[kind] = merged.get(kind, 0) + n
            extra[key] = merged
    traj.meta = traj.meta.model_copy(update={"extra": extra})


def _trim_tail(traj: Trajectory) -> int:
    """A sample must end on an assistant turn: drop trailing tool and user messages."""
    trimmed = 0
    while traj.messages and traj.messages[-1].role in ("tool", "user"):
        traj.messages.pop()
        trimmed += 1
    return trimmed


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_call(call: ToolCall, where: str) -> list[str]:
    problems = []
    if not call.name or not call.name.strip():
        problems.append(f"empty_tool_name: {where} has a tool call without a name; fix the adapter")
    if not isinstance(call.arguments, dict):
        problems.append(
            f"non_object_arguments: {where} call {call.id!r} ({call.name}) has arguments of type "
            f"{type(call.arguments).__name__}: {_preview(call.arguments)}; LLaMA-Factory needs a JSON object"
        )
    return problems


def _check_tool_block(message: Message, block: list[Message], index: int, is_last_turn: bool) -> list[str]:
    """The results after an assistant turn must answer its calls one by one, in order."""
    call_ids = [c.id for c in message.tool_calls]
    result_ids = [m.tool_call_id for m in block]
    if len(set(call_ids)) != len(call_ids):
        return [f"duplicate_tool_call_id: message {index} uses the same id for several calls {call_ids}"]
    if not message.tool_calls:
        if not block:
            return []
        return [
            f"orphan_tool_result: message {index + 1} answers {result_ids[0]!r} but the assistant turn "
            f"at message {index} made no call"
        ]
    if not block and is_last_turn:
        return []  # the trailing results were trimmed: the sample ends on the call
    if result_ids == call_ids:
        return []
    missing = [i for i in call_ids if i not in result_ids]
    extra = [i for i in result_ids if i not in call_ids]
    if extra:
        return [
            f"orphan_tool_result: results {extra} after message {index} match no call of that turn "
            f"(calls {call_ids})"
        ]
    if missing:
        return [f"unanswered_tool_call: calls {missing} of message {index} have no result"]
    return [f"tool_result_order: results after message {index} are {result_ids}, calls were {call_ids}"]


def _check_user_or_tool_turn(message: Message, previous: Message | None, index: int) -> list[str]:
    """A user turn must not follow a user turn or a tool result; a tool result must follow its call."""
    if message.role == "user" and previous is not None and previous.role == "user":
        return [f"consecutive_user: messages {index - 1} and {index} are both user turns"]
    if message.role == "user" and previous is not None and previous.role == "tool":
        return [f"user_after_tool: message {index} is a user turn right after a tool result"]
    if message.role == "tool":
        return [
            f"orphan_tool_result: message {index} (tool_call_id {message.tool_call_id!r}) "
            "does not follow an assistant turn with calls"
        ]
    return []


def _check_assistant_turn(
    message: Message, previous: Message | None, index: int, block: list[Message], is_last: bool
) -> list[str]:
    """An assistant turn: not right after another, not empty, valid calls, each answered by ``block``."""
    problems: list[str] = []
    if previous is not None and previous.role == "assistant":
        problems.append(
            f"consecutive_assistant: messages {index - 1} and {index} are both assistant "
            "turns without a tool result or user turn between them"
        )
    if not (message.content.strip() or message.reasoning_content.strip() or message.tool_calls):
        problems.append(f"empty_assistant_turn: message {index} has no content, reasoning or call")
    for call in message.tool_calls:
        problems.extend(_check_call(call, f"message {index}"))
    problems.extend(_check_tool_block(message, block, index, is_last))
    return problems


def _check_structure(messages: list[Message]) -> list[str]:
    """Role order, call/result pairing, argument types and non-empty assistant turns."""
    if not messages:
        return ["empty_conversation: no messages left (after trimming the trailing tool/user tail)"]
    problems: list[str] = []
    start = 1 if messages[0].role == "system" else 0
    for index, message in enumerate(messages):
        if message.role == "system" and index != 0:
            problems.append(f"misplaced_system: message {index} is a system message; only the first may be")
    if start >= len(messages) or messages[start].role != "user":
        found = messages[start].role if start < len(messages) else "nothing"
        problems.append(f"no_user_first: message {start} must be the user task, found {found}")
        return problems
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    index = start
    while index < len(messages):
        message = messages[index]
        previous = messages[index - 1] if index > start else None
        if message.role == "assistant":
            block = _following_tool_block(messages, index + 1)
            problems.extend(_check_assistant_turn(message, previous, index, block, index == last_assistant))
            index += 1 + len(block)
            continue
        problems.extend(_check_user_or_tool_turn(message, previous, index))
        index += 1
    if messages[-1].role != "assistant":
        problems.append(f"no_final_assistant: the last message is {messages[-1].role}")
    return problems


def _check_trainable(messages: list[Message]) -> list[str]:
    """The renderer cuts a sample before its first untrainable turn, so a trainable turn must precede it."""
    cut = first_untrainable_assistant(messages)
    head = messages if cut is None else messages[:cut]
    if any(m.role == "assistant" and m.trainable for m in head):
        return []
    if cut is None:
        return ["no_trainable_turn: the conversation has no trainable assistant turn"]
    return [
        f"no_trainable_prefix: message {cut} is the first assistant turn and it is not trainable "
        "(copied context / deterministic dispatch); LLaMA-Factory would train it, so nothing is left"
    ]


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def repair_and_validate(traj: Trajectory, *, drop_tool_errors: bool) -> tuple[Trajectory | None, list[str]]:
    """Return ``(repaired copy, repair notes)`` or ``(None, reasons)``; the input is never mutated.

    Repairs, in order: several leading system messages merged into one; lone surrogates -> U+FFFD; missing
    tool-call ids filled and matched; parallel results reordered to call order; ``(empty)`` outputs blanked;
    failed calls dropped with their results (``drop_tool_errors``); an empty (aborted) final assistant turn
    removed; trailing tool/user messages trimmed. Then the structural checks run. Every repair made is also
    counted on the trajectory in ``meta.extra`` (``repairs`` kind -> count, ``dropped_model_turns`` reason ->
    count), so that each written row carries its repairs (the template-fidelity report checks them per kind,
    ``sft.report.repairs``) and the funnel counts them from there (``sft.core.turns``).
    """
    # Copy-on-write: a new trajectory with its own message list; the repairs replace what they change.
    fixed = traj.model_copy(update={"messages": list(traj.messages)})
    notes: list[str] = []
    where = traj.meta.source_file
    counted: dict[str, int] = {}  # repair kind -> count, for meta.extra["repairs"] (the row carries it)
    dropped: dict[str, int] = {}
    count = _merge_leading_system(fixed)
    if count:
        counted["merged_system_messages"] = count
        notes.append(
            f"repair_merged_system_messages: {count} extra system message(s): {where}: messages 0-{count} "
            "were all system messages; "
            f"joined in order with {SYSTEM_JOIN!r} into one system prompt"
        )
    repairs = (
        ("repair_lone_surrogates", _sanitize_surrogates, "lone UTF-16 surrogates replaced with U+FFFD"),
        ("repair_filled_tool_call_ids", _fill_tool_call_ids, "tool calls without id got call_NNNNNN ids"),
        ("repair_reordered_tool_results", _reorder_results, "parallel results put in call order"),
        ("repair_empty_tool_output", _blank_empty_tool_outputs, "'(empty)' tool outputs set to ''"),
    )
    for code, repair, what in repairs:
        count = repair(fixed)
        if count:
            counted[code.removeprefix("repair_")] = count
            notes.append(f"{code}: {count} ({what})")
    if drop_tool_errors:
        count = _drop_failed_calls(fixed)
        if count:
            counted["dropped_tool_errors"] = count
            notes.append(f"repair_dropped_tool_errors: {count} failed call(s) removed with their results")
    _trim_end(fixed, counted, dropped, notes)
    if counted or dropped:
        _record(fixed, counted, dropped)
    problems = _check_structure(fixed.messages) or _check_trainable(fixed.messages)
    if problems:
        return None, problems
    return fixed, notes


def _trim_end(fixed: Trajectory, counted: dict[str, int], dropped: dict[str, int], notes: list[str]) -> None:
    """The last repairs: an aborted empty final turn, then trailing tool/user messages (counted in place)."""
    last = len(fixed.messages) - 1
    if _trim_aborted_final_turn(fixed):
        counted["trimmed_aborted_final_turn"] = 1
        dropped["aborted_empty_response"] = 1
        notes.append(
            f"repair_trimmed_aborted_final_turn: {fixed.meta.source_file}: message {last}, the final "
            "assistant turn, is empty (the last request was aborted); trimmed back to the last complete turn"
        )
    count = _trim_tail(fixed)
    if count:
        counted["trimmed_tail"] = count
        notes.append(f"repair_trimmed_tail: {count} trailing tool/user message(s) removed")
