"""The feature checks shared by the dryrun and the pre-launch gate (sft.train.features).

The dryrun and gate tests probe this machine's real training env (CPU torch, no liger-kernel, no flash-attn):
exactly the situation of the active profile (liger, fa2) on a machine that lacks the GPU stack.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from sft.config.loader import load_config
from sft.config.schema import InfrastructureConfig, SftConfig
from sft.preflight.dryrun import Checklist, check_features
from sft.train import TrainingError, run_training
from sft.train.features import EnvProbe, feature_checks, multinode_checks, probe_environment
from tests.train.helpers import ENV_DIR, PROJECT_ROOT, read_index

MakeConfig = Callable[..., tuple[SftConfig, Path]]


@pytest.fixture(scope="module")
def env_probe() -> EnvProbe:
    """The training env as llamafactory-cli would see it (one probe for the module)."""
    return probe_environment(ENV_DIR / "bin" / "python")


def test_probe_reads_the_real_training_env(env_probe: EnvProbe) -> None:
    assert env_probe.versions["llamafactory"] == "0.9.5"
    assert env_probe.versions["transformers"].startswith("4.57.")
    assert env_probe.versions["liger_kernel"] is None and "liger_kernel" in env_probe.errors
    assert env_probe.versions["flash_attn"] is None and not env_probe.fa2_available
    assert env_probe.torch_cuda is None and not env_probe.cuda_available  # this machine: CPU torch


def test_dryrun_prints_fail_lines_for_the_active_profiles_missing_features(tmp_path: Path) -> None:
    """config.yaml as shipped (liger, fa2, ZeRO-3, 8 GPUs) against this machine's env."""
    data = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text(encoding="utf-8"))
    data["meta_info"]["environment"]["sft_uv"] = str(ENV_DIR)
    (tmp_path / "artifacts" / "training_config").mkdir(parents=True)
    (tmp_path / "artifacts" / "training_config" / "deepspeed").symlink_to(
        PROJECT_ROOT / "artifacts" / "training_config" / "deepspeed"
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = Checklist()
    check_features(load_config(path), tmp_path, out, env={})
    fails = [line for line in out.lines if line.startswith("[FAIL]")]
    assert any(
        "enable_liger_kernel is true but liger-kernel is not importable" in f and "check_version" in f
        for f in fails
    )
    assert any(
        "flash_attn is fa2 but flash-attn is not usable" in f and "attn_fallback: sdpa" in f for f in fails
    )
    assert any("is a CPU build; a GPU profile needs CUDA torch" in f for f in fails)
    assert any(
        line.startswith("[INFO] LLaMA-Factory will use: attention sdpa after a warning") for line in out.lines
    )


def test_gate_refuses_a_profile_with_a_missing_feature_before_launch(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU node (CUDA reported) liger stays on; the env lacks it -> refused, recorded, nothing launched."""
    monkeypatch.setattr("sft.train.run.cuda_available", lambda: True)
    cfg, config_path = make_config(enable_liger_kernel=True)
    before = config_path.read_bytes()
    with pytest.raises(TrainingError, match="liger-kernel is not importable") as err:
        run_training(
            cfg, config_path=config_path, root=train_root, dataset_dir=lf_dataset_dir, on_progress=None
        )
    assert "the same checks as scripts/dryrun.sh" in str(err.value)
    assert not (train_root / "artifacts" / "logs").exists()  # llamafactory-cli never started
    assert config_path.read_bytes() == before
    entry = read_index(train_root)[-1]
    assert entry["status"] == "failed" and entry["notes"].startswith("refused before launch:")


def test_fa2_falls_back_only_when_the_profile_allows_it(env_probe: EnvProbe) -> None:
    args = {"flash_attn": "fa2", "cutoff_len": 131072}
    refused = feature_checks(args, InfrastructureConfig(), env_probe, on_cpu=True)
    assert refused.changes == {} and any("flash-attn is not usable" in f for f in refused.failures)
    allowed = feature_checks(args, InfrastructureConfig(attn_fallback="sdpa"), env_probe, on_cpu=True)
    assert allowed.failures == [] and allowed.changes == {"flash_attn": "sdpa"}
    assert allowed.notes == [allowed.notes[0]] and allowed.notes[0].startswith(
        "flash_attn fa2 -> sdpa (flash-attn not usable"
    )


def _gpu_probe(**overrides: object) -> EnvProbe:
    base: dict[str, object] = {
        "python": "/env/bin/python",
        "versions": {
            "torch": "2.11.0+cu130",
            "transformers": "4.57.6",
            "deepspeed": "0.16.9",
            "llamafactory": "0.9.5",
            "liger_kernel": "0.6.4",
            "flash_attn": "2.8.3",
        },
        "torch_cuda": "13.0",
        "cuda_available": True,
        "device_count": 8,
        "device_names": ["NVIDIA H200"] * 8,
        "capability": [9, 0],
        "fa2_available": True,
        "driver_cuda": "13.0",
        "driver_version": "580.159.04",
    }
    base.update(overrides)
    return EnvProbe.from_mapping(base)


def test_cuda_driver_gpu_count_and_capability() -> None:
    args = {"bf16": True, "flash_attn": "fa2", "enable_liger_kernel": True, "deepspeed": "/ds.json"}
    infra = InfrastructureConfig(n_gpus_per_node=8)
    ok = feature_checks(args, infra, _gpu_probe(), on_cpu=False)
    assert [f.level for f in ok.findings] == ["OK"] * 4  # CUDA/driver, DeepSpeed, Liger, flash_attention_2
    too_new = feature_checks(args, infra, _gpu_probe(driver_cuda="12.4"), on_cpu=False)
    assert any("built for CUDA 13.0 but driver 580.159.04 supports CUDA 12.4" in f for f in too_new.failures)
    minor = feature_checks(args, infra, _gpu_probe(torch_cuda="12.8", driver_cuda="12.4"), on_cpu=False)
    assert minor.failures == [] and any(
        f.level == "WARN" and "minor-version" in f.message for f in minor.findings
    )
    few = feature_checks(
        args, infra, _gpu_probe(device_count=4, device_names=["NVIDIA H200"] * 4), on_cpu=False
    )
    assert any("n_gpus_per_node is 8 but torch sees 4 GPU(s)" in f for f in few.failures)
    old = feature_checks(
        args, infra, _gpu_probe(capability=[7, 0], device_names=["Tesla V100"] * 8), on_cpu=False
    )
    assert any("bf16 is true but Tesla V100 has compute capability 7.0" in f for f in old.failures)
    no_ds = feature_checks(
        args, infra, _gpu_probe(versions={**_gpu_probe().versions, "deepspeed": None}), on_cpu=False
    )
    assert any("deepspeed is not importable" in f for f in no_ds.failures)
    new_ds = feature_checks(
        args, infra, _gpu_probe(versions={**_gpu_probe().versions, "deepspeed": "0.19.8"}), on_cpu=False
    )
    assert any(
        f.level == "WARN" and "outside LLaMA-Factory 0.9.5's supported range" in f.message
        for f in new_ds.findings
    )


@pytest.mark.parametrize(
    ("infra", "env", "expect"),
    [
        ({}, {}, None),
        ({}, {"NODE_RANK": "1", "MASTER_ADDR": "n0"}, "n_nodes is 1 but the environment says"),
        ({}, {"SLURM_NNODES": "2"}, "n_nodes is 1 but the environment says"),
        (
            {"n_nodes": 2},
            {"NODE_RANK": "1", "MASTER_ADDR": "n0", "SFT_RUN_ID": "r"},
            "MASTER_PORT is not set",
        ),
        (
            {"n_nodes": 2},
            {"NODE_RANK": "2", "MASTER_ADDR": "n0", "MASTER_PORT": "29500", "SFT_RUN_ID": "r"},
            "outside 0..1",
        ),
        ({"n_nodes": 2}, {"NODE_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "29500"}, "without a run id"),
        (
            {"n_nodes": 2},
            {
                "SLURM_NODEID": "1",
                "SLURM_NNODES": "3",
                "SLURM_JOB_ID": "9",
                "MASTER_ADDR": "n0",
                "MASTER_PORT": "29500",
            },
            "Slurm allocated 3 node(s)",
        ),
        (
            {"n_nodes": 2},
            {
                "NODE_RANK": "0",
                "SLURM_NODEID": "1",
                "SLURM_JOB_ID": "9",
                "MASTER_ADDR": "n0",
                "MASTER_PORT": "29500",
            },
            "differs from Slurm's SLURM_NODEID 1",
        ),
        (
            {"n_nodes": 2},
            {
                "SLURM_NODEID": "1",
                "SLURM_NNODES": "2",
                "SLURM_JOB_ID": "9",
                "MASTER_ADDR": "n0",
                "MASTER_PORT": "29500",
            },
            None,
        ),
    ],
)
def test_multinode_variables(infra: dict, env: dict, expect: str | None) -> None:
    report = multinode_checks(InfrastructureConfig(**infra), env)
    if expect is None:
        assert report.failures == [] and report.findings[0].level == "OK"
    else:
        assert any(expect in f for f in report.failures), report.failures
