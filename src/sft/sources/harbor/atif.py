"""ATIF (Harbor's Agent Trajectory Interchange Format, ``agent/trajectory.json``) -> canonical messages.

docs/input-formats.md §6: system/user/agent steps; agent steps carry reasoning, tool calls and the
observation results (tool results) of those calls. The SFT rules of the RFC are applied here:

* ``is_copied_context`` steps and agent steps with ``llm_call_count == 0`` stay as context but their
  assistant messages get ``trainable=False``;
* a ``system`` step with ``extra.context_management.boundary == "replace"`` ends a sample: later steps
  saw only that step's observation, so a new sample starts after it;
* ``continued_trajectory_ref`` chains (terminus-2 ``trajectory.cont-<n>.json``) are followed; when a
  continuation's copied-context steps repeat the current sample exactly they are dropped (the sample is
  extended), otherwise the continuation starts a new sample from its own copied context;
* subagents (embedded ``subagent_trajectories``, referenced ``trajectory.*.json`` files, and claude-code
  sidechain steps split by ``extra.agent_id``) become separate conversations.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sft.convert.canonical import Message, ToolCall
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


def load_document(path: Path, problems: list[str] | None = None) -> dict[str, Any]:
    """Parse one ATIF file (lenient about bad UTF-8 and lone surrogates); AtifError names the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AtifError(f"{path}: cannot read ({exc})") from exc
    try:
        doc = loads_lenient(data, str(path), problems if problems is not None else [])
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


def _is_trainable(step: dict[str, Any]) -> bool:
    return not step.get("is_copied_context") and step.get("llm_call_count") != 0


def _result_text(result: dict[str, Any], prefer_raw: bool, problems: list[str]) -> tuple[str, bool]:
    """Observation text; for claude-code the raw tool result the model saw (Harbor appends metadata)."""
    if prefer_raw:
        metadata = _as_dict(_as_dict(result.get("extra")).get("tool_result_metadata"))
        raw = metadata.get("raw_tool_result")
        if isinstance(raw, dict) and "content" in raw:
            return content_text(raw.get("content"), problems), bool(raw.get("is_error"))
        if isinstance(raw, str):
            return raw, False
    return content_text(result.get("content"), problems), False


def _tool_call(call: dict[str, Any]) -> ToolCall:
    return ToolCall(
        id=str(call.get("tool_call_id") or ""),
        name=str(call.get("function_name") or ""),
        arguments=parse_arguments(call.get("arguments")),
    )


def _agent_step_messages(step: dict[str, Any], prefer_raw: bool, problems: list[str]) -> list[Message]:
    calls = [c for c in _as_list(step.get("tool_calls")) if isinstance(c, dict)]
    assistant = Message(
        role="assistant",
        content=content_text(step.get("message"), problems),
        reasoning_content=str(step.get("reasoning_content") or ""),
        tool_calls=[_tool_call(c) for c in calls],
        trainable=_is_trainable(step),
    )
    call_index = {str(c.get("tool_call_id")): i for i, c in enumerate(calls) if c.get("tool_call_id")}
    call_errors = {
        str(c.get("tool_call_id")): bool(_as_dict(c.get("extra")).get("tool_use_is_error")) for c in calls
    }
    tool_messages: list[tuple[int, int, Message]] = []
    loose_texts: list[str] = []
    results = _as_list(_as_dict(step.get("observation")).get("results"))
    for order, result in enumerate(r for r in results if isinstance(r, dict)):
        call_id = result.get("source_call_id")
        if call_id is None and not result.get("content") and result.get("subagent_trajectory_ref"):
            continue  # a pure subagent pointer, no text the model saw
        text, raw_error = _result_text(result, prefer_raw, problems)
        if call_id is not None and str(call_id) in call_index:
            error = raw_error or call_errors.get(str(call_id), False) or is_error_text(text)
            message = Message(role="tool", content=text, tool_call_id=str(call_id), is_error=error)
            tool_messages.append((call_index[str(call_id)], order, message))
        else:
            if call_id is not None:
                problems.append(
                    f"step {step.get('step_id')}: observation for unknown call {call_id!r} kept as user text"
                )
            loose_texts.append(text)
    tool_messages.sort(key=lambda item: (item[0], item[1]))
    out = [assistant, *(m for _, _, m in tool_messages)]
    if loose_texts:
        out.append(Message(role="user", content="\n".join(loose_texts)))
    return out


def step_messages(
    step: dict[str, Any], *, prefer_raw_tool_result: bool = False, problems: list[str]
) -> list[Message]:
    """The canonical messages one ATIF step stands for."""
    source = step.get("source")
    if source == "agent":
        return _agent_step_messages(step, prefer_raw_tool_result, problems)
    text = content_text(step.get("message"), problems)
    if source == "system":
        return [Message(role="system", content=text)]
    if source == "user":
        return [Message(role="user", content=text)]
    problems.append(f"step {step.get('step_id')}: unknown source {source!r}; dropped")
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


def _segment(chain: list[tuple[Path, dict[str, Any]]], steps_of: Any, problems: list[str]) -> list[_Sample]:
    """Split a document chain into samples at replace boundaries and at non-matching continuations."""
    samples: list[_Sample] = []
    current = _Sample()
    for doc_index, (path, doc) in enumerate(chain):
        steps = steps_of(doc)
        if doc_index:
            n_copied = 0
            while n_copied < len(steps) and steps[n_copied].get("is_copied_context"):
                n_copied += 1
            copied_keys = [_step_key(s) for s in steps[:n_copied]]
            if n_copied and copied_keys == [_step_key(s) for s in current.steps]:
                steps = steps[n_copied:]  # the copied context repeats this sample exactly: extend it
            elif not current.empty():
                samples.append(current)
                current = _Sample()
            else:
                current = _Sample()  # a fresh sample starts in this file
        if path.name not in current.source_files:
            current.source_files.append(path.name)
        for step in steps:
            if _is_replace_boundary(step):
                if not current.empty():
                    samples.append(current)
                current = _Sample(preamble=_boundary_context(step, problems), source_files=[path.name])
                continue
            current.steps.append(step)
    if not current.empty():
        samples.append(current)
    return samples


def _sample_messages(sample: _Sample, prefer_raw: bool, problems: list[str]) -> list[Message]:
    messages = list(sample.preamble)
    for step in sample.steps:
        messages.extend(step_messages(step, prefer_raw_tool_result=prefer_raw, problems=problems))
    return messages


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


@dataclass
class AtifOptions:
    """Scaffold-specific reading rules."""

    prefer_raw_tool_result: bool = False  # claude-code: observation extra raw_tool_result
    split_sidechains: bool = False  # claude-code: extra.is_sidechain steps -> subagents by extra.agent_id
    include_subagents: bool = True


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
    samples = _segment(chain, steps_of, problems)
    out: list[AtifConversation] = []
    for index, sample in enumerate(samples):
        messages = _sample_messages(sample, options.prefer_raw_tool_result, problems)
        if not messages:
            continue
        files = [by_name[name] for name in sample.source_files if name in by_name] or chain[:1]
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
                extra=extra,
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
        messages: list[Message] = []
        for step in steps:
            messages.extend(
                step_messages(step, prefer_raw_tool_result=options.prefer_raw_tool_result, problems=problems)
            )
        out.append(
            AtifConversation(
                messages=messages,
                tools=[],
                source_file=path,
                agent_type="subagent",
                agent_id=agent_id,
                model_name=_doc_model(doc),
                extra={
                    "atif_files": [path.name],
                    "sidechain": True,
                    "schema_version": doc.get("schema_version"),
                },
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
