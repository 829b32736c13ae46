"""Project hooks: validate the selected config before any node runs."""

from __future__ import annotations

import json
import logging
import os
import time

from kedro.framework.hooks import hook_impl

from sft.config.loader import config_path, load_selected_config

logger = logging.getLogger(__name__)


class SftHooks:
    @hook_impl
    def after_context_created(self, context) -> None:  # Kedro passes a KedroContext
        # Offline-safe defaults; an explicit user setting wins.
        os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        cfg = load_selected_config()  # raises ConfigError with every problem listed
        logger.info("sft config: %s (source.type=%s)", config_path(), cfg.input.source.type)


NODE_TIMINGS_ENV = "SFT_NODE_TIMINGS"


def _cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (the worker pools of a node)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class NodeTimingHooks:
    """Per-node wall and CPU seconds of the node function, and the wall seconds of each dataset load/save of
    a node, appended as JSON lines to the file named by ``$SFT_NODE_TIMINGS`` (off when unset): what
    ``benchmarks/bench_pipeline.py`` reads from a ``kedro run`` subprocess."""

    def __init__(self) -> None:
        self._started: dict[str, tuple[float, float]] = {}
        self._io: dict[tuple[str, str], float] = {}

    def _write(self, record: dict[str, object]) -> None:
        path = os.environ.get(NODE_TIMINGS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def _io_start(self, dataset_name: str, node) -> None:
        if os.environ.get(NODE_TIMINGS_ENV):
            self._io[(dataset_name, getattr(node, "name", ""))] = time.perf_counter()

    def _io_end(self, kind: str, dataset_name: str, node) -> None:
        started = self._io.pop((dataset_name, getattr(node, "name", "")), None)
        if started is not None:
            self._write(
                {
                    "node": getattr(node, "name", ""),
                    "io": kind,
                    "dataset": dataset_name,
                    "wall_s": round(time.perf_counter() - started, 4),
                }
            )

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node) -> None:
        self._io_start(dataset_name, node)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, node) -> None:
        self._io_end("load", dataset_name, node)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, node) -> None:
        self._io_start(dataset_name, node)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node) -> None:
        self._io_end("save", dataset_name, node)

    @hook_impl
    def before_node_run(self, node) -> None:
        if os.environ.get(NODE_TIMINGS_ENV):
            self._started[node.name] = (time.perf_counter(), _cpu_seconds())

    @hook_impl
    def after_node_run(self, node) -> None:
        started = self._started.pop(node.name, None)
        if started is not None:
            self._write(
                {
                    "node": node.name,
                    "wall_s": round(time.perf_counter() - started[0], 4),
                    "cpu_s": round(_cpu_seconds() - started[1], 4),
                }
            )
