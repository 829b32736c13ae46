"""scripts/install_env.sh guards and scripts/dryrun.sh checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: int = 300, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("target", ["/tmp/sft-outside-env", "artifacts/model/env", "artifacts/env"])
def test_install_env_refuses_paths_outside_artifacts_env(target: str) -> None:
    proc = _run(["bash", "scripts/install_env.sh"], {"SFT_ENV_DIR": target})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to manage an environment outside" in proc.stderr
    assert not Path("/tmp/sft-outside-env").exists()


def test_install_env_is_idempotent() -> None:
    _run(["bash", "scripts/install_env.sh"], timeout=900)  # brings the env up to date if it is not
    proc = _run(["bash", "scripts/install_env.sh"])
    assert proc.returncode == 0, proc.stderr
    assert "is up to date" in proc.stdout


def _dryrun(config: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"SFT_CONFIG": config, **(extra_env or {})}
    unset = () if "SFT_ALLOW_OVERWRITE_OUTPUT" in env else ("SFT_ALLOW_OVERWRITE_OUTPUT",)
    return _run(["bash", "scripts/dryrun.sh"], env, unset=unset)


def test_dryrun_active_config_fails_on_model_and_gpus() -> None:
    proc = _dryrun("config.yaml")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert all(line.startswith(("[OK]", "[WARN]", "[FAIL]", "[INFO]")) for line in lines[:-1]), lines
    assert lines[-1].startswith("PASS: ") and "FAIL: " in lines[-1]
    fails = [line for line in lines if line.startswith("[FAIL]")]
    assert any("model.model_name_or_path" in f and "/mnt/public/models/Qwen3-8B" in f for f in fails)
    assert any("nvidia-smi not found" in f for f in fails)
    assert any("effective global batch = 1 x 8 x 8 = 64" in line for line in lines)


def test_dryrun_reports_schema_errors(tmp_path: Path) -> None:
    bad = tmp_path / "config.bad.yaml"
    bad.write_text((ROOT / "config.yaml").read_text().replace("wandb_mode: offline", "wandb_mode: cloud"))
    proc = _dryrun(str(bad))
    assert proc.returncode == 1
    assert "[FAIL]" in proc.stdout and "experiment.wandb_mode" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "PASS: 0  WARN: 0  FAIL: 1"


@pytest.mark.slow
def test_dryrun_demo_profile_passes(tiny_model_dir: Path) -> None:
    proc = _dryrun("config.demo.yaml", {"SFT_ALLOW_OVERWRITE_OUTPUT": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("FAIL: 0")
    assert "CPU profile" in proc.stdout


def test_install_env_plan_says_what_a_gpu_machine_gets_without_installing() -> None:
    """--plan prints the install and exits; SFT_ASSUME_GPU=1 shows the GPU machine's plan on this CPU one."""
    cpu = _run(["bash", "scripts/install_env.sh", "--plan"])
    assert cpu.returncode == 0, cpu.stderr
    assert (
        "-e .[dev,dashboard,notebook]" in cpu.stdout
        and "liger-kernel==" not in cpu.stdout
        and "machine: CPU" in cpu.stdout
    )
    gpu = _run(["bash", "scripts/install_env.sh", "--plan"], {"SFT_ASSUME_GPU": "1", "SFT_CUDA_MAJOR": "12"})
    assert gpu.returncode == 0, gpu.stderr
    lines = gpu.stdout.splitlines()
    assert (
        "[PLAN] project: pip install -c requirements/constraints.txt -e .[dev,dashboard,notebook,gpu]"
        in lines
    )
    for pin in ("[PLAN]   deepspeed==0.16.9", "[PLAN]   liger-kernel==0.6.4", "[PLAN]   llamafactory==0.9.5"):
        assert pin in lines
    assert (
        "releases/download/v2.8.3/flash_attn-2.8.3+cu12torch2.13cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
        in gpu.stdout
    )
    skip = _run(
        ["bash", "scripts/install_env.sh", "--plan"], {"SFT_ASSUME_GPU": "1", "SFT_FLASH_ATTN": "skip"}
    )
    assert "flash-attn: skipped" in skip.stdout and "attn_fallback: sdpa" in skip.stdout


def test_gpu_check_exits_with_a_clear_message_without_a_gpu() -> None:
    proc = _run(["bash", "scripts/gpu_check.sh"])
    assert proc.returncode == 3
    assert "no NVIDIA GPU visible" in proc.stderr and "--download-only" in proc.stderr
