"""Several nodes, one shared project directory: who converts, who waits, who records.

Every node runs the same ``kedro run`` on shared storage (by hand or one Slurm task per node). Without
coordination each node would re-convert and re-register the dataset concurrently, take the same output-dir
lock (refused on file systems where locks work across hosts) and record its own history entry. The rules:

- node 0 (``NODE_RANK`` / ``SLURM_NODEID`` / ``infrastructure.node_rank``) runs the whole pipeline: convert,
  register, check, then marks the registered dataset ready for this run and trains;
- nodes 1.. run the follower pipeline (``sft.pipeline_registry``): wait for node 0's ready marker of *this*
  run (``SFT_RUN_ID``, or Slurm's ``SLURM_JOB_ID``, shared by every node), bounded by
  ``infrastructure.dataset_wait_s``, then train; they write no dataset, no history entry, no results;
- each node holds its own lock in the output dir (node 0 the run lock, node k ``.sft-train.node<k>.lock``),
  so a second live run on the same node is still refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sft.config.schema import InfrastructureConfig
from sft.core.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

RUN_ID_ENV = "SFT_RUN_ID"


class DatasetWaitError(RuntimeError):
    """A follower node gave up waiting for node 0's registered dataset (names the marker and the fix)."""


def node_rank(infra: InfrastructureConfig, env: Mapping[str, str]) -> int:
    """This node's rank: 0 on a single node; else config, ``NODE_RANK``, ``SLURM_NODEID``, 0."""
    if infra.n_nodes <= 1:
        return 0
    if infra.node_rank is not None:
        return int(infra.node_rank)
    return int(env.get("NODE_RANK") or env.get("SLURM_NODEID") or 0)


def is_follower(infra: InfrastructureConfig, env: Mapping[str, str]) -> bool:
    return infra.n_nodes > 1 and node_rank(infra, env) > 0


def run_token(env: Mapping[str, str]) -> str | None:
    """What identifies one multi-node run on every node: ``SFT_RUN_ID``, else ``SLURM_JOB_ID``."""
    return env.get(RUN_ID_ENV) or env.get("SLURM_JOB_ID") or None


def ready_marker(dataset_dir: Path, dataset_key: str) -> Path:
    return Path(dataset_dir) / f".{dataset_key}.ready.json"


def _registered_file(dataset_dir: Path, dataset_key: str) -> Path | None:
    info_path = Path(dataset_dir) / "dataset_info.json"
    try:
        entry = json.loads(info_path.read_text(encoding="utf-8")).get(dataset_key)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not entry.get("file_name"):
        return None
    return Path(dataset_dir) / str(entry["file_name"])


def mark_dataset_ready(dataset_dir: Path, dataset_key: str, token: str) -> Path:
    """Node 0: the dataset ``dataset_key`` is converted and registered for run ``token``."""
    data_file = _registered_file(dataset_dir, dataset_key)
    if data_file is None or not data_file.is_file():
        raise DatasetWaitError(
            f"{Path(dataset_dir) / 'dataset_info.json'}: dataset '{dataset_key}' is not registered with an existing "
            "file, so the other nodes cannot be released. Fix: run the convert pipeline on node 0 first"
        )
    marker = ready_marker(dataset_dir, dataset_key)
    record = {
        "run_id": token,
        "dataset_key": dataset_key,
        "file_name": data_file.name,
        "size": data_file.stat().st_size,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(marker, json.dumps(record, indent=2) + "\n")
    logger.info("node 0: dataset '%s' ready for run %s (%s)", dataset_key, token, marker)
    return marker


def _ready_record(dataset_dir: Path, dataset_key: str, token: str) -> dict[str, Any] | None:
    marker = ready_marker(dataset_dir, dataset_key)
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("run_id") != token:
        return None  # absent, or left by an earlier run
    data_file = _registered_file(dataset_dir, dataset_key)
    if data_file is None or not data_file.is_file() or data_file.stat().st_size != record.get("size"):
        return None
    return record


def wait_for_dataset(
    dataset_dir: Path,
    dataset_key: str,
    token: str,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Follower: block until node 0 marked ``dataset_key`` ready for run ``token``; the marker's record.

    Raises DatasetWaitError after ``timeout_s`` seconds.
    """
    deadline = clock() + timeout_s
    logged = False
    while True:
        record = _ready_record(dataset_dir, dataset_key, token)
        if record is not None:
            logger.info("dataset '%s' is registered by node 0 for run %s", dataset_key, token)
            return record
        if clock() >= deadline:
            raise DatasetWaitError(
                f"waited {timeout_s:.0f} s for node 0 to convert and register dataset '{dataset_key}' for run "
                f"{token} (marker {ready_marker(dataset_dir, dataset_key)} not written). Check node 0's log (did its "
                f"conversion fail, or does it use another {RUN_ID_ENV}?); raise infrastructure.dataset_wait_s if the "
                "conversion is just slow"
            )
        if not logged:
            logger.info(
                "node waits for node 0 to register dataset '%s' (run %s, at most %.0f s)",
                dataset_key,
                token,
                timeout_s,
            )
            logged = True
        sleep(poll_s)
