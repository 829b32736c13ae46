"""Multi-node on one shared directory: per-node locks, node 0 converts, followers wait, one history entry.

The end-to-end test starts two real ``kedro run`` processes on this machine acting as node 0 and node 1 of a
2-node run (torchrun ``--nnodes 2``, one CPU rank each, gloo) on the same project directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sft.config.schema import InfrastructureConfig
from sft.train.launch import output_dir_lock
from sft.train.multinode import (
    DatasetWaitError,
    is_follower,
    mark_dataset_ready,
    node_rank,
    ready_marker,
    wait_for_dataset,
)
from sft.train.yaml_gen import OutputDirError, output_dir_entries

ROOT = Path(__file__).resolve().parents[2]


def test_each_node_holds_its_own_lock_and_a_second_holder_per_node_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with output_dir_lock(out, 0), output_dir_lock(out, 1):
        with (
            pytest.raises(OutputDirError, match="in use by another live sft training run"),
            output_dir_lock(out, 1),
        ):
            pass
        with pytest.raises(OutputDirError, match="in use"), output_dir_lock(out, 0):
            pass
        assert sorted(p.name for p in out.iterdir()) == [".sft-train.lock", ".sft-train.node1.lock"]
        assert output_dir_entries(out) == []  # lock files do not make the dir "non-empty"


def _register(lf_dir: Path, key: str = "ds", text: str = "[]") -> None:
    lf_dir.mkdir(parents=True, exist_ok=True)
    (lf_dir / f"{key}.json").write_text(text, encoding="utf-8")
    (lf_dir / "dataset_info.json").write_text(
        json.dumps({key: {"file_name": f"{key}.json"}}), encoding="utf-8"
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_follower_waits_for_this_runs_marker_and_times_out_with_a_clear_message(tmp_path: Path) -> None:
    lf_dir = tmp_path / "lf_data"
    _register(lf_dir)
    clock = _Clock()
    # Nothing marked yet: bounded wait, then a message naming the dataset, the run, the marker and the fix.
    with pytest.raises(DatasetWaitError) as err:
        wait_for_dataset(lf_dir, "ds", "job-7", timeout_s=30, poll_s=5, clock=clock, sleep=clock.sleep)
    assert clock.now == 30
    message = str(err.value)
    assert "waited 30 s" in message and "'ds'" in message and "job-7" in message
    assert str(ready_marker(lf_dir, "ds")) in message and "infrastructure.dataset_wait_s" in message
    # A marker left by another run does not release this one.
    mark_dataset_ready(lf_dir, "ds", "job-6")
    with pytest.raises(DatasetWaitError):
        wait_for_dataset(lf_dir, "ds", "job-7", timeout_s=4, poll_s=2, clock=clock, sleep=clock.sleep)
    # This run's marker does; a data file rewritten after the marker (another size) does not.
    mark_dataset_ready(lf_dir, "ds", "job-7")
    assert wait_for_dataset(lf_dir, "ds", "job-7", timeout_s=1, clock=clock, sleep=clock.sleep)["size"] == 2
    (lf_dir / "ds.json").write_text("[{}]", encoding="utf-8")
    with pytest.raises(DatasetWaitError):
        wait_for_dataset(lf_dir, "ds", "job-7", timeout_s=1, poll_s=1, clock=clock, sleep=clock.sleep)


def test_node_rank_sources() -> None:
    two = InfrastructureConfig(n_nodes=2)
    assert node_rank(InfrastructureConfig(), {"NODE_RANK": "3"}) == 0  # single node: always 0
    assert node_rank(two, {"NODE_RANK": "1"}) == 1 and is_follower(two, {"NODE_RANK": "1"})
    assert node_rank(two, {"SLURM_NODEID": "1"}) == 1
    assert node_rank(InfrastructureConfig(n_nodes=2, node_rank=0), {"NODE_RANK": "1"}) == 0
    assert not is_follower(two, {})


def test_follower_node_gets_the_train_only_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sft.pipeline_registry import register_pipelines

    config = yaml.safe_load((ROOT / "config.demo.yaml").read_text(encoding="utf-8"))
    config["runtime_info"]["input"]["infrastructure"]["n_nodes"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("SFT_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("SFT_CONFIG", "config.yaml")
    monkeypatch.setenv("NODE_RANK", "1")
    follower = {n.name for n in register_pipelines()["__default__"].nodes}
    monkeypatch.setenv("NODE_RANK", "0")
    leader = {n.name for n in register_pipelines()["__default__"].nodes}
    assert follower == {
        "validate_settings_node",
        "wait_for_registered_dataset_node",
        "train_model_follower_node",
    }
    assert {"build_dataset_node", "register_dataset_node", "train_model_node"} <= leader


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_local_nodes_on_one_directory(demo_project: Path) -> None:
    """node 0 + node 1 (two `kedro run` processes, torchrun --nnodes 2, gloo) on one shared project dir."""
    config_path = demo_project / "config.demo.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    inp = config["runtime_info"]["input"]
    inp["infrastructure"].update({"n_nodes": 2, "dataset_wait_s": 240})
    inp["experiment"]["wandb_mode"] = "disabled"
    inp["training"].update({"max_steps": 2, "save_steps": 100})
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_RANK", "SLURM_NODEID", "SLURM_JOB_ID")}
    env.update(
        {
            "SFT_PROJECT_ROOT": str(demo_project),
            "SFT_CONFIG": "config.demo.yaml",
            "SFT_RUN_ID": "two-node-test",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "SFT_ALLOW_OVERWRITE_OUTPUT": "1",
            "COLUMNS": "400",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        }
    )
    kedro = [sys.executable, "-m", "kedro", "run"]
    logs = [demo_project / f"node{k}.log" for k in (0, 1)]
    procs = []
    for rank in (1, 0):  # the follower first: it must wait for node 0's conversion, not find stale data
        with open(logs[rank], "w", encoding="utf-8") as log:
            procs.append(
                subprocess.Popen(
                    kedro,
                    cwd=demo_project,
                    env={**env, "NODE_RANK": str(rank)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    codes = [p.wait(timeout=420) for p in procs]
    text = [log.read_text(encoding="utf-8", errors="replace") for log in logs]
    assert codes == [0, 0], "\n".join(t[-3000:] for t in text)

    # One conversion (node 0's), the follower waited for it and ran no convert/report node.
    assert "Completed node: build_dataset_node" in text[0] and "build_dataset_node" not in text[1]
    assert "waits for node 0 to register dataset 'demo_agent_sft'" in text[1]
    marker = json.loads(ready_marker(demo_project / "artifacts/data/lf_data", "demo_agent_sft").read_text())
    assert marker["run_id"] == "two-node-test"
    # torchrun saw a 2-node job on both nodes.
    assert "NNODES=2 NODE_RANK=0" in text[0] and "NNODES=2 NODE_RANK=1" in text[1]
    # One history entry, completed, and runtime_info.output written once by node 0.
    runs = yaml.safe_load((demo_project / "artifacts/index.yaml").read_text())["runs"]
    assert [r["status"] for r in runs] == ["completed"]
    output = yaml.safe_load(config_path.read_text(encoding="utf-8"))["runtime_info"]["output"]
    assert output["training_metrics"]["value"]["total_steps"] == 2
    assert "node 0 records the run and writes the results" in text[1]
    # One lock per node in the shared output dir.
    run_dir = demo_project / "artifacts/model" / inp["training"]["output_dir"]
    assert {".sft-train.lock", ".sft-train.node1.lock"} <= {p.name for p in run_dir.iterdir()}
    # Node 1 persisted nothing of its own: no second registration / training_run file.
    assert (
        not (demo_project / "data/07_model_output").exists()
        or len(list((demo_project / "data/07_model_output").rglob("training_run.json"))) == 1
    )
