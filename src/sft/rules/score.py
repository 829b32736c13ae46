"""The reference's rule-based quality score (``rule_score`` v5, docs/config-contract.md §12.2).

Five dimensions from cheap structural signals of a main-agent trajectory::

    composite = 0.20·Efficiency + 0.15·Style + 0.25·ToolMastery + 0.25·Completion + 0.15·Precision

Where the reference leaves a choice open, this module decides as follows (also stated next to the code):

- **A1 "adjusted" retry cycles**: a cycle is a failed call followed by a call to the *same tool* in a
  *later* assistant turn (the next call of that tool). Sibling calls of the same parallel turn are not
  retries, so they are not counted ("adjusted").
- **A2 normalisation**: ``r = clip(steps / median, 0.5, 3)`` mapped linearly to [0, 1] by
  ``(r - 0.5) / 2.5``, so ``A2 = 1`` at half the median or less, ``0.8`` at the median, ``0`` at 3×.
  Without a median (None or <= 0) the trajectory is treated as median-length (ratio 1).
  Steps = assistant turns.
- **B1**: Shannon entropy (log2) of the called tool names over ``log2(available tools)``, where
  available = ``max(len(traj.tools), distinct names called)``; with fewer than two available tools B1 is
  1.0 when any call was made (nothing to diversify), else 0.
- **B2**: keywords are identifier-like tokens (3+ chars, lower-cased, common English/shell stop words
  removed); an observation's top 10 by frequency (ties: first occurrence) are looked up in the next
  assistant turn's content, reasoning and call arguments. Observations without keywords are skipped;
  no observations -> 0.
- **C1**: share of tool results that are not errors (``is_error`` or a known error prefix); 1.0 when
  there are no results. **C2** averages calls over assistant turns that made calls.
- **D1**: 1.0 when the run ends normally (a final text answer, or a finish/submit tool call) with no
  exception; 0.5 for a normal ending with an exception recorded, or a run cut off mid-work without
  exception; 0.0 for a run cut off mid-work with an exception (timeout, context overflow).
- **Edit tools**: Edit/MultiEdit/Write/NotebookEdit (claude-code), edit/write/patch/multiedit
  (open-code), ``str_replace_editor``/``file_editor`` with a command other than ``view`` (OpenHands), any
  tool whose name contains edit/write/patch/create_file/replace/insert; plus shell writes (``> file``,
  ``>> file``, ``tee file``, ``sed -i … file``) in shell tools (bash, terminal, ``bash_command`` …).
- **Test file** (D2): an edited path with a ``test``/``tests`` directory, a ``test_*``, ``*_test.*``,
  ``*.test.*``, ``*.spec.*`` or ``conftest.py`` file name, or a reproduction script (``reproduc*``).
  **Ran tests**: a shell command running pytest, unittest, tox/nox, go/cargo/npm/yarn/pnpm/mvn/gradle/
  make test, jest/mocha/vitest/rspec/phpunit/ctest, Django's runtests, or ``python`` on a test /
  reproduction file.
- **E1**: edits per distinct edited file; no edits -> 1.0. **E2**: a delete-then-modify is a path
  removed (``rm``/``git rm``/a delete tool) and later edited or written again.
- ``composite_score_v3`` / ``composite_score_v4``: the reference names them without formulas; we emit the
  unweighted mean of the five dimensions as v3 and the v5 composite again as v4 (compatibility keys).

Subagent trajectories get no score (``None``), as in the reference.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from sft.core.canonical import Message, ToolCall, Trajectory
from sft.rules.filters import compact_json_bytes
from sft.rules.validate import is_tool_error

SCORE_VERSION = "sft-rule-v5"
WEIGHTS = {"efficiency": 0.20, "style": 0.15, "tool_mastery": 0.25, "completion": 0.25, "precision": 0.15}

_EDIT_TOOLS = {
    "edit",
    "multiedit",
    "write",
    "notebookedit",
    "patch",
    "apply_patch",
    "create_file",
    "str_replace",
    "insert",
    "write_file",
    "edit_file",
}
_EDITOR_TOOLS = {"str_replace_editor", "file_editor", "editor"}
_NOT_EDIT_TOOLS = {"todowrite", "todoread", "notebookread"}
_DELETE_TOOLS = {"delete", "delete_file", "remove_file", "rm"}
_FINISH_TOOLS = {"finish", "submit", "mark_task_complete", "task_complete", "attempt_completion", "done"}
_SHELL_HINTS = ("bash", "shell", "terminal", "command", "exec", "run")
_PATH_KEYS = ("file_path", "path", "filePath", "filename", "file", "target_file")
_COMMAND_KEYS = ("command", "cmd", "keystrokes", "script", "input")

_TEST_PATH = re.compile(
    r"(^|/)(tests?|testing|__tests__|spec)/|(^|/)(test_[^/]*|[^/]*_test\.[^/]+|[^/]*\.(test|spec)\.[^/]+"
    r"|conftest\.py|reproduc[^/]*)$",
    re.IGNORECASE,
)
_TEST_COMMAND = re.compile(
    r"\b(pytest|py\.test|unittest|tox|nox|jest|mocha|vitest|rspec|phpunit|ctest|runtests(\.py)?)\b"
    r"|\b(go|cargo|npm|yarn|pnpm|mvn|gradle|make|dotnet)\s+(run\s+)?test\b"
    r"|\bpython[0-9.]*\s+(-\S+\s+)*\S*(test|reproduc)\S*\.py\b",
    re.IGNORECASE,
)
_REDIRECT = re.compile(r"(?:^|[^0-9&>])>>?\s*([^\s;&|<>()]+)")
_TEE = re.compile(r"\btee\s+(?:-a\s+)?([^\s;&|<>()]+)")
_SED_INPLACE = re.compile(
    r"\bsed\s+(?:-[a-zA-Z]*\s+)*-i\S*\s+.*?\s([^\s;&|<>()]+)\s*(?:$|[;&|])", re.MULTILINE
)
_RM = re.compile(r"\b(?:git\s+)?rm\s+((?:-\S+\s+)*)([^;&|<>()\n]+)")
_PATCH_HEADER = re.compile(r"^(?:\*\*\* (?:Update|Add) File: |\+\+\+ (?:b/)?)(\S+)", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOP_WORDS = frozenset(
    "the and for with that this from are was were not but you your have has had can will would should "
    "could all any its into out use used using then than there their them they what when where which who "
    "how why also just more most some such only other over under after before again been being does did "
    "doing done each few here off once own same too very about above below between both during until while "
    "true false none null self def return import class file line lines error errors name value type "
    "cd ls cat echo grep find sed awk head tail git python python3 pip bash sh usr bin tmp dev null".split()
)
_NON_PATHS = {"/dev/null", "/dev/stdout", "/dev/stderr", "&1", "&2"}


class _Call(NamedTuple):
    """A tool call with its turn position and its result (None when unanswered).

    A NamedTuple, not a frozen dataclass: one is built per call, and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) was a visible share of the score.
    """

    turn: int
    call: ToolCall
    result: Message | None


def clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _iter_calls(messages: list[Message]) -> Iterator[_Call]:
    """Calls in order, each paired with the result of the same id in the tool block right after its turn."""
    turn = 0
    count = len(messages)
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        if message.tool_calls:
            results: dict[str | None, Message] = {}
            after = index + 1
            while after < count and messages[after].role == "tool":
                results.setdefault(messages[after].tool_call_id, messages[after])
                after += 1
            for call in message.tool_calls:
                yield _Call(turn=turn, call=call, result=results.get(call.id))
        turn += 1


def _args(call: ToolCall) -> dict[str, Any]:
    return call.arguments if isinstance(call.arguments, dict) else {}


@functools.lru_cache(maxsize=1024)
def _is_shell(name: str) -> bool:
    """Why cached: asked up to three times per call (edits, deletes, tests) for a handful of tool names."""
    lowered = name.lower()
    return any(hint in lowered for hint in _SHELL_HINTS)


def shell_command(call: ToolCall) -> str | None:
    """The command text of a shell-like tool call, or None."""
    if not _is_shell(call.name):
        return None
    args = _args(call)
    for key in _COMMAND_KEYS:
        if isinstance(args.get(key), str):
            return args[key]
    return None


def _path_of(call: ToolCall) -> str | None:
    args = _args(call)
    for key in _PATH_KEYS:
        if isinstance(args.get(key), str) and args[key]:
            return args[key]
    return None


def edited_paths(call: ToolCall) -> list[str]:
    """Files this call writes (an edit tool's path, or shell redirections / tee / sed -i targets)."""
    name = call.name.lower()
    if name in _EDITOR_TOOLS:
        command = str(_args(call).get("command", ""))
        path = _path_of(call)
        return [path] if path and command != "view" else []
    if name in _EDIT_TOOLS or (
        name not in _NOT_EDIT_TOOLS
        and any(part in name for part in ("edit", "write", "patch", "create_file"))
    ):
        path = _path_of(call)
        return [path] if path else (_patch_paths(call) or ["<unknown>"])
    command = shell_command(call)
    if command is None:
        return []
    targets = [m.group(1) for regex in (_REDIRECT, _TEE, _SED_INPLACE) for m in regex.finditer(command)]
    return [t.strip("'\"") for t in targets if t.strip("'\"") not in _NON_PATHS]


def _patch_paths(call: ToolCall) -> list[str]:
    """Paths named inside a patch argument (``*** Update File: p`` or ``+++ b/p`` headers)."""
    paths: list[str] = []
    for value in _args(call).values():
        if isinstance(value, str):
            paths.extend(m.group(1).strip() for m in _PATCH_HEADER.finditer(value))
    return [p for p in paths if p not in _NON_PATHS]


def deleted_paths(call: ToolCall) -> list[str]:
    """Files this call deletes (a delete tool's path, or ``rm`` / ``git rm`` arguments)."""
    if call.name.lower() in _DELETE_TOOLS:
        path = _path_of(call)
        return [path] if path else []
    command = shell_command(call)
    if command is None:
        return []
    paths: list[str] = []
    for match in _RM.finditer(command):
        try:
            paths.extend(shlex.split(match.group(2)))
        except ValueError:
            paths.extend(match.group(2).split())
    return paths


def ran_tests(call: ToolCall) -> bool:
    command = shell_command(call)
    return bool(command and _TEST_COMMAND.search(command))


# --------------------------------------------------------------------------------------------------
# sub-metrics
# --------------------------------------------------------------------------------------------------


def error_retry_cycles(calls: list[_Call]) -> int:
    """Failed call -> next call of the same tool in a later turn (see module doc: "adjusted")."""
    cycles = 0
    for index, item in enumerate(calls):
        if item.result is None or not is_tool_error(item.result):
            continue
        following = next((c for c in calls[index + 1 :] if c.call.name == item.call.name), None)
        if following is not None and following.turn > item.turn:
            cycles += 1
    return cycles


def step_ratio_score(steps: int, median_steps: float | None) -> tuple[float, float]:
    """(A2, ratio): A2 = 1 - (clip(steps/median, 0.5, 3) - 0.5) / 2.5."""
    ratio = steps / median_steps if median_steps and median_steps > 0 else 1.0
    return 1.0 - (clip(ratio, 0.5, 3.0) - 0.5) / 2.5, ratio


def action_diversity(calls: list[_Call], available: int) -> float:
    names = Counter(c.call.name for c in calls)
    if not names:
        return 0.0
    n_available = max(available, len(names))
    if n_available < 2:
        return 1.0
    total = sum(names.values())
    entropy = -sum((n / total) * math.log2(n / total) for n in names.values())
    return clip(entropy / math.log2(n_available), 0.0, 1.0)


# The head of a tool output is enough to find its most frequent words; scanning a 200 MB output word by
# word in Python took 30 s (issue 8) for no change in the score.
KEYWORD_SCAN_CHARS = 1_000_000


def top_keywords(text: str, k: int = 10) -> list[str]:
    """The ``k`` most frequent keywords of the head of ``text``; ties keep their first occurrence.

    One C-level ``findall`` instead of a Python step per match (this was the largest single item of the
    score). Every match is ASCII (the pattern is), so lower-casing the matches joined by spaces equals
    lower-casing each one. A Counter keeps first-insertion order and ``sorted`` is stable (also with
    ``reverse=True``), so equal counts stay in first-occurrence order, as the tie rule says.
    """
    words = " ".join(_WORD.findall(text, 0, KEYWORD_SCAN_CHARS)).lower().split()
    counts = Counter(words)
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)
    # Dropping the stop words after ranking leaves the others in the same order.
    return [word for word in ranked if word not in _STOP_WORDS][:k]


def _arguments_text(arguments: Any) -> str:
    """Call arguments as JSON text, for keyword look-ups only (``word in text``); never written anywhere.

    Compact separators (``compact_json_bytes``, fast through orjson) instead of ``json.dumps``'s default
    ``", "`` and ``": "``: the texts differ only by a space after a structural ``,`` or ``:``, and a keyword
    (letters, digits, ``_``) can never span one of those, so every look-up gives the same answer.
    """
    return compact_json_bytes(arguments).decode("utf-8", "surrogatepass")


def _assistant_text(message: Message) -> str:
    args = " ".join(_arguments_text(c.arguments) for c in message.tool_calls)
    return f"{message.content}\n{message.reasoning_content}\n{args}".lower()


def _next_assistant_index(messages: list[Message]) -> list[int | None]:
    """For each position, the index of the first assistant message after it (None: there is none)."""
    following: list[int | None] = [None] * len(messages)
    upcoming: int | None = None
    for index in range(len(messages) - 1, -1, -1):
        following[index] = upcoming
        if messages[index].role == "assistant":
            upcoming = index
    return following


def observation_utilization(messages: list[Message]) -> float:
    """B2: the mean share of each observation's top keywords that the next assistant turn mentions.

    The next assistant turn is found by one backward pass, and its text built once even when several
    results (parallel calls) precede it.
    """
    following_of = _next_assistant_index(messages)
    replies: dict[int, str] = {}
    shares: list[float] = []
    for index, message in enumerate(messages):
        following = following_of[index]
        if message.role != "tool" or following is None:
            continue
        keywords = top_keywords(message.content)
        if not keywords:
            continue
        reply = replies.get(following)
        if reply is None:
            reply = replies[following] = _assistant_text(messages[following])
        shares.append(sum(1 for word in keywords if word in reply) / len(keywords))
    return sum(shares) / len(shares) if shares else 0.0


def tool_success_rate(messages: list[Message]) -> float:
    results = [m for m in messages if m.role == "tool"]
    if not results:
        return 1.0
    return sum(1 for m in results if not is_tool_error(m)) / len(results)


def tool_parallelism(messages: list[Message]) -> float:
    per_turn = [len(m.tool_calls) for m in messages if m.role == "assistant" and m.tool_calls]
    if not per_turn:
        return 0.0
    return clip((sum(per_turn) / len(per_turn) - 1) / 4, 0.0, 1.0)


def submission_completeness(messages: list[Message], exception_type: str | None) -> float:
    final = next((m for m in reversed(messages) if m.role == "assistant"), None)
    if final is None:
        return 0.0
    finished = (
        not final.tool_calls and bool(final.content.strip() or final.reasoning_content.strip())
    ) or any(c.name.lower() in _FINISH_TOOLS for c in final.tool_calls)
    if finished:
        return 0.5 if exception_type else 1.0
    return 0.0 if exception_type else 0.5


def delete_then_modify(calls: list[_Call]) -> int:
    return _delete_then_modify(calls, [edited_paths(item.call) for item in calls])


def _delete_then_modify(calls: list[_Call], edited_per_call: list[list[str]]) -> int:
    """``delete_then_modify`` with each call's ``edited_paths`` already known (``score_features`` has them)."""
    deleted: set[str] = set()
    count = 0
    for item, edited in zip(calls, edited_per_call, strict=True):
        for path in edited:
            if path in deleted:
                count += 1
                deleted.discard(path)
        deleted.update(deleted_paths(item.call))
    return count


# --------------------------------------------------------------------------------------------------
# the score
# --------------------------------------------------------------------------------------------------


def score_features(traj: Trajectory) -> dict[str, Any] | None:
    """Everything of ``rule_score`` that depends on this trajectory alone (None for subagents).

    Why split: only A2 needs a job-wide number (the scaffold's median step count), so the expensive part
    runs once per trajectory in the conversion worker and is cached with the trial; the parent then only
    calls ``finalize_score``. The values are JSON-safe and unrounded: ``finalize_score(score_features(t),
    median_steps=m) == rule_score(t, median_steps=m)`` exactly, also after a JSON round trip.
    """
    if traj.meta.agent_type == "subagent":
        return None
    messages = traj.messages
    calls = list(_iter_calls(messages))
    cycles = error_retry_cycles(calls)
    edited_per_call = [edited_paths(item.call) for item in calls]
    edits = [path for edited in edited_per_call for path in edited]
    wrote_test = any(_TEST_PATH.search(path) for path in edits)
    tested = any(ran_tests(item.call) for item in calls)
    dtm = _delete_then_modify(calls, edited_per_call)
    return {
        "scaffold": traj.meta.scaffold,
        "assistant_turns": sum(1 for m in messages if m.role == "assistant"),
        "total_tool_calls": len(calls),
        "error_retry_cycles": cycles,
        "edited_files": len(set(edits)),
        "delete_then_modify_count": dtm,
        "a1": 1.0 - clip(cycles / 10, 0.0, 1.0),
        "b1": action_diversity(calls, len(traj.tools)),
        "b2": observation_utilization(messages),
        "c1": tool_success_rate(messages),
        "c2": tool_parallelism(messages),
        "d1": submission_completeness(messages, traj.meta.exception_type),
        "d2": 0.5 * wrote_test + 0.5 * tested,
        "e1": 1.0 - clip((len(edits) / len(set(edits)) - 1) / 4, 0.0, 1.0) if edits else 1.0,
        "e2": 1.0 - clip(dtm / 3, 0.0, 1.0),
    }


def finalize_score(features: dict[str, Any] | None, *, median_steps: float | None) -> dict[str, Any] | None:
    """The ``_score`` dict from ``score_features`` and the scaffold's median step count (A2)."""
    if features is None:
        return None
    f = features
    a2, ratio = step_ratio_score(f["assistant_turns"], median_steps)
    dims = {
        "efficiency": 0.8 * f["a1"] + 0.2 * a2,
        "style": 0.4 * f["b1"] + 0.6 * f["b2"],
        "tool_mastery": 0.9 * f["c1"] + 0.1 * f["c2"],
        "completion": 0.3 * f["d1"] + 0.7 * f["d2"],
        "precision": 0.85 * f["e1"] + 0.15 * f["e2"],
    }
    composite = sum(WEIGHTS[name] * value for name, value in dims.items())
    score: dict[str, Any] = {
        "version": SCORE_VERSION,
        "scaffold": f["scaffold"],
        "assistant_turns": f["assistant_turns"],
        "total_tool_calls": f["total_tool_calls"],
        "error_retry_cycles": f["error_retry_cycles"],
        "step_ratio": ratio,
        "edited_files": f["edited_files"],
        "delete_then_modify_count": f["delete_then_modify_count"],
        "a1_error_retry": f["a1"],
        "a2_step_count_ratio": a2,
        "b1_action_diversity": f["b1"],
        "b2_observation_utilization": f["b2"],
        "c1_tool_success_rate": f["c1"],
        "c2_tool_parallelism": f["c2"],
        "d1_submission_completeness": f["d1"],
        "d2_test_verification": f["d2"],
        "e1_file_edit_concentration": f["e1"],
        "e2_delete_then_modify": f["e2"],
        **{f"{name}_score": value for name, value in dims.items()},
        "composite_score_v3": sum(dims.values()) / len(dims),
        "composite_score_v4": composite,
        "composite_score": composite,
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in score.items()}


def rule_score(traj: Trajectory, *, median_steps: float | None) -> dict[str, Any] | None:
    """The ``_score`` dict of a main-agent trajectory (None for subagents); see the module doc."""
    return finalize_score(score_features(traj), median_steps=median_steps)


def scaffold_median_steps(trajs: Iterable[Trajectory]) -> dict[str, float]:
    """Median assistant-turn count per scaffold over main-agent trajectories (the A2 reference)."""
    return median_steps_by_scaffold(
        (traj.meta.scaffold, sum(1 for m in traj.messages if m.role == "assistant"))
        for traj in trajs
        if traj.meta.agent_type == "main"
    )


def median_steps_by_scaffold(steps: Iterable[tuple[str, int]]) -> dict[str, float]:
    """Median of ``(scaffold, assistant turns)`` pairs per scaffold (the engine feeds it from score features)."""
    grouped: dict[str, list[int]] = {}
    for scaffold, turns in steps:
        grouped.setdefault(scaffold, []).append(turns)
    return {scaffold: float(statistics.median(values)) for scaffold, values in grouped.items()}
