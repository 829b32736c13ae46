"""The conversion engine: a Harbor job in, LLaMA-Factory rows + rejects + funnel out.

Per trial (in a process pool, one trial in memory per worker, a few chunks of trials in flight): read the
trial metadata and apply the outcome and repo-exclusion filters first (the reference order,
docs/input-formats.md §9.1; a filtered trial's logs are never parsed), then extract canonical trajectories
(``sft.sources.harbor.trial``), scrub secrets, repair and validate. Each trial's outcome is cached under its
content hash (``sft.engine.trial_index``: not re-read while its files' stat is unchanged) and the conversion
settings and code, so a re-run only converts new or changed trials (the funnel counts hits and misses). The
worker also does every per-trajectory step that needs no job-wide number: the exact-dedup content hash, the
score features (``score_features``) and both rows serialised: the IM row without ``meta`` and the LF row
without ``_meta``.

In the parent, in trial-name order so that any worker count gives the same bytes: the rows go to a spool
file (``sft.core.spool``) and only light metadata stays in memory for the job-wide steps: seeded
instance selection, the per-instance cap, exact de-duplication (by the worker's hash), the score's job-wide
part (``finalize_score`` with the scaffold's median step count), then ``meta.score`` / ``_meta`` as a byte
suffix of each spooled row. ``ConversionResult`` hands on ``SpooledRows`` that the catalog writers stream.

Every trial ends up either in the output or in the rejects with a reason; the funnel counts each stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import itertools
import logging
import os
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from tqdm.auto import tqdm

from sft.config.schema import ConversionConfig, RuntimeInput
from sft.core.canonical import Reject, Trajectory
from sft.core.io_utils import atomic_write_bytes
from sft.core.results import ConversionResult, TrajectoryView
from sft.core.spool import RowRef, Spool, SpooledRows, open_object_suffix, spool_open_object
from sft.core.turns import TrajectoryTurns, TrialTurns, TurnLedger, after_validation
from sft.engine.trial_index import cached_trial_content_hash
from sft.engine.workspace import ConversionWorkspace, load_exclusions
from sft.rules.filters import (
    ExclusionList,
    cap_per_instance,
    content_hash_of_dump,
    dedup_exact,
    outcome_keep,
    select_instances,
)
from sft.rules.render import RenderError, lf_meta_column, render_lf_body
from sft.rules.score import finalize_score, median_steps_by_scaffold, score_features
from sft.rules.secrets import SecretScrubber, ruleset_id, scrub_trajectory
from sft.rules.validate import repair_and_validate
from sft.sources.harbor.job import TrialError, TrialInfo, discover_trials, harbor_version, read_trial_info
from sft.sources.harbor.litellm import canonical_view, gc_paused
from sft.sources.harbor.trial import extract_trial
from sft.sources.scaffolds import adapter_for_agent

logger = logging.getLogger(__name__)

# 2: outcome/exclusion filters run before extraction; 3: candidates carry hash, score features and LF body;
# 4: header line + row bytes (TrialOutcome.to_bytes); 5: model-turn accounting (TrialOutcome.turns)
CACHE_VERSION = "5"
# Chunks of trials in flight per worker: enough to keep every worker busy past one slow trial, few enough
# that the results waiting for their turn in the parent stay a handful of trials.
WINDOW_PER_WORKER = 3
MAX_CHUNK_TRIALS = 4  # trials per pool task ...
MIN_CHUNKS_PER_WORKER = 32  # ... but smaller chunks on small jobs, so that the work spreads evenly


@functools.cache
def conversion_code_fingerprint() -> str:
    """A hash of the code that shapes a trial's outcome (sft.core, sft.sources, sft.rules, sft.engine).

    Part of the cache key, so upgrading sft (a fixed parser, a new exclusion rule) never serves results
    computed by the old code.
    """
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(
        p for layer in ("core", "sources", "rules", "engine") for p in (package / layer).rglob("*.py")
    ):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class WorkerSettings:
    """The picklable subset of the config a worker needs (also the cache key's settings part)."""

    job_dir: str
    scaffold: str
    trajectory_source: str
    include_subagents: bool
    instance_status: str
    resolved_threshold: float
    keep_exception_trials: bool
    drop_tool_errors: bool
    scrub_secrets: bool
    secret_values: tuple[str, ...]
    exclusions: (
        ExclusionList | None
    )  # the catalog's repo_exclusions (None: disabled); in the key by its sha256
    exclusion_sha256: str
    cache_dir: str  # "" disables the cache
    # Reuse a trial's content hash while its files' stat (size, mtime, ctime, inode) is unchanged, instead of
    # reading every byte on each run (sft.engine.trial_index). Not in the cache key: it never changes a result.
    cache_trust_file_stats: bool = True
    # How the worker renders the LF body. Not in the cache key: a cached entry rendered the other way is
    # re-rendered from its stored trajectory (no re-extraction), so the setting stays parent-cheap.
    keep_reasoning: bool = True
    copied_context: str = "drop"  # conversion.copied_context (ATIF copied-context steps)
    rebuilt_atif: str = "drop"  # conversion.rebuilt_atif (terminus-2 default-mode ATIF)

    def cache_fingerprint(self) -> str:
        # Secret values are part of what the output depends on, but must never be written anywhere:
        # only their hash enters the key.
        parts = {
            k: v
            for k, v in self.__dict__.items()
            if k
            not in {"cache_dir", "secret_values", "keep_reasoning", "cache_trust_file_stats", "exclusions"}
        }
        parts["secret_values"] = hashlib.sha256("\0".join(self.secret_values).encode()).hexdigest()
        parts["cache_version"] = CACHE_VERSION
        parts["code"] = conversion_code_fingerprint()
        parts["secret_rules"] = ruleset_id()  # the imported detect-secrets rules are not in "code"
        return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class TrialOutcome:
    """What one worker returns for one trial."""

    trial_name: str
    instance_id: str | None = None
    repo: str | None = None
    scaffold_seen: str | None = None
    source_used: str | None = None
    # One per valid trajectory, see ``_candidate``: {"meta", "im_head", "content_hash", "features",
    # "lf_body", "lf_error"}
    candidates: list[dict[str, Any]] = field(default_factory=list)
    rendered_with_reasoning: bool | None = None  # the keep_reasoning the lf_body values were rendered with
    rejects: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    scrub_counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    parsed: bool = False
    outcome_kept: bool = False
    repo_excluded: bool = False
    # sft.core.turns.TrialTurns as a dict (None: the trial's files were not read)
    turns: dict[str, Any] | None = None
    cache_hit: bool = False  # set by process_trial, never stored in the cache entry

    def to_bytes(self) -> bytes:
        """The cache entry: one JSON header line, then each candidate's row bytes (never re-encoded).

        Why not one JSON document: the rows are already serialised by the worker; embedding them as JSON
        values would parse and re-dump every trajectory on each cache hit.
        """
        blobs: list[bytes] = []
        header = {k: v for k, v in self.__dict__.items() if k not in {"cache_hit", "candidates"}}
        header["candidates"] = []
        for entry in self.candidates:
            light = {k: v for k, v in entry.items() if k not in _CANDIDATE_BLOBS}
            for name in _CANDIDATE_BLOBS:
                blob = entry[name]
                light[f"{name}_len"] = None if blob is None else len(blob)
                if blob is not None:
                    blobs.append(blob)
            header["candidates"].append(light)
        return orjson.dumps(header) + b"\n" + b"".join(blobs)

    @classmethod
    def from_bytes(cls, raw: bytes) -> TrialOutcome:
        head, sep, body = raw.partition(b"\n")
        if not sep:
            raise ValueError("cache entry without its header line")
        header = orjson.loads(head)
        position = 0
        for entry in header["candidates"]:
            for name in _CANDIDATE_BLOBS:
                size = entry.pop(f"{name}_len")
                entry[name] = None if size is None else body[position : position + size]
                position += size or 0
        if position != len(body):
            raise ValueError(f"cache entry holds {len(body)} row bytes, its header accounts for {position}")
        return cls(**header)


# The candidate fields that hold serialised rows (bytes), see ``_candidate``.
_CANDIDATE_BLOBS = ("im_head", "lf_body")


# --------------------------------------------------------------------------------------------- worker


def _reject(
    outcome: TrialOutcome, stage: str, reason: str, detail: str, trajectory: str | None = None
) -> None:
    outcome.rejects.append(
        Reject(
            trial_name=outcome.trial_name,
            instance_id=outcome.instance_id,
            trajectory=trajectory,
            stage=stage,
            reason=reason,
            detail=detail,
        ).model_dump()
    )


def _trial_info_or_none(trial_dir: Path) -> TrialInfo | None:
    """result.json + config.json, or None when unreadable (extraction then records the precise reject)."""
    try:
        return read_trial_info(trial_dir)
    except (TrialError, OSError, ValueError):
        return None


def _scaffold_of_agent(agent_name: str | None) -> str:
    """The scaffold ``auto`` picks: the proxy-log adapter of the agent, else the agent's own name (read
    from its ATIF file by the generic adapter; ``atif`` when result.json names no agent)."""
    return adapter_for_agent(agent_name).name


def scaffold_of_trial(trial_dir: Path) -> str | None:
    """``source.scaffold: auto``: the scaffold of result.json's agent (None: result.json unreadable)."""
    info = _trial_info_or_none(trial_dir)
    return None if info is None else _scaffold_of_agent(info.agent_name)


def _passes_trial_filters(outcome: TrialOutcome, info: TrialInfo, settings: WorkerSettings) -> bool:
    """Outcome (reward/exception) and repo-exclusion filters; a failing trial gets its reject line here.

    Why before extraction: both decisions need only result.json/config.json, and parsing the proxy log
    of a trial that is dropped anyway is most of the work on a typical job (unresolved + SWE-bench repos).
    """
    outcome.instance_id = info.instance_id
    outcome.repo = info.repo
    outcome.scaffold_seen = info.agent_name
    keep, why = outcome_keep(
        info.reward,
        info.exception_type,
        instance_status=settings.instance_status,
        resolved_threshold=settings.resolved_threshold,
        keep_exception_trials=settings.keep_exception_trials,
    )
    if not keep:
        _reject(outcome, "outcome", why, f"reward={info.reward} exception={info.exception_type}")
        return False
    outcome.outcome_kept = True
    exclusions = settings.exclusions
    if exclusions is not None:
        hit = exclusions.match(info.instance_id)
        if hit:
            outcome.repo_excluded = True
            _reject(
                outcome,
                "repo_exclusion",
                "excluded_repo",
                f"{info.instance_id} matches '{hit}' in the exclusion list",
            )
            return False
    return True


def process_trial(trial_dir: Path, settings: WorkerSettings) -> TrialOutcome:
    """Convert one trial; never raises (any failure becomes a reject line)."""
    try:
        return _process_trial(trial_dir, settings)
    except Exception as exc:  # a bug must not take the run down, and must not lose the trial
        logger.exception("unexpected error converting %s", trial_dir)
        outcome = TrialOutcome(trial_name=trial_dir.name)
        _reject(outcome, "parse", "internal_error", f"{trial_dir}: {type(exc).__name__}: {exc}")
        return _scrub_rejects(outcome, settings)


def _scrub_rejects(outcome: TrialOutcome, settings: WorkerSettings) -> TrialOutcome:
    """Reject details quote exception messages (a pydantic error shows the offending value): scrub them
    like the trajectories, so rejects.jsonl can never carry a key the dataset itself would not."""
    if settings.scrub_secrets and outcome.rejects:
        scrubber = SecretScrubber(list(settings.secret_values))
        for reject in outcome.rejects:
            reject["detail"] = scrubber.scrub(reject["detail"])
    return outcome


def _process_trial(trial_dir: Path, settings: WorkerSettings) -> TrialOutcome:
    cache_file: Path | None = None
    if settings.cache_dir:
        trial_hash = cached_trial_content_hash(
            trial_dir, trial_index_dir(Path(settings.cache_dir)), trust_stats=settings.cache_trust_file_stats
        )
        key = hashlib.sha256(f"{_cache_fingerprint(settings)}:{trial_hash}".encode()).hexdigest()
        cache_file = Path(settings.cache_dir) / key[:2] / f"{key}.trial"
        if cache_file.is_file():
            try:
                cached = TrialOutcome.from_bytes(cache_file.read_bytes())
                for candidate in cached.candidates:  # a damaged entry must fail here, not in the parent
                    _ = candidate["meta"]["instance_id"], candidate["meta"]["trial_name"]
                    if not candidate["im_head"].endswith(b"}"):
                        raise ValueError("damaged row bytes")
                if cached.trial_name == trial_dir.name:
                    if cached.candidates and cached.rendered_with_reasoning != settings.keep_reasoning:
                        _rerender(cached, settings.keep_reasoning)
                        _write_cache_entry(cache_file, cached)
                    cached.cache_hit = True
                    with contextlib.suppress(
                        OSError
                    ):  # last use, for `sft cache prune` (read-only dir: fine)
                        os.utime(cache_file)
                    return cached
            except (
                OSError,
                ValueError,
                TypeError,
                KeyError,
            ):  # JSONDecodeError, ValidationError are ValueErrors
                logger.warning("damaged conversion cache entry %s; recomputing it", cache_file)
    # One trial's objects are acyclic and die with it: collecting during the trial only rescans them.
    with gc_paused():
        outcome = _scrub_rejects(_convert_trial(trial_dir, settings), settings)
    if cache_file is not None:
        _write_cache_entry(cache_file, outcome)
    return outcome


@functools.lru_cache(maxsize=8)
def _cache_fingerprint(settings: WorkerSettings) -> str:
    """``settings.cache_fingerprint()`` once per process and settings, not once per trial."""
    return settings.cache_fingerprint()


def _write_cache_entry(cache_file: Path, outcome: TrialOutcome) -> None:
    try:
        # Not fsynced: a torn entry after a power loss fails TrialOutcome.from_bytes and is recomputed.
        atomic_write_bytes(cache_file, outcome.to_bytes(), durable=False)
    except OSError as exc:  # a full or read-only cache dir costs speed, never a trial
        logger.warning("cannot write conversion cache entry %s (%s); continuing without it", cache_file, exc)


def _scrub_and_validate(
    trajectories: list[Trajectory],
    settings: WorkerSettings,
    scrubber: SecretScrubber | None,
    outcome: TrialOutcome,
    turns_of: dict[str, TrajectoryTurns],
) -> list[Trajectory]:
    """Each trajectory scrubbed, repaired and validated; an invalid one is a reject, its turns counted."""
    valid: list[Trajectory] = []
    for traj in trajectories:
        if scrubber is not None:
            traj = scrub_trajectory(traj, scrubber)
        repaired, issues = repair_and_validate(traj, drop_tool_errors=settings.drop_tool_errors)
        if traj.uid in turns_of:
            after_validation(turns_of[traj.uid], traj, repaired, issues)
        if repaired is None:
            _reject(
                outcome,
                "validate",
                "invalid_trajectory",
                f"{Path(settings.job_dir) / traj.meta.source_file}: " + "; ".join(issues),
                trajectory=traj.uid,
            )
            continue
        valid.append(repaired)
    return valid


def _convert_trial(trial_dir: Path, settings: WorkerSettings) -> TrialOutcome:
    outcome = TrialOutcome(trial_name=trial_dir.name)
    try:
        info = read_trial_info(trial_dir)
    except TrialError as exc:  # the same reject extraction would give, without touching the logs
        _reject(
            outcome,
            "discover" if exc.reason_code == "no_result_json" else "parse",
            exc.reason_code,
            exc.detail,
        )
        return outcome
    if not _passes_trial_filters(outcome, info, settings):
        return outcome  # filtered on result.json alone: the (large) logs are never read
    # auto is resolved per trial by extract_trial (sft.sources.scaffolds.adapter_for_agent): every agent
    # converts (its proxy-log adapter, else its ATIF file), so no agent is refused here.
    extraction = extract_trial(
        trial_dir,
        Path(settings.job_dir),
        settings.scaffold,
        trajectory_source=settings.trajectory_source,
        include_subagents=settings.include_subagents,
        info=info,  # read above: result.json and config.json are parsed once per trial
        copied_context=settings.copied_context,
        rebuilt_atif=settings.rebuilt_atif,
    )
    outcome.counters.update(extraction.counters)
    outcome.problems.extend(extraction.problems)
    turns = extraction.turns or TrialTurns()
    outcome.source_used = extraction.source_used
    outcome.rejects.extend(r.model_dump() for r in extraction.rejects)  # trial or per-trajectory rejects
    if not extraction.trajectories:
        if not extraction.rejects:
            _reject(outcome, "parse", "no_trajectory", f"{trial_dir}: no conversation could be recovered")
        outcome.turns = turns.model_dump()
        return outcome
    outcome.parsed = True
    turns_of = {record.uid: record for record in turns.trajectories}

    scrubber = SecretScrubber(list(settings.secret_values)) if settings.scrub_secrets else None
    valid = _scrub_and_validate(extraction.trajectories, settings, scrubber, outcome, turns_of)
    for repaired, prefix_of in zip(valid, strict_prefix_of(valid), strict=True):
        outcome.candidates.append({**_candidate(repaired, settings.keep_reasoning), "prefix_of": prefix_of})
    outcome.rendered_with_reasoning = settings.keep_reasoning
    if scrubber is not None:
        outcome.scrub_counts = dict(scrubber.counts)
    outcome.turns = turns.model_dump()
    if not outcome.candidates and not any(r["stage"] == "validate" for r in outcome.rejects):
        _reject(outcome, "parse", "no_trajectory", f"{trial_dir}: no conversation could be recovered")
    return outcome


def strict_prefix_of(trajectories: Sequence[Trajectory]) -> list[list[int]]:
    """For each trajectory of one trial, the ``trajectory_index`` of every other one whose messages it is a
    strict prefix of, compared as the model saw them (``litellm.canonical_view``: no reasoning, no per-request
    billing values). Such a row is a fragment: its turns are trained again in the longer row. Prefix
    de-duplication must leave none; the engine counts them (``funnel.prefix_fragments``)."""
    rolling: list[list[int]] = []
    for traj in trajectories:
        hashes = [0]
        for message in traj.messages:
            hashes.append(hash((hashes[-1], canonical_view(message))))
        rolling.append(hashes)
    out: list[list[int]] = []
    for a, hashes_a in enumerate(rolling):
        size = len(hashes_a) - 1
        out.append(
            [
                trajectories[b].meta.trajectory_index
                for b, hashes_b in enumerate(rolling)
                if b != a and len(hashes_b) - 1 > size and hashes_b[size] == hashes_a[-1]
            ]
        )
    return out


def _candidate(traj: Trajectory, keep_reasoning: bool) -> dict[str, Any]:
    """Everything the parent needs about one valid trajectory (picklable, cacheable).

    Why in the worker: hashing, scoring, rendering and serialising are per-trajectory work; done here they
    run on all cores and are cached, so the parent (serial) and a cached re-run only do the job-wide steps.
    The rows travel as bytes: the IM row without its ``meta`` (``im_head``; the parent appends ``meta``
    once the job-wide score is known) and the LF row without ``_meta`` (``lf_body``).
    """
    dump = traj.model_dump(mode="json")
    meta = dump.pop("meta")
    return {
        "meta": meta,
        "im_head": orjson.dumps(dump),
        "content_hash": content_hash_of_dump(
            dump["messages"], traj.tools
        ),  # = content_hash(traj), one dump less
        "features": score_features(traj),
        **_render_body(traj, keep_reasoning),
    }


def _render_body(traj: Trajectory, keep_reasoning: bool) -> dict[str, Any]:
    """The LF row without ``_meta`` (bytes), or the reason it cannot be rendered (rejected in the parent)."""
    try:
        return {
            "lf_body": orjson.dumps(render_lf_body(traj, keep_reasoning=keep_reasoning)),
            "lf_error": None,
        }
    except RenderError as exc:
        return {"lf_body": None, "lf_error": [exc.reason, exc.detail]}


def _rerender(outcome: TrialOutcome, keep_reasoning: bool) -> None:
    """Re-render a cached outcome's LF bodies for another ``keep_reasoning`` (no re-extraction)."""
    for entry in outcome.candidates:
        traj = Trajectory.model_validate({**orjson.loads(entry["im_head"]), "meta": entry["meta"]})
        entry.update(_render_body(traj, keep_reasoning))
    outcome.rendered_with_reasoning = keep_reasoning


# --------------------------------------------------------------------------------------------- parent


def _run_workers(trials: list[Path], settings: WorkerSettings, num_workers: int) -> Iterator[TrialOutcome]:
    if num_workers <= 1 or len(trials) <= 1:
        for trial in trials:
            yield process_trial(trial, settings)
        return
    # Results come back in submission order, so the output never depends on the worker count. At most
    # WINDOW_PER_WORKER chunks per worker are in flight: finished results wait in this process until their
    # turn, so an unbounded queue (pool.map) would hold every trial done behind one slow trial. Trials go in
    # small chunks: one task per trial costs more in IPC than a cached trial costs to load.
    size = max(1, min(MAX_CHUNK_TRIALS, len(trials) // (num_workers * MIN_CHUNKS_PER_WORKER)))
    chunks = iter([trials[i : i + size] for i in range(0, len(trials), size)])
    done = 0
    pending: deque[Future[list[TrialOutcome]]] = deque()
    try:
        with ProcessPoolExecutor(max_workers=num_workers, initializer=_init_worker) as pool:
            for chunk in itertools.islice(chunks, num_workers * WINDOW_PER_WORKER):
                pending.append(pool.submit(process_trials, chunk, settings))
            while pending:
                outcomes = pending.popleft().result()
                for chunk in itertools.islice(chunks, 1):
                    pending.append(pool.submit(process_trials, chunk, settings))
                for outcome in outcomes:
                    done += 1
                    yield outcome
    except BrokenProcessPool as exc:
        logger.error(
            "a conversion worker died (%s); converting the remaining %d trial(s) one per process to "
            "find the one that kills it",
            exc,
            len(trials) - done,
        )
        for trial in trials[done:]:
            yield _process_trial_isolated(trial, settings)


def process_trials(trial_dirs: list[Path], settings: WorkerSettings) -> list[TrialOutcome]:
    """``process_trial`` for a chunk of trials (one pool task)."""
    return [process_trial(trial_dir, settings) for trial_dir in trial_dirs]


def _init_worker() -> None:
    """A forked worker starts with the parent's whole heap: freeze it, so the cyclic GC never scans (and
    copy-on-write never copies) those objects again; only what the worker allocates is collected."""
    gc.freeze()


def _process_trial_isolated(trial_dir: Path, settings: WorkerSettings) -> TrialOutcome:
    """One trial in its own worker: if the worker dies (OOM killer, segfault), only this trial is lost,
    and it gets a reject line instead of taking the run down."""
    with ProcessPoolExecutor(max_workers=1, initializer=_init_worker) as pool:
        try:
            return pool.submit(process_trial, trial_dir, settings).result()
        except BrokenProcessPool as exc:
            outcome = TrialOutcome(trial_name=trial_dir.name)
            _reject(
                outcome,
                "parse",
                "worker_died",
                f"{trial_dir}: the conversion process died while reading this trial ({exc}); most likely "
                "killed for memory: check the size of its files, or lower conversion.num_workers",
            )
            return outcome


def worker_settings(
    cfg: RuntimeInput,
    job_dir: Path,
    workspace: ConversionWorkspace,
    exclusions: ExclusionList | None,
    secret_values: Iterable[str],
) -> WorkerSettings:
    conv = cfg.conversion
    cache_dir = str(workspace.cache_dir) if conv.use_cache else ""
    return WorkerSettings(
        job_dir=str(job_dir),
        scaffold=cfg.source.scaffold or "",
        trajectory_source=conv.trajectory_source,
        include_subagents=conv.include_subagents,
        instance_status=conv.instance_status,
        resolved_threshold=conv.resolved_threshold,
        keep_exception_trials=conv.keep_exception_trials,
        drop_tool_errors=conv.drop_tool_errors,
        scrub_secrets=conv.scrub_secrets,
        secret_values=tuple(sorted(v for v in secret_values if v)),
        exclusions=exclusions,
        exclusion_sha256=exclusions.sha256 if exclusions is not None else "",
        cache_dir=cache_dir,
        cache_trust_file_stats=conv.cache_trust_file_stats,
        keep_reasoning=cfg.keeps_reasoning(),
        copied_context=conv.copied_context,
        rebuilt_atif=conv.rebuilt_atif,
    )


def convert_job(
    cfg: RuntimeInput,
    job_dir: Path,
    root: Path,
    *,
    secret_values: Iterable[str] = (),
    num_workers: int | None = None,
    progress: bool = True,
    workspace: ConversionWorkspace | None = None,
    exclusions: ExclusionList | None | Literal["from_config"] = "from_config",
) -> ConversionResult:
    """Convert a whole Harbor job. Deterministic for any ``num_workers``.

    ``workspace`` and ``exclusions`` are what the catalog hands the Kedro node (``conversion_workspace``,
    ``repo_exclusions``); by default they are the project's folders under ``root`` and the configured list.
    """
    workspace = workspace or ConversionWorkspace.under(root)
    if exclusions == "from_config":
        exclusions = load_exclusions(cfg, root)
    settings = worker_settings(cfg, job_dir, workspace, exclusions, secret_values)
    conv = cfg.conversion
    workers = num_workers if num_workers is not None else (conv.num_workers or os.cpu_count() or 1)
    trials = discover_trials(job_dir)
    spool = Spool(workspace.spool_dir)  # the rows wait on disk, not in this process, until they are written
    gathered = _gather(trials, settings, workers, spool, progress)
    funnel, rejects = gathered.funnel, gathered.rejects
    selected, chosen = _select_instances(gathered.candidates, conv, rejects, funnel)
    gathered.candidates = []
    kept = _cap_dedup_score(selected, conv, rejects, funnel)
    del selected
    lf_refs, im_refs, written = _render_rows(kept, rejects, funnel)
    del kept
    report = {
        "funnel": dict(funnel),
        "per_scaffold": dict(gathered.per_scaffold),
        "sources_used": dict(gathered.sources_used),
        "extraction": dict(gathered.extraction_counters),
        "rejects_by_stage": dict(Counter(r["stage"] for r in rejects)),
        "rejects_by_reason": dict(Counter(f"{r['stage']}:{r['reason']}" for r in rejects)),
        "secrets_redacted": dict(gathered.scrub_counts),
        "reasoning": {"kept": settings.keep_reasoning, "template": cfg.training.template},
        "selection": {
            "seed": conv.seed,
            "max_instances": conv.max_instances,
            "stratify_by_repo": conv.stratify_by_repo,
            "instances": sorted(chosen),
        },
        "exclusion": {
            "file": settings.exclusions.source if settings.exclusions is not None else "",
            "sha256": settings.exclusion_sha256,
        },
        "harbor_version": harbor_version(job_dir),  # the job's lock.json
        "workers": workers,
        "cache": {"enabled": bool(settings.cache_dir), **gathered.cache},
    }
    gathered.ledger.set_fates(rejects)
    report.update(gathered.ledger.report())  # "model_turns" and "repairs" (over written trajectories)
    _check_accounting(trials, written, rejects)
    im_rows = SpooledRows(spool, im_refs)
    return ConversionResult(
        lf_rows=SpooledRows(spool, lf_refs),
        im_rows=im_rows,
        rejects=rejects,
        funnel=report,
        kept=TrajectoryView(im_rows),
        turn_ledger=gathered.ledger,
    )


@dataclass
class _Gathered:
    """What the workers' trial outcomes add up to, before selection."""

    funnel: Counter[str]
    cache: Counter[str] = field(default_factory=lambda: Counter(hits=0, misses=0))
    per_scaffold: Counter[str] = field(default_factory=Counter)
    sources_used: Counter[str] = field(default_factory=Counter)
    scrub_counts: Counter[str] = field(default_factory=Counter)
    extraction_counters: Counter[str] = field(default_factory=Counter)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)
    ledger: TurnLedger = field(default_factory=TurnLedger)

    def add(self, outcome: TrialOutcome, spool: Spool, count_cache: bool) -> None:
        if count_cache:
            self.cache["hits" if outcome.cache_hit else "misses"] += 1
        self.rejects.extend(outcome.rejects)
        self.ledger.add(outcome.trial_name, outcome.turns, outcome.rejects)
        self.extraction_counters.update(outcome.counters)
        self.scrub_counts.update(outcome.scrub_counts)
        if outcome.parsed:
            self.funnel["trials_parsed"] += 1
            self.sources_used[outcome.source_used or "unknown"] += 1
        if outcome.outcome_kept:
            self.funnel["trials_outcome_kept"] += 1
        if outcome.repo_excluded:
            self.funnel["trials_repo_excluded"] += 1
        for entry in outcome.candidates:
            candidate = _Candidate.of(entry, spool)
            self.per_scaffold[candidate.meta.scaffold] += 1
            self.candidates.append(candidate)


def _gather(
    trials: list[Path], settings: WorkerSettings, workers: int, spool: Spool, progress: bool
) -> _Gathered:
    """Convert every trial in the workers and add their outcomes up (a progress bar per trial)."""
    # Stage order = the order the worker applies them (result.json filters before parsing any log).
    gathered = _Gathered(
        funnel=Counter(
            trials_found=len(trials), trials_outcome_kept=0, trials_repo_excluded=0, trials_parsed=0
        )
    )
    bar = tqdm(total=len(trials), desc="convert", unit="trial", disable=not progress, dynamic_ncols=True)
    for outcome in _run_workers(trials, settings, workers):
        bar.update(1)
        gathered.add(outcome, spool, bool(settings.cache_dir))
    bar.close()
    gathered.funnel["trajectories_valid"] = len(gathered.candidates)
    return gathered


def _select_instances(
    candidates: list[_Candidate], conv: ConversionConfig, rejects: list[dict[str, Any]], funnel: Counter[str]
) -> tuple[list[_Candidate], set[str]]:
    """max_instances: a seeded choice among instances that still have a valid trajectory."""
    by_instance: dict[str, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_instance[candidate.meta.instance_id].append(candidate)
    repo_of = {iid: items[0].meta.repo or "" for iid, items in by_instance.items()}
    chosen = select_instances(
        sorted(by_instance), conv.max_instances, conv.seed, conv.stratify_by_repo, lambda iid: repo_of[iid]
    )
    chosen_set = set(chosen)
    selected: list[_Candidate] = []
    for iid in sorted(by_instance):
        if iid in chosen_set:
            selected.extend(by_instance[iid])
            continue
        detail = f"max_instances={conv.max_instances}, seed={conv.seed}"
        rejects.extend(_traj_reject(c, "max_instances", "not_selected", detail) for c in by_instance[iid])
    funnel["instances_available"] = len(by_instance)
    funnel["instances_selected"] = len(chosen_set)
    return selected, chosen_set


def _cap_dedup_score(
    selected: list[_Candidate], conv: ConversionConfig, rejects: list[dict[str, Any]], funnel: Counter[str]
) -> list[_Candidate]:
    """The per-instance cap, exact de-duplication, then scoring and ``min_score``; each drop is a reject."""
    capped, over_cap = cap_per_instance(selected, conv.max_trajectories_per_instance)
    detail = f"max_trajectories_per_instance={conv.max_trajectories_per_instance}"
    rejects.extend(_traj_reject(c, "per_instance_cap", "over_cap", detail) for c in over_cap)
    funnel["trajectories_after_cap"] = len(capped)
    kept = capped
    if conv.dedup:
        kept, dupes = dedup_exact(capped, key=lambda c: c.content_hash)
        detail = "identical messages and tools as an earlier trajectory"
        rejects.extend(_traj_reject(c, "dedup", "exact_duplicate", detail) for c in dupes)
    funnel["trajectories_after_dedup"] = len(kept)
    _score_all(kept)
    if conv.min_score is not None:
        kept = _apply_min_score(kept, conv.min_score, rejects)
    funnel["trajectories_after_score"] = len(kept)
    return kept


def _apply_min_score(
    kept: list[_Candidate], min_score: float, rejects: list[dict[str, Any]]
) -> list[_Candidate]:
    """Main trajectories scored below ``min_score`` are rejected (sub-agents and unscored ones pass)."""
    passing = []
    for candidate in kept:
        composite = (candidate.score or {}).get("composite_score")
        if candidate.meta.agent_type == "main" and composite is not None and composite < min_score:
            detail = f"composite_score={composite:.3f} < {min_score}"
            rejects.append(_traj_reject(candidate, "min_score", "below_min_score", detail))
        else:
            passing.append(candidate)
    return passing


def _render_rows(
    kept: list[_Candidate], rejects: list[dict[str, Any]], funnel: Counter[str]
) -> tuple[list[RowRef], list[RowRef], list[_Candidate]]:
    """The spooled LF and IM rows of the kept trajectories; one that breaks an LF rule is a reject."""
    lf_refs: list[RowRef] = []
    im_refs: list[RowRef] = []
    written: list[_Candidate] = []
    for candidate in kept:
        if candidate.lf_error is not None:
            reason, detail = candidate.lf_error
            rejects.append(_traj_reject(candidate, "lf_rules", reason, detail))
            continue
        lf_ref, im_ref = candidate.rows()
        lf_refs.append(lf_ref)
        im_refs.append(im_ref)
        written.append(candidate)
    funnel["rows_written"] = len(lf_refs)
    funnel["instances_written"] = len({c.meta.instance_id for c in written})
    funnel["prefix_fragments"] = _count_prefix_fragments(written)  # an invariant (must be 0), not a stage
    return lf_refs, im_refs, written


@dataclass(frozen=True)
class _CandidateMeta:
    """The TrajectoryMeta fields selection, cap, dedup and rejects read (no pydantic object per row)."""

    instance_id: str
    repo: str | None
    trial_name: str
    scaffold: str
    agent_type: str
    trajectory_index: int


@dataclass
class _Candidate:
    """A valid trajectory in the parent: light fields in memory, its row bytes in the spool."""

    meta: _CandidateMeta
    trajectory_meta: dict[str, Any]  # TrajectoryMeta.model_dump(mode="json"); the score goes in here
    content_hash: str
    features: dict[str, Any] | None
    lf_error: list[str] | None
    im_head: RowRef  # the IM row without "meta", closing brace excluded
    lf_body: RowRef | None  # the LF row without "_meta", closing brace excluded
    score: dict[str, Any] | None = None
    prefix_of: list[int] = field(
        default_factory=list
    )  # trajectory indices of this trial it is a strict prefix of

    @classmethod
    def of(cls, entry: dict[str, Any], spool: Spool) -> _Candidate:
        meta = entry["meta"]
        light = _CandidateMeta(
            instance_id=meta["instance_id"],
            repo=meta.get("repo"),
            trial_name=meta["trial_name"],
            scaffold=meta["scaffold"],
            agent_type=meta.get("agent_type", "main"),
            trajectory_index=meta.get("trajectory_index", 0),
        )
        lf_body = entry["lf_body"]
        return cls(
            meta=light,
            trajectory_meta=meta,
            content_hash=entry["content_hash"],
            features=entry["features"],
            lf_error=entry["lf_error"],
            im_head=spool_open_object(spool, entry["im_head"]),
            lf_body=None if lf_body is None else spool_open_object(spool, lf_body),
            prefix_of=list(entry.get("prefix_of") or []),
        )

    @property
    def uid(self) -> str:
        """``Trajectory.uid``: ``<trial>#<index>``."""
        return f"{self.meta.trial_name}#{self.meta.trajectory_index}"

    def rows(self) -> tuple[RowRef, RowRef]:
        """(LF row, IM row) with the score in the meta: the bytes of ``render_lf_row`` / ``render_im_row``."""
        assert self.lf_body is not None
        meta = self.trajectory_meta
        meta["score"] = self.score
        ids = {"uid": self.uid, "instance_id": self.meta.instance_id}
        lf_row = dataclasses.replace(
            self.lf_body, suffix=open_object_suffix("_meta", lf_meta_column(meta)), **ids
        )
        im_row = dataclasses.replace(self.im_head, suffix=open_object_suffix("meta", meta), **ids)
        return lf_row, im_row


def trial_index_dir(cache_dir: Path) -> Path:
    """The stat index of trial content hashes (``sft.engine.trial_index``) inside the cache."""
    return cache_dir / "trial-index"


def _traj_reject(candidate: _Candidate, stage: str, reason: str, detail: str) -> dict[str, Any]:
    return Reject(
        trial_name=candidate.meta.trial_name,
        instance_id=candidate.meta.instance_id,
        trajectory=candidate.uid,
        stage=stage,
        reason=reason,
        detail=detail,
    ).model_dump()


def _score_all(items: list[_Candidate]) -> None:
    """The job-wide part of the score: the scaffold medians over these rows, then ``finalize_score``."""
    medians = median_steps_by_scaffold(
        (c.meta.scaffold, c.features["assistant_turns"])
        for c in items
        if c.meta.agent_type == "main" and c.features is not None
    )
    for item in items:
        item.score = finalize_score(item.features, median_steps=medians.get(item.meta.scaffold))


def _count_prefix_fragments(written: list[_Candidate]) -> int:
    """Written rows that are a strict prefix of another written row of the same trial; warns naming the trials.
    Must be 0: a fragment trains its turns twice (prefix de-duplication of the proxy log failed)."""
    uids = {c.uid for c in written}
    fragments = [c for c in written if any(f"{c.meta.trial_name}#{i}" in uids for i in c.prefix_of)]
    if fragments:
        trials = sorted({c.meta.trial_name for c in fragments})
        logger.warning(
            "%d written row(s) are a strict prefix of another row of the same trial (prefix_fragments; "
            "their turns are trained twice), in %d trial(s): %s",
            len(fragments),
            len(trials),
            ", ".join(trials[:10]) + (" ..." if len(trials) > 10 else ""),
        )
    return len(fragments)


def _check_accounting(trials: list[Path], kept: list[_Candidate], rejects: list[dict[str, Any]]) -> None:
    """Every trial is in the output or in the rejects file; a gap is a bug, not a silent drop."""
    accounted = {t.meta.trial_name for t in kept} | {r["trial_name"] for r in rejects}
    missing = sorted(t.name for t in trials if t.name not in accounted)
    if missing:
        raise AssertionError(f"conversion lost {len(missing)} trial(s) without a reason: {missing[:10]}")
