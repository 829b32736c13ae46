"""The stat index of trial content hashes (``sft.engine.trial_index``).

The index may only ever return what ``trial_content_hash`` would return. Most tests run with a clock that
runs an hour ahead when entries are written (``clock_ahead``): no trial timestamp is then within the racy
window, so the stat signature alone has to notice each change (the racy rule gets its own tests).
File reads are observed through the interpreter's ``open`` audit event, not through the implementation.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from sft.engine import trial_index
from sft.engine.trial_index import (
    cached_trial_content_hash,
    index_entry_path,
    stat_signature,
    trial_content_hash,
)
from sft.sources.harbor.job import discover_trials
from tests.support.jobgen import generate_job

HOUR_NS = 3600 * 10**9
# trial_content_hash of the tree built by ``golden_tree`` (sha256; pins the algorithm the cache is keyed by)
GOLDEN_DIGEST = "f81bcdcd0b87de3181c43f885464bc1b33729b25e7a6f1512370fbdfd9e4f9a4"

_opened: list[str] | None = None
_hook_installed = False


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


@contextlib.contextmanager
def opened_files(under: Path) -> Iterator[list[str]]:
    """Every path under ``under`` that Python opened while the block ran (``open`` audit events)."""
    global _opened, _hook_installed
    if not _hook_installed:  # audit hooks cannot be removed: install one, idle outside this block
        sys.addaudithook(_audit_hook)
        _hook_installed = True
    seen: list[str] = []
    _opened = seen
    result: list[str] = []
    try:
        yield result
    finally:
        _opened = None
        prefix = os.path.realpath(under) + os.sep
        result.extend(p for p in seen if os.path.realpath(p).startswith(prefix))


def golden_tree(root: Path) -> Path:
    """Nested dirs, an empty file, an empty dir, a non-ASCII name, a file symlink and a dir symlink."""
    (root / "agent" / "sub").mkdir(parents=True)
    (root / "emptydir").mkdir()
    (root / "result.json").write_bytes(b'{"ok": true}\n')
    (root / "agent" / "proxy.log").write_bytes(bytes(range(256)) * 5000)
    (root / "agent" / "sub" / "empty").write_bytes(b"")
    (root / "agent" / "Zeta.txt").write_text("z\u00e9ta\n", encoding="utf-8")
    os.symlink("result.json", root / "link")
    os.symlink("agent", root / "dirlink")
    return root


@pytest.fixture
def trial(tmp_path: Path) -> Path:
    return golden_tree(tmp_path / "job" / "trial-a")


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def clock_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries are written an hour "after" every trial timestamp: only the signature can notice a change."""
    real = trial_index._now_ns
    monkeypatch.setattr(trial_index, "_now_ns", lambda: real() + HOUR_NS)


def assert_warm(trial_dir: Path, index_dir: Path) -> str:
    """The index answers for ``trial_dir`` without opening any of its files; returns the answer."""
    with opened_files(trial_dir) as opened:
        digest = cached_trial_content_hash(trial_dir, index_dir)
    assert opened == [], f"a warm index must not read trial files, read {opened}"
    return digest


def assert_rehashed(trial_dir: Path, index_dir: Path) -> str:
    """The call re-hashed the trial (opened its files), returned the plain hash, and the next call is warm."""
    with opened_files(trial_dir) as opened:
        digest = cached_trial_content_hash(trial_dir, index_dir)
    assert opened, "the change was not noticed: the trial was not re-hashed"
    assert digest == trial_content_hash(trial_dir)
    assert assert_warm(trial_dir, index_dir) == digest
    return digest


# ------------------------------------------------------------------------------------------------ the hash


def test_trial_content_hash_is_the_engine_algorithm(trial: Path) -> None:
    assert trial_content_hash(trial) == GOLDEN_DIGEST


def test_same_hash_as_plain_cold_and_warm_on_a_generated_job(
    tmp_path: Path, index_dir: Path, clock_ahead: None
) -> None:
    generate_job(tmp_path / "job", n_trials=8, max_turns=4, seed=3, with_truth=False)
    trials = discover_trials(tmp_path / "job")
    plain = [trial_content_hash(t) for t in trials]
    assert len(set(plain)) == len(trials)
    assert [cached_trial_content_hash(t, index_dir) for t in trials] == plain  # cold: computes + records
    assert [assert_warm(t, index_dir) for t in trials] == plain  # warm: read back


def test_warm_index_reads_no_trial_file(trial: Path, index_dir: Path, clock_ahead: None) -> None:
    with opened_files(trial) as cold_opened:
        cold = cached_trial_content_hash(trial, index_dir)
    assert len(cold_opened) == 4  # the 4 regular files: the hook does see the hashing reads
    assert index_entry_path(index_dir, trial).is_file()
    assert assert_warm(trial, index_dir) == cold == GOLDEN_DIGEST


def test_no_index_dir_is_the_plain_hash(trial: Path) -> None:
    with opened_files(trial) as opened:
        assert cached_trial_content_hash(trial, None) == GOLDEN_DIGEST
    assert len(opened) == 4


# -------------------------------------------------------------------------------------- changes are noticed


def test_same_size_rewrite_with_restored_mtime_is_noticed_through_ctime(
    trial: Path, index_dir: Path, clock_ahead: None
) -> None:
    cached_trial_content_hash(trial, index_dir)
    log = trial / "agent" / "proxy.log"
    before = log.stat()
    with log.open("r+b") as fh:  # in place: same inode, same size
        fh.write(b"SECRET")
    os.utime(log, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = log.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert after.st_ctime_ns != before.st_ctime_ns
    assert assert_rehashed(trial, index_dir) != GOLDEN_DIGEST


def _add_file(trial: Path) -> None:
    (trial / "agent" / "sub" / "new.txt").write_text("new")


def _remove_file(trial: Path) -> None:
    (trial / "agent" / "Zeta.txt").unlink()


def _rename_file(trial: Path) -> None:
    (trial / "agent" / "Zeta.txt").rename(trial / "agent" / "Alpha.txt")


def _add_empty_file(trial: Path) -> None:
    (trial / "emptydir" / "marker").touch()


def _add_empty_dir(trial: Path) -> None:
    (trial / "agent" / "sub" / "newdir").mkdir()


def _remove_empty_dir(trial: Path) -> None:
    (trial / "emptydir").rmdir()


def _retarget_symlink(trial: Path) -> None:
    (trial / "link").unlink()
    os.symlink("agent/Zeta.txt", trial / "link")


def _replace_file_by_rename(trial: Path) -> None:
    """What editors and atomic writers do: a new inode under the old name, same size."""
    log = trial / "agent" / "proxy.log"
    tmp = trial / "agent" / ".proxy.log.tmp"
    tmp.write_bytes(bytes(reversed(range(256))) * 5000)
    os.utime(tmp, ns=(log.stat().st_atime_ns, log.stat().st_mtime_ns))
    tmp.replace(log)


@pytest.mark.parametrize(
    ("change", "content_hash_changes"),
    [
        (_add_file, True),
        (_remove_file, True),
        (_rename_file, True),
        (_add_empty_file, True),
        (_add_empty_dir, False),  # not part of the content hash, part of the signature
        (_remove_empty_dir, False),
        (_retarget_symlink, True),
        (_replace_file_by_rename, True),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_structural_change_is_noticed(
    trial: Path,
    index_dir: Path,
    clock_ahead: None,
    change: Callable[[Path], None],
    content_hash_changes: bool,
) -> None:
    cached_trial_content_hash(trial, index_dir)
    assert assert_warm(trial, index_dir) == GOLDEN_DIGEST
    signature_before = stat_signature(trial)
    change(trial)
    assert stat_signature(trial) != signature_before
    assert (assert_rehashed(trial, index_dir) != GOLDEN_DIGEST) is content_hash_changes


def test_trial_replaced_at_the_same_path_is_noticed(trial: Path, index_dir: Path, clock_ahead: None) -> None:
    """A job dir deleted and regenerated: same names and sizes, other inodes and bytes."""
    cached_trial_content_hash(trial, index_dir)
    shutil.rmtree(trial)
    golden_tree(trial)
    (trial / "result.json").write_bytes(b'{"ok": null}\n')  # same size
    assert assert_rehashed(trial, index_dir) != GOLDEN_DIGEST


# ------------------------------------------------------------------------------------------------ racy rule


@pytest.fixture
def coarse_fs(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A file system whose timestamps all read as ``fs.tick_ns`` (an extreme case of coarse timestamps):
    writes then leave size, inode, mtime and ctime as they were, and only the racy rule can help."""
    fs = SimpleNamespace(tick_ns=trial_index._now_ns())

    def coarse(real: Callable[[str], os.stat_result]) -> Callable[[str], SimpleNamespace]:
        def stat_fn(path: str) -> SimpleNamespace:
            st = real(path)
            return SimpleNamespace(
                st_mode=st.st_mode,
                st_ino=st.st_ino,
                st_size=st.st_size,
                st_mtime_ns=fs.tick_ns,
                st_ctime_ns=fs.tick_ns,
            )

        return stat_fn

    monkeypatch.setattr(trial_index, "_lstat", coarse(os.lstat))
    monkeypatch.setattr(trial_index, "_stat", coarse(os.stat))
    return fs


def _rewrite_in_place(path: Path, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.write(data)


def test_write_in_the_racy_window_is_rehashed(
    trial: Path, index_dir: Path, coarse_fs: SimpleNamespace
) -> None:
    assert cached_trial_content_hash(trial, index_dir) == GOLDEN_DIGEST  # recorded in the current tick
    signature = stat_signature(trial)
    _rewrite_in_place(trial / "result.json", b'{"ok": 1234}\n')
    assert stat_signature(trial) == signature  # the stat cannot tell
    changed = assert_rehashed_racy(trial, index_dir)
    assert changed != GOLDEN_DIGEST
    # Control: once the fs claims the timestamps are older than the margin, the (refreshed) entry is trusted,
    # so a same-tick write would go unseen: it is the racy rule, not luck, that caught the write above.
    coarse_fs.tick_ns -= 2 * trial_index.RACY_MARGIN_NS
    assert cached_trial_content_hash(trial, index_dir) == changed  # re-hashed: the signature's times moved
    _rewrite_in_place(trial / "result.json", b'{"ok": 5678}\n')
    assert cached_trial_content_hash(trial, index_dir) == changed != trial_content_hash(trial)


def assert_rehashed_racy(trial_dir: Path, index_dir: Path) -> str:
    with opened_files(trial_dir) as opened:
        digest = cached_trial_content_hash(trial_dir, index_dir)
    assert opened, "a racy entry was trusted"
    assert digest == trial_content_hash(trial_dir)
    return digest


def test_file_replaced_by_rename_is_noticed_through_the_inode(
    trial: Path, index_dir: Path, coarse_fs: SimpleNamespace
) -> None:
    """Same name, size and (coarse, old) timestamps: only the inode tells the new file from the old one."""
    coarse_fs.tick_ns -= 2 * trial_index.RACY_MARGIN_NS
    cached_trial_content_hash(trial, index_dir)
    assert assert_warm(trial, index_dir) == GOLDEN_DIGEST
    _replace_file_by_rename(trial)
    assert assert_rehashed(trial, index_dir) != GOLDEN_DIGEST


def test_freshly_written_trial_stays_racy_within_the_margin(trial: Path, index_dir: Path) -> None:
    """Real clock, real timestamps: files written under 2 s ago are re-hashed on every call."""
    cached_trial_content_hash(trial, index_dir)
    entry = orjson.loads(index_entry_path(index_dir, trial).read_bytes())
    assert stat_signature(trial).newest_ns >= entry["written_ns"] - trial_index.RACY_MARGIN_NS
    assert assert_rehashed_racy(trial, index_dir) == GOLDEN_DIGEST


def test_written_ns_is_taken_before_hashing(
    trial: Path, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write made while the trial is being hashed must fall inside the racy window of the new entry."""
    real_hash = trial_index._hash_trial
    stamps: list[int] = []

    def hash_then_note_time(trial_dir: Path) -> tuple[str, bool]:
        result = real_hash(trial_dir)
        stamps.append(trial_index._now_ns())
        return result

    monkeypatch.setattr(trial_index, "_hash_trial", hash_then_note_time)
    before = trial_index._now_ns()
    cached_trial_content_hash(trial, index_dir)
    written_ns = orjson.loads(index_entry_path(index_dir, trial).read_bytes())["written_ns"]
    assert before <= written_ns <= stamps[0]


# ----------------------------------------------------------------------------------- damaged / foreign entries


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        b'{"version": 1}',
        b"\x00" * 64,
        "version",
        "content_hash",
        "signature",
        "written_ns",
    ],
    ids=[
        "empty",
        "bad-json",
        "list",
        "missing-keys",
        "zeros",
        "old-version",
        "bad-hash",
        "bad-signature",
        "bad-time",
    ],
)
def test_damaged_entry_is_ignored_and_rewritten(
    trial: Path, index_dir: Path, clock_ahead: None, damage: bytes | str
) -> None:
    cached_trial_content_hash(trial, index_dir)
    entry_path = index_entry_path(index_dir, trial)
    if isinstance(damage, bytes):
        entry_path.write_bytes(damage)
    else:  # one field of a well-formed entry
        entry = orjson.loads(entry_path.read_bytes())
        entry[damage] = {"version": 0, "content_hash": "0" * 39 + "Z", "signature": 12, "written_ns": "1"}[
            damage
        ]
        entry_path.write_bytes(orjson.dumps(entry))
    assert assert_rehashed(trial, index_dir) == GOLDEN_DIGEST
    assert orjson.loads(entry_path.read_bytes())["content_hash"] == GOLDEN_DIGEST


def test_entry_of_another_path_is_ignored(
    tmp_path: Path, trial: Path, index_dir: Path, clock_ahead: None
) -> None:
    """An entry naming another trial is never trusted, even with a matching signature."""
    entry_path = index_entry_path(index_dir, trial)
    forged = {
        "version": trial_index.INDEX_VERSION,
        "path": str(tmp_path / "job" / "trial-b"),
        "signature": stat_signature(trial).digest,
        "content_hash": "f" * 64,
        "written_ns": trial_index._now_ns(),
    }
    entry_path.parent.mkdir(parents=True)
    entry_path.write_bytes(orjson.dumps(forged))
    assert assert_rehashed(trial, index_dir) == GOLDEN_DIGEST
    assert orjson.loads(entry_path.read_bytes())["path"] == os.path.realpath(trial)
    # Control: the same forged entry naming this trial is trusted (the path check is what rejected it).
    entry_path.write_bytes(orjson.dumps({**forged, "path": os.path.realpath(trial)}))
    assert cached_trial_content_hash(trial, index_dir) == "f" * 64


def test_entry_key_is_the_resolved_path(
    tmp_path: Path, trial: Path, index_dir: Path, clock_ahead: None
) -> None:
    alias = tmp_path / "alias"
    os.symlink(trial.parent, alias)
    assert index_entry_path(index_dir, alias / trial.name) == index_entry_path(index_dir, trial)
    cached_trial_content_hash(trial, index_dir)
    assert assert_warm(alias / trial.name, index_dir) == GOLDEN_DIGEST


# ------------------------------------------------------------------------------ unusable index, trust_stats


def _index_is_a_file(index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index_dir.write_text("not a directory")


def _read_only_file_system(index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def erofs(path: Any, data: bytes, **_: Any) -> None:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(trial_index, "atomic_write_bytes", erofs)


@pytest.mark.parametrize(
    "make_unwritable", [_index_is_a_file, _read_only_file_system], ids=["enotdir", "erofs"]
)
def test_unwritable_index_costs_speed_not_correctness(
    tmp_path: Path,
    index_dir: Path,
    clock_ahead: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    make_unwritable: Callable[[Path, pytest.MonkeyPatch], None],
) -> None:
    monkeypatch.setattr(trial_index, "_warned_index_dirs", set())
    make_unwritable(index_dir, monkeypatch)
    trials = [golden_tree(tmp_path / "job" / "t1"), golden_tree(tmp_path / "job" / "t2")]
    (trials[1] / "result.json").write_bytes(b"other")
    with caplog.at_level(logging.WARNING, logger="sft.engine.trial_index"):
        for _ in range(2):
            assert [cached_trial_content_hash(t, index_dir) for t in trials] == [
                trial_content_hash(t) for t in trials
            ]
    warnings = [r for r in caplog.records if "cannot write the trial index" in r.getMessage()]
    assert len(warnings) == 1 and str(index_dir) in warnings[0].getMessage()


def test_trust_stats_false_always_hashes_and_leaves_the_index_alone(
    trial: Path, index_dir: Path, clock_ahead: None
) -> None:
    cached_trial_content_hash(trial, index_dir)
    entry_path = index_entry_path(index_dir, trial)
    stored = entry_path.read_bytes()
    for _ in range(2):
        with opened_files(trial) as opened:
            assert cached_trial_content_hash(trial, index_dir, trust_stats=False) == GOLDEN_DIGEST
        assert len(opened) == 4
    assert entry_path.read_bytes() == stored


def test_hash_with_a_read_error_is_not_recorded(tmp_path: Path, index_dir: Path, clock_ahead: None) -> None:
    """A file that cannot be opened (here a socket: ENXIO) is folded into the hash as "unreadable"; that
    answer may be transient (EMFILE, EIO) and must not be frozen into the index."""
    trial = golden_tree(tmp_path / "t")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(trial / "agent" / "control.sock"))
        digest = cached_trial_content_hash(trial, index_dir)
        assert digest == trial_content_hash(trial) != GOLDEN_DIGEST
    assert not index_entry_path(index_dir, trial).exists()


# ----------------------------------------------------------------------------------------------- concurrency


def _race_worker(trial_dir: str, index_dir: str, start: Any, rounds: int) -> list[str]:
    entry_path = index_entry_path(Path(index_dir), Path(trial_dir))
    start.wait()
    answers = []
    for i in range(rounds):
        if i % 3 == 0:
            with contextlib.suppress(FileNotFoundError):
                entry_path.unlink()
        answers.append(cached_trial_content_hash(Path(trial_dir), Path(index_dir)))
    return answers


def test_processes_racing_on_one_entry_leave_a_valid_entry(trial: Path, index_dir: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n_procs, rounds = 4, 15
    with ctx.Manager() as manager:
        start = manager.Barrier(n_procs)
        with ctx.Pool(n_procs) as pool:
            results = pool.starmap(_race_worker, [(str(trial), str(index_dir), start, rounds)] * n_procs)
    assert all(answer == GOLDEN_DIGEST for answers in results for answer in answers)
    entry_path = index_entry_path(index_dir, trial)
    entry = orjson.loads(entry_path.read_bytes())
    assert entry["content_hash"] == GOLDEN_DIGEST and entry["path"] == os.path.realpath(trial)
    assert entry["signature"] == stat_signature(trial).digest
    assert [p.name for p in entry_path.parent.iterdir()] == [entry_path.name]  # no temp file left behind
