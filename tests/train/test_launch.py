"""The launcher's plumbing: env, tee + redaction, progress, signals, exit status.

These use a shell script standing in for ``llamafactory-cli`` (a subprocess double) so each case takes
well under a second; the real CLI is exercised by test_training_cpu.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import yaml

from sft.train.launch import LaunchError, Progress, distributed_env, launch_training, status_from_exit

SECRET = "wk-live-SECRET-987654"


def _env_with_cli(tmp_path: Path, script: str) -> Path:
    env_dir = tmp_path / "env"
    cli = env_dir / "bin" / "llamafactory-cli"
    cli.parent.mkdir(parents=True)
    cli.write_text("#!/bin/bash\n" + script, encoding="utf-8")
    cli.chmod(0o755)
    return env_dir


def _yaml(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), **extra}), encoding="utf-8")
    return path


def test_env_tee_redaction_and_failed_status(tmp_path: Path) -> None:
    env_dir = _env_with_cli(
        tmp_path,
        'echo "args=$*"\n'
        'echo "torchrun=$FORCE_TORCHRUN nproc=$NPROC_PER_NODE path0=${PATH%%:*}"\n'
        'echo "key=$WANDB_API_KEY" >&2\n'
        'printf "partial line with key $WANDB_API_KEY"\n'
        "exit 3\n",
    )
    yaml_path = _yaml(tmp_path)
    console = io.StringIO()
    result = launch_training(
        yaml_path,
        env_dir=env_dir,
        n_gpus=4,
        log_path=tmp_path / "logs" / "run.log",
        extra_env={"WANDB_API_KEY": SECRET},
        secrets=[SECRET],
        console=console,
        on_progress=None,
    )
    assert (result.exit_code, result.status) == (3, "failed")
    log = result.log_path.read_text(encoding="utf-8")
    assert f"args=train {yaml_path}" in log
    assert f"torchrun=1 nproc=4 path0={env_dir.resolve() / 'bin'}" in log
    assert "key=***REDACTED***" in log and "partial line with key ***REDACTED***" in log
    assert SECRET not in log and SECRET not in console.getvalue()
    assert console.getvalue() in log  # the terminal saw what the log holds (minus nothing)
    assert "llamafactory-cli exited with 3: failed" in log


def test_progress_lines_come_from_trainer_log(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    lines = [
        {
            "current_steps": s,
            "total_steps": 3,
            "loss": 8.0 - s,
            "percentage": 100 * s / 3,
            "remaining_time": "0:00:01",
        }
        for s in (1, 2, 3)
    ]
    script = "".join(f"echo '{json.dumps(x)}' >> {out}/trainer_log.jsonl; sleep 0.4\n" for x in lines)
    env_dir = _env_with_cli(tmp_path, script + "exit 0\n")
    seen: list[Progress] = []
    result = launch_training(
        _yaml(tmp_path), env_dir=env_dir, n_gpus=1, log_path=tmp_path / "run.log", on_progress=seen.append,
        console=io.StringIO(),
    )  # fmt: skip
    assert result.status == "completed"
    assert [(p.current_steps, p.total_steps, p.loss) for p in seen] == [(1, 3, 7.0), (2, 3, 6.0), (3, 3, 5.0)]
    assert seen[-1].line() == "[sft] step 3/3 (100%) loss 5.0000 elapsed - eta 0:00:01"


def test_sigterm_is_forwarded_and_the_run_is_interrupted(tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    env_dir = _env_with_cli(
        tmp_path,
        f"trap 'touch {marker}; exit 143' TERM\necho ready\nfor i in $(seq 200); do sleep 0.05; done\nexit 0\n",
    )
    handler_before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        result = launch_training(
            _yaml(tmp_path), env_dir=env_dir, n_gpus=1, log_path=tmp_path / "run.log", on_progress=None,
            console=io.StringIO(),
        )  # fmt: skip
    finally:
        timer.cancel()
    assert marker.exists(), "the trainer did not receive the forwarded SIGTERM"
    assert (result.exit_code, result.status) == (143, "interrupted")
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the launcher restored the handler


@pytest.mark.parametrize(
    ("code", "signalled", "status"),
    [(0, False, "completed"), (1, False, "failed"), (2, False, "failed"), (130, False, "interrupted"),
     (143, False, "interrupted"), (-2, False, "interrupted"), (1, True, "interrupted"), (0, True, "completed")],
)  # fmt: skip
def test_status_from_exit(code: int, signalled: bool, status: str) -> None:
    assert status_from_exit(code, signalled) == status


def test_missing_cli_and_missing_deepspeed_file_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = _env_with_cli(tmp_path, "exit 0\n")
    with pytest.raises(LaunchError, match=r"DeepSpeed config .*ds_z3_config.json .* is missing"):
        launch_training(
            _yaml(tmp_path, deepspeed=str(tmp_path / "ds_z3_config.json")),
            env_dir=env_dir, n_gpus=1, log_path=tmp_path / "run.log",
        )  # fmt: skip
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(LaunchError, match="llamafactory-cli not found.*install_env.sh"):
        launch_training(_yaml(tmp_path), env_dir=tmp_path / "no-env", n_gpus=1, log_path=tmp_path / "run.log")
    assert not (tmp_path / "run.log").exists()


def test_multi_node_variables() -> None:
    single = {
        "FORCE_TORCHRUN": "1",
        "NPROC_PER_NODE": "8",
        "NNODES": "1",
        "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
    }
    assert distributed_env(n_gpus=8, base_env={}) == single
    # A single-node run ignores rendezvous variables left in the environment (a Slurm shell, a multi-node setup).
    assert distributed_env(n_gpus=8, base_env={"NODE_RANK": "3", "MASTER_ADDR": "node0"}) == single
    env = distributed_env(
        n_gpus=8, n_nodes=2, master_addr="node0", master_port=29500, base_env={"NODE_RANK": "1"}
    )
    assert env == {
        "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1",
        "MASTER_ADDR": "node0", "MASTER_PORT": "29500",
    }  # fmt: skip
    slurm = distributed_env(
        n_gpus=4, n_nodes=3, base_env={"SLURM_NODEID": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    )
    assert (slurm["NODE_RANK"], slurm["MASTER_ADDR"], slurm["MASTER_PORT"]) == ("2", "h", "1")
    assert (
        distributed_env(n_gpus=4, n_nodes=2, node_rank=0, master_addr="a", master_port=2, base_env={})[
            "NODE_RANK"
        ]
        == "0"
    )
    with pytest.raises(LaunchError, match="NODE_RANK, MASTER_ADDR"):
        distributed_env(n_gpus=8, n_nodes=2, master_port=1, base_env={})


def test_whitespace_in_the_yaml_path_is_refused(tmp_path: Path) -> None:
    spaced = tmp_path / "with space"
    spaced.mkdir()
    env_dir = _env_with_cli(tmp_path, "exit 0\n")
    with pytest.raises(LaunchError, match="whitespace"):
        launch_training(_yaml(spaced), env_dir=env_dir, n_gpus=1, log_path=tmp_path / "run.log")
