"""The model turns a trial's source files hold (the ``source`` side of ``sft.core.turns``).

Counted from the files themselves, independently of how an adapter reads them, so that a turn an adapter
misses shows up as lost instead of vanishing from both sides:

* LiteLLM proxy log: one model turn per logged call that succeeded (``read_log`` already dropped the
  ``success: false`` ones, which returned nothing). A response re-sent in later requests' history is the
  same turn, so history is never counted.
* ATIF: one model turn per ``source == "agent"`` step that the model produced in that file: not
  ``is_copied_context`` (a copy of an earlier turn, e.g. a continuation's or a summarisation sub-agent's
  context) and not ``llm_call_count == 0`` (a deterministic dispatch). A model step right after a model
  step with neither calls nor observation is the same response written as two steps (codex: the message
  item, then the function_call item; the reader joins them, ``merged_consecutive_agent_steps``), so it is
  not a second turn. ``trajectory.json`` and its
  ``trajectory.cont-<n>.json`` continuations are the main agent; every other ``trajectory.*.json``, embedded
  ``subagent_trajectories`` and claude-code sidechain steps (``extra.is_sidechain``) are sub-agents.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from sft.core.turns import SOURCE_ATIF, SOURCE_LITELLM
from sft.sources.harbor.atif import AtifError, load_document

_MAIN_FILE_RE = re.compile(r"^trajectory(\.cont-\d+)?\.json$")
_MAX_DEPTH = 8  # embedded sub-agents nest; the ATIF parser stops at the same depth


def _is_model_step(step: Any) -> bool:
    return (
        isinstance(step, dict)
        and step.get("source") == "agent"
        and not step.get("is_copied_context")
        and step.get("llm_call_count") != 0
    )


def _is_plain_model_step(step: Any) -> bool:
    """A model step with neither calls nor an observation: the next model step continues its response."""
    return _is_model_step(step) and step.get("tool_calls") in (None, []) and not step.get("observation")


def _count_doc(doc: dict[str, Any], agent_type: str, counts: Counter[str], depth: int = 0) -> None:
    steps = doc.get("steps")
    previous: dict[Any, Any] = {}  # stream (main, or a sidechain's agent id) -> its step before this one
    for step in steps if isinstance(steps, list) else []:
        extra = step.get("extra") if isinstance(step, dict) else None
        sidechain = isinstance(extra, dict) and bool(extra.get("is_sidechain"))
        stream = ("sidechain", extra.get("agent_id")) if sidechain and isinstance(extra, dict) else "main"
        before, previous[stream] = previous.get(stream), step
        if _is_model_step(step) and not _is_plain_model_step(before):
            counts["subagent" if sidechain else agent_type] += 1
    embedded = doc.get("subagent_trajectories")
    if depth < _MAX_DEPTH and isinstance(embedded, list):
        for sub in embedded:
            if isinstance(sub, dict):
                _count_doc(sub, "subagent", counts, depth + 1)


def count_atif_turns(agent_dir: Path) -> Counter[str]:
    """Model-produced agent steps in an agent dir's ATIF files, by ``main`` / ``subagent``.

    A file that cannot be read is skipped here: the ATIF reader reports it (or rejects the trial).
    """
    counts: Counter[str] = Counter()
    for path in sorted(Path(agent_dir).glob("trajectory*.json")):
        try:
            doc = load_document(path)
        except AtifError:
            continue
        _count_doc(doc, "main" if _MAIN_FILE_RE.match(path.name) else "subagent", counts)
    return counts


def count_source_atif(agent_dir: Path, counters: MutableMapping[str, int]) -> None:
    """Add an agent dir's ATIF model turns to a trial's counters (``SOURCE_ATIF``)."""
    for agent_type, count in count_atif_turns(agent_dir).items():
        counters[SOURCE_ATIF[agent_type]] = counters.get(SOURCE_ATIF[agent_type], 0) + count


def count_source_litellm(records: list[dict[str, Any]], counters: MutableMapping[str, int]) -> None:
    """Add a proxy log's model turns (its successful calls) to a trial's counters (``SOURCE_LITELLM``)."""
    counters[SOURCE_LITELLM] = counters.get(SOURCE_LITELLM, 0) + len(records)
