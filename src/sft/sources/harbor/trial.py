"""One trial dir -> its canonical trajectories, or rejects that say exactly why not.

``extract_trial`` never raises: every failure (no result.json, corrupt files, the wrong scaffold, a log
whose shape no adapter understands) becomes a Reject naming the file, so one bad trial never stops a job.
Source choice per agent dir: ``auto`` prefers the LiteLLM proxy log (exact prompts, tool schemas,
reasoning) and falls back to ATIF ``trajectory.json``; ``litellm`` and ``atif`` force one. Agents without a
proxy-log adapter (every Harbor agent but the four named scaffolds) are read from ATIF. Which source was
used, and why, is recorded per trial (``TrialExtraction.source_reason``, ``meta.extra["source_reason"]``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sft.core.canonical import Reject, Trajectory
from sft.core.turns import RefusedConversation, TrialTurns, account_extraction, account_rejected_trial
from sft.sources.harbor.atif import AtifError, shared_documents
from sft.sources.harbor.job import TrialError, TrialInfo, read_trial_info
from sft.sources.harbor.litellm import LogShapeError, gc_paused, read_log
from sft.sources.harbor.turns import count_source_atif, count_source_litellm
from sft.sources.scaffolds import (
    AdapterReport,
    ScaffoldAdapter,
    ScaffoldMismatchError,
    UnknownScaffoldError,
    adapter_for_agent,
    get_adapter,
)
from sft.sources.scaffolds.base import relative_source

logger = logging.getLogger(__name__)

LITELLM_LOG = "litellm-trajectory.jsonl"
ATIF_MAIN = "trajectory.json"
TRAJECTORY_SOURCES = ("auto", "litellm", "atif")


class TrialExtraction(BaseModel):
    """Everything one trial yielded."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    info: TrialInfo | None = None
    trajectories: list[Trajectory] = Field(default_factory=list)
    rejects: list[Reject] = Field(default_factory=list)
    source_used: str | None = None  # litellm | atif | mixed (multi-step trials read per step)
    source_reason: str | None = None  # why that source (trajectory_source auto decides per trial)
    problems: list[str] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    turns: TrialTurns | None = None  # model turns in the source vs the trajectories (sft.core.turns)
    scaffold: str | None = None  # the adapter that read the trial (``auto`` resolved), labels its turns


class _TrialRejected(Exception):
    def __init__(self, stage: str, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.stage, self.reason, self.detail = stage, reason, detail


def _reject(trial_dir: Path, info: TrialInfo | None, stage: str, reason: str, detail: str) -> Reject:
    return Reject(
        trial_name=trial_dir.name,
        instance_id=info.instance_id if info else None,
        stage=stage,
        reason=reason,
        detail=detail,
    )


def _check_agent_name(adapter: ScaffoldAdapter, info: TrialInfo, scaffold: str) -> None:
    if info.agent_name and not adapter.accepts_agent_name(info.agent_name):
        raise _TrialRejected(
            "scaffold",
            "scaffold_mismatch",
            f"{info.trial_dir / 'result.json'}: agent_info.name is {info.agent_name!r} but the configured scaffold "
            f"is {scaffold!r} (expects agent {', '.join(adapter.harbor_agent_names)}); "
            "set source.scaffold to match the job",
        )


def _from_litellm(
    adapter: ScaffoldAdapter, log_path: Path, info: TrialInfo, job_dir: Path, report: AdapterReport
) -> list[Trajectory]:
    try:
        read = read_log(log_path)
    except OSError as exc:
        raise _TrialRejected("parse", "unreadable_litellm_log", f"{log_path}: cannot read ({exc})") from exc
    report.problems.extend(read.problems)
    report.counters["failed_requests_dropped"] += read.failed_dropped
    report.counters["invalid_log_lines"] += read.invalid_lines
    report.counters["log_records"] += len(read.records)
    count_source_litellm(read.records, report.counters)
    if not read.records:
        raise _TrialRejected(
            "parse",
            "empty_litellm_log",
            f"{log_path}: no usable call ({read.n_lines} lines, {read.failed_dropped} failed)",
        )
    return adapter.from_litellm(
        read.records, info, source_file=relative_source(log_path, job_dir), report=report
    )


def _extract_agent_dir(
    adapter: ScaffoldAdapter,
    agent_dir: Path,
    info: TrialInfo,
    job_dir: Path,
    options: AtifReadOptions,
    report: AdapterReport,
) -> tuple[list[Trajectory], str, str]:
    """The agent dir's trajectories, the source used (litellm | atif) and why that one."""
    trajectory_source = options.trajectory_source
    log_path = agent_dir / LITELLM_LOG
    atif_path = agent_dir / ATIF_MAIN
    if not adapter.supports_litellm:
        if trajectory_source == "litellm":
            raise _TrialRejected(
                "parse",
                "no_litellm_adapter",
                f"{agent_dir}: agent {adapter.name!r} has no proxy-log adapter (only claude-code, open-code, "
                "openhands-sdk and terminus2 have one); set conversion.trajectory_source to auto or atif to read "
                f"its {ATIF_MAIN}",
            )
        reason = "atif: no proxy-log adapter for agent " + repr(adapter.name)
        if log_path.is_file():
            reason += f" ({LITELLM_LOG} present but not read)"
        return _from_atif(adapter, agent_dir, info, job_dir, options, report, atif_path), "atif", reason
    use_log = trajectory_source == "litellm" or (trajectory_source == "auto" and log_path.is_file())
    reason = "atif: trajectory_source is 'atif'" if trajectory_source == "atif" else f"atif: no {LITELLM_LOG}"
    if use_log:
        if not log_path.is_file():
            raise _TrialRejected(
                "parse",
                "no_litellm_log",
                f"{log_path} does not exist (trajectory_source is 'litellm'; use 'auto' to fall back to ATIF)",
            )
        try:
            found = _from_litellm(adapter, log_path, info, job_dir, report)
            return found, "litellm", f"litellm: {LITELLM_LOG} (trajectory_source {trajectory_source!r})"
        except _TrialRejected as exc:
            if trajectory_source != "auto" or exc.reason != "empty_litellm_log" or not atif_path.is_file():
                raise
            report.problems.append(f"{exc.detail}; falling back to {atif_path.name}")
            report.counters["atif_fallbacks"] += 1
            reason = f"atif: {LITELLM_LOG} has no usable call"
    return _from_atif(adapter, agent_dir, info, job_dir, options, report, atif_path), "atif", reason


def _from_atif(
    adapter: ScaffoldAdapter,
    agent_dir: Path,
    info: TrialInfo,
    job_dir: Path,
    options: AtifReadOptions,
    report: AdapterReport,
    atif_path: Path,
) -> list[Trajectory]:
    trajectory_source = options.trajectory_source
    log_path = agent_dir / LITELLM_LOG
    if not atif_path.is_file():
        if trajectory_source == "atif":
            detail = f"{atif_path} does not exist (required by trajectory_source 'atif')"
        elif log_path.is_file() and not adapter.supports_litellm:
            detail = (
                f"{atif_path} does not exist and agent {adapter.name!r} has no proxy-log adapter for "
                f"{log_path.name}; Harbor writes {ATIF_MAIN} after the run (the run may have been killed)"
            )
        else:
            detail = f"{agent_dir}: neither {LITELLM_LOG} nor {ATIF_MAIN} exists"
        raise _TrialRejected("parse", "no_trajectory_source", detail)
    try:
        with shared_documents():  # the turn count and the reader parse each ATIF file once between them
            count_source_atif(agent_dir, report.counters)
            return adapter.from_atif(
                agent_dir,
                info,
                job_dir=job_dir,
                report=report,
                include_subagents=options.include_subagents,
                copied_context=options.copied_context,
                rebuilt_atif=options.rebuilt_atif,
            )
    except AtifError as exc:
        raise _TrialRejected(
            "parse", "invalid_atif", f"{exc}; a valid ATIF trajectory.json is needed"
        ) from exc


class AtifReadOptions(BaseModel):
    """The conversion options that change how a trial is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trajectory_source: str = "auto"
    include_subagents: bool = True
    copied_context: str = "drop"
    rebuilt_atif: str = "drop"


def _run(
    extraction: TrialExtraction,
    trial_dir: Path,
    job_dir: Path,
    scaffold: str,
    options: AtifReadOptions,
    info: TrialInfo | None,
) -> None:
    """Fill ``extraction`` from one trial dir; a trial-level failure raises ``_TrialRejected``."""
    adapter, info, scaffold = _adapter_and_info(trial_dir, scaffold, options, info)
    extraction.info = info
    extraction.problems.extend(info.problems)
    extraction.scaffold = adapter.name
    _check_agent_name(adapter, info, scaffold)
    if not info.agent_dirs:
        raise _TrialRejected(
            "parse", "no_agent_dir", f"{trial_dir}: no agent/ (nor steps/*/agent/) directory"
        )
    report = AdapterReport()
    try:  # the counters also when the trial is rejected: its source turns are counted as lost
        trajectories, sources, reasons = _read_agent_dirs(adapter, info, job_dir, options, report)
    finally:
        extraction.problems.extend(report.problems)
        extraction.counters.update(report.counters)
    extraction.source_reason = "; ".join(dict.fromkeys(reasons))
    refused = _record_refusals(extraction, report, trial_dir, info, adapter.name)
    skipped: list[Trajectory] = []
    if not options.include_subagents:
        kept = [t for t in trajectories if t.meta.agent_type == "main"]
        skipped = [t for t in trajectories if t.meta.agent_type != "main"]
        extraction.counters["subagents_skipped"] = len(trajectories) - len(kept)
        trajectories = kept
    for index, trajectory in enumerate(trajectories):
        trajectory.meta.trajectory_index = index
    extraction.source_used = sources.pop() if len(sources) == 1 else "mixed"
    if not trajectories and not extraction.rejects:  # else every conversation was refused, with its reason
        raise _TrialRejected(
            "parse",
            "no_trajectories",
            f"{trial_dir}: no conversation could be recovered ({', '.join(extraction.problems[-3:]) or 'no problems recorded'})",
        )
    extraction.trajectories = trajectories
    extraction.turns = account_extraction(
        trajectories,
        skipped,
        extraction.counters,
        adapter.name,
        include_subagents=options.include_subagents,
        refused=refused,
    )


def _adapter_and_info(
    trial_dir: Path, scaffold: str, options: AtifReadOptions, info: TrialInfo | None
) -> tuple[ScaffoldAdapter, TrialInfo, str]:
    """The trial's adapter (``auto``: chosen by its agent name), its info and the scaffold asked for, or a
    reject saying why not."""
    if options.trajectory_source not in TRAJECTORY_SOURCES:
        raise _TrialRejected(
            "parse",
            "bad_trajectory_source",
            f"trajectory_source {options.trajectory_source!r}; valid: {', '.join(TRAJECTORY_SOURCES)}",
        )
    adapter: ScaffoldAdapter | None = None
    if scaffold != "auto":
        try:
            adapter = get_adapter(scaffold)
        except UnknownScaffoldError as exc:
            raise _TrialRejected("scaffold", "unknown_scaffold", str(exc)) from exc
    if info is None:
        try:
            info = read_trial_info(trial_dir)
        except TrialError as exc:
            stage = "discover" if exc.reason_code == "no_result_json" else "parse"
            raise _TrialRejected(stage, exc.reason_code, exc.detail) from exc
    if adapter is None:  # auto: the agent's proxy-log adapter, else the generic ATIF adapter for its name
        adapter = adapter_for_agent(info.agent_name)
        scaffold = adapter.name
    return adapter, info, scaffold


def _read_agent_dirs(
    adapter: ScaffoldAdapter,
    info: TrialInfo,
    job_dir: Path,
    options: AtifReadOptions,
    report: AdapterReport,
) -> tuple[list[Trajectory], set[str], list[str]]:
    """Every agent dir's trajectories, with the sources read and why (per dir, in order)."""
    trajectories: list[Trajectory] = []
    sources: set[str] = set()
    reasons: list[str] = []
    for agent_dir in info.agent_dirs:
        found, source, reason = _extract_agent_dir(adapter, agent_dir, info, job_dir, options, report)
        sources.add(source)
        reasons.append(reason)
        report.counters[f"source_{source}"] += 1
        for trajectory in found:
            trajectory.meta.extra["source_reason"] = reason
            if info.is_multistep:
                trajectory.meta.extra["step"] = agent_dir.parent.name
        trajectories.extend(found)
    return trajectories, sources, reasons


def _record_refusals(
    extraction: TrialExtraction, report: AdapterReport, trial_dir: Path, info: TrialInfo, scaffold: str
) -> list[RefusedConversation]:
    """The adapter's refused conversations as rejects; returned for the turn count (their turns are lost)."""
    refused: list[RefusedConversation] = []
    for refusal in report.rejects:
        uid = f"{trial_dir.name}#{refusal.label}"
        extraction.rejects.append(
            Reject(
                trial_name=trial_dir.name,
                instance_id=info.instance_id,
                trajectory=uid,
                stage="parse",
                reason=refusal.reason,
                detail=refusal.detail,
            )
        )
        refused.append(
            RefusedConversation(
                uid, scaffold, refusal.agent_type, f"parse:{refusal.reason}", refusal.messages
            )
        )
    return refused


def extract_trial(
    trial_dir: Path,
    job_dir: Path,
    scaffold: str,
    trajectory_source: str = "auto",
    include_subagents: bool = True,
    *,
    info: TrialInfo | None = None,
    copied_context: str = "drop",
    rebuilt_atif: str = "drop",
) -> TrialExtraction:
    """Read one trial dir into canonical trajectories; every failure becomes a Reject, nothing raises.

    ``scaffold``: a config scaffold, a Harbor agent name, or ``auto`` (per trial from result.json).
    ``info``: the trial's ``read_trial_info(trial_dir)`` when the caller already read it (the engine reads
    it first to filter on the outcome); None reads it here. ``copied_context`` / ``rebuilt_atif``: the
    conversion options of the same names (ATIF reading).
    """
    trial_dir, job_dir = Path(trial_dir), Path(job_dir)
    extraction = TrialExtraction()
    options = AtifReadOptions(
        trajectory_source=trajectory_source,
        include_subagents=include_subagents,
        copied_context=copied_context,
        rebuilt_atif=rebuilt_atif,
    )
    try:
        with gc_paused():
            _run(extraction, trial_dir, job_dir, scaffold, options, info)
    except _TrialRejected as exc:
        extraction.trajectories = []
        extraction.rejects.append(_reject(trial_dir, extraction.info, exc.stage, exc.reason, exc.detail))
    except ScaffoldMismatchError as exc:
        extraction.trajectories = []
        extraction.rejects.append(
            _reject(trial_dir, extraction.info, "scaffold", "scaffold_mismatch", exc.detail)
        )
    except LogShapeError as exc:
        extraction.trajectories = []
        extraction.rejects.append(
            _reject(trial_dir, extraction.info, "parse", "unknown_log_shape", f"{trial_dir}: {exc}")
        )
    except Exception as exc:  # a bug or an unforeseen file shape must not stop the job
        logger.exception("unexpected error while reading trial %s", trial_dir)
        extraction.trajectories = []
        extraction.rejects.append(
            _reject(
                trial_dir,
                extraction.info,
                "parse",
                "unexpected_error",
                f"{trial_dir}: {type(exc).__name__}: {exc}",
            )
        )
    if extraction.turns is None and extraction.rejects:
        first = extraction.rejects[0]
        extraction.turns = account_rejected_trial(
            extraction.counters, extraction.scaffold or scaffold, first.stage, first.reason
        )
    return extraction


def merge_counters(extractions: list[TrialExtraction]) -> dict[str, Any]:
    """Counters summed over trials (for the job report)."""
    total: Counter[str] = Counter()
    for extraction in extractions:
        total.update(extraction.counters)
    return dict(total)
