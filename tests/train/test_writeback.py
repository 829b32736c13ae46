"""Writing runtime_info.output back into the config file without touching anything else."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from sft.config.loader import load_config
from sft.config.writeback import WriteBackError, write_runtime_output
from tests.train.helpers import PROJECT_ROOT

OUTPUT: dict[str, Any] = {
    "checkpoint_path": {
        "description": "Path to the latest trained model checkpoint",
        "value": "/abs/artifacts/model/run/checkpoint-24",
    },
    "artifacts": {
        "train_results": "/abs/artifacts/model/run/train_results.json",
        "train_loss_plot": "/abs/artifacts/model/run/training_loss.png",
        "training_log": "/abs/artifacts/logs/run_20260101_000000.log",
    },
    "training_curves": {
        "description": "WandB run id with loss, learning rate, and token metrics",
        "value": None,
    },
    "training_metrics": {
        "description": "Final training metrics from LLaMA-Factory",
        "value": {"final_loss": 0.4321, "train_runtime": 12.5, "total_steps": 24, "last_step_loss": 0.25},
    },
}


def _shipped_copy(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    shutil.copy2(PROJECT_ROOT / "config.yaml", path)
    if extra:
        path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def _split_around_output(text: str) -> tuple[str, str, str]:
    """(before, output block, after) of a config whose output block is at two-space indent."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("  output:"))
    end = start + 1
    while end < len(lines) and (lines[end].startswith("   ") or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])


def test_shipped_config_is_byte_identical_outside_the_output_block(tmp_path: Path) -> None:
    path = _shipped_copy(tmp_path)
    original = path.read_bytes()
    write_runtime_output(path, OUTPUT)
    updated = path.read_text(encoding="utf-8")

    before, block, after = _split_around_output(original.decode("utf-8"))
    new_before, new_block, new_after = _split_around_output(updated)
    assert new_before.encode() == before.encode() and new_after.encode() == after.encode()
    assert block == "  output: {}\n" and new_block != block
    assert yaml.safe_load(updated)["runtime_info"]["output"] == OUTPUT
    assert "# the training env that scripts/install_env.sh creates" in updated
    # The file still validates against the schema, and the output is the only change.
    load_config(path)
    old, new = yaml.safe_load(original), yaml.safe_load(updated)
    new["runtime_info"]["output"] = old["runtime_info"]["output"]
    assert new == old


def test_content_after_the_output_block_is_kept_byte_for_byte(tmp_path: Path) -> None:
    tail = "\n# tunables for the search (informational)\nevolving:\n  learning_rate: [1.0e-5, 1.0e-4]   # range\n"
    path = _shipped_copy(tmp_path, tail)
    write_runtime_output(path, OUTPUT)
    text = path.read_text(encoding="utf-8")
    assert text.endswith(tail)
    assert yaml.safe_load(text)["evolving"] == {"learning_rate": [1.0e-5, 1.0e-4]}


def test_a_second_write_replaces_the_first(tmp_path: Path) -> None:
    path = _shipped_copy(tmp_path)
    write_runtime_output(path, OUTPUT)
    after_first = path.read_text(encoding="utf-8")
    second = {**OUTPUT, "training_curves": {"description": "x", "value": "abcd1234"}}
    write_runtime_output(path, second)
    text = path.read_text(encoding="utf-8")
    assert text.count("  output:") == 1
    assert yaml.safe_load(text)["runtime_info"]["output"] == second
    assert _split_around_output(text)[0] == _split_around_output(after_first)[0]
    write_runtime_output(path, OUTPUT)
    assert path.read_text(encoding="utf-8") == after_first  # idempotent for the same output


def test_missing_output_key_is_added_at_the_end_of_runtime_info(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    original = "# head\nruntime_info:\n  input:\n    a: 1   # keep me\n\n# next section\nevolving: {}\n"
    path.write_text(original, encoding="utf-8")
    write_runtime_output(path, {"k": None})
    text = path.read_text(encoding="utf-8")
    assert (
        text
        == "# head\nruntime_info:\n  input:\n    a: 1   # keep me\n  output:\n    k: null\n\n# next section\nevolving: {}\n"
    )


def test_unusable_file_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("meta_info: {name: sft}\n", encoding="utf-8")
    with pytest.raises(WriteBackError, match="runtime_info"):
        write_runtime_output(path, OUTPUT)
    assert path.read_text(encoding="utf-8") == "meta_info: {name: sft}\n"
    with pytest.raises(WriteBackError, match="not found"):
        write_runtime_output(tmp_path / "missing.yaml", OUTPUT)
