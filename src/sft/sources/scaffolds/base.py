"""The one interface every scaffold adapter implements, and the helpers they share.

An adapter turns either the LiteLLM proxy log records of one agent dir (``from_litellm``) or its ATIF
files (``from_atif``) into canonical Trajectories with full provenance in ``meta``. Scaffold-specific
rules (which calls are the conversation, main vs subagent, dropped side calls) live in the subclasses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sft.core.canonical import Message, Trajectory, TrajectoryMeta
from sft.sources.harbor import litellm
from sft.sources.harbor.atif import AtifConversation, parse_agent_dir
from sft.sources.harbor.job import TrialInfo
from sft.sources.scaffolds.atif_hooks import AtifHooks, atif_hooks_for

logger = logging.getLogger(__name__)

# Tool names that only a main coding agent holds (subagents are read-only or cannot spawn agents).
EDIT_TOOL_NAMES = frozenset(
    {"edit", "write", "multiedit", "apply_patch", "notebookedit", "str_replace_based_edit_tool"}
)
SPAWN_TOOL_NAMES = frozenset({"task", "agent"})


class ScaffoldMismatchError(Exception):
    """The files do not come from the scaffold the config names; ``detail`` names both."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class Refusal:
    """A conversation refused during extraction; its messages let the turn accounting lose its model turns
    under ``reason`` (``sft.core.turns.RefusedConversation``)."""

    label: str  # the trajectory label of the reject line (``<file>#<agent>[#segment-<n>]``)
    reason: str
    detail: str
    agent_type: str = "main"
    messages: list[Message] = field(default_factory=list)


@dataclass
class AdapterReport:
    """What an adapter noticed: human-readable problems and counters (summed into the trial's counters)."""

    problems: list[str] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    rejects: list[Refusal] = field(default_factory=list)  # conversations refused during extraction


@dataclass
class LogConversation:
    """One surviving call of a cumulative log, in canonical form."""

    order: int  # position in request_time order (the survivor's final call)
    record: dict[str, Any]
    messages: list[Message]
    tools: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def tool_names(self) -> frozenset[str]:
        return frozenset(str(t.get("function", {}).get("name", "")) for t in self.tools)


def _recover_reasoning(
    view: list[Any], built: litellm.BuiltConversation, producer_of: dict[int, dict[str, Any]]
) -> int:
    """``litellm.recover_reasoning`` given only the assistant turns that lack reasoning, and the view before
    the last of them: the same turns are filled, with the rolling hashes of that prefix only.

    Why: ``recover_reasoning`` hashes the whole view (every message of the longest call, again after
    dedup hashed it) although it only looks up, for each turn without reasoning at position j, the hash of
    ``view[:j]`` (the input of the call that produced it), and ``rolling_hashes(view[:p])`` holds those
    hashes for every j <= p. Most turns carry their reasoning, and the ones that do not come early.
    The messages are the same objects, so filling them fills ``built``.
    """
    missing = {
        position: message for position, message in built.assistant_at.items() if not message.reasoning_content
    }
    if not missing:
        return 0
    needed = dataclasses.replace(built, assistant_at=missing)
    return litellm.recover_reasoning(view[: max(missing)], needed, producer_of)


def relative_source(path: Path, job_dir: Path | None) -> str:
    """``path`` relative to the job dir, POSIX style (falls back to the absolute path)."""
    if job_dir is not None:
        try:
            return Path(os.path.relpath(path, job_dir)).as_posix()
        except ValueError:
            pass
    return Path(path).as_posix()


def classify_main(conversations: Sequence[LogConversation]) -> list[bool]:
    """Which conversations are the main agent's.

    The best candidate has edit tools (Edit/Write), can spawn subagents (Task/Agent), offers the most tools
    and is the longest; every conversation with exactly its tool set is main too (the main agent after a
    compaction keeps its tools), all others are subagents (read-only or non-spawning tool sets).
    """
    if not conversations:
        return []

    def rank(conv: LogConversation) -> tuple[bool, bool, int, int]:
        names = {n.lower() for n in conv.tool_names()}
        return (bool(names & EDIT_TOOL_NAMES), bool(names & SPAWN_TOOL_NAMES), len(names), len(conv.messages))

    best = max(conversations, key=rank)
    best_names = best.tool_names()
    return [conv.tool_names() == best_names for conv in conversations]


class ScaffoldAdapter(ABC):
    """Turns one agent dir's raw files into canonical trajectories for one scaffold."""

    name: ClassVar[str]
    harbor_agent_names: ClassVar[tuple[str, ...]]
    supports_litellm: ClassVar[bool] = True  # False: ATIF only (no proxy-log adapter for this agent)

    # ------------------------------------------------------------------------------------------------------
    # the interface

    def from_litellm(
        self,
        records: list[dict[str, Any]],
        info: TrialInfo,
        *,
        source_file: str | None = None,
        report: AdapterReport | None = None,
    ) -> list[Trajectory]:
        """Trajectories from the (success-filtered) records of one ``litellm-trajectory.jsonl``."""
        report = report if report is not None else AdapterReport()
        source_file = source_file or self.default_log_source(info)
        self.check_log_shape(records, source_file)
        return self.trajectories_from_log(records, info, source_file, report)

    @abstractmethod
    def trajectories_from_log(
        self, records: list[dict[str, Any]], info: TrialInfo, source_file: str, report: AdapterReport
    ) -> list[Trajectory]:
        """The scaffold's own rules for turning a checked proxy log into trajectories."""

    def check_log_shape(self, records: list[dict[str, Any]], source_file: str) -> None:
        """Refuse a log another scaffold wrote. Default: tool-calling scaffolds send their tool schemas."""
        self.require_tools(records, source_file)

    def from_atif(
        self,
        agent_dir: Path,
        info: TrialInfo,
        *,
        job_dir: Path | None = None,
        report: AdapterReport | None = None,
        include_subagents: bool = True,
        copied_context: str = "drop",
        rebuilt_atif: str = "drop",
    ) -> list[Trajectory]:
        """Trajectories from ``agent_dir/trajectory.json`` (+ continuations and subagent files).

        The generic reader with this agent's hooks (``atif_hooks``). A conversation the hooks call rebuilt
        (not the model's own text) is kept only with ``rebuilt_atif: keep``; otherwise it, and any
        conversation the reader could not pair up, goes to ``report.rejects`` with the reason.
        """
        report = report if report is not None else AdapterReport()
        job_dir = job_dir if job_dir is not None else info.trial_dir.parent
        hooks = self.atif_hooks()
        options = hooks.options(include_subagents=include_subagents, copied_context=copied_context)
        parsed = parse_agent_dir(agent_dir, options)
        report.problems.extend(parsed.problems)
        main_agent = parsed.agent_names[0] if parsed.agent_names else ""
        self.check_atif_agent(main_agent, agent_dir)
        trajectories = []
        for conv in parsed.conversations:
            label = f"{relative_source(conv.source_file, job_dir)}#{conv.agent_id or conv.agent_type}"
            if "segment" in conv.extra:
                label += f"#segment-{conv.extra['segment']}"
            turns = sum(1 for m in conv.messages if m.role == "assistant" and m.trainable)
            if conv.reject is not None:
                report.rejects.append(
                    Refusal(
                        label,
                        conv.reject[0],
                        f"{conv.reject[1]} ({turns} model turns)",
                        conv.agent_type,
                        conv.messages,
                    )
                )
                report.counters["atif_conversations_rejected"] += 1
                report.counters["atif_rejected_model_turns"] += turns
                continue
            if hooks.is_rebuilt is not None and hooks.is_rebuilt(conv.messages):
                report.counters["rebuilt_atif_conversations"] += 1
                if rebuilt_atif != "keep":
                    report.counters["rebuilt_atif_dropped_turns"] += turns
                    report.counters["atif_conversations_rejected"] += 1
                    report.counters["atif_rejected_model_turns"] += turns
                    report.rejects.append(
                        Refusal(
                            label,
                            "rebuilt_atif",
                            f"{conv.source_file}: the assistant text is rebuilt by Harbor ('Analysis:/Plan:' plus "
                            f"synthetic tool calls), not what the model emitted ({turns} model turns); "
                            f"{hooks.rebuilt_fix or 'set conversion.rebuilt_atif: keep to train on it anyway'}",
                            conv.agent_type,
                            conv.messages,
                        )
                    )
                    continue
                conv.extra["atif_content_rebuilt"] = True
            trajectories.append(self.trajectory_from_atif(conv, info, job_dir))
        report.counters["atif_conversations"] += len(trajectories)
        return self.order_and_index(trajectories)

    def atif_hooks(self) -> AtifHooks:
        """This scaffold's ATIF hooks (from the registry, by its first Harbor agent name)."""
        return atif_hooks_for(self.harbor_agent_names[0] if self.harbor_agent_names else self.name)

    def check_atif_agent(self, atif_agent: str, agent_dir: Path) -> None:
        """Refuse ATIF another agent wrote (the generic ATIF adapter accepts any)."""
        if atif_agent and not self.accepts_agent_name(atif_agent):
            raise ScaffoldMismatchError(
                f"{agent_dir / 'trajectory.json'} was written by agent {atif_agent!r}, but the scaffold is "
                f"{self.name!r} (expects {', '.join(self.harbor_agent_names)}); set source.scaffold to match the "
                "job, or to auto"
            )

    # ------------------------------------------------------------------------------------------------------
    # shared helpers

    @classmethod
    def accepts_agent_name(cls, agent_name: str) -> bool:
        """Harbor agent name (result.json agent_info.name or ATIF agent.name) belongs to this scaffold."""
        return any(agent_name == n or agent_name.startswith(n + "-") for n in cls.harbor_agent_names)

    def atif_extra(self, conv: AtifConversation) -> dict[str, Any]:
        """Notes for an ATIF-derived trajectory: the hooks' caveats and, true to the file, where the tool
        results came from (``tool_result_sources``: raw_tool_result / stripped / as_written)."""
        extra = dict(conv.extra)
        caveats = list(self.atif_hooks().caveats)
        sources = extra.get("tool_result_sources") or {}
        if sources.get("raw_tool_result"):
            caveats.append(f"{sources['raw_tool_result']} tool results from raw_tool_result")
        if sources.get("stripped"):
            caveats.append(
                f"{sources['stripped']} tool results stripped of Harbor's [stdout]/[metadata] decorations"
            )
        if extra.get("atif_content_rebuilt"):
            caveats.append(
                "assistant text rebuilt from parsed JSON (Analysis/Plan) with synthetic tool calls; "
                "rerun with trajectory_config raw_content=true for the verbatim responses"
            )
        if caveats:
            extra["atif_caveats"] = "; ".join(caveats)
        return extra

    def trajectory_from_atif(self, conv: AtifConversation, info: TrialInfo, job_dir: Path) -> Trajectory:
        return make_trajectory(
            conv.messages,
            conv.tools,
            info,
            scaffold=self.name,
            source_kind="atif",
            source_file=relative_source(conv.source_file, job_dir),
            agent_type=conv.agent_type,
            agent_id=conv.agent_id,
            teacher_model=conv.model_name,
            usage=conv.usage,
            extra=self.atif_extra(conv),
        )

    @staticmethod
    def order_and_index(trajectories: list[Trajectory]) -> list[Trajectory]:
        """Main trajectories first, then subagents (stable), indexed 0..n-1."""
        ordered = sorted(trajectories, key=lambda t: t.meta.agent_type != "main")
        for index, trajectory in enumerate(ordered):
            trajectory.meta.trajectory_index = index
        return ordered

    def cumulative_conversations(
        self,
        records: list[dict[str, Any]],
        report: AdapterReport,
        *,
        side_call_reason: Callable[[dict[str, Any]], str | None] | None = None,
        min_messages: int = 3,
    ) -> list[LogConversation]:
        """Prefix-deduplicated conversations of a cumulative log (docs/input-formats.md §9.2).

        Sort by request_time, drop side calls, hash raw inputs, keep the calls that are no prefix of another,
        and only then build canonical messages (plus reasoning recovered from earlier responses).
        """
        with litellm.gc_paused():
            return self._cumulative_conversations(records, report, side_call_reason, min_messages)

    def _cumulative_conversations(
        self,
        records: list[dict[str, Any]],
        report: AdapterReport,
        side_call_reason: Callable[[dict[str, Any]], str | None] | None,
        min_messages: int,
    ) -> list[LogConversation]:
        order = litellm.sort_by_request_time(records)
        ordered = [records[i] for i in order]
        candidates: list[int] = []
        for position, record in enumerate(ordered):
            reason = side_call_reason(record) if side_call_reason else None
            if reason:
                report.counters["side_calls_dropped"] += 1
                report.problems.append(
                    f"call {position} (request_time {record.get('request_time')}) dropped: {reason}"
                )
                continue
            candidates.append(position)
        views = [litellm.hashing_view(ordered[p]) for p in candidates]
        lengths = [len(litellm.request_input(ordered[p])) for p in candidates]
        dedup = litellm.dedup_conversations(views, min_messages=min_messages, lengths=lengths)
        report.counters["prefix_duplicates_dropped"] += dedup.prefix_dropped
        report.counters["short_requests_dropped"] += dedup.short_dropped
        report.counters["exact_duplicates_dropped"] += dedup.exact_dropped
        producer_of = {full: ordered[candidates[i]] for i, full in enumerate(dedup.full_hashes)}
        conversations: list[LogConversation] = []
        for kept in dedup.kept:
            record = ordered[candidates[kept]]
            built = litellm.build_conversation(record, report.problems)
            if not built.has_response:
                report.counters["responses_missing"] += 1
            recovered = _recover_reasoning(views[kept], built, producer_of)
            report.counters["reasoning_turns_recovered"] += recovered
            extra: dict[str, Any] = {"reasoning_turns_recovered": recovered} if recovered else {}
            conversations.append(
                LogConversation(candidates[kept], record, built.messages, built.tools, extra)
            )
        return conversations

    def trajectory_from_log(
        self,
        conv: LogConversation,
        info: TrialInfo,
        *,
        source_file: str,
        agent_type: str = "main",
        agent_id: str | None = None,
    ) -> Trajectory:
        return make_trajectory(
            conv.messages,
            conv.tools,
            info,
            scaffold=self.name,
            source_kind="litellm",
            source_file=source_file,
            agent_type=agent_type,
            agent_id=agent_id,
            teacher_model=litellm.response_model(conv.record),
            usage=litellm.record_usage(conv.record),
            gen_params=litellm.gen_params(conv.record),
            extra=conv.extra,
        )

    @staticmethod
    def default_log_source(info: TrialInfo) -> str:
        return f"{info.trial_name}/agent/litellm-trajectory.jsonl"

    def require_tools(self, records: list[dict[str, Any]], source_file: str) -> None:
        """Tool-calling scaffolds send their tool schemas with every agent call; a log without any is foreign."""
        if records and not any(litellm.request_tools(r) for r in records):
            raise ScaffoldMismatchError(
                f"{source_file}: none of the {len(records)} calls offers tools, but scaffold {self.name!r} always "
                "sends its tool schemas (a text-protocol agent such as terminus-2 sends none); "
                "set source.scaffold to the agent that produced the job"
            )


def make_trajectory(
    messages: list[Message],
    tools: list[dict[str, Any]],
    info: TrialInfo,
    *,
    scaffold: str,
    source_kind: str,
    source_file: str,
    agent_type: str = "main",
    agent_id: str | None = None,
    teacher_model: str | None = None,
    usage: dict[str, Any] | None = None,
    gen_params: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Trajectory:
    """A Trajectory with the provenance every output row carries."""
    meta = TrajectoryMeta(
        instance_id=info.instance_id,
        repo=info.repo,
        trial_name=info.trial_name,
        scaffold=scaffold,
        agent_type=agent_type,  # type: ignore[arg-type]
        agent_id=agent_id,
        teacher_model=teacher_model or info.teacher_model,
        reward=info.reward,
        exception_type=info.exception_type,
        source_kind=source_kind,  # type: ignore[arg-type]
        source_file=source_file,
        usage=dict(usage or {}),
        gen_params=dict(gen_params or {}),
        extra=dict(extra or {}),
    )
    return Trajectory(messages=messages, tools=tools, meta=meta)
