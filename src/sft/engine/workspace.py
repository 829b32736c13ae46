"""The folders the conversion engine keeps during and between runs, handed to it by the catalog.

The Kedro catalog's ``conversion_workspace`` entry (sft.datasets.workspace) loads one of these from
``${cfg:paths.*}``; library callers (tests, benchmarks) take ``ConversionWorkspace.under(root)``, the same
folders. What lives in them is listed in docs/catalog.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sft.config.paths import HF_DATA_DIR, conversion_cache_dir, spool_dir
from sft.config.schema import RuntimeInput
from sft.rules.filters import ExclusionList


@dataclass(frozen=True)
class ConversionWorkspace:
    spool_dir: Path  # scratch files of one run (rows waiting to be written), removed when the run ends
    cache_dir: Path  # per-trial conversion cache: <key[:2]>/<key>.trial, and its stat index trial-index/
    hub_dir: Path  # files fetched from the Hugging Face Hub: <owner>__<name>/<file>

    @classmethod
    def under(cls, root: Path | str) -> ConversionWorkspace:
        """The project's default folders (sft.config.paths), as ``conversion_workspace`` resolves them."""
        return cls(
            spool_dir=spool_dir(root), cache_dir=conversion_cache_dir(root), hub_dir=Path(root) / HF_DATA_DIR
        )


def load_exclusions(cfg: RuntimeInput, root: Path) -> ExclusionList | None:
    """``conversion.exclude_repos_file`` for library callers (the Kedro node gets it from the catalog's
    ``repo_exclusions``); None when the setting is empty."""
    configured = cfg.conversion.exclude_repos_file
    if not configured:
        return None
    path = Path(configured) if Path(configured).is_absolute() else root / configured
    if not path.is_file():
        raise FileNotFoundError(
            f"conversion.exclude_repos_file: {path} does not exist. Restore it, point the setting at "
            'your list, or set it to "" to disable eval-leak protection (not recommended).'
        )
    return ExclusionList.load(path)
