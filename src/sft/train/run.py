"""The training stage end to end: YAML -> safety checks -> launch -> results -> history.

``run_training`` is what the Kedro train node calls. A successful run's results go into
``runtime_info.output`` of the selected config file; a failed or interrupted run leaves that block
untouched. Either way the run is recorded in ``artifacts/index.yaml`` with an archive, and a failure
raises TrainingError naming the status, the exit code and the log.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from sft.config.credentials import resolve_credentials
from sft.config.loader import resolve_path
from sft.config.schema import RuntimeInput, SftConfig
from sft.config.writeback import write_runtime_output
from sft.core.io_utils import atomic_write_text
from sft.train.features import EnvProbe, FeatureReport, feature_checks, multinode_checks, probe_environment
from sft.train.files import TrainingFiles
from sft.train.history import record_run
from sft.train.launch import (
    LaunchError,
    LaunchResult,
    Progress,
    launch_training,
    log_file_path,
    log_progress,
    output_dir_lock,
    utc_now,
)
from sft.train.multinode import DatasetWaitError, mark_dataset_ready, node_rank, run_token
from sft.train.results import RunResultsError, collect_results, fix_saved_model_configs
from sft.train.wandb_setup import (
    WandbConfigError,
    find_wandb_run_dir,
    wandb_env,
    wandb_run_id_for,
    wandb_unset_vars,
)
from sft.train.yaml_gen import (
    OutputDirError,
    TrainingConfigError,
    build_training_args,
    check_output_dir,
    dump_training_yaml,
    output_dir_entries,
    overwrite_allowed,
    remove_stale_checkpoints,
    resolve_output_dir,
)

logger = logging.getLogger(__name__)

_REFUSALS = (TrainingConfigError, OutputDirError, LaunchError, WandbConfigError, DatasetWaitError)


class TrainingError(RuntimeError):
    """Training did not complete (refused, failed or interrupted); the run is recorded regardless."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


def cuda_available() -> bool:
    """Whether this machine can train on a GPU (decides the CPU-only YAML adjustments)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class LaunchGateError(TrainingConfigError):
    """The profile turns on something the training env cannot do (the dryrun's FAIL lines)."""


@lru_cache(maxsize=4)
def _probe(python: str) -> EnvProbe:
    return probe_environment(Path(python))


def training_python(env_dir: Path | None) -> Path:
    """The interpreter llamafactory-cli will run with: the training env's, else this one."""
    if env_dir is not None and (Path(env_dir) / "bin" / "python").exists():
        return Path(env_dir) / "bin" / "python"
    return Path(sys.executable)


def launch_gate(
    args: dict[str, Any],
    cfg: RuntimeInput,
    *,
    env: Mapping[str, str],
    env_dir: Path | None,
    on_cpu: bool,
    probe: EnvProbe | None = None,
) -> FeatureReport:
    """The dryrun's feature and multi-node checks on the final YAML; raises LaunchGateError on any FAIL.

    Runs before the launch so a missing package or an inconsistent multi-node setup stops here, in one
    message, instead of after torchrun and the imports on the GPU node.
    """
    probe = probe or _probe(str(training_python(env_dir)))
    report = feature_checks(args, cfg.infrastructure, probe, on_cpu=on_cpu)
    report.findings += multinode_checks(cfg.infrastructure, env).findings
    for finding in report.findings:
        logger.log(
            logging.WARNING if finding.level in ("WARN", "FAIL") else logging.INFO,
            "[%s] %s",
            finding.level,
            finding.message,
        )
    if report.failures:
        raise LaunchGateError(
            "the training profile cannot start here (the same checks as scripts/dryrun.sh):\n  - "
            + "\n  - ".join(report.failures)
        )
    return report


def _log_tail(log_path: Path, n_lines: int = 15) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-n_lines:] if line.strip())


def _trainer_env(cfg: RuntimeInput, wandb_vars: Mapping[str, str], hf_token: str) -> dict[str, str]:
    env = dict(wandb_vars)
    # The reference exports the HF token only for Hub datasets (docs/config-contract.md §3.8).
    if hf_token and cfg.source.type == "hf_lf":
        env["HF_TOKEN"] = hf_token
        env["HUGGING_FACE_HUB_TOKEN"] = hf_token
    return env


def run_training(
    cfg: SftConfig,
    *,
    config_path: Path,
    root: Path,
    dataset_dir: Path,
    env: Mapping[str, str] | None = None,
    notes: str = "",
    on_progress: Callable[[Progress], None] | None = log_progress,
    console: TextIO | None = None,
    files: TrainingFiles | None = None,
) -> dict[str, Any]:
    """Train as ``cfg.runtime_info.input`` says; returns the run summary (see ``_summary``).

    ``files``: every file the stage writes besides the model (the catalog's ``training_files`` in a Kedro run);
    by default the project's, from ``root``, ``config_path`` and ``dataset_dir``.
    Raises TrainingError for a refused, failed or interrupted run (after recording it).
    """
    env = os.environ if env is None else env
    root = Path(root).resolve()
    inp = cfg.input
    credentials = resolve_credentials(inp.credentials, root, env)
    secrets = credentials.values()
    output_dir = resolve_output_dir(inp.training.output_dir, root)
    files = files or TrainingFiles.under(
        root, config_file=Path(config_path), output_dir=output_dir, dataset_dir=dataset_dir
    )
    config_path, dataset_dir = files.config_file, files.dataset_dir
    run_name = inp.run_name
    yaml_path = files.training_yaml
    log_path = log_file_path(files.logs_dir, run_name)
    env_dir = resolve_path(cfg.meta_info.environment.sft_uv, root)
    wandb_run_id = wandb_run_id_for(inp)
    started_at = utc_now()
    summary: dict[str, Any] = {
        "run_id": None,
        "gate_notes": [],
        "status": "failed",
        "exit_code": None,
        "output_dir": str(output_dir),
        "training_yaml": None,
        "log_path": None,
        "wandb_run_id": wandb_run_id,
        "wandb_run_dir": None,
        "started_at": started_at,
        "completed_at": None,
        "config_path": str(Path(config_path).resolve()),
        "output": None,
    }

    rank = node_rank(inp.infrastructure, env)

    def record(status: str, exit_code: int | None, note: str, results: dict[str, Any] | None) -> str | None:
        if rank != 0:  # one history entry per run: node 0's
            logger.info("node %d: the run's history entry is node 0's (%s here: %s)", rank, status, note)
            return None
        if summary["gate_notes"]:
            note = f"{note}; " + "; ".join(summary["gate_notes"])
        return record_run(
            root,
            started_at=started_at,
            completed_at=summary["completed_at"] or utc_now(),
            exit_code=exit_code if exit_code is not None else -1,
            status=status,
            config_path=Path(config_path),
            training_yaml_path=Path(summary["training_yaml"]) if summary["training_yaml"] else None,
            notes=note,
            results=results,
            secret_values=secrets,
            log_path=Path(summary["log_path"]) if summary["log_path"] else None,
            index_file=files.run_index,
            archives_dir=files.archives_dir,
            extra={
                "run_name": run_name,
                "output_dir": str(output_dir),
                "wandb_run_id": wandb_run_id,
                "fallbacks": list(summary["gate_notes"]),
            },
        )

    try:
        trainer_env = _trainer_env(
            inp,
            wandb_env(inp, root, credentials, run_id=wandb_run_id, wandb_dir=files.wandb_dir),
            credentials.hf_token,
        )
        on_cpu = not cuda_available()
        if on_cpu and inp.infrastructure.n_gpus_per_node > 1:
            logger.warning(
                "no GPU here: n_gpus_per_node %d starts that many CPU ranks",
                inp.infrastructure.n_gpus_per_node,
            )
        args = build_training_args(inp, root=root, dataset_dir=dataset_dir, run_name=run_name, on_cpu=on_cpu)
        gate = launch_gate(args, inp, env=env, env_dir=env_dir, on_cpu=on_cpu)
        args.update(gate.changes)
        summary["gate_notes"] = gate.notes
        atomic_write_text(yaml_path, dump_training_yaml(args))
        summary["training_yaml"] = str(yaml_path)
        logger.info("training YAML: %s", yaml_path)
        with output_dir_lock(output_dir, rank):
            if rank == 0:  # nodes 1.. share node 0's output dir, which node 0 checks and may already fill
                check_output_dir(output_dir, inp.training, env)
                if args.get("resume_from_checkpoint") is None and output_dir_entries(output_dir):
                    if overwrite_allowed(inp.training, env):
                        remove_stale_checkpoints(output_dir)
                if inp.infrastructure.n_nodes > 1:
                    mark_dataset_ready(dataset_dir, inp.dataset_key, run_token(env) or "")
            summary["log_path"] = str(log_path)
            result = launch_training(
                yaml_path,
                env_dir=env_dir,
                n_gpus=inp.infrastructure.n_gpus_per_node,
                n_nodes=inp.infrastructure.n_nodes,
                node_rank=inp.infrastructure.node_rank,
                master_addr=inp.infrastructure.master_addr,
                master_port=inp.infrastructure.master_port,
                log_path=log_path,
                extra_env=trainer_env,
                unset_env=wandb_unset_vars(inp),
                on_progress=on_progress,
                secrets=secrets,
                cwd=root,
                console=console,
            )
    except _REFUSALS as exc:
        summary["completed_at"] = utc_now()
        summary["run_id"] = record("failed", None, f"refused before launch: {exc}", None)
        raise TrainingError(f"training refused before launch: {exc}", summary) from exc

    return _finish(
        cfg,
        result,
        summary,
        record,
        config_path=Path(config_path),
        root=root,
        env=env,
        notes=notes,
        wandb_dir=files.wandb_dir,
    )


def _finish(
    cfg: SftConfig,
    result: LaunchResult,
    summary: dict[str, Any],
    record: Callable[[str, int | None, str, dict[str, Any] | None], str | None],
    *,
    config_path: Path,
    root: Path,
    env: Mapping[str, str],
    notes: str,
    wandb_dir: Path,
) -> dict[str, Any]:
    summary.update(
        {
            "status": result.status,
            "exit_code": result.exit_code,
            "log_path": str(result.log_path),
            "started_at": result.started_at,
            "completed_at": result.completed_at,
        }
    )
    wandb_run_id = summary["wandb_run_id"]
    if wandb_run_id:
        run_dir = find_wandb_run_dir(root, wandb_run_id, wandb_dir=wandb_dir)
        summary["wandb_run_dir"] = str(run_dir) if run_dir else None
        if run_dir is None and cfg.input.experiment.wandb_mode == "offline":
            logger.warning("no wandb run dir for id %s under %s", wandb_run_id, wandb_dir)

    if result.status != "completed":
        summary["run_id"] = record(
            result.status, result.exit_code, notes or f"training {result.status}", None
        )
        raise TrainingError(
            f"training {result.status} (exit code {result.exit_code}); runtime_info.output left untouched. "
            f"Log: {result.log_path}\n{_log_tail(result.log_path)}",
            summary,
        )

    if node_rank(cfg.input.infrastructure, env) != 0:
        # Node 0 collects the results, writes runtime_info.output and records the run (results written once).
        logger.info("training completed on this node; node 0 records the run and writes the results")
        return summary
    output_dir = Path(summary["output_dir"])
    try:
        fix_saved_model_configs(output_dir)
        results = collect_results(output_dir, log_path=result.log_path, wandb_run_id=wandb_run_id)
    except RunResultsError as exc:
        summary["status"] = "failed"
        summary["run_id"] = record("failed", result.exit_code, f"exit 0 but no results: {exc}", None)
        raise TrainingError(f"training exited 0 but {exc}", summary) from exc
    summary["output"] = results

    write_error: Exception | None = None
    try:
        write_runtime_output(config_path, results)
    except Exception as exc:  # recorded below, then re-raised: the run itself succeeded
        write_error = exc
    note = notes or "training completed"
    if write_error is not None:
        note += f"; writing runtime_info.output into {config_path} failed: {write_error}"
    summary["run_id"] = record("completed", result.exit_code, note, results)
    if write_error is not None:
        raise TrainingError(f"training completed but {note}", summary) from write_error
    logger.info(
        "training completed: checkpoint %s, final_loss %.4f, %d steps",
        results["checkpoint_path"]["value"],
        results["training_metrics"]["value"]["final_loss"],
        results["training_metrics"]["value"]["total_steps"],
    )
    return summary
