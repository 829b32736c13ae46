"""A project directory laid out like a real one after a few training runs (written by hand, shapes from
docs/llamafactory-rules.md §9 and docs/config-contract.md §8-§9), plus credentials and traps for the safety tests.

Runs:
- ``qwen3-8b-sft-v1``: finished (10 steps, final log line without loss, train_results.json, index run_001);
- ``qwen3-8b-sft-crash``: 3 of 20 steps, log an hour old, index run_002 ``failed``;
- ``qwen3-8b-sft-live``: 6 of 20 steps, log written now, throughput logged, no index entry yet;
- ``qwen3-8b-sft-stale``: 2 of 20 steps, log an hour old, no results, no index entry;
- ``run_003``: index ``interrupted`` before its output folder was created.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

WANDB_KEY = "wandbkey-0123456789abcdef0123456789abcdef"
HF_TOKEN = "hf_FAKEtokenFAKEtokenFAKEtokenFAKE1234"
CONFIG_SECRET = "config-inline-secret-value-987654"
DOTENV_SECRET = "dotenv-secret-value-555"
DATA_NAME = "demo_sft"
DATASET_KEY = "sft_demo"

FINISHED = "qwen3-8b-sft-v1"
CRASHED = "qwen3-8b-sft-crash"
LIVE = "qwen3-8b-sft-live"
STALE = "qwen3-8b-sft-stale"
INDEX_ONLY = "run_003"


@dataclass(frozen=True)
class FakeProject:
    root: Path
    secrets: tuple[str, ...]

    def model(self, run: str) -> Path:
        return self.root / "artifacts" / "model" / run

    def log_lines_with_loss(self, run: str) -> int:
        lines = (self.model(run) / "trainer_log.jsonl").read_text().splitlines()
        return sum(1 for line in lines if line.strip() and "loss" in json.loads(line))


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def log_line(
    step: int,
    total: int,
    *,
    seconds_per_step: float = 31.0,
    loss: float | None = None,
    throughput: float | None = None,
) -> dict[str, Any]:
    """A LLaMA-Factory LogCallback line (train/callbacks.py key order)."""
    elapsed = step * seconds_per_step
    line: dict[str, Any] = {"current_steps": step, "total_steps": total}
    if loss is not None:
        line["loss"] = loss
    line.update(
        {
            "lr": round(1e-5 * min(1.0, step / 3) * (1 - step / (total + 1)), 10),
            "epoch": round(step / total * 2, 4),
            "percentage": round(step / total * 100, 2),
            "elapsed_time": hms(elapsed),
            "remaining_time": hms((total - step) * seconds_per_step),
        }
    )
    if throughput is not None:
        line["throughput"] = throughput
        line["total_tokens"] = int(throughput * elapsed)
    return line


def loss_at(step: int) -> float:
    return round(2.4 * (0.9**step) + 0.35, 4)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")


def write_yaml(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def training_yaml(root: Path, run: str) -> dict[str, Any]:
    return {
        "model_name_or_path": "Qwen/Qwen3-8B",
        "trust_remote_code": True,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "deepspeed": str(root / "artifacts/training_config/deepspeed/ds_z3_config.json"),
        "dataset": DATASET_KEY,
        "dataset_dir": str(root / "artifacts/data/lf_data"),
        "template": "qwen3",
        "cutoff_len": 32768,
        "output_dir": str(root / "artifacts/model" / run),
        "logging_steps": 1,
        "save_steps": 500,
        "plot_loss": True,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "learning_rate": 1.0e-5,
        "num_train_epochs": 2.0,
        "lr_scheduler_type": "cosine",
        "bf16": True,
        "report_to": "none",
        "run_name": run,
    }


def config_doc(run: str, *, secret: str) -> dict[str, Any]:
    """The shape of the project's config.yaml (meta_info / runtime_info at the top level)."""
    return {
        "meta_info": {"name": "sft", "label": "SFT Training"},
        "runtime_info": {
            "input": {
                "experiment": {"run_name": run, "wandb_mode": "offline"},
                "credentials": {"wandb_api_key": secret, "hf_token": ""},
                "training": {"output_dir": run, "learning_rate": 1.0e-5, "notes": f"uses key {WANDB_KEY}"},
                "dataset": {"name": DATASET_KEY},
            },
            "output": {},
        },
    }


def write_finished_run(root: Path) -> None:
    model = root / "artifacts/model" / FINISHED
    lines = [log_line(s, 10, loss=loss_at(s)) for s in range(1, 11)]
    lines.append(
        {
            "current_steps": 10,
            "total_steps": 10,
            "epoch": 2.0,
            "percentage": 100.0,
            "elapsed_time": "0:05:12",
            "remaining_time": "0:00:00",
        }
    )
    write_jsonl(model / "trainer_log.jsonl", lines)
    history: list[dict[str, Any]] = [
        {
            "epoch": ln["epoch"],
            "grad_norm": round(3.0 / s, 4),
            "learning_rate": ln["lr"],
            "loss": ln["loss"],
            "step": s,
        }
        for s, ln in zip(range(1, 11), lines, strict=False)
    ]
    history.append(
        {
            "epoch": 2.0,
            "step": 10,
            "total_flos": 4.25e15,
            "train_loss": 0.9123,
            "train_runtime": 312.4,
            "train_samples_per_second": 0.512,
            "train_steps_per_second": 0.032,
        }
    )
    write_json(
        model / "trainer_state.json",
        {
            "best_global_step": None,
            "best_metric": None,
            "best_model_checkpoint": None,
            "epoch": 2.0,
            "eval_steps": 500,
            "global_step": 10,
            "is_hyper_param_search": False,
            "is_local_process_zero": True,
            "is_world_process_zero": True,
            "log_history": history,
            "logging_steps": 1,
            "max_steps": 10,
            "num_input_tokens_seen": 0,
            "num_train_epochs": 2,
            "save_steps": 500,
            "stateful_callbacks": {},
            "total_flos": 4.25e15,
            "train_batch_size": 1,
            "trial_name": None,
            "trial_params": None,
        },
    )
    results = {
        "epoch": 2.0,
        "total_flos": 4.25e15,
        "train_loss": 0.9123,
        "train_runtime": 312.4,
        "train_samples_per_second": 0.512,
        "train_steps_per_second": 0.032,
    }
    write_json(model / "train_results.json", results)
    write_json(model / "all_results.json", results)
    (model / "checkpoint-10").mkdir()
    (model / "training_loss.png").write_bytes(b"\x89PNG\r\n\x1a\nfake-png")
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    for name in ("trainer_log.jsonl", "trainer_state.json", "train_results.json", "all_results.json"):
        age(model / name, 7200)


def write_partial_run(
    root: Path,
    run: str,
    steps: int,
    *,
    age_sec: float,
    throughput: float | None = None,
    loss_offset: float = 0.0,
) -> None:
    model = root / "artifacts/model" / run
    write_jsonl(
        model / "trainer_log.jsonl",
        [
            log_line(s, 20, loss=round(loss_at(s) + loss_offset, 4), throughput=throughput)
            for s in range(1, steps + 1)
        ],
    )
    age(model / "trainer_log.jsonl", age_sec)


def write_archive(root: Path, run_id: str, run: str, status: str, exit_code: int, *, stamp: str) -> None:
    archive = root / "artifacts/archives" / run_id
    write_yaml(archive / "config.yaml", config_doc(run, secret="***REDACTED***"))
    write_yaml(archive / "training.yaml", training_yaml(root, run))
    write_yaml(
        archive / "metadata.yaml",
        {
            "id": run_id,
            "block": "sft",
            "stage": "train",
            "started_at": "2025-06-01T10:00:00Z",
            "completed_at": "2025-06-01T12:00:00Z",
            "status": status,
            "exit_code": exit_code,
            "repos": {},
            "run_name": run,
            "output_dir": str(root / "artifacts/model" / run),
            "training_log": str(root / "artifacts/logs" / f"{run}_{stamp}.log"),
            "notes": "",
            "results": None,
        },
    )


def write_history(root: Path) -> None:
    write_archive(root, "run_001", FINISHED, "completed", 0, stamp="20250601_100000")
    write_archive(root, "run_002", CRASHED, "failed", 1, stamp="20250602_100000")
    write_archive(root, "run_003", "qwen3-8b-sft-never", "interrupted", 130, stamp="20250603_100000")
    runs = [
        {
            "id": "run_001",
            "started_at": "2025-06-01T10:00:00Z",
            "completed_at": "2025-06-01T12:00:00Z",
            "status": "completed",
            "archive": "artifacts/archives/run_001/",
            "notes": "first full run",
        },
        {
            "id": "run_002",
            "started_at": "2025-06-02T10:00:00Z",
            "completed_at": "2025-06-02T10:20:00Z",
            "status": "failed",
            "archive": "artifacts/archives/run_002/",
            "notes": "NCCL timeout",
        },
        {
            "id": "run_003",
            "started_at": "2025-06-03T10:00:00Z",
            "completed_at": "2025-06-03T10:01:00Z",
            "status": "interrupted",
            "archive": "artifacts/archives/run_003/",
            "notes": "Ctrl-C",
        },
    ]
    write_yaml(root / "artifacts/index.yaml", {"runs": runs})


def write_logs(root: Path) -> None:
    logs = root / "artifacts/logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{FINISHED}_20250601_100000.log").write_text(
        "[INFO] loading Qwen/Qwen3-8B\n"
        "  0%|          | 0/10 [00:00<?, ?it/s]\r 10%|#         | 1/10 [00:31<04:39, 31.0s/it]\r"
        "100%|##########| 10/10 [05:12<00:00, 31.2s/it]\n"
        f"[INFO] pushing with token {HF_TOKEN}\n"
        "***** train metrics *****\n  train_loss = 0.9123\n",
        encoding="utf-8",
    )
    (logs / f"{LIVE}_20250604_090000.log").write_text(
        "".join(f"[INFO] step {i}\n" for i in range(1, 400)) + "last live line\n", encoding="utf-8"
    )


def lf_rows() -> list[dict[str, Any]]:
    tools = json.dumps(
        [
            {
                "name": "bash",
                "description": "Run a shell command",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
            }
        ]
    )
    return [
        {
            "conversations": [
                {"from": "human", "value": "Fix the failing test in utils.py"},
                {
                    "from": "function_call",
                    "value": "<think>\nI should look at the test first.\n</think>\n\n"
                    + json.dumps({"name": "bash", "arguments": {"command": "pytest -x"}}),
                },
                {"from": "observation", "value": "FAILED tests/test_utils.py::test_slug - AssertionError"},
                {
                    "from": "function_call",
                    "value": "<think>\nTwo things to check.\n</think>\n\n"
                    + json.dumps(
                        [
                            {"name": "bash", "arguments": {"command": "cat utils.py"}},
                            {"name": "bash", "arguments": {"command": "cat tests/test_utils.py"}},
                        ]
                    ),
                },
                {
                    "from": "observation",
                    "value": "def slug(s): return s\n</tool_response>\n<tool_response>\ndef test_slug(): ...",
                },
                {
                    "from": "gpt",
                    "value": "<think>\nThe slug must lower-case.\n</think>\n\nFixed: slug() now lower-cases.",
                },
            ],
            "system": "You are a coding agent.",
            "tools": tools,
            "_instance_id": "acme__utils-1",
            "_uid": "acme__utils-1#0",
        },
        {
            "conversations": [
                {"from": "human", "value": "Say hi"},
                {"from": "gpt", "value": "Hi!"},
            ],
            "system": "You are a coding agent.",
            "tools": "",
            "_instance_id": "acme__hello-2",
            "_uid": "acme__hello-2#0",
        },
        {
            "conversations": [
                {"from": "human", "value": "List files"},
                {
                    "from": "function_call",
                    "value": "Listing.\n<tool_call>\n"
                    + json.dumps({"name": "bash", "arguments": {"command": "ls"}})
                    + "\n</tool_call>",
                },
                {"from": "observation", "value": "a.py\nb.py"},
                {"from": "gpt", "value": "Two files."},
            ],
            "system": "You are a coding agent.",
            "tools": tools,
            "_instance_id": "acme__ls-3",
            "_uid": "acme__ls-3#0",
        },
    ]


def write_dataset(root: Path) -> None:
    lf = root / "artifacts/data/lf_data"
    lf.mkdir(parents=True, exist_ok=True)
    rows = lf_rows()
    # sft's writer layout: a JSON array with one row per line (sft.datasets.llamafactory.write_json_array).
    (lf / f"{DATA_NAME}.json").write_text(
        "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n", encoding="utf-8"
    )
    write_json(
        lf / "dataset_info.json",
        {
            DATASET_KEY: {
                "file_name": f"{DATA_NAME}.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
            }
        },
    )
    write_json(
        lf / f"{DATA_NAME}.stats.json",
        {
            "schema": "sft.dataset_stats/1",
            "dataset": {"data_name": DATA_NAME, "rows": 3},
            "settings": {"cutoff_len": 32768, "template": "qwen3"},
            "token_lens": {"max": 2100, "min": 40, "mean": 800.0, "gt_128k": 0},
            "count": 3,
            "total_tokens": 2400,
        },
    )
    (lf / f"{DATA_NAME}.README.md").write_text(
        f"# Dataset card: {DATA_NAME}\n\n3 trajectories from a Harbor job.\n\n| rows | tokens |\n|---|---|\n| 3 | 2400 |\n",
        encoding="utf-8",
    )
    write_jsonl(
        root / "data/08_reporting" / DATA_NAME / "sample_stats.jsonl",
        [
            {"index": 0, "total_tokens": 2100, "lf_status": "ok"},
            {"index": 1, "total_tokens": 40, "lf_status": "ok"},
            {"index": 2, "total_tokens": 260, "lf_status": "ok"},
        ],
    )


def write_credentials_and_traps(root: Path) -> None:
    write_yaml(root / "conf/local/credentials.yml", {"wandb_api_key": WANDB_KEY, "hf_token": HF_TOKEN})
    (root / ".env").write_text(f"WANDB_API_KEY={DOTENV_SECRET}\n", encoding="utf-8")
    write_yaml(root / "config.yaml", config_doc(LIVE, secret=CONFIG_SECRET))
    (root / "outside.txt").write_text(f"outside the served folders {CONFIG_SECRET}\n", encoding="utf-8")
    # Files inside the served folders that must still be refused or scrubbed.
    (root / "artifacts/credentials.yml").write_text(f"hf_token: {HF_TOKEN}\n", encoding="utf-8")
    (root / "artifacts/.env").write_text(f"X={DOTENV_SECRET}\n", encoding="utf-8")
    (root / "data/notes.txt").write_text(f"the key is {WANDB_KEY}\n", encoding="utf-8")
    (root / "artifacts/env/lf/bin").mkdir(parents=True)
    (root / "artifacts/env/lf/pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    # Symlinks that point out of the served folders.
    (root / "artifacts/link_to_conf").symlink_to(root / "conf/local")
    (root / "artifacts/link_to_outside.txt").symlink_to(root / "outside.txt")
    (root / "data/link_to_etc").symlink_to("/etc")


def make_project(root: Path) -> FakeProject:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    write_finished_run(root)
    write_partial_run(root, CRASHED, 3, age_sec=3600)
    write_partial_run(root, LIVE, 6, age_sec=5, throughput=1830.5, loss_offset=0.15)
    write_partial_run(root, STALE, 2, age_sec=3600)
    write_yaml(root / "artifacts/training_config" / f"{LIVE}.yaml", training_yaml(root, LIVE))
    write_history(root)
    write_logs(root)
    write_dataset(root)
    write_credentials_and_traps(root)
    return FakeProject(root=root, secrets=(WANDB_KEY, HF_TOKEN, CONFIG_SECRET, DOTENV_SECRET))
