"""Helpers for the training tests: the ShareGPT rows, config builders and readers of sft's outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = PROJECT_ROOT / "artifacts" / "env" / "lf"
DATASET_KEY = "tiny_agent_sft"

TOOLS = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run a shell command in the repository",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string", "description": "the command"}},
                    "required": ["command"],
                },
            },
        }
    ]
)


def sharegpt_rows(n_rows: int = 12) -> list[dict[str, Any]]:
    """ShareGPT rows as the converter writes them: half with a tool call + observation turn."""
    rows: list[dict[str, Any]] = []
    for i in range(n_rows):
        if i % 2 == 0:
            call = json.dumps(
                {"name": "bash", "arguments": {"command": f"python -m pytest tests/test_mod{i}.py -q"}}
            )
            conversations = [
                {"from": "human", "value": f"The test tests/test_mod{i}.py fails. Please fix module mod{i}."},
                {"from": "function_call", "value": call},
                {"from": "observation", "value": f"===== {i + 1} passed in 0.{i}s ====="},
                {
                    "from": "gpt",
                    "value": f"The tests for mod{i} pass now; the fix was an off-by-one in parse().",
                },
            ]
            tools = TOOLS
        else:
            conversations = [
                {"from": "human", "value": f"Explain what function f{i} in utils.py returns."},
                {
                    "from": "gpt",
                    "value": f"f{i} returns the sum of its two arguments, or {i} when both are None.",
                },
            ]
            tools = ""
        rows.append(
            {"conversations": conversations, "system": "You are a careful coding agent.", "tools": tools}
        )
    return rows


def base_config(model_dir: Path, **training: Any) -> dict[str, Any]:
    """A valid config mapping for a CPU smoke run (2 steps, no DeepSpeed, wandb disabled)."""
    train = {
        "stage": "sft",
        "finetuning_type": "full",
        "deepspeed": None,
        "template": "qwen3_nothink",
        "cutoff_len": 512,
        "rope_scaling": None,
        "max_samples": 1000,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": "tiny_run",
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "overwrite_output_dir": True,
        "save_only_model": False,
        "resume_from_checkpoint": None,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-3,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "num_train_epochs": 1.0,
        "max_steps": 2,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.0,
        "bf16": False,
        "ddp_timeout": 180000000,
        "enable_liger_kernel": False,
        "use_unsloth_gc": False,
        "flash_attn": "auto",
    }
    train.update(training)
    return {
        "meta_info": {
            "name": "sft",
            "label": "SFT Training",
            "environment": {"sft_uv": str(ENV_DIR), "python_version": "3.11"},
        },
        "runtime_info": {
            "input": {
                "source": {"type": "local_lf", "lf_path": "data.json"},
                "conversion": {"max_instances": 0, "exclude_repos_file": "", "data_name": DATASET_KEY},
                "dataset": {"name": ""},
                "model": {"model_name_or_path": str(model_dir), "trust_remote_code": True},
                "training": train,
                "infrastructure": {"n_gpus_per_node": 1},
                "experiment": {
                    "run_name": "",
                    "wandb_mode": "disabled",
                    "wandb_run_id": "",
                    "wandb_project": "sft-tests",
                },
                "credentials": {"wandb_api_key": "", "hf_token": ""},
            },
            "output": {},
        },
    }


CONFIG_HEADER = "# sft test profile: this comment must survive the write-back\n"


def write_config(root: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write ``data`` as a commented config file and return its path."""
    path = root / name
    path.write_text(CONFIG_HEADER + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def read_index(root: Path) -> list[dict[str, Any]]:
    return yaml.safe_load((root / "artifacts" / "index.yaml").read_text(encoding="utf-8"))["runs"]


def output_block(config_path: Path) -> Any:
    return yaml.safe_load(config_path.read_text(encoding="utf-8"))["runtime_info"]["output"]


def python_has_llamafactory() -> bool:
    return (ENV_DIR / "bin" / "llamafactory-cli").is_file() or (
        Path(sys.executable).parent / "llamafactory-cli"
    ).is_file()
