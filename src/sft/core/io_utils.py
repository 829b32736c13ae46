"""Crash-safe file writing: every file sft writes goes through here.

Write to a temporary file in the same directory, flush + fsync, then ``os.replace`` over the target, so a
reader (or the next run after a crash) sees either the old file or the new one, never half of one.
``file_lock`` serialises writers that could meet (two runs registering datasets, writing the config back).

A writer killed mid-write (SIGKILL, OOM, power loss) leaves its hidden temp file behind; it is never seen
under the final name, but it can be as large as the dataset. Temp names therefore carry the writer's host
and pid (``.<name>.tmp-<host>-<pid>-<random>``), and the next write of the same file removes the temp files
of writers on this host that are no longer alive. A live writer's temp file is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from filelock import FileLock

logger = logging.getLogger(__name__)

_HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TEMP_RE = re.compile(r"\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^/]*$")


def _current_umask() -> int:
    """The process umask, read without the set-and-restore dance (which races with other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{_HOST_TAG}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temp files of ``target`` left by dead writers on this host; returns what was removed."""
    removed: list[Path] = []
    prefix = f".{target.name}.tmp-"
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for path in candidates:
        match = _TEMP_RE.search(path.name[len(target.name) + 1 :])
        if match is None or match["host"] != _HOST_TAG or _pid_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if removed:
        logger.info("removed %d temp file(s) of %s left by an interrupted write", len(removed), target)
    return removed


def _target_mode(target: Path) -> int:
    """Keep the mode of the file being replaced (a user may have made config.yaml 0600); else the default."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None, *, durable: bool = True
) -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit it atomically replaces ``path``.

    On an exception the temp file is removed and ``path`` is untouched. ``durable=False`` skips the fsyncs
    (still atomic for readers, but a power loss may leave an empty file): only for caches that detect a
    damaged entry and recompute it, where the fsyncs were most of the cost of a re-run.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        # mkstemp creates 0600: give the file the replaced file's mode, or what a normal open() would give.
        os.chmod(tmp, _target_mode(target))
        os.replace(tmp, target)
        if durable:
            _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    with atomic_writer(path, "wb", durable=durable) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_lock(path: str | os.PathLike[str], timeout: float = 600.0) -> FileLock:
    """A lock file ``<path>.lock`` beside ``path`` (use as a context manager)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target) + ".lock", timeout=timeout)
