"""SIGKILL at random points: the previous outputs stay whole, no partial file appears under a final name,
and the next run succeeds.

Three writers are killed in a loop, each in a child process (``tests/robustness/_actors.py``):

* conversion + the catalog datasets (LLaMA-Factory JSON + Parquet, IM JSONL, rejects, funnel,
  dataset_info.json, the conversion cache), alternating two different results so that every write
  replaces one complete version with another;
* the config write-back (``write_runtime_output``);
* the run history (``record_run``: ``artifacts/index.yaml`` + archives).

The kill lands after a random delay (seeded, so a failure reproduces) once the child's imports are done,
i.e. somewhere in conversion or in the middle of the write loop.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from sft.config.loader import load_config
from sft.config.writeback import render_with_output
from sft.engine.harbor import TrialOutcome
from sft.train.history import _validate_runs, index_path, read_index, record_run
from tests.robustness._actors import output_for, output_paths
from tests.robustness.helpers import DEMO_CONFIG, DEMO_JOB, ROOT

ACTORS = Path(__file__).with_name("_actors.py")
KILLS = int(os.environ.get("SFT_KILL_POINTS", "6"))
SEED = int(os.environ.get("SFT_KILL_SEED", "8"))
TEMP_MARK = ".tmp-"


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, str(ACTORS), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _run_to_end(*args: str) -> str:
    proc = _child(*args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{args[0]} child failed:\n{err[-3000:]}"
    return out


def _start_ready(*args: str) -> subprocess.Popen[str]:
    proc = _child(*args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (
        f"child did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
    )
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"child ended by itself (rc {proc.returncode}) before the kill"


def _kill_after(delay: float, *args: str) -> None:
    """Start a child, wait until it is ready, let it run ``delay`` seconds, SIGKILL it."""
    proc = _start_ready(*args)
    time.sleep(delay)
    _kill(proc)


def _kill_mid_write(watch: list[Path], *args: str, timeout: float = 3.0) -> bool:
    """Start a child and SIGKILL it the moment a temp file appears in ``watch``: between the temp file's
    creation and the rename, i.e. in the middle of a write. True when a write was caught in progress."""
    proc = _start_ready(*args)
    deadline = time.monotonic() + timeout
    caught = False
    while time.monotonic() < deadline and not caught:
        caught = any(TEMP_MARK in entry.name for d in watch if d.is_dir() for entry in os.scandir(d))
    _kill(proc)
    return caught


def _kill_somewhere(point: int, rng: random.Random, max_delay: float, watch: list[Path], *args: str) -> bool:
    """Even points: after a random delay (anywhere in the run); odd points: in the middle of a write."""
    if point % 2 == 0:
        _kill_after(rng.uniform(0.0, max_delay), *args)
        return False
    return _kill_mid_write(watch, *args)


def _visible_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")}


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if TEMP_MARK in p.name]


# ----------------------------------------------------------------------------------------------- conversion


@pytest.fixture
def convert_root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "artifacts" / "data").mkdir(parents=True)
    shutil.copy2(ROOT / "artifacts" / "data" / "excluded_repos.txt", root / "artifacts" / "data")
    return root


def _snapshot(paths: dict[str, Path]) -> dict[str, bytes]:
    return {key: path.read_bytes() for key, path in paths.items()}


def _funnel_without_cache(raw: bytes) -> dict[str, Any]:
    report = json.loads(raw)
    report.pop("cache")  # hit/miss counts differ between a cold and a warm run; everything else must not
    return report


def _assert_whole(paths: dict[str, Path], versions: list[dict[str, bytes]], where: str) -> None:
    """Each output is byte-identical to one complete version (the funnel modulo its cache counters)."""
    for key, path in paths.items():
        data = path.read_bytes()
        if key == "funnel":
            assert _funnel_without_cache(data) in [_funnel_without_cache(v[key]) for v in versions], where
            continue
        assert data in [v[key] for v in versions], (
            f"{where}: {path.name} is neither the old nor the new version"
        )
    pq.read_table(paths["parquet"])  # and the Parquet footer is readable
    assert json.loads(paths["info"].read_bytes())["keep_me"] == {"file_name": "other.json"}


def test_sigkill_during_conversion_and_writes_never_leaves_a_torn_output(convert_root: Path) -> None:
    paths = output_paths(convert_root)
    paths["info"].parent.mkdir(parents=True)
    paths["info"].write_text(json.dumps({"keep_me": {"file_name": "other.json"}}))  # another run's entry
    cache = convert_root / "data" / "02_intermediate" / "conversion_cache"

    _run_to_end("convert", str(convert_root), str(DEMO_JOB), "1")
    version_a = _snapshot(paths)
    _run_to_end("convert", str(convert_root), str(DEMO_JOB), "2")
    version_b = _snapshot(paths)
    assert version_a["lf"] != version_b["lf"], "the two versions must differ for the test to mean anything"

    rng = random.Random(SEED)
    caught = 0
    for point in range(KILLS):
        if point % 4 == 0:
            shutil.rmtree(
                cache, ignore_errors=True
            )  # a cold run: the kill may land in conversion + cache writes
        watch = sorted({p.parent for p in paths.values()})
        caught += _kill_somewhere(point, rng, 0.6, watch, "convert", str(convert_root), str(DEMO_JOB), "-1")
        where = f"kill point {point}"
        _assert_whole(paths, [version_a, version_b], where)
        for directory in {p.parent for p in paths.values()}:
            assert _visible_files(directory) <= {p.name for p in paths.values()} | {
                "dataset_info.json.lock"
            }, where
        for entry in cache.rglob("*.trial") if cache.is_dir() else []:
            if not entry.name.startswith("."):
                TrialOutcome.from_bytes(entry.read_bytes())  # a cache entry is whole or absent

    assert caught, "no kill landed in the middle of a write"
    _run_to_end("convert", str(convert_root), str(DEMO_JOB), "2")  # the next run succeeds ...
    assert _snapshot(paths) | {"funnel": b""} == version_b | {"funnel": b""}  # ... and writes the same bytes
    _assert_whole(paths, [version_b], "after the recovery run")
    for directory in {p.parent for p in paths.values()}:
        assert _temps(directory) == [], "temp files of killed writers must be cleaned up by the next write"


# ----------------------------------------------------------------------------------------------- write-back


def test_sigkill_during_config_writeback_keeps_a_whole_config(tmp_path: Path) -> None:
    config = tmp_path / "config.demo.yaml"
    shutil.copy2(DEMO_CONFIG, config)
    original = config.read_text(encoding="utf-8")
    original_output = yaml.safe_load(original)["runtime_info"]["output"]
    seen_outputs = caught = 0
    rng = random.Random(SEED)
    for point in range(KILLS):
        caught += _kill_somewhere(point, rng, 0.4, [tmp_path], "writeback", str(config), "w", "-1")
        text = config.read_text(encoding="utf-8")
        output = yaml.safe_load(text)["runtime_info"]["output"]
        # Whole: exactly the original file with one complete output block, and still a valid config.
        assert text == render_with_output(original, output), f"kill point {point}: torn write-back"
        assert output == original_output or output == output_for("w", output["index"])
        seen_outputs += output != original_output
        load_config(config)
        assert _visible_files(tmp_path) <= {"config.demo.yaml", "config.demo.yaml.lock"}
    assert seen_outputs, "no kill landed after a completed write-back; the delays are too short"
    assert caught, "no kill landed in the middle of a write-back"
    _run_to_end("writeback", str(config), "next", "1")
    assert yaml.safe_load(config.read_text())["runtime_info"]["output"] == output_for("next", 0)
    assert _temps(tmp_path) == []


# ----------------------------------------------------------------------------------------------- index.yaml


def _history_root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy2(DEMO_CONFIG, root / "config.yaml")
    return root


def _assert_index_whole(root: Path, before: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    runs = read_index(root)  # parses, or raises HistoryError
    _validate_runs(runs, index_path(root))  # every key present, no duplicate id
    assert runs[: len(before)] == before, f"{where}: earlier runs changed or vanished"
    for run in runs:
        archive = root / run["archive"]
        assert yaml.safe_load((archive / "metadata.yaml").read_text())["id"] == run["id"], where
    return runs


def test_sigkill_during_record_run_keeps_index_yaml_whole(tmp_path: Path) -> None:
    root = _history_root(tmp_path)
    runs: list[dict[str, Any]] = []
    rng = random.Random(SEED)
    caught = 0
    for point in range(KILLS):
        watch = [root / "artifacts"]
        caught += _kill_somewhere(point, rng, 0.5, watch, "record", str(root), f"k{point}", "-1")
        runs = _assert_index_whole(root, runs, f"kill point {point}")
    assert runs, "no kill landed after a completed record_run; the delays are too short"
    assert caught, "no kill landed in the middle of an index.yaml write"
    new_id = record_run(
        root,
        started_at="s",
        completed_at="c",
        exit_code=0,
        status="completed",
        config_path=root / "config.yaml",
        training_yaml_path=None,
        notes="after the kills",
    )
    final = _assert_index_whole(root, runs, "after the recovery run")
    assert final[-1]["id"] == new_id and new_id not in {r["id"] for r in runs}
    # The index's own temp files are cleaned by the next write. (A run killed while writing its archive
    # leaves that archive dir behind, temp file included; the next run id skips it, nothing reads it.)
    assert [p for p in (root / "artifacts").iterdir() if TEMP_MARK in p.name] == []
