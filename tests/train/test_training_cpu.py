"""Real LLaMA-Factory training on CPU with the tiny Qwen3, through ``run_training`` (a few steps each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sft.config.schema import SftConfig
from sft.train import TrainingError, run_training
from tests.train.helpers import (
    CONFIG_HEADER,
    PROJECT_ROOT,
    output_block,
    python_has_llamafactory,
    read_index,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not python_has_llamafactory(), reason="training env (llamafactory-cli) not installed"),
]

MakeConfig = Callable[..., tuple[SftConfig, Path]]


def _train(cfg: SftConfig, config_path: Path, root: Path, dataset_dir: Path) -> dict[str, Any]:
    return run_training(cfg, config_path=config_path, root=root, dataset_dir=dataset_dir, on_progress=None)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_plain_run_outputs_match_the_files_on_disk(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path
) -> None:
    cfg, config_path = make_config(max_steps=3, save_steps=2)
    summary = _train(cfg, config_path, train_root, lf_dataset_dir)

    run_dir = train_root / "artifacts" / "model" / "tiny_run"
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert summary["output_dir"] == str(run_dir)

    # The generated YAML: contract order, absolute paths, no DeepSpeed, wandb off.
    training_yaml = train_root / "artifacts" / "training_config" / "tiny_run.yaml"
    args = yaml.safe_load(training_yaml.read_text(encoding="utf-8"))
    assert list(args)[:5] == [
        "model_name_or_path",
        "trust_remote_code",
        "stage",
        "do_train",
        "finetuning_type",
    ]
    assert args["report_to"] == "none" and "deepspeed" not in args
    assert args["dataset_dir"] == str(lf_dataset_dir) and args["output_dir"] == str(run_dir)

    output = output_block(config_path)
    assert output == summary["output"]
    train_results = _json(run_dir / "train_results.json")
    state = _json(run_dir / "trainer_state.json")
    log_lines = [json.loads(x) for x in (run_dir / "trainer_log.jsonl").read_text().splitlines() if x.strip()]
    # checkpoint-2 (save_steps 2) and checkpoint-3 (last step): the highest complete one is handed off.
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert output["checkpoint_path"] == {
        "description": "Path to the latest trained model checkpoint",
        "value": str(run_dir / "checkpoint-3"),
    }
    metrics = output["training_metrics"]["value"]
    assert metrics["final_loss"] == pytest.approx(train_results["train_loss"])
    assert metrics["train_runtime"] == pytest.approx(train_results["train_runtime"])
    assert metrics["total_steps"] == state["global_step"] == 3
    assert metrics["last_step_loss"] == pytest.approx([r for r in log_lines if "loss" in r][-1]["loss"])
    assert output["training_curves"]["value"] is None
    artifacts = output["artifacts"]
    assert artifacts["train_results"] == str(run_dir / "train_results.json")
    assert artifacts["train_loss_plot"] == str(run_dir / "training_loss.png")
    assert Path(artifacts["train_loss_plot"]).is_file()
    log_path = Path(artifacts["training_log"])
    assert log_path.parent == train_root / "artifacts" / "logs" and log_path.name.startswith("tiny_run_")
    assert "llamafactory-cli exited with 0: completed" in log_path.read_text(encoding="utf-8")

    # The comment-preserving write-back kept the header comment.
    assert config_path.read_text(encoding="utf-8").startswith(CONFIG_HEADER)

    # Run history: entry + archive with the training YAML and versions.
    runs = read_index(train_root)
    assert [r["id"] for r in runs] == ["run_001"] and runs[0]["status"] == "completed"
    archive = train_root / runs[0]["archive"]
    meta = yaml.safe_load((archive / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["exit_code"] == 0 and meta["block"] == "sft"
    assert meta["versions"]["llamafactory"] == "0.9.5"
    assert (archive / "training.yaml").read_text(encoding="utf-8") == training_yaml.read_text(
        encoding="utf-8"
    )


def test_zero3_through_torchrun(make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path) -> None:
    cfg, config_path = make_config(
        deepspeed="artifacts/training_config/deepspeed/ds_z3_config.json", max_steps=2, save_steps=100
    )
    summary = _train(cfg, config_path, train_root, lf_dataset_dir)
    log = Path(summary["log_path"]).read_text(encoding="utf-8")
    assert "FORCE_TORCHRUN=1" in log and "NPROC_PER_NODE=1" in log
    assert "ZeRO-3" in log or "zero.init" in log  # "Detected DeepSpeed ZeRO-3: activating zero.init()"
    args = yaml.safe_load(Path(summary["training_yaml"]).read_text(encoding="utf-8"))
    assert args["deepspeed"] == str(train_root / "artifacts/training_config/deepspeed/ds_z3_config.json")
    run_dir = Path(summary["output_dir"])
    # ZeRO-3 gathers full 16-bit weights on save (stage3_gather_16bit_weights_on_model_save).
    assert (run_dir / "checkpoint-2" / "model.safetensors").is_file()
    assert any((run_dir / "checkpoint-2").glob("global_step*"))
    assert output_block(config_path)["checkpoint_path"]["value"] == str(run_dir / "checkpoint-2")


def test_wandb_offline_run_id_matches_the_run_dir_and_yarn_scales_rope(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path, tiny_model_dir: Path
) -> None:
    """One run covers two switches (each run costs ~20 s of imports on CPU): wandb offline and YaRN."""
    native = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    assert native == 4096
    cfg, config_path = make_config(
        max_steps=2,
        save_strategy="no",
        cutoff_len=8192,
        rope_scaling="yarn",
        experiment={"wandb_mode": "offline"},
    )
    summary = _train(cfg, config_path, train_root, lf_dataset_dir)
    output = output_block(config_path)
    args = yaml.safe_load(Path(summary["training_yaml"]).read_text(encoding="utf-8"))

    # wandb offline: the id chosen before launch is the one in the output and in the run dir name.
    run_id = output["training_curves"]["value"]
    assert run_id == summary["wandb_run_id"] and len(run_id) == 8
    run_dirs = list((train_root / "artifacts" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(run_dirs) == 1 and summary["wandb_run_dir"] == str(run_dirs[0])
    assert (run_dirs[0] / f"run-{run_id}.wandb").is_file()
    assert args["report_to"] == "wandb"

    # save_strategy no: no checkpoint dir, so the final model in the run dir is the hand-off.
    assert "save_steps" not in args and args["save_strategy"] == "no"
    assert output["checkpoint_path"]["value"] == summary["output_dir"]

    # YaRN: cutoff 8192 over the native 4096 -> factor 2, saved with the model.
    assert args["rope_scaling"] == "yarn" and args["cutoff_len"] == 8192
    saved = _json(Path(output["checkpoint_path"]["value"]) / "config.json")
    assert saved["rope_scaling"]["rope_type"] == "yarn"
    assert saved["rope_scaling"]["factor"] == 2.0
    assert saved["rope_scaling"]["original_max_position_embeddings"] == 4096
    # An integer, not LLaMA-Factory's 8192.0 (RL / eval read it as a length).
    assert saved["max_position_embeddings"] == 8192 and isinstance(saved["max_position_embeddings"], int)


def test_resume_from_explicit_checkpoint_and_auto(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path
) -> None:
    cfg, config_path = make_config(max_steps=2, save_steps=1)
    first = _train(cfg, config_path, train_root, lf_dataset_dir)
    run_dir = Path(first["output_dir"])
    assert output_block(config_path)["training_metrics"]["value"]["total_steps"] == 2

    # Explicit path (relative to the output dir): continues from step 1 up to max_steps 3.
    cfg, config_path = make_config(max_steps=3, save_steps=1, resume_from_checkpoint="checkpoint-1")
    second = _train(cfg, config_path, train_root, lf_dataset_dir)
    args = yaml.safe_load(Path(second["training_yaml"]).read_text(encoding="utf-8"))
    assert args["resume_from_checkpoint"] == str(run_dir / "checkpoint-1")
    assert args["overwrite_output_dir"] is False
    assert "Continuing training from global step 1" in Path(second["log_path"]).read_text(encoding="utf-8")
    assert output_block(config_path)["training_metrics"]["value"]["total_steps"] == 3

    # 'auto' takes the highest *complete* checkpoint; a partial save with a higher step is ignored.
    partial = run_dir / "checkpoint-9"
    partial.mkdir()
    (partial / "config.json").write_text("{}", encoding="utf-8")
    cfg, config_path = make_config(max_steps=4, save_steps=1, resume_from_checkpoint="auto")
    third = _train(cfg, config_path, train_root, lf_dataset_dir)
    args = yaml.safe_load(Path(third["training_yaml"]).read_text(encoding="utf-8"))
    assert args["resume_from_checkpoint"] == str(run_dir / "checkpoint-3")
    assert "Continuing training from global step 3" in Path(third["log_path"]).read_text(encoding="utf-8")
    output = output_block(config_path)
    assert output["training_metrics"]["value"]["total_steps"] == 4
    assert output["checkpoint_path"]["value"] == str(run_dir / "checkpoint-4")
    assert [r["status"] for r in read_index(train_root)] == ["completed"] * 3


def test_failing_run_leaves_output_untouched_and_is_recorded_failed(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path, tmp_path: Path
) -> None:
    cfg, config_path = make_config(max_steps=2)
    cfg.runtime_info.input.model.model_name_or_path = str(tmp_path / "no-such-model")
    text = config_path.read_text(encoding="utf-8").replace(
        "output: {}", "output: {checkpoint_path: {value: /previous}}"
    )
    config_path.write_text(text, encoding="utf-8")
    before = config_path.read_bytes()

    with pytest.raises(TrainingError, match=r"training failed \(exit code [1-9]") as info:
        _train(cfg, config_path, train_root, lf_dataset_dir)

    assert config_path.read_bytes() == before
    runs = read_index(train_root)
    assert runs[-1]["status"] == "failed"
    meta = yaml.safe_load((train_root / runs[-1]["archive"] / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["exit_code"] == info.value.summary["exit_code"] != 0
    assert meta["results"] is None


_INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sft.config.loader import load_config
    from sft.train import TrainingError, run_training
    config_path, root, dataset_dir = map(Path, sys.argv[1:4])
    try:
        run_training(load_config(config_path), config_path=config_path, root=root, dataset_dir=dataset_dir)
    except TrainingError as exc:
        print("TRAINING_ERROR", exc.summary["status"], flush=True)
        sys.exit(7)
    """
)


def test_sigint_to_the_launcher_is_forwarded_and_recorded_interrupted(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path
) -> None:
    psutil = pytest.importorskip("psutil")
    cfg, config_path = make_config(max_steps=2000, save_strategy="no")
    before = config_path.read_bytes()
    trainer_log = train_root / "artifacts" / "model" / "tiny_run" / "trainer_log.jsonl"
    launcher = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_SCRIPT, str(config_path), str(train_root), str(lf_dataset_dir)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
    )
    try:
        deadline = time.monotonic() + 180
        while not (trainer_log.is_file() and trainer_log.read_text().strip()):
            assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
            assert time.monotonic() < deadline, "training did not start within 180 s"
            time.sleep(0.5)
        tree = psutil.Process(launcher.pid).children(recursive=True)
        assert tree, "the trainer should be running under the launcher"
        launcher.send_signal(signal.SIGINT)
        out, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 7, out
    assert "TRAINING_ERROR interrupted" in out
    assert read_index(train_root)[-1]["status"] == "interrupted"
    assert config_path.read_bytes() == before
    # No trainer process outlives the launcher (torchrun's workers run in sessions of their own).
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, [p.info for p in alive]
