"""`sft cache`: see and bound the conversion cache.

The cache (``data/02_intermediate/conversion_cache``) keeps one entry per converted trial, keyed by the
trial's content, the conversion settings and the conversion code, so every sft upgrade or settings change
starts a new set of entries beside the old ones (about a tenth of the raw proxy log each). Entries are
touched on every cache hit, so their mtime says when a conversion last used them; ``prune`` removes what no
conversion used for N days. Deleting entries is always safe: a missing entry is recomputed.

    sft cache info                      # entries, size, last use
    sft cache prune --unused-days 30    # remove entries no conversion used in 30 days (--dry-run first)
    sft cache clear                     # remove the whole cache
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sft.config.paths import conversion_cache_dir
from sft.engine.harbor import trial_index_dir

DAY_S = 86_400


@dataclass
class CacheFiles:
    """The cache's entry files: conversion results (``*.trial``) and stat-index entries (``trial_index_dir``)."""

    results: list[Path]
    index: list[Path]

    @classmethod
    def scan(cls, cache_dir: Path) -> CacheFiles:
        if not cache_dir.is_dir():
            return cls([], [])
        index_dir = trial_index_dir(cache_dir)
        # */*.json directly under the cache: entries of sft versions before the .trial format
        results = sorted([*cache_dir.glob("*/*.trial"), *cache_dir.glob("*/*.json")])
        return cls(results, sorted(index_dir.glob("*/*.json")) if index_dir.is_dir() else [])


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:  # removed by a concurrent run
            pass
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _age_days(path: Path, now: float) -> float | None:
    try:
        return (now - path.stat().st_mtime) / DAY_S
    except OSError:
        return None


def info(cache_dir: Path, out: TextIO | None = None) -> int:
    files = CacheFiles.scan(cache_dir)
    now = time.time()
    ages = [a for a in (_age_days(p, now) for p in files.results) if a is not None]
    lines = [
        f"conversion cache: {cache_dir}",
        f"  results: {len(files.results)} entries, {_mb(_size(files.results))}",
        f"  stat index: {len(files.index)} entries, {_mb(_size(files.index))}",
    ]
    if ages:
        lines.append(f"  last used: newest {min(ages):.1f} days ago, oldest {max(ages):.1f} days ago")
    print("\n".join(lines), file=out or sys.stdout)
    return 0


def prune(cache_dir: Path, unused_days: float, *, dry_run: bool = False, out: TextIO | None = None) -> int:
    """Remove entries whose last use (mtime) is older than ``unused_days``; returns the number removed."""
    if unused_days < 0:
        raise ValueError(
            f"--unused-days {unused_days}: must be >= 0 (days since a conversion last used an entry)"
        )
    files = CacheFiles.scan(cache_dir)
    now = time.time()
    stale = [p for p in files.results + files.index if (_age_days(p, now) or 0.0) > unused_days]
    freed = _size(stale)
    if not dry_run:
        for path in stale:
            path.unlink(missing_ok=True)
    verb = "would remove" if dry_run else "removed"
    print(
        f"{verb} {len(stale)} cache entries unused for more than {unused_days:g} days ({_mb(freed)}) "
        f"from {cache_dir}",
        file=out or sys.stdout,
    )
    return len(stale)


def clear(cache_dir: Path, out: TextIO | None = None) -> None:
    size = _size(CacheFiles.scan(cache_dir).results)
    shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"removed the conversion cache {cache_dir} ({_mb(size)} of results)", file=out or sys.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sft cache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=None,
        help="project root (default: $SFT_PROJECT_ROOT, else the nearest parent with pyproject.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="entries, size and last use")
    prune_parser = commands.add_parser("prune", help="remove entries no conversion used for N days")
    prune_parser.add_argument("--unused-days", type=float, default=30.0)
    prune_parser.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    commands.add_parser("clear", help="remove the whole cache")
    args = parser.parse_args(argv)
    if args.project is None:
        from sft.config.loader import project_root

        args.project = project_root()
    cache_dir = conversion_cache_dir(Path(args.project))
    if args.command == "info":
        return info(cache_dir)
    if args.command == "prune":
        try:
            prune(cache_dir, args.unused_days, dry_run=args.dry_run)
        except ValueError as exc:
            parser.error(str(exc))
        return 0
    clear(cache_dir)
    return 0
