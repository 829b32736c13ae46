"""Regenerate the eval-leak exclusion list (``artifacts/data/excluded_repos.txt``, reference contract §3.4).

Why: sft must never train on trajectories from repositories whose issues make up the SWE-bench test sets we
evaluate on, or the scores measure memorisation instead of skill. The list is derived from the benchmarks
themselves, so it is regenerated from the Hugging Face datasets rather than edited by hand:

    python scripts/generate_excluded_repos.py -o artifacts/data/excluded_repos.txt

It loads each dataset's ``test`` split with ``datasets.load_dataset``, collects the distinct ``repo`` values
(normalised to ``owner/repo``), sorts them case-insensitively and writes them atomically under a ``#``
header. This needs network access; when a dataset cannot be loaded (``HF_HUB_OFFLINE=1``, no network, a
renamed dataset) it stops with an error naming that dataset and leaves the shipped list untouched, because
a partial list would silently weaken the leak protection.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sft.core.io_utils import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = Path("artifacts/data/excluded_repos.txt")
REGENERATE_COMMAND = "python scripts/generate_excluded_repos.py -o artifacts/data/excluded_repos.txt"
REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_GITHUB_PREFIXES = ("https://github.com/", "http://github.com/", "github.com/")


@dataclass(frozen=True)
class BenchmarkDataset:
    """One benchmark whose test-split repositories must be excluded from training."""

    label: str
    hf_id: str
    split: str = "test"


BENCHMARKS: tuple[BenchmarkDataset, ...] = (
    BenchmarkDataset("SWE-bench Verified", "SWE-bench/SWE-bench_Verified"),
    BenchmarkDataset("SWE-bench Pro (public)", "ScaleAI/SWE-bench_Pro"),
    BenchmarkDataset("SWE-bench Multilingual", "SWE-bench/SWE-bench_Multilingual"),
)

# A loader returns the raw ``repo`` values of one dataset split; injectable so tests need no network.
RepoLoader = Callable[[BenchmarkDataset], Iterable[str]]


class GenerationError(RuntimeError):
    """The list could not be regenerated; the message names the dataset and says what to do."""


def normalise_repo(value: object, dataset_id: str) -> str:
    """Turn one dataset ``repo`` value into ``owner/repo``.

    Datasets occasionally carry a GitHub URL or a ``.git`` suffix; the exclusion matcher expects the bare
    ``owner/repo`` form, so anything else is an error rather than a silently useless line.
    """
    if not isinstance(value, str):
        raise GenerationError(
            f"{dataset_id}: a 'repo' value is {value!r} ({type(value).__name__}), expected a string "
            "'owner/repo'. Check the dataset's schema before regenerating the exclusion list."
        )
    repo = value.strip()
    for prefix in _GITHUB_PREFIXES:
        if repo.lower().startswith(prefix):
            repo = repo[len(prefix) :]
            break
    repo = repo.rstrip("/").removesuffix(".git")
    if not REPO_PATTERN.match(repo):
        raise GenerationError(
            f"{dataset_id}: 'repo' value {value!r} is not of the form 'owner/repo' "
            f"(pattern {REPO_PATTERN.pattern}). Check the dataset before regenerating the exclusion list."
        )
    return repo


def sort_repos(repos: Iterable[str]) -> list[str]:
    """Sort case-insensitively and drop case-only duplicates.

    Matching is case-insensitive (§3.4), so ``BurntSushi/ripgrep`` and ``burntsushi/ripgrep`` are one entry;
    the tie-break on the exact string keeps the output deterministic.
    """
    unique: dict[str, str] = {}
    for repo in sorted(set(repos), key=lambda r: (r.lower(), r)):
        unique.setdefault(repo.lower(), repo)
    return list(unique.values())


def parse_repo_list(text: str) -> list[str]:
    """Read an exclusion file: one ``owner/repo`` per line, ``#`` lines and blank lines ignored."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def render_repo_list(
    repos: Sequence[str],
    per_dataset_counts: dict[str, int],
    provenance: Sequence[str],
) -> str:
    """The file text: a ``#`` header saying what the list is, where it came from and how to remake it."""
    header = [
        "# SWE-bench eval-leak exclusion list for sft (conversion.exclude_repos_file, reference contract §3.4).",
        "# Trajectories whose instance id belongs to one of these repositories are removed before SFT",
        "# training, so no repository of a benchmark test set we evaluate on leaks into the training data.",
        "#",
        "# Source datasets (Hugging Face id, split, distinct repositories):",
    ]
    for bench in BENCHMARKS:
        count = per_dataset_counts.get(bench.hf_id)
        suffix = f"{count} repositories" if count is not None else "repositories not counted"
        header.append(f"#   {bench.label}: {bench.hf_id} (split {bench.split}), {suffix}")
    header.append("#")
    header.extend(f"# {line}" if line else "#" for line in provenance)
    header += [
        "#",
        "# Format: one owner/repo per line; lines starting with '#' and blank lines are ignored;",
        "# matching against instance ids is case-insensitive.",
        f"# Regenerate (needs network): {REGENERATE_COMMAND}",
        f"# {len(repos)} repositories.",
    ]
    return "\n".join([*header, *repos]) + "\n"


def _offline_flag() -> str | None:
    """Name of the env var that forbids downloads, if one is set to a true value."""
    for name in OFFLINE_ENV_VARS:
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return name
    return None


def load_repos_from_hub(bench: BenchmarkDataset) -> list[str]:
    """The ``repo`` column of one dataset split, downloaded with ``datasets.load_dataset``."""
    from datasets import load_dataset  # imported here: heavy, and only needed when regenerating

    dataset = load_dataset(bench.hf_id, split=bench.split)
    if "repo" not in dataset.column_names:
        raise GenerationError(
            f"{bench.hf_id} (split {bench.split}) has no 'repo' column (columns: {dataset.column_names}). "
            "The dataset schema changed; update scripts/generate_excluded_repos.py."
        )
    return list(dataset.unique("repo"))


def collect_repos(
    loader: RepoLoader,
    output: Path,
    benchmarks: Sequence[BenchmarkDataset] = BENCHMARKS,
) -> dict[str, set[str]]:
    """Repositories per dataset id; stops at the first dataset that cannot be loaded."""
    offline = _offline_flag()
    found: dict[str, set[str]] = {}
    for bench in benchmarks:
        if offline is not None:
            raise GenerationError(
                f"cannot download {bench.hf_id} (split {bench.split}): {offline} is set, so Hugging Face "
                f"downloads are disabled. The shipped list {output} stays as is. Unset {offline} and run "
                f"'{REGENERATE_COMMAND}' on a machine with network access."
            )
        try:
            values = list(loader(bench))
        except GenerationError:
            raise
        except Exception as exc:  # network, auth, renamed dataset: all end the same way for the user
            raise GenerationError(
                f"cannot load {bench.hf_id} (split {bench.split}): {type(exc).__name__}: {exc}. The shipped "
                f"list {output} stays as is. Check network access (and HF_TOKEN if the dataset is gated), "
                f"then rerun '{REGENERATE_COMMAND}'."
            ) from exc
        repos = {normalise_repo(value, bench.hf_id) for value in values}
        if not repos:
            raise GenerationError(
                f"{bench.hf_id} (split {bench.split}) gave no repositories. The shipped list {output} stays "
                "as is. Check that the dataset id and split are still right."
            )
        found[bench.hf_id] = repos
    return found


def generate(output: Path, loader: RepoLoader = load_repos_from_hub, today: str | None = None) -> list[str]:
    """Load every benchmark, then write the list atomically; nothing is written unless all loads succeed."""
    per_dataset = collect_repos(loader, output)
    repos = sort_repos(repo for found in per_dataset.values() for repo in found)
    date = today or datetime.now(UTC).date().isoformat()
    provenance = [
        f'Generated {date} by scripts/generate_excluded_repos.py: datasets.load_dataset(<id>, split="test"),',
        "distinct 'repo' values normalised to owner/repo, merged, sorted case-insensitively.",
    ]
    counts = {hf_id: len(found) for hf_id, found in per_dataset.items()}
    atomic_write_text(output, render_repo_list(repos, counts, provenance))
    return repos


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Regenerate the SWE-bench repo exclusion list (eval-leak protection). Needs network."
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help=f"where to write the list (default: <project root>/{DEFAULT_OUTPUT})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    output = args.output if args.output is not None else PROJECT_ROOT / DEFAULT_OUTPUT
    try:
        repos = generate(output)
    except GenerationError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(repos)} repositories to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
