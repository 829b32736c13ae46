"""ATIF (Harbor's Agent Trajectory Interchange Format, ``agent/trajectory.json``) -> canonical messages.

The one generic reader for every Harbor agent; agent-specific rules come in through ``AtifOptions``
(filled from the per-agent hooks in ``sft.sources.scaffolds.atif_hooks``). docs/input-formats.md §6:
system/user/agent steps; agent steps carry reasoning, tool calls and the observation results (tool
results) of those calls. The SFT rules:

* agent steps with ``llm_call_count == 0`` stay as context but their assistant messages get
  ``trainable=False``; ``is_copied_context`` steps follow ``copied_context`` (``_drop_copied_prefix``);
* a ``system`` step with ``extra.context_management.boundary == "replace"`` (or the agent hook's own
  hand-off marker) ends a sample: later steps saw only that step's observation, so a new sample starts;
* ``continued_trajectory_ref`` chains (terminus-2 ``trajectory.cont-<n>.json``) are followed; when a
  continuation's copied-context steps repeat the current sample exactly they are dropped (the sample is
  extended), otherwise the continuation starts a new sample from its own copied context;
* subagents (embedded ``subagent_trajectories``, referenced ``trajectory.*.json`` files, and claude-code
  sidechain steps split by ``extra.agent_id``) become separate conversations;
* repairs (results without ``source_call_id``, mid-run system steps, split responses, Harbor decorations,
  copied context) are counted per conversation in ``extra["repairs"]`` (README "Repair and
  normalisation rules"); a conversation that cannot be paired up unambiguously carries ``reject``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sft.core.canonical import Message, ToolCall
from sft.sources.harbor.litellm import (
    content_text,
    is_error_text,
    loads_lenient,
    normalize_tools,
    parse_arguments,
)

logger = logging.getLogger(__name__)

KNOWN_VERSIONS = frozenset(f"ATIF-v1.{minor}" for minor in range(9))
MAX_CONTINUATIONS = 1000
_CONTINUATION_RE = re.compile(r"\.cont-\d+\.json$")


class AtifError(ValueError):
    """An ATIF document that cannot be used at all (not JSON, no steps)."""


@dataclass
class AtifConversation:
    """One conversation recovered from ATIF, before it is wrapped into a Trajectory by a scaffold adapter."""

    messages: list[Message]
    tools: list[dict[str, Any]]
    source_file: Path
    agent_type: str = "main"
    agent_id: str | None = None
    model_name: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    reject: tuple[str, str] | None = None  # (reason, detail) when the conversation cannot be converted


@dataclass
class AtifParseResult:
    conversations: list[AtifConversation]
    problems: list[str] = field(default_factory=list)
    agent_names: list[str] = field(default_factory=list)  # agent.name of every document read


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    """A damaged file can hold any JSON value where a list belongs; ``value or []`` would iterate a
    number (TypeError), a string (characters) or an object (its keys)."""
    return value if isinstance(value, list) else []


# Within ``shared_documents()``: resolved path -> (document or the AtifError, the problems its parse noted).
_SHARED: ContextVar[dict[Path, tuple[dict[str, Any] | AtifError, list[str]]] | None] = ContextVar(
    "atif_shared_documents", default=None
)


@contextmanager
def shared_documents() -> Iterator[None]:
    """Inside the block each ATIF file is parsed once, however often it is loaded.

    The trial reader counts a trial's source model turns over all its ``trajectory*.json`` files and then
    reads the conversation from the same files: without this, every ATIF file was parsed twice. Neither
    side mutates a document, so they can share it; a later caller still gets the problems the parse noted.
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def load_document(path: Path, problems: list[str] | None = None) -> dict[str, Any]:
    """Parse one ATIF file (lenient about bad UTF-8 and lone surrogates); AtifError names the file."""
    shared = _SHARED.get()
    if shared is None:
        return _parse_document(path, problems if problems is not None else [])
    key = Path(path).resolve()
    if key not in shared:
        noted: list[str] = []
        try:
            shared[key] = (_parse_document(path, noted), noted)
        except AtifError as exc:
            shared[key] = (exc, noted)
    found, noted = shared[key]
    if problems is not None:
        problems.extend(noted)
    if isinstance(found, AtifError):
        raise found
    return found


def _parse_document(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AtifError(f"{path}: cannot read ({exc})") from exc
    try:
        doc = loads_lenient(data, str(path), problems)
    except ValueError as exc:
        raise AtifError(f"{path}: not valid JSON ({exc}); the trajectory file may be truncated") from exc
    if not isinstance(doc, dict):
        raise AtifError(f"{path}: a JSON {type(doc).__name__}, expected an ATIF trajectory object")
    if not isinstance(doc.get("steps"), list):
        raise AtifError(
            f"{path}: no 'steps' list; not an ATIF trajectory (schema_version {doc.get('schema_version')!r})"
        )
    return doc


def _check_version(doc: dict[str, Any], where: str, problems: list[str]) -> None:
    version = doc.get("schema_version")
    if not isinstance(version, str) or version not in KNOWN_VERSIONS:  # a damaged file may hold a list
        problems.append(
            f"{where}: unknown schema_version {version!r} (known ATIF-v1.0..v1.8); parsed as v1.8"
        )


# ----------------------------------------------------------------------------------------------------------
# steps -> messages


def _is_replace_boundary(step: dict[str, Any]) -> bool:
    management = _as_dict(_as_dict(step.get("extra")).get("context_management"))
    return step.get("source") == "system" and management.get("boundary") == "replace"


def _is_trainable(step: dict[str, Any], options: AtifOptions) -> bool:
    """Copied context is trained only with ``copied_context: context``; a deterministic dispatch
    (``llm_call_count == 0``: no model call produced it) never is."""
    if step.get("llm_call_count") == 0:
        return False
    return options.copied_context == "context" or not step.get("is_copied_context")


def _result_text(result: dict[str, Any], ctx: _StepContext) -> tuple[str, bool]:
    """The observation text the model saw, and whether the result says it is an error.

    claude-code: the raw tool result (``extra.tool_result_metadata.raw_tool_result``) when the file has
    it; otherwise the agent's ``strip_decorations`` hook takes Harbor's additions back off the text.
    ``ctx.result_sources`` counts where each text came from (``raw_tool_result`` / ``stripped`` /
    ``as_written``); a stripped one is also repair ``stripped_harbor_decorations``.
    """
    options, stats, problems = ctx.options, ctx.result_sources, ctx.problems
    if options.prefer_raw_tool_result:
        metadata = _as_dict(_as_dict(result.get("extra")).get("tool_result_metadata"))
        raw = metadata.get("raw_tool_result")
        if isinstance(raw, dict) and "content" in raw:
            stats["raw_tool_result"] += 1
            return content_text(raw.get("content"), problems), bool(raw.get("is_error"))
        if isinstance(raw, str):
            stats["raw_tool_result"] += 1
            return raw, False
    text = content_text(result.get("content"), problems)
    if options.strip_decorations is not None:
        stripped = options.strip_decorations(text)
        if stripped is not None:
            stats["stripped"] += 1
            ctx.repairs["stripped_harbor_decorations"] += 1
            return stripped.text, stripped.is_error
    stats["as_written"] += 1
    return text, False


def _tool_call(call: dict[str, Any]) -> ToolCall:
    return ToolCall(
        id=str(call.get("tool_call_id") or ""),
        name=str(call.get("function_name") or ""),
        arguments=parse_arguments(call.get("arguments")),
    )


@dataclass
class _StepContext:
    """Per-conversation state of the step readers: options, repair counts, result-source counts."""

    options: AtifOptions
    problems: list[str]
    where: str  # the file, for messages
    repairs: Counter[str] = field(default_factory=Counter)
    result_sources: Counter[str] = field(default_factory=Counter)
    reject: tuple[str, str] | None = None  # (reason, detail): the conversation cannot be converted
    agent_steps: int = 0  # agent steps read so far
    # (agent step number, step_id, calls left without any result) per agent step
    unanswered: list[tuple[int, Any, list[str]]] = field(default_factory=list)


def _pair_results_without_id(
    step: dict[str, Any],
    calls: list[ToolCall],
    answered: set[int],
    without_id: list[tuple[int, str, bool]],
    ctx: _StepContext,
) -> tuple[list[tuple[int, int, str, bool]], list[str]]:
    """Results that name no ``source_call_id`` -> the step's unanswered calls (ATIF leaves the id optional).

    Rules (each pairing counted as repair ``paired_result_without_id``):

    * no calls in the step: the results are the next prompt (terminus-2 raw_content, OpenHands text mode),
      kept as user-side text, not a repair;
    * as many results as unanswered calls: paired in call order (the order ATIF lists both in);
    * one result, several unanswered calls: one output for the batch (terminus-2 sends a batch of
      keystrokes and reads one terminal screen afterwards): it answers the first unanswered call, the
      others get an empty result (repair ``empty_result_for_batched_call``), because LLaMA-Factory needs one
      result per call and the model saw one output, not one per call;
    * every call already answered: the extra results are context the model saw after them (kept as
      user-side text, folded into the observation later);
    * any other count is ambiguous: the conversation is rejected naming the step and the fix.

    Returns ``(call position, order, text, error)`` pairs and the texts that stay user-side.
    """
    unanswered = [position for position in range(len(calls)) if position not in answered]
    if not calls or not without_id:
        return [], [text for _, text, _ in without_id]
    if not unanswered:
        return [], [text for _, text, _ in without_id]
    if len(without_id) == len(unanswered):
        ctx.repairs["paired_result_without_id"] += len(without_id)
        return [
            (cid, order, text, err) for cid, (order, text, err) in zip(unanswered, without_id, strict=True)
        ], []
    if len(without_id) == 1:
        order, text, err = without_id[0]
        ctx.repairs["paired_result_without_id"] += 1
        ctx.repairs["empty_result_for_batched_call"] += len(unanswered) - 1
        pairs = [(unanswered[0], order, text, err)]
        pairs += [(cid, order, "", False) for cid in unanswered[1:]]
        return pairs, []
    if ctx.reject is None:
        ctx.reject = (
            "ambiguous_results_without_id",
            f"{ctx.where}: step {step.get('step_id')}: {len(without_id)} observation results have no "
            f"source_call_id but {len(unanswered)} calls ({', '.join(calls[p].id or f'#{p}' for p in unanswered)}) "
            "are unanswered, so which "
            "result answers which call is unknown; set observation.results[].source_call_id in the file",
        )
    return [], [text for _, text, _ in without_id]


def _sort_results(
    step: dict[str, Any], calls: list[ToolCall], results: list[Any], ctx: _StepContext
) -> tuple[list[tuple[int, int, str, bool]], list[tuple[int, str, bool]], list[str]]:
    """An agent step's observation results: paired with a call by id ``(call position, result order, text,
    error)``, without an id ``(result order, text, error)``, or loose text (a result for an unknown call)."""
    call_index = {c.id: i for i, c in enumerate(calls) if c.id}
    paired: list[tuple[int, int, str, bool]] = []
    without_id: list[tuple[int, str, bool]] = []
    loose_texts: list[str] = []
    for order, result in enumerate(r for r in results if isinstance(r, dict)):
        call_id = result.get("source_call_id")
        if call_id is None and not result.get("content") and result.get("subagent_trajectory_ref"):
            continue  # a pure subagent pointer, no text the model saw
        text, raw_error = _result_text(result, ctx)
        if call_id is None:
            without_id.append((order, text, raw_error))
        elif str(call_id) in call_index:
            paired.append((call_index[str(call_id)], order, text, raw_error))
        else:
            ctx.problems.append(
                f"{ctx.where}: step {step.get('step_id')}: observation for unknown call {call_id!r} kept as "
                "user-side text"
            )
            loose_texts.append(text)
    return paired, without_id, loose_texts


def _tool_messages(
    calls: list[ToolCall], paired: list[tuple[int, int, str, bool]], call_errors: dict[str, bool]
) -> list[Message]:
    """The tool messages of paired results, in call order (then result order)."""
    tool_messages: list[tuple[int, int, Message]] = []
    for position, order, text, raw_error in paired:
        call_id = calls[position].id
        error = raw_error or call_errors.get(call_id, False) or is_error_text(text)
        # a call without id pairs with its result here; repair_and_validate then gives both one id
        message = Message(role="tool", content=text, tool_call_id=call_id or None, is_error=error)
        tool_messages.append((position, order, message))
    tool_messages.sort(key=lambda item: (item[0], item[1]))
    return [m for _, _, m in tool_messages]


def _agent_step_messages(step: dict[str, Any], ctx: _StepContext) -> list[Message]:
    options, problems = ctx.options, ctx.problems
    raw_calls = [c for c in _as_list(step.get("tool_calls")) if isinstance(c, dict)]
    calls = [_tool_call(c) for c in raw_calls]
    assistant = Message(
        role="assistant",
        content=content_text(step.get("message"), problems),
        reasoning_content=str(step.get("reasoning_content") or ""),
        tool_calls=calls,
        trainable=_is_trainable(step, options),
    )
    call_errors = {
        str(c.get("tool_call_id")): bool(_as_dict(c.get("extra")).get("tool_use_is_error")) for c in raw_calls
    }
    results = _as_list(_as_dict(step.get("observation")).get("results"))
    paired, without_id, loose_texts = _sort_results(step, calls, results, ctx)
    more, leftover = _pair_results_without_id(step, calls, {p[0] for p in paired}, without_id, ctx)
    paired += more
    loose_texts += leftover
    answered = {p[0] for p in paired}
    if paired or loose_texts:  # the step has an observation: synthetic calls it answers get an empty result
        for position, call in enumerate(calls):
            if position not in answered and call.name in options.empty_result_calls:
                paired.append((position, len(results), "", False))
                ctx.repairs["empty_result_for_synthetic_call"] += 1
    ctx.agent_steps += 1
    left = [
        calls[p].id or f"#{p} ({calls[p].name})" for p in range(len(calls)) if p not in {q[0] for q in paired}
    ]
    if left:
        ctx.unanswered.append((ctx.agent_steps, step.get("step_id"), left))
    out = [assistant, *_tool_messages(calls, paired, call_errors)]
    if loose_texts:
        out.append(Message(role="user", content="\n".join(loose_texts)))
    return out


def step_messages(
    step: dict[str, Any],
    *,
    prefer_raw_tool_result: bool = False,
    problems: list[str],
    ctx: _StepContext | None = None,
) -> list[Message]:
    """The canonical messages one ATIF step stands for (a system step stays a system message here;
    ``_sample_messages`` turns mid-run ones into user-side context)."""
    ctx = ctx or _StepContext(AtifOptions(prefer_raw_tool_result=prefer_raw_tool_result), problems, "ATIF")
    source = step.get("source")
    if source == "agent":
        return _agent_step_messages(step, ctx)
    text = content_text(step.get("message"), problems)
    if source == "system":
        return [Message(role="system", content=text)]
    if source == "user":
        return [Message(role="user", content=text)]
    problems.append(f"{ctx.where}: step {step.get('step_id')}: unknown source {source!r}; dropped")
    return []


def _boundary_context(step: dict[str, Any], problems: list[str]) -> list[Message]:
    """What later steps see after a replace boundary: the boundary step's observation text, as user input."""
    texts = [
        content_text(r.get("content"), problems)
        for r in _as_list(_as_dict(step.get("observation")).get("results"))
        if isinstance(r, dict) and r.get("content")
    ]
    return [Message(role="user", content="\n".join(texts))] if texts else []


def _step_key(step: dict[str, Any]) -> bytes:
    """Identity of a step for matching copied context against the steps it was copied from."""
    calls = [
        (c.get("function_name"), c.get("arguments"))
        for c in _as_list(step.get("tool_calls"))
        if isinstance(c, dict)
    ]
    return orjson.dumps([step.get("source"), step.get("message"), calls], option=orjson.OPT_SORT_KEYS)


@dataclass
class _Sample:
    """Steps of one training sample (plus the context messages a replace boundary hands over)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    preamble: list[Message] = field(default_factory=list)
    source_files: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.steps and not self.preamble


def _copied_prefix_length(steps: list[dict[str, Any]], current: _Sample) -> int:
    """How many leading copied-context steps of a continuation file repeat ``current`` exactly (else 0)."""
    n_copied = 0
    while n_copied < len(steps) and steps[n_copied].get("is_copied_context"):
        n_copied += 1
    if n_copied and [_step_key(s) for s in steps[:n_copied]] == [_step_key(s) for s in current.steps]:
        return n_copied
    return 0


def _segment(
    chain: list[tuple[Path, dict[str, Any]]],
    steps_of: Any,
    problems: list[str],
    is_boundary: Callable[[dict[str, Any]], bool] | None = None,
) -> list[_Sample]:
    """Split a document chain into samples at replace boundaries and at non-matching continuations."""
    samples: list[_Sample] = []
    current = _Sample()
    for doc_index, (path, doc) in enumerate(chain):
        steps = steps_of(doc)
        if doc_index:
            n_copied = _copied_prefix_length(steps, current)
            if n_copied:
                steps = steps[n_copied:]  # the copied context repeats this sample exactly: extend it
            else:
                if not current.empty():
                    samples.append(current)
                current = _Sample()  # a fresh sample starts in this file
        if path.name not in current.source_files:
            current.source_files.append(path.name)
        for step in steps:
            if _is_replace_boundary(step) or (is_boundary is not None and is_boundary(step)):
                if not current.empty():
                    samples.append(current)
                current = _Sample(preamble=_boundary_context(step, problems), source_files=[path.name])
                continue
            current.steps.append(step)
    if not current.empty():
        samples.append(current)
    return samples


def _drop_copied_prefix(steps: list[dict[str, Any]], ctx: _StepContext) -> list[dict[str, Any]]:
    """``copied_context: drop``: start after the last assistant step of the leading copied-context run.

    Those assistant turns are trained in the conversation they were copied from (the main segment);
    copied user steps after them (terminus-2's hand-off prompt in a linear_history continuation) stay,
    they are the prompt of what follows. Counted as repair ``dropped_copied_context`` (assistant turns).
    """
    if ctx.options.copied_context != "drop":
        return steps
    run = 0
    while run < len(steps) and steps[run].get("is_copied_context"):
        run += 1
    last_agent = max((i for i in range(run) if steps[i].get("source") == "agent"), default=-1)
    if last_agent < 0:
        return steps
    ctx.repairs["dropped_copied_context"] += sum(
        1 for s in steps[: last_agent + 1] if s.get("source") == "agent"
    )
    # The leading system step (the agent's system prompt) is not copied context: keep it.
    head = [steps[0]] if steps[0].get("source") == "system" and not steps[0].get("is_copied_context") else []
    return head + steps[last_agent + 1 :]


def _fold_user_side(messages: list[Message], ctx: _StepContext) -> list[Message]:
    """User-side text that LLaMA-Factory cannot place as its own turn joins its neighbour.

    * after a tool result (a mid-run system step, an observation for no call): appended to the last
      result of that observation with a blank line; the model read it in the same place, right after the
      tool output and before its next turn (repair ``context_into_observation``);
    * after a user turn (two user messages in a row): joined with a blank line (repair ``merged_user_turns``).
    """
    out: list[Message] = []
    for message in messages:
        previous = out[-1] if out else None
        if message.role == "user" and previous is not None and previous.role == "tool":
            out[-1] = previous.model_copy(update={"content": _join(previous.content, message.content)})
            ctx.repairs["context_into_observation"] += 1
        elif message.role == "user" and previous is not None and previous.role == "user":
            out[-1] = previous.model_copy(update={"content": _join(previous.content, message.content)})
            ctx.repairs["merged_user_turns"] += 1
        else:
            out.append(message)
    return out


def _join(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if first and second else first or second


def _plain_agent_step(step: dict[str, Any]) -> bool:
    """An agent step that holds neither calls nor an observation (not even a malformed one)."""
    return (
        step.get("source") == "agent" and step.get("tool_calls") in (None, []) and not step.get("observation")
    )


def _sample_messages(sample: _Sample, ctx: _StepContext) -> list[Message]:
    """A sample's messages: steps in order, copied context per ``copied_context``, mid-run system steps
    as user-side context, then ``_fold_user_side``.

    An agent step without calls or observation followed by another agent step is one model response
    split in two (codex writes a response's message and its function_call as separate steps): they are
    joined (repair ``merged_consecutive_agent_steps``).

    Mid-run ``system`` steps (Harbor's ``openhands``: "Retrieving content for: ...", "Added workspace
    context"; any agent's status notes) are context the model was shown during the run, not a second
    system prompt (a chat template has one, at the top): they become user-side text (repair
    ``mid_run_system_to_context``). Only system steps before the first user/agent step stay the system prompt.
    """
    messages = list(sample.preamble)
    steps = _drop_copied_prefix(sample.steps, ctx)
    started = bool(messages)
    previous_plain = False  # the step before was an agent step with no calls and no observation at all
    for step in steps:
        plain_before, previous_plain = previous_plain, _plain_agent_step(step)
        for message in step_messages(step, problems=ctx.problems, ctx=ctx):
            if message.role == "system" and started:
                message = Message(role="user", content=message.content)
                ctx.repairs["mid_run_system_to_context"] += 1
            elif message.role == "system" and messages and messages[-1].role == "system":
                messages[-1] = messages[-1].model_copy(
                    update={"content": _join(messages[-1].content, message.content)}
                )
                ctx.repairs["merged_system_messages"] += 1
                continue
            started = started or message.role != "system"
            previous = messages[-1] if messages else None
            if (
                message.role == "assistant"
                and plain_before
                and previous is not None
                and previous.role == "assistant"
                and not previous.tool_calls
                and previous.trainable == message.trainable
            ):
                # One model response written as two agent steps (codex: the message item, then the
                # function_call item of the same response): one assistant turn.
                messages[-1] = message.model_copy(
                    update={
                        "content": _join(previous.content, message.content),
                        "reasoning_content": _join(previous.reasoning_content, message.reasoning_content),
                    }
                )
                ctx.repairs["merged_consecutive_agent_steps"] += 1
                continue
            messages.append(message)
    _check_unanswered(ctx)
    return _fold_user_side(messages, ctx)


def _check_unanswered(ctx: _StepContext) -> None:
    """A call without any result before the last agent step: the file lost that tool output.

    The last agent step may end on calls (the run stopped; validation trims the sample to end there). Any
    earlier one is a gap LLaMA-Factory cannot represent; the reject names the step and the calls instead
    of the generic "calls ... have no result" of validation.
    """
    gaps = [(step_id, left) for number, step_id, left in ctx.unanswered if number < ctx.agent_steps]
    if gaps and ctx.reject is None:
        step_id, left = gaps[0]
        ctx.reject = (
            "unanswered_tool_call",
            f"{ctx.where}: step {step_id}: calls {left} have no observation result (no observation.results[] "
            "entry names them by source_call_id and none is left without one) although later steps follow; "
            f"{len(gaps)} such step(s). The tool output is missing from the file: add it to that step's "
            "observation.results to make the conversation convertible",
        )


# ----------------------------------------------------------------------------------------------------------
# documents, chains and subagents


def _all_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _as_list(doc.get("steps")) if isinstance(s, dict)]


def _main_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _all_steps(doc) if not _as_dict(s.get("extra")).get("is_sidechain")]


def _load_chain(main_path: Path, problems: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    """The main document followed by its ``continued_trajectory_ref`` continuations (loop-safe)."""
    chain = [(main_path, load_document(main_path, problems))]
    seen = {main_path.resolve()}
    while len(chain) <= MAX_CONTINUATIONS:
        ref = chain[-1][1].get("continued_trajectory_ref")
        if not isinstance(ref, str) or not ref:
            break
        next_path = _safe_sibling(main_path.parent, ref)
        if next_path is None:
            problems.append(
                f"{chain[-1][0]}: continued_trajectory_ref {ref!r} points outside the agent dir; not followed"
            )
            break
        if next_path.resolve() in seen:
            problems.append(f"{chain[-1][0]}: continued_trajectory_ref {ref!r} loops back; not followed")
            break
        if not next_path.is_file():
            problems.append(f"{chain[-1][0]}: continuation {ref!r} is missing; the trajectory ends early")
            break
        try:
            doc = load_document(next_path, problems)
        except AtifError as exc:
            problems.append(f"continuation skipped: {exc}")
            break
        seen.add(next_path.resolve())
        chain.append((next_path, doc))
    return chain


def _safe_sibling(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it stays inside ``directory`` (refs are plain file names)."""
    candidate = (directory / name).resolve()
    root = directory.resolve()
    return candidate if root in candidate.parents else None


def _subagent_refs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    for doc in docs:
        for step in _all_steps(doc):
            for result in _as_list(_as_dict(step.get("observation")).get("results")):
                for ref in _as_list(_as_dict(result).get("subagent_trajectory_ref")):
                    if isinstance(ref, dict):
                        refs.append(ref)
    return refs


def _chain_usage(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``final_metrics`` summed over a document chain (numeric totals only when there are several)."""
    if len(docs) == 1:
        return dict(_as_dict(docs[0].get("final_metrics")))
    totals: dict[str, Any] = {}
    for doc in docs:
        for key, value in _as_dict(doc.get("final_metrics")).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals


def _doc_model(doc: dict[str, Any]) -> str | None:
    model = _as_dict(doc.get("agent")).get("model_name")
    if isinstance(model, str) and model:
        return model
    for step in _all_steps(doc):
        if isinstance(step.get("model_name"), str) and step["model_name"]:
            return step["model_name"]
    return None


def _file_agent_id(path: Path) -> str:
    """``trajectory.summarization-1-summary.json`` -> ``summarization-1-summary``."""
    name = path.name
    if name.startswith("trajectory.") and name.endswith(".json"):
        return name[len("trajectory.") : -len(".json")]
    return path.stem


@dataclass(frozen=True)
class StrippedText:
    """A tool result with the harness's decorations taken off (``AtifOptions.strip_decorations``)."""

    text: str
    is_error: bool = False


@dataclass
class AtifOptions:
    """Reading rules: the generic ones plus the per-agent hooks (``sft.sources.scaffolds.atif_hooks``)."""

    prefer_raw_tool_result: bool = False  # claude-code: observation extra raw_tool_result
    split_sidechains: bool = False  # claude-code: extra.is_sidechain steps -> subagents by extra.agent_id
    include_subagents: bool = True
    # text -> the model-visible text, or None when the text carries no decoration
    strip_decorations: Callable[[str], StrippedText | None] | None = None
    # synthetic calls that an observation answers implicitly (terminus-2 mark_task_complete)
    empty_result_calls: frozenset[str] = frozenset()
    copied_context: str = "drop"  # drop | context (conversion.copied_context)
    # an agent's own context hand-off marker where the file has no extra.context_management
    replace_boundary: Callable[[dict[str, Any]], bool] | None = None


def _conversation_extra(ctx: _StepContext, extra: dict[str, Any]) -> dict[str, Any]:
    """Repair counts (the shared ``repairs`` convention) and where tool-result texts came from."""
    repairs = {k: v for k, v in sorted(ctx.repairs.items()) if v}
    if repairs:
        extra["repairs"] = repairs
    sources = {k: v for k, v in sorted(ctx.result_sources.items()) if v}
    if sources:
        extra["tool_result_sources"] = sources
    return extra


def _conversations_from_chain(
    chain: list[tuple[Path, dict[str, Any]]],
    options: AtifOptions,
    problems: list[str],
    *,
    agent_type: str,
    agent_id: str | None,
) -> list[AtifConversation]:
    docs = [doc for _, doc in chain]
    head = docs[0]
    by_name = {path.name: (path, doc) for path, doc in chain}
    tools = normalize_tools(_as_dict(head.get("agent")).get("tool_definitions"), problems)
    steps_of = _main_steps if options.split_sidechains else _all_steps
    samples = _segment(chain, steps_of, problems, options.replace_boundary)
    out: list[AtifConversation] = []
    for index, sample in enumerate(samples):
        files = [by_name[name] for name in sample.source_files if name in by_name] or chain[:1]
        ctx = _StepContext(options, problems, str(files[0][0]))
        messages = _sample_messages(sample, ctx)
        if not messages:
            continue
        extra: dict[str, Any] = {
            "atif_files": sample.source_files,
            "schema_version": head.get("schema_version"),
        }
        if len(samples) > 1:
            extra["segment"] = index
        out.append(
            AtifConversation(
                messages=messages,
                tools=tools,
                source_file=files[0][0],
                agent_type=agent_type,
                agent_id=agent_id,
                model_name=_doc_model(head),
                usage=_chain_usage([doc for _, doc in files]),
                extra=_conversation_extra(ctx, extra),
                reject=ctx.reject,
            )
        )
    return out


def _sidechain_conversations(
    path: Path, doc: dict[str, Any], options: AtifOptions, problems: list[str]
) -> list[AtifConversation]:
    """claude-code: sidechain steps grouped by ``extra.agent_id`` (first appearance order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for step in _all_steps(doc):
        extra = _as_dict(step.get("extra"))
        if extra.get("is_sidechain"):
            groups.setdefault(str(extra.get("agent_id") or "sidechain"), []).append(step)
    out: list[AtifConversation] = []
    for agent_id, steps in groups.items():
        ctx = _StepContext(options, problems, f"{path} sidechain {agent_id}")
        messages = _sample_messages(_Sample(steps=steps), ctx)
        out.append(
            AtifConversation(
                messages=messages,
                tools=[],
                source_file=path,
                agent_type="subagent",
                agent_id=agent_id,
                model_name=_doc_model(doc),
                extra=_conversation_extra(
                    ctx,
                    {
                        "atif_files": [path.name],
                        "sidechain": True,
                        "schema_version": doc.get("schema_version"),
                    },
                ),
                reject=ctx.reject,
            )
        )
    return out


def _embedded_subagents(
    path: Path, doc: dict[str, Any], options: AtifOptions, problems: list[str], depth: int
) -> tuple[list[AtifConversation], set[str]]:
    out: list[AtifConversation] = []
    ids: set[str] = set()
    for index, sub in enumerate(_as_list(doc.get("subagent_trajectories"))):
        if not isinstance(sub, dict) or not isinstance(sub.get("steps"), list):
            problems.append(f"{path}: subagent_trajectories[{index}] is not a trajectory object; skipped")
            continue
        sub_id = str(
            sub.get("trajectory_id") or _as_dict(sub.get("agent")).get("name") or f"embedded-{index}"
        )
        ids.add(sub_id)
        _check_version(sub, f"{path} subagent {sub_id}", problems)
        out.extend(
            _parse_doc_tree(
                [(path, sub)], options, problems, agent_type="subagent", agent_id=sub_id, depth=depth + 1
            )
        )
    return out, ids


def _parse_doc_tree(
    chain: list[tuple[Path, dict[str, Any]]],
    options: AtifOptions,
    problems: list[str],
    *,
    agent_type: str,
    agent_id: str | None,
    depth: int = 0,
) -> list[AtifConversation]:
    """A document chain's own conversations, then (if wanted) its sidechains and embedded subagents."""
    out = _conversations_from_chain(chain, options, problems, agent_type=agent_type, agent_id=agent_id)
    if not options.include_subagents or depth > 8:
        return out
    for path, doc in chain:
        if options.split_sidechains:
            out.extend(_sidechain_conversations(path, doc, options, problems))
        embedded, _ = _embedded_subagents(path, doc, options, problems, depth)
        out.extend(embedded)
    return out


def parse_agent_dir(
    agent_dir: Path, options: AtifOptions | None = None, main_file: str = "trajectory.json"
) -> AtifParseResult:
    """Every conversation in an agent dir's ATIF files: the main chain first, then subagents.

    Raises AtifError only when the main file itself is unusable; problems with continuations and
    subagent files are recorded and skipped.
    """
    options = options or AtifOptions()
    agent_dir = Path(agent_dir)
    problems: list[str] = []
    main_path = agent_dir / main_file
    if not main_path.is_file():
        raise AtifError(f"{main_path} does not exist")
    chain = _load_chain(main_path, problems)
    for path, doc in chain:
        _check_version(doc, str(path), problems)
    result = AtifParseResult(conversations=[], problems=problems)
    result.agent_names = [str(_as_dict(doc.get("agent")).get("name") or "") for _, doc in chain]
    result.conversations = _parse_doc_tree(chain, options, problems, agent_type="main", agent_id=None)
    if not options.include_subagents:
        return result
    loaded = {path.resolve() for path, _ in chain}
    for path in _subagent_files(agent_dir, [doc for _, doc in chain], problems):
        if path.resolve() in loaded:
            continue
        loaded.add(path.resolve())
        try:
            sub_chain = _load_chain(path, problems)
        except AtifError as exc:
            problems.append(f"subagent skipped: {exc}")
            continue
        for sub_path, sub_doc in sub_chain:
            loaded.add(sub_path.resolve())
            _check_version(sub_doc, str(sub_path), problems)
        result.agent_names += [str(_as_dict(doc.get("agent")).get("name") or "") for _, doc in sub_chain]
        result.conversations.extend(
            _parse_doc_tree(
                sub_chain, options, problems, agent_type="subagent", agent_id=_file_agent_id(path)
            )
        )
    return result


def _subagent_files(agent_dir: Path, docs: list[dict[str, Any]], problems: list[str]) -> list[Path]:
    """Referenced ``trajectory_path`` files first (reference order), then unreferenced ``trajectory.*.json``."""
    files: list[Path] = []
    for ref in _subagent_refs(docs):
        ref_path = ref.get("trajectory_path")
        if not isinstance(ref_path, str) or not ref_path:
            continue  # id-only refs point at embedded subagents
        path = _safe_sibling(agent_dir, ref_path)
        if path is None:
            problems.append(f"subagent_trajectory_ref {ref_path!r} points outside {agent_dir}; skipped")
        elif not path.is_file():
            problems.append(f"subagent trajectory {ref_path!r} referenced but missing in {agent_dir}")
        elif path not in files:
            files.append(path)
    for path in sorted(agent_dir.glob("trajectory.*.json")):
        if _CONTINUATION_RE.search(path.name) or path in files:
            continue
        problems.append(f"{path.name}: subagent trajectory not referenced by any step; read anyway")
        files.append(path)
    return files
