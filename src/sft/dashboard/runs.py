"""Run discovery, the per-step series, final metrics, status and the console log, read from the project's files.

Sources (docs/llamafactory-rules.md §9, docs/config-contract.md §8-§9):

- ``artifacts/model/<run>/trainer_log.jsonl``: one line per logging step, appended while training runs; the
  primary live source. Read incrementally (only the appended bytes are parsed on each poll) and a half
  written last line is left for the next poll.
- ``trainer_state.json``: ``log_history`` adds ``grad_norm`` and eval points (LLaMA-Factory's log line has
  no grad norm); it is rewritten at every checkpoint save, so it lags during a run.
- ``train_results.json`` / ``all_results.json``: the final metrics; their presence means the run finished.
- ``artifacts/index.yaml`` + ``artifacts/archives/run_NNN/``: the run history (failed / interrupted runs,
  the redacted config and training YAML of each attempt), joined to a model folder through the archive's
  ``metadata.yaml`` ``output_dir`` (or the archived training YAML's ``output_dir``).
- ``artifacts/logs/<run>_<stamp>.log``: the console log (tail only).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from sft.config.paths import LOGS_DIR, MODEL_DIR, RUN_INDEX, TRAINING_CONFIG_DIR
from sft.dashboard.safety import ProjectFiles

logger = logging.getLogger(__name__)

RUNNING_WINDOW_SEC = 180.0  # "running": the log changed less than 3 minutes ago (docs/config-contract.md §11)
RESULT_FILES: tuple[str, ...] = ("train_results.json", "all_results.json")
RUN_MARKERS: tuple[str, ...] = ("trainer_log.jsonl", "trainer_state.json")
SERIES_KEYS: tuple[str, ...] = (
    "step",
    "loss",
    "eval_loss",
    "lr",
    "grad_norm",
    "epoch",
    "percentage",
    "elapsed_sec",
    "remaining_sec",
    "step_time_sec",
    "tokens_per_sec",
    "total_tokens",
    "total_steps",
)
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}$")
DURATION_RE = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")
LOG_TAIL_BYTES = 512 * 1024
STATUSES: tuple[str, ...] = ("running", "finished", "failed", "interrupted", "unknown")


def parse_duration(value: Any) -> float | None:
    """``H:MM:SS`` / ``1 day, H:MM:SS`` (``str(timedelta)``, LLaMA-Factory's format) or a number, in seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    match = DURATION_RE.match(value.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_iso(value: Any) -> float | None:
    """A timestamp from index.yaml (ISO string or a YAML datetime) as epoch seconds; naive = UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso_utc(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------- the log


def reduce_log_line(line: Mapping[str, Any]) -> dict[str, Any] | None:
    """One ``trainer_log.jsonl`` record reduced to the dashboard's keys (None when it has no step)."""
    step = line.get("current_steps", line.get("step"))
    if isinstance(step, bool) or not isinstance(step, int | float):
        return None
    return {
        "step": int(step),
        "loss": _number(line.get("loss")),
        "eval_loss": _number(line.get("eval_loss")),
        "lr": _number(line.get("lr", line.get("learning_rate"))),
        "grad_norm": _number(line.get("grad_norm")),
        "epoch": _number(line.get("epoch")),
        "percentage": _number(line.get("percentage")),
        "elapsed_sec": parse_duration(line.get("elapsed_time")),
        "remaining_sec": parse_duration(line.get("remaining_time")),
        "tokens_per_sec": _number(line.get("throughput")),
        "total_tokens": _number(line.get("total_tokens")),
        "total_steps": _number(line.get("total_steps")),
    }


@dataclass
class JsonlFollower:
    """Incremental reader of an append-only JSON-lines file: each ``read`` parses only the new bytes.

    A file that shrank or was replaced (another inode: ``overwrite_output_dir``) is read again from the
    start; an unterminated last line is left for the next read, since the trainer may be writing it.
    """

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0
    _offset: int = 0
    _identity: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> list[dict[str, Any]]:
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._reset(None)
                return []
            identity = (stat.st_dev, stat.st_ino)
            if identity != self._identity or stat.st_size < self._offset:
                self._reset(identity)
            if stat.st_size > self._offset:
                self._consume()
            return list(self.records)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self.records, self.bad_lines, self._offset, self._identity = [], 0, 0, identity

    def _consume(self) -> None:
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        for raw in chunk[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.bad_lines += 1
                continue
            if isinstance(doc, dict):
                self.records.append(doc)
            else:
                self.bad_lines += 1
        self._offset += end + 1


class JsonFileCache:
    """Parsed JSON documents keyed by path, re-read only when mtime or size change."""

    def __init__(self) -> None:
        self._docs: dict[Path, tuple[tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def load(self, path: Path) -> Any:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._docs.get(path)
            if cached and cached[0] == key:
                return cached[1]
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            logger.warning("%s: not readable as JSON (%s); shown as absent until it is rewritten", path, exc)
            doc = None
        with self._lock:
            self._docs[path] = (key, doc)
        return doc


def merge_series(log_rows: list[dict[str, Any]], log_history: list[Any] | None) -> list[dict[str, Any]]:
    """Step rows from the log, completed with grad norm / eval loss from ``log_history``; one row per step.

    When a resumed run logs a step again, the later line wins (it is what the final model came from).
    Without a ``trainer_log.jsonl`` the rows come from ``log_history`` alone.
    """
    by_step = _steps_from_log(log_rows)
    from_log = bool(by_step)
    for entry in log_history or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("step"), int):
            continue
        if "train_runtime" in entry or "train_loss" in entry:
            continue  # the run summary, not a step
        step = int(entry["step"])
        row = by_step.get(step)
        if row is None:
            if from_log and entry.get("eval_loss") is None:
                continue  # the log is authoritative for train steps
            row = reduce_log_line({"current_steps": step})
            assert row is not None
            by_step[step] = row
        _complete_from_history(row, entry)
    rows = [by_step[s] for s in sorted(by_step)]
    _fill_step_times(rows)
    return rows


def _steps_from_log(log_rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """One reduced row per step of ``trainer_log.jsonl``; a later train line for a step replaces it."""
    by_step: dict[int, dict[str, Any]] = {}
    for row in log_rows:
        reduced = reduce_log_line(row)
        if reduced is None:
            continue
        previous = by_step.get(reduced["step"])
        if previous is not None and reduced["loss"] is None and previous["loss"] is not None:
            # The final (loss-less) line or an eval line for a step that already has a train line: it
            # completes that row (eval loss, 100 %) but does not replace its timing.
            for key, value in reduced.items():
                if previous.get(key) is None:
                    previous[key] = value
            if reduced["percentage"] is not None:
                previous["percentage"] = max(previous["percentage"] or 0.0, reduced["percentage"])
            continue
        by_step[reduced["step"]] = reduced
    return by_step


_HISTORY_KEYS = (
    ("grad_norm", "grad_norm"),
    ("eval_loss", "eval_loss"),
    ("loss", "loss"),
    ("lr", "learning_rate"),
    ("epoch", "epoch"),
)


def _complete_from_history(row: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """Fill a step row's missing values from its ``log_history`` entry (row key, history key)."""
    for key, source in _HISTORY_KEYS:
        if row.get(key) is None and _number(entry.get(source)) is not None:
            row[key] = _number(entry.get(source))


def _fill_step_times(rows: list[dict[str, Any]]) -> None:
    """Seconds per step between consecutive logged steps (elapsed time is logged to the second)."""
    previous: dict[str, Any] | None = None
    for row in rows:
        row["step_time_sec"] = None
        if previous is not None and row["elapsed_sec"] is not None and previous["elapsed_sec"] is not None:
            steps = row["step"] - previous["step"]
            if steps > 0:
                row["step_time_sec"] = round((row["elapsed_sec"] - previous["elapsed_sec"]) / steps, 3)
        if row["elapsed_sec"] is not None:
            previous = row


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts as one list per key (the charting library's shape)."""
    return {key: [row.get(key) for row in rows] for key in SERIES_KEYS}


# ----------------------------------------------------------------------------------------- run history


@dataclass(frozen=True)
class IndexEntry:
    """One ``index.yaml`` run joined with its archive's metadata."""

    id: str
    status: str
    started_at: str | None
    completed_at: str | None
    notes: str
    archive_dir: Path | None
    output_name: str | None  # basename of the run's output_dir
    run_name: str | None
    training_log: Path | None
    metadata: dict[str, Any]

    @property
    def completed_epoch(self) -> float | None:
        return parse_iso(self.completed_at)

    def public(self, files: ProjectFiles) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "notes": self.notes,
            "archive": files.relative(self.archive_dir) if self.archive_dir else None,
        }


def read_index_entries(files: ProjectFiles) -> tuple[list[IndexEntry], list[str]]:
    """``artifacts/index.yaml`` runs (order kept) and the problems found, never raising on a bad file."""
    path = files.root / RUN_INDEX
    if not path.is_file():
        return [], []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return [], [f"{files.relative(path)}: not readable YAML ({exc})"]
    runs = doc.get("runs") if isinstance(doc, Mapping) else None
    if not isinstance(runs, list):
        return [], [f"{files.relative(path)}: no 'runs' list"]
    entries: list[IndexEntry] = []
    problems: list[str] = []
    for position, raw in enumerate(runs):
        if not isinstance(raw, Mapping) or not raw.get("id"):
            problems.append(f"{files.relative(path)}: runs[{position}] has no id; skipped")
            continue
        entries.append(_index_entry(files, raw))
    return entries, problems


def _index_entry(files: ProjectFiles, raw: Mapping[str, Any]) -> IndexEntry:
    archive = files.contained(files.root / str(raw.get("archive") or "")) if raw.get("archive") else None
    if archive is not None and not archive.is_dir():
        archive = None
    metadata = _read_yaml(archive / "metadata.yaml") if archive else {}
    output_dir = metadata.get("output_dir")
    if not output_dir and archive:
        output_dir = _read_yaml(archive / "training.yaml").get("output_dir")
    log = metadata.get("training_log")
    return IndexEntry(
        id=str(raw["id"]),
        status=str(raw.get("status") or "unknown"),
        started_at=_iso_text(raw.get("started_at")),
        completed_at=_iso_text(raw.get("completed_at")),
        notes=str(raw.get("notes") or ""),
        archive_dir=archive,
        output_name=Path(str(output_dir)).name if output_dir else None,
        run_name=str(metadata["run_name"]) if metadata.get("run_name") else None,
        training_log=files.contained(Path(str(log))) if log else None,
        metadata=metadata,
    )


def _iso_text(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value not in (None, "") else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return dict(doc) if isinstance(doc, Mapping) else {}


# ---------------------------------------------------------------------------------------------- status


def decide_status(
    *,
    now: float,
    log_mtime: float | None,
    percentage: float | None,
    results_mtime: float | None,
    entry: IndexEntry | None,
) -> tuple[str, str]:
    """The run's status and a sentence saying which rule gave it.

    running: the log changed < 3 min ago, progress < 100 %, and that change is newer than the results
    file and the last recorded end of this run (a resumed run is running again). failed / interrupted:
    the run's last ``index.yaml`` entry, unless a results file was written after it. finished: a results
    file, an index entry ``completed``, or the log at 100 %. unknown: none of these (stalled or killed
    without being recorded).
    """
    entry_end = entry.completed_epoch if entry else None
    if log_mtime is not None:
        age = now - log_mtime
        below_100 = percentage is None or percentage < 100.0
        newer_than_results = results_mtime is None or log_mtime > results_mtime + 1.0
        newer_than_entry = entry is None or entry_end is None or log_mtime > entry_end + 1.0
        if age < RUNNING_WINDOW_SEC and below_100 and newer_than_results and newer_than_entry:
            return "running", f"trainer_log.jsonl updated {age:.0f}s ago at {percentage or 0:.1f}%"
    if entry is not None and entry.status in ("failed", "interrupted"):
        if results_mtime is None or entry_end is None or entry_end >= results_mtime - 1.0:
            return entry.status, f"index.yaml {entry.id}: {entry.status}"
    if results_mtime is not None:
        return "finished", "train_results.json present"
    if entry is not None and entry.status == "completed":
        return "finished", f"index.yaml {entry.id}: completed"
    if percentage is not None and percentage >= 99.99:
        return "finished", "trainer_log.jsonl reached 100%"
    if log_mtime is not None:
        minutes = (now - log_mtime) / 60
        return "unknown", (
            f"no results file and no index.yaml entry; log last updated {minutes:.0f} min ago "
            "(stalled, still loading, or stopped without being recorded)"
        )
    return "unknown", "no training log yet"


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class RunFolder:
    """A run the dashboard knows: a model folder, an index entry without one, or both."""

    name: str
    model_dir: Path | None
    entries: list[IndexEntry]

    @property
    def latest_entry(self) -> IndexEntry | None:
        return self.entries[-1] if self.entries else None


class RunStore:
    """All runs of one project, with the caches that make polling cheap."""

    def __init__(self, files: ProjectFiles) -> None:
        self.files = files
        self._followers: dict[Path, JsonlFollower] = {}
        self._json = JsonFileCache()
        self._lock = threading.Lock()
        self._series_cache: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self._index_cache: tuple[tuple[int, int] | None, list[IndexEntry], list[str]] | None = None

    # discovery --------------------------------------------------------------------------------------

    @property
    def model_root(self) -> Path:
        return self.files.root / MODEL_DIR

    def discover(self) -> tuple[dict[str, RunFolder], list[str]]:
        """Model folders with a trainer log/state, plus index runs whose folder is missing."""
        entries, problems = self._index_entries()
        runs: dict[str, RunFolder] = {}
        if self.model_root.is_dir():
            for child in sorted(self.model_root.iterdir()):
                if not RUN_NAME_RE.match(child.name) or not child.is_dir():
                    continue
                if self.files.contained(child) is None:
                    continue
                if any((child / marker).is_file() for marker in RUN_MARKERS):
                    runs[child.name] = RunFolder(child.name, child, [])
        for entry in entries:
            target = entry.output_name if entry.output_name in runs else None
            if target is None and entry.run_name in runs:
                target = entry.run_name
            if target is not None:
                runs[target].entries.append(entry)
            elif RUN_NAME_RE.match(entry.id):
                runs.setdefault(entry.id, RunFolder(entry.id, None, [])).entries.append(entry)
        return runs, problems

    def _index_entries(self) -> tuple[list[IndexEntry], list[str]]:
        """``read_index_entries``, re-read only when index.yaml changes (archives are written once)."""
        try:
            stat = (self.files.root / RUN_INDEX).stat()
            key: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        cached = self._index_cache
        if cached is None or cached[0] != key:
            entries, problems = read_index_entries(self.files)
            cached = self._index_cache = (key, entries, problems)
        return cached[1], cached[2]

    def get(self, name: str) -> RunFolder | None:
        """The run called ``name``; user input is only ever matched against discovered names."""
        if not RUN_NAME_RE.match(name):
            return None
        return self.discover()[0].get(name)

    # per-run data -----------------------------------------------------------------------------------

    def _follower(self, path: Path) -> JsonlFollower:
        with self._lock:
            follower = self._followers.get(path)
            if follower is None:
                follower = self._followers[path] = JsonlFollower(path)
            return follower

    def log_rows(self, run: RunFolder) -> list[dict[str, Any]]:
        if run.model_dir is None:
            return []
        return self._follower(run.model_dir / "trainer_log.jsonl").read()

    def trainer_state(self, run: RunFolder) -> dict[str, Any]:
        if run.model_dir is None:
            return {}
        doc = self._json.load(run.model_dir / "trainer_state.json")
        return doc if isinstance(doc, dict) else {}

    def results(self, run: RunFolder) -> tuple[dict[str, Any], float | None, str | None]:
        """Final metrics (``all_results.json`` merged over ``train_results.json``), their mtime and source."""
        merged: dict[str, Any] = {}
        newest: float | None = None
        source: str | None = None
        if run.model_dir is None:
            return merged, None, None
        for name in RESULT_FILES:
            path = run.model_dir / name
            doc = self._json.load(path)
            if isinstance(doc, dict):
                merged.update(doc)
                mtime = path.stat().st_mtime
                newest = mtime if newest is None else max(newest, mtime)
                source = source or name
        return merged, newest, source

    def series(self, run: RunFolder) -> list[dict[str, Any]]:
        """The merged step rows, recomputed only when one of the run's files changed."""
        key = self.signature(run)
        cached = self._series_cache.get(run.name)
        if cached and cached[0] == key:
            return cached[1]
        history = self.trainer_state(run).get("log_history")
        rows = merge_series(self.log_rows(run), history if isinstance(history, list) else None)
        self._series_cache[run.name] = (key, rows)
        return rows

    def signature(self, run: RunFolder) -> str:
        """Changes whenever any file the run view reads changes (for ETag / 304 answers)."""
        parts: list[str] = [run.name]
        if run.model_dir is not None:
            for name in (*RUN_MARKERS, *RESULT_FILES):
                try:
                    stat = (run.model_dir / name).stat()
                    parts.append(f"{name}:{stat.st_mtime_ns}:{stat.st_size}")
                except FileNotFoundError:
                    parts.append(f"{name}:-")
        parts += [f"{e.id}:{e.status}:{e.completed_at}" for e in run.entries]
        return "|".join(parts)

    def etag(self, run: RunFolder) -> str:
        """``signature`` plus a 30 s time bucket: the status ages even when nothing is written."""
        text = f"{self.signature(run)}|{int(time.time() // 30)}"
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def summary(self, run: RunFolder, now: float | None = None) -> dict[str, Any]:
        """The run-list row: status, progress, last values, ETA and final loss."""
        now = time.time() if now is None else now
        rows = self.series(run)
        state = self.trainer_state(run)
        results, results_mtime, results_source = self.results(run)
        log_path = run.model_dir / "trainer_log.jsonl" if run.model_dir else None
        log_mtime = _mtime(log_path) or _mtime(
            run.model_dir / "trainer_state.json" if run.model_dir else None
        )
        last = rows[-1] if rows else {}
        last_loss_row = next((r for r in reversed(rows) if r.get("loss") is not None), {})
        total_steps = last.get("total_steps") or _number(state.get("max_steps"))
        step = last.get("step") or _number(state.get("global_step"))
        percentage = last.get("percentage")
        if percentage is None and step and total_steps:
            percentage = round(100.0 * step / total_steps, 2)
        entry = run.latest_entry
        status, reason = decide_status(
            now=now, log_mtime=log_mtime, percentage=percentage, results_mtime=results_mtime, entry=entry
        )
        return {
            "name": run.name,
            "status": status,
            "status_reason": reason,
            "has_model_dir": run.model_dir is not None,
            "model_dir": self.files.relative(run.model_dir) if run.model_dir else None,
            "step": step,
            "total_steps": total_steps,
            "percentage": percentage,
            "epoch": last.get("epoch"),
            "last_loss": last_loss_row.get("loss"),
            "last_lr": last_loss_row.get("lr"),
            "elapsed_sec": last.get("elapsed_sec"),
            "eta_sec": estimate_eta(rows, total_steps) if status == "running" else None,
            "last_update": iso_utc(log_mtime),
            "points": sum(1 for r in rows if r.get("loss") is not None),
            "final_loss": _number(results.get("train_loss")),
            "results_source": results_source,
            "index": entry.public(self.files) if entry else None,
            "attempts": len(run.entries),
            "started_at": entry.started_at if entry else None,
            "completed_at": entry.completed_at if entry and status != "running" else None,
        }

    def detail(self, run: RunFolder) -> dict[str, Any]:
        """The run view: summary, final metrics, every index attempt and the files the run has."""
        results, _, source = self.results(run)
        state = self.trainer_state(run)
        model_files: list[str] = []
        if run.model_dir is not None:
            model_files = sorted(
                p.name
                for p in run.model_dir.iterdir()
                if p.is_file() and p.suffix in (".json", ".jsonl", ".png", ".md", ".yaml")
            )
        checkpoints = sorted(
            (p.name for p in (run.model_dir.glob("checkpoint-*") if run.model_dir else []) if p.is_dir()),
            key=_checkpoint_step,
        )
        log = self.console_log_path(run)
        follower = self._followers.get(run.model_dir / "trainer_log.jsonl") if run.model_dir else None
        return {
            **self.summary(run),
            "final_metrics": results,
            "final_metrics_source": source,
            "attempts": [e.public(self.files) for e in run.entries],
            "state": {
                k: state.get(k)
                for k in (
                    "global_step",
                    "max_steps",
                    "num_train_epochs",
                    "logging_steps",
                    "save_steps",
                    "train_batch_size",
                    "num_input_tokens_seen",
                    "best_metric",
                    "best_model_checkpoint",
                )
                if k in state
            },
            "model_files": model_files,
            "checkpoints": checkpoints,
            "console_log": self.files.relative(log) if log else None,
            "bad_log_lines": follower.bad_lines if follower else 0,
        }

    # config, training YAML and console log --------------------------------------------------------

    def training_yaml_path(self, run: RunFolder) -> Path | None:
        """The archived training YAML of the latest attempt, else ``artifacts/training_config/<run>.yaml``."""
        entry = run.latest_entry
        candidates: list[Path] = []
        if entry and entry.archive_dir:
            candidates.append(entry.archive_dir / "training.yaml")
        candidates.append(self.files.root / TRAINING_CONFIG_DIR / f"{run.name}.yaml")
        return next((p for p in candidates if p.is_file() and self.files.contained(p)), None)

    def config_path(self, run: RunFolder) -> tuple[Path | None, str]:
        """The archived ``config.yaml`` of the latest attempt; for a run not archived yet, none.

        The project's current ``config.yaml`` is not shown as "the config of this run": a variant file
        (``SFT_CONFIG``) may have produced it, and the training YAML is the exact record anyway.
        """
        entry = run.latest_entry
        if entry and entry.archive_dir and (entry.archive_dir / "config.yaml").is_file():
            return entry.archive_dir / "config.yaml", f"archive of {entry.id}"
        return None, "no archive yet (recorded when the run ends); the training YAML is what it runs with"

    def console_log_path(self, run: RunFolder) -> Path | None:
        """The console log: the archive's ``training_log``, else the newest ``artifacts/logs/<run>_*.log``."""
        entry = run.latest_entry
        if entry and entry.training_log and entry.training_log.is_file():
            return entry.training_log
        logs_dir = self.files.root / LOGS_DIR
        names = {run.name, *(e.run_name for e in run.entries if e.run_name)}
        found: list[Path] = []
        for name in names:
            found += [p for p in logs_dir.glob(f"{glob_escape(name)}_*.log") if p.is_file()]
        found = [p for p in found if self.files.contained(p)]
        return max(found, key=lambda p: (p.name, p.stat().st_mtime)) if found else None


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def tail_text(path: Path, lines: int) -> tuple[list[str], bool]:
    """The last ``lines`` lines of a console log; carriage-return progress bars keep their last frame."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - LOG_TAIL_BYTES))
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    out: list[str] = []
    for raw in text.split("\n"):
        frames = [f for f in raw.split("\r") if f.strip()]
        out.append(frames[-1] if frames else raw.rstrip("\r"))
    if size > LOG_TAIL_BYTES and out:
        out = out[1:]  # the first line is cut
    if out and out[-1] == "":
        out = out[:-1]
    truncated = len(out) > lines or size > LOG_TAIL_BYTES
    return out[-lines:], truncated


def estimate_eta(rows: list[dict[str, Any]], total_steps: float | None) -> float | None:
    """Seconds left: median step time of the last 20 logged steps times the steps left; LLaMA-Factory's
    own ``remaining_time`` when the step times are not known."""
    if not rows:
        return None
    last = rows[-1]
    times = sorted(r["step_time_sec"] for r in rows[-20:] if r.get("step_time_sec"))
    if times and total_steps:
        median = times[len(times) // 2]
        return round(max(0.0, (total_steps - last["step"]) * median), 1)
    return last.get("remaining_sec")


def _checkpoint_step(name: str) -> int:
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else -1


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return None
