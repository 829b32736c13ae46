"""Trial content hashes, and a stat-based index so that a re-run does not read every byte of every trial.

The conversion cache keys each Harbor trial by ``trial_content_hash`` (every byte of every file under the
trial dir). On a re-run where every trial hits the cache, reading those bytes is most of the time (a proxy
log alone can be many MB). ``cached_trial_content_hash`` returns the same hash, but first compares a cheap
*stat signature* of the trial (names, sizes, mtimes, ctimes, inodes, symlink targets of every entry) with
the one recorded when the hash was last computed; when they match, the recorded hash is returned without
opening a single trial file.

Why the signature can be trusted (the rules git uses for its index):

- every write to a file changes its ctime, and nobody can set ctime back (``touch -r`` / ``rsync -t`` /
  ``os.utime`` set mtime only), so a same-size rewrite with a restored mtime still changes the signature;
- replacing a file (write a temp + rename, ``cp``, ``git checkout``) changes its inode and ctime;
- the one thing stat cannot show is a write that lands in the same timestamp tick as the stat that was
  recorded (coarse timestamps: 1-2 s on FAT/some NFS, a jiffy on ext4). Such an entry is *racy*: if any
  entry of the trial has an mtime or ctime at or after ``written_ns - RACY_MARGIN_NS`` (``written_ns`` =
  when the recorded hash computation started), the signature cannot prove the content is unchanged, and
  the trial is re-hashed (the refreshed entry then gets a later ``written_ns`` and is trusted next time).

What it does not protect against (use ``trust_stats=False`` there): a file system that reports stale stat
data (NFS attribute caching while another host writes the trial), and a clock skew between this host and
a remote file server larger than ``RACY_MARGIN_NS`` on a file system with coarse timestamps.

Index entry: ``<index_dir>/<2 hex>/<sha256 of the resolved trial path>.json`` holding ``version``,
``path``, ``signature`` (sha256 of the signature bytes), ``content_hash`` and ``written_ns``. Entries are
written atomically (``sft.core.io_utils.atomic_write_bytes``); each is self-consistent on its own (signature
taken before hashing, see ``_index_and_hash``), so two writers racing on one entry need no lock: whichever
``os.replace`` lands last leaves a valid entry, and an entry that describes an older state of the trial
simply does not match its current signature.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from sft.core.io_utils import atomic_write_bytes

logger = logging.getLogger(__name__)

# Bump when the signature bytes, the entry layout or ``trial_content_hash`` change: old entries are ignored.
INDEX_VERSION = 2  # 2: sha256 content hashes
# Timestamps written during (or just before) a hash may not differ from the recorded ones: FAT rounds mtime
# to 2 s, ext4/xfs stamp files with the kernel's coarse clock (up to a jiffy behind time.time_ns()).
RACY_MARGIN_NS = 2_000_000_000

_CONTENT_HASH_RE = re.compile(r"[0-9a-f]{64}")  # sha256
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")  # sha256
_warned_index_dirs: set[str] = set()

# Indirections the tests replace (a coarse-timestamp file system, a clock that runs ahead).
_now_ns = time.time_ns
_lstat = os.lstat
_stat = os.stat


# --------------------------------------------------------------------------------------------- content hash


def trial_content_hash(trial_dir: Path) -> str:
    """A hash of every file under the trial dir (names, sizes and bytes); symlinks are not followed."""
    return _hash_trial(trial_dir)[0]


def _hash_trial(trial_dir: Path) -> tuple[str, bool]:
    """``trial_content_hash`` plus whether it saw every file: a hash that folded in a read or listing error
    (EMFILE, EIO, a file vanishing mid-walk) is right for this run but must not be recorded in the index,
    where it would outlive the transient error. sha256, not blake2b: OpenSSL's SHA extensions hash ~2x
    faster here (1.7 vs 0.8 GB/s), and a first run with the cache on hashes every byte of the job."""
    listing_errors: list[OSError] = []
    complete = True
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(trial_dir, followlinks=False, onerror=listing_errors.append):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(trial_dir).as_posix()
            digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            try:
                if path.is_symlink():
                    digest.update(b"symlink:" + os.readlink(path).encode("utf-8", "surrogateescape"))
                    continue
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            except OSError as exc:
                complete = False
                digest.update(f"unreadable:{exc.errno}".encode())
    return digest.hexdigest(), complete and not listing_errors


# ------------------------------------------------------------------------------------------ stat signature


@dataclass(frozen=True)
class StatSignature:
    """The stat signature of a trial dir: ``digest`` (sha256 hex of every entry's stat record) and
    ``newest_ns``, the latest mtime or ctime among them (what the racy rule compares)."""

    digest: str
    newest_ns: int


def _stat_record(kind: bytes, rel: bytes, full: str, st: os.stat_result) -> tuple[bytes, int]:
    """One entry's record (NUL-separated, a fixed number of fields: unambiguous) and its newest time."""
    target = os.fsencode(os.readlink(full)) if stat.S_ISLNK(st.st_mode) else b""
    numbers = f"{st.st_mode}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode()
    return kind + b"\0" + rel + b"\0" + target + b"\0" + numbers, max(st.st_mtime_ns, st.st_ctime_ns)


def stat_signature(trial_dir: Path) -> StatSignature | None:
    """The trial's stat signature, walked exactly like ``trial_content_hash`` walks it; None when any entry
    cannot be listed or stat'ed (the trial is changing or unreadable: hash it, do not index it).

    Directories are recorded too (``d``), files and symlinks as ``f``: an added or removed empty dir, or a
    symlink whose target turned from a file into a dir (``os.walk`` then lists it as a dir, and the content
    hash drops it), changes the signature even where the content hash may not.
    """
    top = os.fspath(trial_dir)
    listing_errors: list[OSError] = []
    try:
        record, newest = _stat_record(b"root", b"", top, _stat(top))
    except OSError:
        return None
    records = [b"sft-trial-index-%d\0" % INDEX_VERSION, record]
    try:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=listing_errors.append):
            dirnames.sort()
            rel_dir = os.fsencode(os.path.relpath(dirpath, top)) if dirpath != top else b""
            for kind, names in ((b"d", dirnames), (b"f", sorted(filenames))):
                for name in names:
                    full = os.path.join(dirpath, name)
                    rel = rel_dir + b"/" + os.fsencode(name) if rel_dir else os.fsencode(name)
                    record, entry_newest = _stat_record(kind, rel, full, _lstat(full))
                    records.append(record)
                    newest = max(newest, entry_newest)
    except OSError:  # an entry vanished between the listing and its lstat/readlink
        return None
    if listing_errors:
        return None
    return StatSignature(hashlib.sha256(b"".join(records)).hexdigest(), newest)


# --------------------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class _IndexEntry:
    signature: str
    content_hash: str
    written_ns: int


def _path_text(resolved: str) -> str:
    """The resolved path as JSON-safe text (undecodable bytes escaped, never dropped)."""
    return os.fsencode(resolved).decode("utf-8", "backslashreplace")


def index_entry_path(index_dir: Path, trial_dir: Path) -> Path:
    """Where the index entry of ``trial_dir`` lives: keyed by its resolved absolute path."""
    return _entry_path(index_dir, os.path.realpath(trial_dir))


def _entry_path(index_dir: Path, resolved: str) -> Path:
    key = hashlib.sha256(os.fsencode(resolved)).hexdigest()
    return Path(index_dir) / key[:2] / f"{key}.json"


def _read_entry(entry_path: Path, resolved: str) -> _IndexEntry | None:
    """The entry at ``entry_path`` if it is a well-formed entry of this version for this trial path."""
    try:
        raw = entry_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.debug("unreadable trial index entry %s (%s); re-hashing the trial", entry_path, exc)
        return None
    try:
        data = orjson.loads(raw)
        entry = _IndexEntry(data["signature"], data["content_hash"], data["written_ns"])
        well_formed = (
            data["version"] == INDEX_VERSION
            and isinstance(entry.signature, str)
            and _SIGNATURE_RE.fullmatch(entry.signature) is not None
            and isinstance(entry.content_hash, str)
            and _CONTENT_HASH_RE.fullmatch(entry.content_hash) is not None
            and type(entry.written_ns) is int
        )
    except (ValueError, TypeError, KeyError):  # orjson.JSONDecodeError is a ValueError; a list has no keys
        well_formed = False
    if not well_formed:
        logger.warning("damaged trial index entry %s; re-hashing the trial and rewriting it", entry_path)
        return None
    if data.get("path") != _path_text(resolved):
        logger.warning(
            "trial index entry %s belongs to %r, not %r; re-hashing the trial and rewriting it",
            entry_path,
            data.get("path"),
            _path_text(resolved),
        )
        return None
    return entry


def _write_entry(index_dir: Path, entry_path: Path, resolved: str, entry: _IndexEntry) -> None:
    """Record the entry; a full, read-only or missing index dir only costs speed (warned once per dir)."""
    payload = {
        "version": INDEX_VERSION,
        "path": _path_text(resolved),
        "signature": entry.signature,
        "content_hash": entry.content_hash,
        "written_ns": entry.written_ns,
    }
    try:
        atomic_write_bytes(
            entry_path, orjson.dumps(payload), durable=False
        )  # a torn entry is rejected as damaged
    except OSError as exc:
        if str(index_dir) not in _warned_index_dirs:
            _warned_index_dirs.add(str(index_dir))
            logger.warning(
                "cannot write the trial index in %s (%s): every re-run re-reads every trial; make the "
                "directory writable or disable the index",
                index_dir,
                exc,
            )


def cached_trial_content_hash(trial_dir: Path, index_dir: Path | None, *, trust_stats: bool = True) -> str:
    """Exactly ``trial_content_hash(trial_dir)``, read from the stat index when the trial provably did not
    change since it was recorded (same stat signature, entry not racy); otherwise hashed and recorded.

    ``index_dir=None`` or ``trust_stats=False`` (for file systems whose stat data can be stale) always
    hashes and touches no index.
    """
    if index_dir is None or not trust_stats:
        return trial_content_hash(trial_dir)
    # Taken before the signature walk and the hash, so it precedes every read of the trial's content.
    started_ns = _now_ns()
    signature = stat_signature(trial_dir)
    if signature is None:
        return trial_content_hash(trial_dir)
    resolved = os.path.realpath(trial_dir)
    entry_path = _entry_path(index_dir, resolved)
    stored = _read_entry(entry_path, resolved)
    if (
        stored is not None
        and stored.signature == signature.digest
        and signature.newest_ns < stored.written_ns - RACY_MARGIN_NS
    ):
        return stored.content_hash
    return _index_and_hash(trial_dir, Path(index_dir), entry_path, resolved, signature, started_ns)


def _index_and_hash(
    trial_dir: Path,
    index_dir: Path,
    entry_path: Path,
    resolved: str,
    signature: StatSignature,
    started_ns: int,
) -> str:
    """Hash the trial and record (signature, hash, started_ns).

    Which time is safe as ``written_ns``: the one taken *before* the signature walk and the hash. The
    recorded signature was read before the content, so any write that could make the recorded hash stale
    happens after ``started_ns``. Such a write either changes the stat (the signature no longer matches) or
    lands in the same coarse timestamp tick, and then its mtime/ctime is at least ``started_ns`` minus the
    timestamp granularity, which ``RACY_MARGIN_NS`` covers: the entry is racy and never trusted. A time
    taken *after* hashing would let a write made during a long hash (a multi-MB log) look older than the
    entry, and be trusted with the stale hash.
    """
    content_hash, complete = _hash_trial(trial_dir)
    if complete:
        _write_entry(index_dir, entry_path, resolved, _IndexEntry(signature.digest, content_hash, started_ns))
    return content_hash
