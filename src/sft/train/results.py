"""Turn a finished LLaMA-Factory run directory into ``runtime_info.output`` (and curves).

Everything is derived from the files LLaMA-Factory wrote (docs/llamafactory-rules.md §9), never from the
launcher's exit code or console text, so a wrapper hiccup cannot lose or falsify a good run's record.
The checkpoint hand-off is the **highest complete** ``checkpoint-<step>`` (not the newest mtime, which a
copy or a partial save can fool), and only steps this run could have reached count, so a stale
checkpoint left from an older run in an overwritten directory is never handed to RL / eval.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from sft.core.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

CHECKPOINT_DESCRIPTION = "Path to the latest trained model checkpoint"
CURVES_DESCRIPTION = "WandB run id with loss, learning rate, and token metrics"
METRICS_DESCRIPTION = "Final training metrics from LLaMA-Factory"


class RunResultsError(RuntimeError):
    """The run directory does not hold a finished run (names the missing file)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunResultsError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _has_weights(directory: Path) -> bool:
    """Full weights present: a single weight file, or an index whose every shard exists."""
    if any((directory / name).is_file() for name in WEIGHT_FILES):
        return True
    for index_name in WEIGHT_INDEXES:
        index = directory / index_name
        if not index.is_file():
            continue
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError):
            return False
        return bool(shards) and all((directory / shard).is_file() for shard in shards)
    return False


def is_complete_checkpoint(directory: Path) -> bool:
    """A save finished: ``trainer_state.json`` (written after the weights) and the weights exist."""
    return directory.is_dir() and (directory / "trainer_state.json").is_file() and _has_weights(directory)


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every complete ``checkpoint-<step>`` in ``output_dir``, ascending by step."""
    found: list[tuple[int, Path]] = []
    if not output_dir.is_dir():
        return found
    for child in output_dir.iterdir():
        match = CHECKPOINT_RE.match(child.name)
        if not match:
            continue
        if is_complete_checkpoint(child):
            found.append((int(match.group(1)), child))
        else:
            logger.warning("ignoring incomplete checkpoint %s (no trainer_state.json or weights)", child)
    return sorted(found)


def latest_complete_checkpoint(output_dir: Path, max_step: int | None = None) -> Path | None:
    """The complete checkpoint with the highest step (at most ``max_step`` when given), or None."""
    candidates = [
        (step, path)
        for step, path in complete_checkpoints(output_dir)
        if max_step is None or step <= max_step
    ]
    return candidates[-1][1] if candidates else None


def read_trainer_log(path: Path) -> list[dict[str, Any]]:
    """The records of ``trainer_log.jsonl``; a half-written last line (live run) is skipped."""
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def last_step_loss(output_dir: Path) -> float | None:
    """The loss of the last logged step (``trainer_log.jsonl``, else ``trainer_state.json``)."""
    for record in reversed(read_trainer_log(output_dir / "trainer_log.jsonl")):
        if record.get("loss") is not None:
            return float(record["loss"])
    state_path = output_dir / "trainer_state.json"
    if state_path.is_file():
        for entry in reversed(_read_json(state_path).get("log_history", [])):
            if "loss" in entry:
                return float(entry["loss"])
    return None


def fix_saved_model_configs(output_dir: Path) -> list[Path]:
    """Make ``max_position_embeddings`` an integer in every saved ``config.json`` of the run.

    LLaMA-Factory's rope patch (model/model_utils/rope.py) sets it to ``old * float(factor)``, so a YaRN run
    saves e.g. ``163840.0``; the RL / eval stages read it as a length and choke on a float. The
    ``rope_scaling`` block LLaMA-Factory saved (type, factor, original length) is what the model was trained
    with and is kept as is. Returns the files that were rewritten.
    """
    fixed: list[Path] = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return fixed
    candidates = [output_dir / "config.json"]
    candidates += [c / "config.json" for c in sorted(output_dir.iterdir()) if CHECKPOINT_RE.match(c.name)]
    for path in candidates:
        if not path.is_file():
            continue
        config = _read_json(path)
        value = config.get("max_position_embeddings")
        if isinstance(value, float) and value.is_integer():
            config["max_position_embeddings"] = int(value)
            atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
            fixed.append(path)
            logger.info(
                "%s: max_position_embeddings %s -> %d (LLaMA-Factory's rope patch saves a float)",
                path,
                value,
                int(value),
            )
    return fixed


def collect_results(output_dir: Path, *, log_path: Path | None, wandb_run_id: str | None) -> dict[str, Any]:
    """The exact ``runtime_info.output`` mapping (docs/config-contract.md §2.5), all paths absolute.

    Raises RunResultsError when ``train_results.json`` or ``trainer_state.json`` is missing: LLaMA-Factory
    writes them only at the end of a successful run.
    """
    output_dir = Path(output_dir).resolve()
    train_results_path = output_dir / "train_results.json"
    state_path = output_dir / "trainer_state.json"
    for required in (train_results_path, state_path):
        if not required.is_file():
            raise RunResultsError(
                f"{required}: missing, so the run in {output_dir} did not finish. "
                "Check the training log; runtime_info.output is left untouched."
            )
    train_results = _read_json(train_results_path)
    global_step = int(_read_json(state_path).get("global_step", 0))

    checkpoint = latest_complete_checkpoint(output_dir, max_step=global_step)
    if checkpoint is None:
        if not _has_weights(output_dir):
            raise RunResultsError(f"{output_dir}: no complete checkpoint and no final model weights")
        checkpoint = output_dir
    plot_path = output_dir / "training_loss.png"
    if not plot_path.is_file():
        logger.warning("%s was not written (plot_loss needs at least one logged loss)", plot_path)

    return {
        "checkpoint_path": {"description": CHECKPOINT_DESCRIPTION, "value": str(checkpoint)},
        "artifacts": {
            "train_results": str(train_results_path),
            "train_loss_plot": str(plot_path) if plot_path.is_file() else None,
            "training_log": str(Path(log_path).resolve()) if log_path else None,
        },
        "training_curves": {"description": CURVES_DESCRIPTION, "value": wandb_run_id or None},
        "training_metrics": {
            "description": METRICS_DESCRIPTION,
            "value": {
                "final_loss": float(train_results["train_loss"]),
                "train_runtime": float(train_results["train_runtime"]),
                "total_steps": global_step,
                "last_step_loss": last_step_loss(output_dir),
            },
        },
    }


def grad_norm_history(log_history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """grad_norm per step from ``trainer_state.json``'s ``log_history`` (trainer_log.jsonl has none)."""
    steps: list[float] = []
    values: list[float] = []
    for entry in log_history:
        if entry.get("grad_norm") is not None and "step" in entry:
            steps.append(float(entry["step"]))
            values.append(float(entry["grad_norm"]))
    return steps, values


def read_log_history(output_dir: Path) -> list[dict[str, Any]]:
    """``trainer_state.json``'s ``log_history`` in the run's output folder ([] when there is none)."""
    state_path = Path(output_dir) / "trainer_state.json"
    if not state_path.is_file():
        return []
    return list(_read_json(state_path).get("log_history", []))


def plot_training_curves(trainer_log_path: Path) -> Figure:
    """The curves of the run whose ``trainer_log.jsonl`` is ``trainer_log_path`` (see ``curves_figure``)."""
    trainer_log_path = Path(trainer_log_path)
    return curves_figure(
        read_trainer_log(trainer_log_path),
        read_log_history(trainer_log_path.parent),
        title=trainer_log_path.parent.name,
    )


def curves_figure(records: list[dict[str, Any]], log_history: list[dict[str, Any]], *, title: str) -> Figure:
    """Loss, learning rate and grad-norm against the step, from the run's own logs (``trainer_log.jsonl``
    records and ``trainer_state.json``'s ``log_history``).

    Uses ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend), so it works in a
    Kedro node and headless. A panel without data says so instead of failing.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key in ("loss", "lr"):
        points = [(float(r["current_steps"]), float(r[key])) for r in records if r.get(key) is not None]
        series[key] = ([p[0] for p in points], [p[1] for p in points])
    series["grad_norm"] = grad_norm_history(log_history)

    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    titles = {"loss": "training loss", "lr": "learning rate", "grad_norm": "grad norm"}
    for ax, key in zip(axes, ("loss", "lr", "grad_norm"), strict=True):
        steps, values = series[key]
        ax.set_title(titles[key])
        ax.set_xlabel("step")
        if steps:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    figure.suptitle(title)
    return figure
