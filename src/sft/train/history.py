"""Run history: ``artifacts/index.yaml`` and ``artifacts/archives/run_NNN/`` (docs/config-contract.md §9).

Every training run, successful or not, gets an entry and an archive. Unlike the reference's archive
script (which always exits 0 and falls back to plain-text appends), the index is written as structured
YAML under a lock, atomically, and read back and validated; an archive never holds a credential: the
config copy goes through ``redact_mapping`` plus the resolved secret values.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sft.config.credentials import redact_mapping, redact_text
from sft.config.paths import ARCHIVES_DIR, RUN_INDEX
from sft.core.io_utils import atomic_write_text, file_lock
from sft.core.versions import package_versions as versions_of

logger = logging.getLogger(__name__)

RUN_ID_RE = re.compile(r"^run_(\d{3,})$")
STATUSES = ("completed", "failed", "interrupted")
INDEX_KEYS = ("id", "started_at", "completed_at", "status", "archive", "notes")
VERSIONED_PACKAGES = ("llamafactory", "transformers", "torch", "deepspeed", "liger-kernel", "flash-attn")


class HistoryError(RuntimeError):
    """The run index is unreadable or would be written inconsistently (names the file)."""


def index_path(root: Path) -> Path:
    return Path(root).resolve() / RUN_INDEX


def read_index(root: Path, *, index_file: Path | None = None) -> list[dict[str, Any]]:
    """The ``runs`` list of ``artifacts/index.yaml`` (or ``index_file``; [] when it does not exist yet)."""
    path = Path(index_file) if index_file is not None else index_path(root)
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise HistoryError(
            f"{path}: not valid YAML ({exc}); fix or move the file before the next run"
        ) from exc
    runs = data.get("runs") if isinstance(data, dict) else None
    if runs is None:
        return []
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise HistoryError(f"{path}: 'runs' must be a list of mappings")
    return runs


def next_run_id(runs: Iterable[Mapping[str, Any]]) -> str:
    """``run_NNN`` one above the highest existing number (gaps are never refilled)."""
    numbers = [int(m.group(1)) for r in runs if (m := RUN_ID_RE.match(str(r.get("id", ""))))]
    return f"run_{(max(numbers) + 1 if numbers else 1):03d}"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the output (None when not installed)."""
    return versions_of(VERSIONED_PACKAGES)


def git_commit(root: Path) -> dict[str, Any]:
    """The project's commit and whether the tree had local changes (read-only git commands)."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _validate_runs(runs: list[dict[str, Any]], path: Path) -> None:
    seen: set[str] = set()
    for entry in runs:
        missing = [k for k in INDEX_KEYS if k not in entry]
        if missing:
            raise HistoryError(f"{path}: run {entry.get('id')!r} lacks {', '.join(missing)}")
        if entry["id"] in seen:
            raise HistoryError(f"{path}: duplicate run id {entry['id']}")
        if entry["status"] not in STATUSES:
            raise HistoryError(
                f"{path}: run {entry['id']} has status {entry['status']!r}; expected {STATUSES}"
            )
        seen.add(entry["id"])


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)


def _redacted_config_text(config_path: Path, secret_values: list[str]) -> str:
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return f"# {config_path} could not be read for the archive: {exc}\n"
    return redact_text(_dump(redact_mapping(data, secret_values)), secret_values)


def record_run(
    root: Path,
    *,
    started_at: str,
    completed_at: str,
    exit_code: int,
    status: str,
    config_path: Path,
    training_yaml_path: Path | None,
    notes: str = "",
    results: Mapping[str, Any] | None = None,
    secret_values: Iterable[str] = (),
    log_path: Path | None = None,
    extra: Mapping[str, Any] | None = None,
    index_file: Path | None = None,
    archives_dir: Path | None = None,
) -> str:
    """Append one run to ``artifacts/index.yaml`` and archive it; returns the new ``run_NNN``.

    ``secret_values`` are the resolved credential values (from the environment too), removed from every
    archived text in addition to secret-looking keys. ``index_file`` / ``archives_dir``: the catalog's
    (sft.train.files.TrainingFiles); by default ``artifacts/index.yaml`` and ``artifacts/archives`` of ``root``.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    root = Path(root).resolve()
    secrets = [s for s in secret_values if s]
    path = Path(index_file) if index_file is not None else index_path(root)
    with file_lock(path):
        runs = read_index(root, index_file=path)
        archives = Path(archives_dir) if archives_dir is not None else root / ARCHIVES_DIR
        # An archive left by a crash between mkdir and the index write also counts as taken.
        taken = [{"id": p.name} for p in archives.glob("run_*")] if archives.is_dir() else []
        run_id = next_run_id([*runs, *taken])
        archive = archives / run_id
        archive.mkdir(parents=True, exist_ok=False)
        _write_archive(
            archive,
            run_id=run_id,
            started_at=started_at,
            completed_at=completed_at,
            exit_code=exit_code,
            status=status,
            config_path=Path(config_path),
            training_yaml_path=training_yaml_path,
            notes=notes,
            results=results,
            secrets=secrets,
            root=root,
            log_path=log_path,
            extra=extra,
        )
        entry = {
            "id": run_id,
            "started_at": started_at,
            "completed_at": completed_at,
            "status": status,
            "archive": f"{_relative_to(archive, root)}/",
            "notes": redact_text(notes, secrets),
        }
        new_runs = [*runs, entry]
        _validate_runs(new_runs, path)
        atomic_write_text(path, _dump({"runs": new_runs}))
        written = read_index(root, index_file=path)
        _validate_runs(written, path)
        if written[-1] != entry:
            raise HistoryError(f"{path}: the appended entry did not read back as written")
    logger.info("recorded %s (%s) in %s; archive %s", run_id, status, path, archive)
    return run_id


def _relative_to(path: Path, root: Path) -> str:
    """``path`` relative to the project root when it is inside it (``artifacts/archives/run_001``)."""
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _write_archive(
    archive: Path,
    *,
    run_id: str,
    started_at: str,
    completed_at: str,
    exit_code: int,
    status: str,
    config_path: Path,
    training_yaml_path: Path | None,
    notes: str,
    results: Mapping[str, Any] | None,
    secrets: list[str],
    root: Path,
    log_path: Path | None,
    extra: Mapping[str, Any] | None,
) -> None:
    atomic_write_text(archive / "config.yaml", _redacted_config_text(config_path, secrets))
    if training_yaml_path is not None and Path(training_yaml_path).is_file():
        text = Path(training_yaml_path).read_text(encoding="utf-8")
        atomic_write_text(archive / "training.yaml", redact_text(text, secrets))
    git = git_commit(root)
    metadata_doc: dict[str, Any] = {
        "id": run_id,
        "block": "sft",
        "stage": "train",
        "started_at": started_at,
        "completed_at": completed_at,
        "status": status,
        "exit_code": exit_code,
        "versions": package_versions(),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "repos": {},
        "config_path": str(config_path),
        "training_yaml": str(training_yaml_path) if training_yaml_path else None,
        "training_log": str(log_path) if log_path else None,
        "notes": notes,
        "results": dict(results) if results is not None else None,
    }
    if extra:
        metadata_doc.update(dict(extra))
    text = _dump(redact_mapping(metadata_doc, secrets))
    atomic_write_text(archive / "metadata.yaml", redact_text(text, secrets))
