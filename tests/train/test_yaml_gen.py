"""The generated LLaMA-Factory YAML and the output-dir rules (no training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sft.config.loader import load_config
from sft.config.schema import SftConfig
from sft.preflight.dryrun import Checklist
from sft.preflight.dryrun import check_output_dir as dryrun_check_output_dir
from sft.train.launch import output_dir_lock
from sft.train.lf_args import check_training_options, lf_argument_names
from sft.train.yaml_gen import (
    OutputDirError,
    TrainingConfigError,
    build_training_args,
    check_output_dir,
    dump_training_yaml,
    resolve_output_dir,
    resolve_resume_checkpoint,
    yarn_factor,
)
from tests.train.helpers import PROJECT_ROOT, base_config

# docs/config-contract.md §6.2, in emitted order
CONTRACT_ORDER = [
    "model_name_or_path", "trust_remote_code", "stage", "do_train", "finetuning_type", "deepspeed", "dataset_dir",
    "dataset", "template", "cutoff_len", "rope_scaling", "max_samples", "overwrite_cache",
    "preprocessing_num_workers", "dataloader_num_workers", "output_dir", "run_name", "logging_steps", "save_steps",
    "save_strategy", "plot_loss", "overwrite_output_dir", "save_only_model", "report_to", "resume_from_checkpoint",
    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay", "max_grad_norm",
    "num_train_epochs", "lr_scheduler_type", "max_steps", "warmup_ratio", "bf16", "ddp_timeout",
    "enable_liger_kernel", "use_unsloth_gc", "flash_attn",
]  # fmt: skip


def _cfg(model_dir: Path, experiment: dict[str, Any] | None = None, **training: Any) -> SftConfig:
    data = base_config(model_dir, **training)
    if experiment:
        data["runtime_info"]["input"]["experiment"].update(experiment)
    return SftConfig.model_validate(data)


def _args(cfg: SftConfig, root: Path, on_cpu: bool = True) -> dict[str, Any]:
    return build_training_args(
        cfg.input, root=root, dataset_dir=root / "lf_data", run_name=cfg.input.run_name, on_cpu=on_cpu
    )


def _complete_checkpoint(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": 1}), encoding="utf-8")
    (directory / "model.safetensors").write_bytes(b"weights")
    return directory


def test_shipped_config_yields_the_contract_keys_in_order(tmp_path: Path) -> None:
    cfg = load_config(PROJECT_ROOT / "config.yaml")
    args = build_training_args(
        cfg.input, root=tmp_path, dataset_dir=tmp_path / "lf_data", run_name=cfg.input.run_name, on_cpu=False
    )
    assert list(args) == [k for k in CONTRACT_ORDER if k in args]
    # Everything of the contract is there; max_steps is absent because it is 0.
    assert set(CONTRACT_ORDER) - set(args) == {"max_steps"}
    assert args["deepspeed"] == str(tmp_path / "artifacts/training_config/deepspeed/ds_z3_config.json")
    assert args["output_dir"] == str(tmp_path / "artifacts/model" / Path(cfg.input.training.output_dir).name)
    assert args["run_name"] == Path(cfg.input.training.output_dir).name
    assert args["dataset"] == cfg.input.conversion.data_name
    assert args["report_to"] == "wandb" and args["do_train"] is True and args["plot_loss"] is True
    # The model is not a local dir here: rope_scaling is kept (LLaMA-Factory decides at load time).
    assert args["rope_scaling"] == "yarn"
    assert "use_cpu" not in args
    # Every key is a LLaMA-Factory argument.
    assert set(args) <= lf_argument_names()
    assert yaml.safe_load(dump_training_yaml(args)) == args


def test_resolve_output_dir(tmp_path: Path) -> None:
    assert resolve_output_dir("some/dirs/run_a", tmp_path) == tmp_path / "artifacts" / "model" / "run_a"
    assert resolve_output_dir("/abs/place/run_b", tmp_path) == Path("/abs/place/run_b")


def test_rope_scaling_only_above_the_native_context(tiny_model_dir: Path, tmp_path: Path) -> None:
    fits = _args(_cfg(tiny_model_dir, cutoff_len=4096, rope_scaling="yarn"), tmp_path)
    assert "rope_scaling" not in fits
    above = _args(_cfg(tiny_model_dir, cutoff_len=8192, rope_scaling="yarn"), tmp_path)
    assert above["rope_scaling"] == "yarn"
    unset = _args(_cfg(tiny_model_dir, cutoff_len=8192, rope_scaling=None), tmp_path)
    assert "rope_scaling" not in unset


def test_yarn_factor_is_the_ceiling_like_llamafactory(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert yarn_factor(8192, tiny_model_dir) == 2.0
    assert yarn_factor(4097, tiny_model_dir) == 2.0
    assert yarn_factor(4096, tiny_model_dir) is None
    qwen3_8b = tmp_path / "qwen3-8b"
    qwen3_8b.mkdir()
    (qwen3_8b / "config.json").write_text(
        json.dumps({"max_position_embeddings": 40960, "rope_scaling": None})
    )
    assert yarn_factor(131072, qwen3_8b) == 4.0
    assert yarn_factor(65536, qwen3_8b) == 2.0
    assert yarn_factor(32768, qwen3_8b) is None
    scaled = tmp_path / "scaled"
    scaled.mkdir()
    (scaled / "config.json").write_text(
        json.dumps(
            {"max_position_embeddings": 131072, "rope_scaling": {"original_max_position_embeddings": 32768}}
        )
    )
    assert yarn_factor(131072, scaled) == 4.0
    assert yarn_factor(8192, tmp_path / "not-a-model") is None


@pytest.mark.parametrize("strategy", ["no", "none"])
def test_save_steps_omitted_without_saving(tiny_model_dir: Path, tmp_path: Path, strategy: str) -> None:
    args = _args(_cfg(tiny_model_dir, save_strategy=strategy), tmp_path)
    assert "save_steps" not in args and args["save_strategy"] == "no"


def test_max_steps_only_when_positive(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert "max_steps" not in _args(_cfg(tiny_model_dir, max_steps=0), tmp_path)
    assert _args(_cfg(tiny_model_dir, max_steps=7), tmp_path)["max_steps"] == 7


def test_report_to_follows_wandb_mode(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert _args(_cfg(tiny_model_dir), tmp_path)["report_to"] == "none"
    assert _args(_cfg(tiny_model_dir, experiment={"wandb_mode": "offline"}), tmp_path)["report_to"] == "wandb"


def test_cpu_adjustments(tiny_model_dir: Path, tmp_path: Path) -> None:
    gpu_features = {"bf16": True, "use_unsloth_gc": True, "enable_liger_kernel": True}
    on_cpu = _args(_cfg(tiny_model_dir, **gpu_features), tmp_path, on_cpu=True)
    assert on_cpu["use_cpu"] is True and on_cpu["bf16"] is True
    assert on_cpu["use_unsloth_gc"] is False and on_cpu["enable_liger_kernel"] is False
    on_gpu = _args(_cfg(tiny_model_dir, **gpu_features), tmp_path, on_cpu=False)
    assert "use_cpu" not in on_gpu and on_gpu["use_unsloth_gc"] is True
    assert "use_cpu" not in _args(_cfg(tiny_model_dir, bf16=False), tmp_path, on_cpu=True)


def test_extras_pass_through_after_the_contract_keys(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = _args(_cfg(tiny_model_dir, save_total_limit=2, neat_packing=False), tmp_path)
    assert list(args)[-2:] == ["save_total_limit", "neat_packing"]
    assert args["save_total_limit"] == 2


def test_typo_under_training_is_an_error_with_a_suggestion(tiny_model_dir: Path, tmp_path: Path) -> None:
    errors = check_training_options({"learning_rate": 1e-4, "gradient_acumulation_steps": 8})
    assert len(errors) == 1
    assert "training.gradient_acumulation_steps" in errors[0] and "'gradient_accumulation_steps'" in errors[0]
    with pytest.raises(TrainingConfigError, match="save_total_limt.*Did you mean 'save_total_limit'"):
        _args(_cfg(tiny_model_dir, save_total_limt=2), tmp_path)


def test_keys_sft_sets_itself_are_refused_under_training() -> None:
    errors = check_training_options({"report_to": "wandb", "dataset": "x"})
    assert any("report_to" in e and "wandb_mode" in e for e in errors)
    assert any("training.dataset" in e for e in errors)


def test_credentials_never_reach_the_yaml(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = base_config(tiny_model_dir)
    data["runtime_info"]["input"]["credentials"] = {
        "wandb_api_key": "wk-SECRET-123",
        "hf_token": "hf_SECRET_456",
    }
    data["runtime_info"]["input"]["experiment"]["wandb_mode"] = "online"
    text = dump_training_yaml(_args(SftConfig.model_validate(data), tmp_path))
    assert "SECRET" not in text


def test_resume_resolution(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "model" / "tiny_run"
    with pytest.raises(TrainingConfigError, match="'auto' found no complete checkpoint"):
        resolve_resume_checkpoint("auto", out, tmp_path)
    _complete_checkpoint(out / "checkpoint-2")
    _complete_checkpoint(out / "checkpoint-10")
    (out / "checkpoint-12").mkdir()  # partial save: no trainer_state, no weights
    assert resolve_resume_checkpoint("auto", out, tmp_path) == out / "checkpoint-10"
    assert resolve_resume_checkpoint("checkpoint-2", out, tmp_path) == out / "checkpoint-2"
    assert resolve_resume_checkpoint(str(out / "checkpoint-2"), out, tmp_path) == out / "checkpoint-2"
    with pytest.raises(TrainingConfigError, match="not a complete checkpoint"):
        resolve_resume_checkpoint("checkpoint-12", out, tmp_path)
    args = _args(_cfg(tiny_model_dir, resume_from_checkpoint="auto"), tmp_path)
    assert args["resume_from_checkpoint"] == str(out / "checkpoint-10")
    assert args["overwrite_output_dir"] is False
    fresh = _args(_cfg(tiny_model_dir, overwrite_output_dir=False), tmp_path)
    assert fresh["resume_from_checkpoint"] is None and fresh["overwrite_output_dir"] is True


def test_save_only_model_with_resume_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="save_only_model"):
        _cfg(tiny_model_dir, save_only_model=True, resume_from_checkpoint="auto")


def test_check_output_dir_rules(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    training = _cfg(tiny_model_dir).input.training
    check_output_dir(out, training, {})  # missing dir is fine
    out.mkdir()
    (out / ".sft-train.lock").write_text("")
    check_output_dir(out, training, {})  # sft's own lock file does not count
    (out / "trainer_log.jsonl").write_text("{}\n")
    with pytest.raises(
        OutputDirError, match=r"run is not empty \(trainer_log.jsonl\).*SFT_ALLOW_OVERWRITE_OUTPUT=1"
    ):
        check_output_dir(out, training, {})
    check_output_dir(out, training, {"SFT_ALLOW_OVERWRITE_OUTPUT": "1"})
    no_overwrite = _cfg(tiny_model_dir, overwrite_output_dir=False).input.training
    with pytest.raises(OutputDirError):
        check_output_dir(out, no_overwrite, {"SFT_ALLOW_OVERWRITE_OUTPUT": "1"})
    resume = _cfg(tiny_model_dir, resume_from_checkpoint="auto").input.training
    check_output_dir(out, resume, {})


def test_dryrun_applies_the_launch_rule_to_the_output_dir(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dryrun says what the launch would do: lock files left by a launch are not content."""
    monkeypatch.delenv("SFT_ALLOW_OVERWRITE_OUTPUT", raising=False)
    cfg = _cfg(tiny_model_dir, output_dir="runs/tiny_run", overwrite_output_dir=False)
    out_dir = tmp_path / "artifacts" / "model" / "tiny_run"

    def levels() -> list[str]:
        checklist = Checklist()
        dryrun_check_output_dir(cfg, tmp_path, checklist)
        return checklist.lines

    assert (
        levels()[0].startswith("[OK]")
        and "training YAML -> artifacts/training_config/tiny_run.yaml" in levels()[0]
    )
    out_dir.mkdir(parents=True)
    (out_dir / ".sft-train.lock").write_text("")
    (out_dir / ".sft-train.node1.lock").write_text("")
    assert levels()[0].startswith("[OK]")
    (out_dir / "trainer_log.jsonl").write_text("{}\n")
    (line,) = levels()
    assert line.startswith("[FAIL]") and "not empty (trainer_log.jsonl)" in line


def test_output_dir_lock_refuses_a_second_live_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with output_dir_lock(out):
        with pytest.raises(
            OutputDirError, match=f"in use by another live sft training run \\(pid {os.getpid()}"
        ):
            with output_dir_lock(out):
                pass
    with output_dir_lock(out):  # released on exit
        pass


def test_output_dir_lock_of_a_killed_run_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom sft.train.launch import output_dir_lock\n"
            "with output_dir_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(60)\n",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirError):
            with output_dir_lock(out):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 5
        while True:
            try:
                with output_dir_lock(out):
                    break
            except OutputDirError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        if holder.poll() is None:
            holder.kill()


@pytest.mark.slow
def test_argument_names_through_the_training_interpreter_match_in_process() -> None:
    """The fallback for a process that cannot import llamafactory gives the same names."""
    from sft.train.lf_args import _names_from_interpreter

    assert _names_from_interpreter(Path(sys.executable)) == frozenset(lf_argument_names())
