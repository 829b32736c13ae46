"""Hugging Face Hub access for ``source.type: hf_lf``: cache look-ups, single-file downloads, native entries.

What LLaMA-Factory 0.9.5 (datasets 4.0) does with an ``hf_hub_url`` entry decides what we may register:

- Online, it calls ``datasets.load_dataset(<repo>, name=subset, split=split, token=...)`` at train time.
- With ``HF_HUB_OFFLINE=1`` datasets never reads the Hub file cache (``datasets--owner--name/snapshots``)
  for a repo id: it only falls back to its own *prepared* Arrow cache (``<owner>___<name>`` under
  ``HF_DATASETS_CACHE``), and raises ``ConnectionError`` otherwise (verified with datasets 4.0.0). A
  dataset that is only in the Hub file cache must therefore be registered as a local copy offline.

Everything here is offline-safe: cache look-ups use ``local_files_only=True`` and the only call that may
reach the network (``hf_hub_download`` of ``source.hf_file_name``) runs with ``local_files_only`` when
``HF_HUB_OFFLINE`` is set, so a missing file is an immediate error, never a hang.

The token is passed as ``token=`` and is never logged, written or put into an error message.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sft.core.io_utils import atomic_writer

logger = logging.getLogger(__name__)

_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}

# The entry shape the reference writes for every source type (docs/config-contract.md §5.3). Used for a Hub
# dataset whose rows are not available locally, so its layout cannot be detected.
REFERENCE_COLUMNS: dict[str, str] = {"messages": "messages"}
REFERENCE_TAGS: dict[str, str] = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


class HubAccessError(ValueError):
    """A Hub dataset or file could not be found or read (the message says what to do)."""


class HubDatasetNotCachedError(HubAccessError):
    """``HF_HUB_OFFLINE`` is set and the dataset / file is not in the local caches."""


def _env_true(name: str) -> bool:
    return (os.environ.get(name) or "").strip().upper() in _TRUE_VALUES


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE`` / ``HF_DATASETS_OFFLINE``), read now, not at import.

    ``HF_DATASETS_OFFLINE`` counts because LLaMA-Factory loads Hub datasets through datasets at train time.
    """
    return any(_env_true(name) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hub file cache, resolved like huggingface_hub does, but from the environment of *now*."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def datasets_cache_dir() -> Path:
    """The datasets Arrow cache LLaMA-Factory uses by default (``HF_DATASETS_CACHE`` / ``HF_HOME``)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_DATASETS_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "datasets"
    from datasets import config

    return Path(config.HF_DATASETS_CACHE)


def repo_folder(repo_id: str) -> str:
    """``owner/name`` -> ``owner__name`` (the reference's hf_data folder name)."""
    return repo_id.replace("/", "__")


def _safe_relative(file_name: str) -> PurePosixPath:
    rel = PurePosixPath(file_name)
    if rel.is_absolute() or not rel.parts or any(part in ("", ".", "..") for part in rel.parts):
        raise HubAccessError(
            f"source.hf_file_name: {file_name!r} must be a path inside the dataset repo "
            "(e.g. 'data/train.jsonl'), without '..' or a leading '/'"
        )
    return rel


# ---------------------------------------------------------------------------------------------- files


def download_hub_file(repo_id: str, file_name: str, hub_dir: Path, *, token: str | None) -> tuple[Path, str]:
    """Fetch exactly ``file_name`` of dataset ``repo_id`` into ``<hub_dir>/<owner>__<name>/`` (``hub_dir``: the
    conversion workspace's, ``artifacts/data/hf_data`` by default).

    The file goes through the shared Hub cache (so an offline run finds a file downloaded before) and is
    then copied atomically into the data layer. Returns ``(local path, note)``. Offline and not cached:
    an earlier copy in the data layer is reused (the note says so); otherwise ``HubDatasetNotCachedError``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    rel = _safe_relative(file_name)
    target = Path(hub_dir) / repo_folder(repo_id) / Path(*rel.parts)
    offline = hub_offline()
    try:
        cached = hf_hub_download(
            repo_id=repo_id,
            filename=str(rel),
            repo_type="dataset",
            token=token or None,
            cache_dir=str(hub_cache_dir()),
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        if target.is_file():
            logger.warning(
                "hf_lf: %s:%s is not in the Hub cache; reusing the earlier copy %s", repo_id, rel, target
            )
            return (
                target,
                f"reused the earlier download {target} (the Hub cache has no copy and the Hub was not reached)",
            )
        if offline:
            raise HubDatasetNotCachedError(
                f"source.hf_file_name: '{rel}' of dataset '{repo_id}' is not in the local Hub cache "
                f"({hub_cache_dir()}) and HF_HUB_OFFLINE=1 forbids downloading it; run once online or unset "
                "HF_HUB_OFFLINE"
            ) from exc
        raise HubAccessError(
            f"source.hf_file_name: could not download '{rel}' of dataset '{repo_id}' and it is not cached "
            f"({type(exc).__name__}); check the network or run once where the Hub is reachable"
        ) from exc
    except EntryNotFoundError as exc:
        raise HubAccessError(
            f"source.hf_file_name: dataset '{repo_id}' has no file '{rel}'; check the file name on the Hub"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise HubAccessError(
            f"source.hf_hub_url: dataset '{repo_id}' does not exist or is private; for a private dataset export "
            "HF_TOKEN (or set credentials.hf_token)"
        ) from exc
    _copy_atomically(Path(cached), target)
    logger.info("hf_lf: %s:%s -> %s", repo_id, rel, target)
    return target, f"downloaded '{rel}' of '{repo_id}' (repo type dataset) into {target}"


def _copy_atomically(source: Path, target: Path) -> None:
    if (
        target.is_file()
        and target.stat().st_size == source.stat().st_size
        and target.read_bytes() == source.read_bytes()
    ):
        return
    with source.open("rb") as src, atomic_writer(target) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


# ---------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class CachedRows:
    """Rows of a Hub dataset found locally, and where they came from."""

    rows: list[dict[str, Any]]
    origin: str  # hub_snapshot | datasets_cache
    detail: str  # human sentence: the snapshot folder / the cache


def _snapshot_folder(repo_id: str, token: str | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id=repo_id,
            repo_type="dataset",
            token=token or None,
            cache_dir=str(hub_cache_dir()),
            local_files_only=True,  # a cache look-up only: never the network
        )
    except LocalEntryNotFoundError:
        return None
    path = Path(folder)
    return path if path.is_dir() and any(path.iterdir()) else None


def _load_split(
    path: str, subset: str, split: str, cache_dir: Path, token: str | None
) -> list[dict[str, Any]]:
    """``datasets.load_dataset`` as LLaMA-Factory calls it, materialised as a list of rows."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    try:
        dataset = datasets.load_dataset(
            path, name=subset or None, split=split, cache_dir=str(cache_dir), token=token or None
        )
    except (ValueError, DatasetGenerationError) as exc:  # unknown split / config, unreadable data files
        raise HubAccessError(
            f"hf_lf: cannot load split '{split}' of subset '{subset or '(default)'}' from {path}: {exc}; "
            "check source.hf_split / source.hf_subset"
        ) from exc
    rows = dataset.to_list()
    del dataset
    return rows


def load_cached_rows(repo_id: str, subset: str, split: str, *, token: str | None) -> CachedRows | None:
    """The dataset's rows from the local caches, without touching the network; None when not cached.

    1. The Hub file cache (``datasets--owner--name/snapshots/<refs/main>``): loaded with the real
       ``datasets.load_dataset`` on the snapshot folder (README ``configs``, split file names), into a
       throw-away Arrow cache.
    2. Offline only: datasets' own prepared cache, exactly what LLaMA-Factory would read offline.
    """
    snapshot = _snapshot_folder(repo_id, token)
    if snapshot is not None:
        with tempfile.TemporaryDirectory(prefix="sft-hf-") as scratch:
            try:
                rows = _load_split(str(snapshot), subset, split, Path(scratch), token)
            except FileNotFoundError as exc:  # datasets' EmptyDatasetError: no data file in the snapshot
                raise HubAccessError(
                    f"hf_lf: the cached snapshot {snapshot} of '{repo_id}' holds no data file datasets can "
                    f"load ({exc}); delete it from the Hub cache and run once online"
                ) from exc
        return CachedRows(rows, "hub_snapshot", f"Hub cache snapshot {snapshot}")
    if hub_offline() and _datasets_offline():
        cache = datasets_cache_dir()
        try:
            rows = _load_split(repo_id, subset, split, cache, token)
        except (ConnectionError, FileNotFoundError):
            return None
        return CachedRows(rows, "datasets_cache", f"datasets cache {cache}")
    return None


def _datasets_offline() -> bool:
    """datasets reads HF_HUB_OFFLINE at import; only trust a repo-id load when it agrees (no network)."""
    from datasets import config

    return bool(config.HF_HUB_OFFLINE)


def not_cached_error(repo_id: str, subset: str, split: str) -> HubDatasetNotCachedError:
    return HubDatasetNotCachedError(
        f"source.hf_hub_url: dataset '{repo_id}' (subset '{subset or '(default)'}', split '{split}') is not in "
        f"the local Hub cache ({hub_cache_dir()}) nor in the datasets cache ({datasets_cache_dir()}), and "
        "HF_HUB_OFFLINE=1 forbids downloading it; run once online or unset HF_HUB_OFFLINE"
    )


# ---------------------------------------------------------------------------------------------- entries


def native_hub_entry(
    repo_id: str,
    subset: str,
    split: str,
    *,
    formatting: str,
    columns: dict[str, Any],
    tags: dict[str, Any] | None,
    num_samples: int | None = None,
) -> dict[str, Any]:
    """LLaMA-Factory's ``hf_hub_url`` entry: ``subset`` only if set, ``split`` only if it is not ``train``."""
    entry: dict[str, Any] = {"hf_hub_url": repo_id}
    if subset:
        entry["subset"] = subset
    if split and split != "train":
        entry["split"] = split
    entry["formatting"] = formatting
    entry["columns"] = dict(columns)
    if tags is not None:
        entry["tags"] = dict(tags)
    if num_samples is not None:
        entry["num_samples"] = num_samples
    return entry
