"""Lay out a dataset repo in a Hugging Face Hub cache exactly as huggingface_hub 0.36 stores it.

``<cache>/datasets--<owner>--<name>/blobs/<hash>`` holds the bytes, ``snapshots/<commit>/<path>`` are
relative symlinks to the blobs and ``refs/main`` holds the commit hash (file_download.py /
_snapshot_download.py resolve ``refs/<revision>`` then ``snapshots/<commit>``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_dataset(hub_cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Write ``files`` (repo path -> bytes) into the cache; returns the snapshot folder."""
    repo_dir = hub_cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    for rel, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def lay_out_datasets_cache(
    datasets_cache: Path, repo_id: str, files: dict[str, bytes], scratch: Path
) -> Path:
    """What an online ``datasets.load_dataset(repo_id)`` leaves in ``HF_DATASETS_CACHE``.

    The real builder prepares the Arrow files from a local folder named like the dataset (so the files
    are ``<name>-<split>.arrow``); the folder is then renamed ``<owner>___<name>``, the name datasets'
    ``CachedDatasetModuleFactory`` looks up offline.
    """
    import datasets

    owner, name = repo_id.split("/")
    source = scratch / name
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    build = scratch / "build"
    datasets.load_dataset_builder(str(source), cache_dir=str(build)).download_and_prepare()
    target = datasets_cache / f"{owner}___{name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    (build / name).rename(target)
    return target
