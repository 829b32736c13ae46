"""What a training profile turns on, whether the training env can do it, and what LLaMA-Factory will do.

One set of checks, two callers: the dryrun prints them (``sft.preflight.dryrun``) and the train node runs
them right before the launch (``sft.train.run``), refusing with the same lines. Why before the launch:
LLaMA-Factory only finds a missing ``liger-kernel`` (``check_version(..., mandatory=True)`` in its
``hparams/parser.py``) after torchrun and every import, i.e. after the user queued for the GPU node, and it
only *warns* when ``flash_attn: fa2`` has no ``flash-attn`` package, silently training with transformers'
default attention (sdpa), whose memory profile at 131k tokens is not the one the dryrun promised.

A fallback happens only when the profile allows it (``infrastructure.attn_fallback``); it is applied to the
YAML and returned as a note that goes into the run's history.

The environment is read by a probe run with the training env's interpreter (``EnvProbe``), so the checks
see what ``llamafactory-cli`` will see even when sft itself runs in another env.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sft.config.schema import InfrastructureConfig

Level = Literal["OK", "WARN", "FAIL", "INFO"]

# LLaMA-Factory 0.9.5's supported DeepSpeed range (its setup.py extra "deepspeed").
DEEPSPEED_SUPPORTED = ((0, 10, 0), (0, 16, 9))
# Compute capability FlashAttention-2 and bf16 need (Ampere and newer).
MIN_CAPABILITY = (8, 0)

PROBED_PACKAGES = (
    "torch",
    "transformers",
    "deepspeed",
    "llamafactory",
    "liger_kernel",
    "flash_attn",
    "accelerate",
    "peft",
    "trl",
    "datasets",
)

_PROBE = r"""
import importlib, importlib.metadata, json, sys
out = {"python": sys.executable, "versions": {}, "errors": {}}
for name in %(packages)r:
    try:
        mod = importlib.import_module(name)
        version = getattr(mod, "__version__", None)
        if version is None:  # liger-kernel has no __version__: ask the distribution
            try:
                version = importlib.metadata.version(name.replace("_", "-"))
            except Exception:
                version = "?"
        out["versions"][name] = str(version)
    except Exception as exc:
        out["versions"][name] = None
        out["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
try:
    import torch
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    out["device_count"] = torch.cuda.device_count() if out["cuda_available"] else 0
    out["device_names"] = [torch.cuda.get_device_name(i) for i in range(out["device_count"])]
    out["capability"] = list(torch.cuda.get_device_capability(0)) if out["device_count"] else None
except Exception as exc:
    out["errors"]["torch.cuda"] = f"{type(exc).__name__}: {exc}"[:300]
try:
    from transformers.utils import is_flash_attn_2_available
    out["fa2_available"] = bool(is_flash_attn_2_available())
except Exception:
    out["fa2_available"] = False
print(json.dumps(out))
"""


@dataclass
class EnvProbe:
    """What the training env's interpreter can import and which devices it sees."""

    python: str
    versions: dict[str, str | None]
    errors: dict[str, str] = field(default_factory=dict)
    torch_cuda: str | None = None
    cuda_available: bool = False
    device_count: int = 0
    device_names: list[str] = field(default_factory=list)
    capability: list[int] | None = None
    fa2_available: bool = False
    driver_cuda: str | None = None  # the highest CUDA the driver supports (nvidia-smi header)
    driver_version: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EnvProbe:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def has(self, package: str) -> bool:
        return self.versions.get(package) is not None

    def why_missing(self, package: str) -> str:
        return self.errors.get(package, "not installed")


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str


@dataclass
class FeatureReport:
    """The findings, plus what the gate changed in the YAML (each change is also a note)."""

    findings: list[Finding] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, level: Level, message: str) -> None:
        self.findings.append(Finding(level, message))

    @property
    def failures(self) -> list[str]:
        return [f.message for f in self.findings if f.level == "FAIL"]


def driver_info() -> tuple[str | None, str | None]:
    """``(driver version, highest CUDA version it supports)`` from nvidia-smi, or Nones without one."""
    if not shutil.which("nvidia-smi"):
        return None, None
    try:
        proc = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    driver = re.search(r"Driver Version:\s*([\d.]+)", proc.stdout)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", proc.stdout)
    return (driver.group(1) if driver else None), (cuda.group(1) if cuda else None)


def probe_environment(python: Path | None = None, timeout: float = 300) -> EnvProbe:
    """Run the probe with ``python`` (default: this interpreter) and add the driver's versions."""
    interpreter = str(python or sys.executable)
    code = _PROBE % {"packages": PROBED_PACKAGES}
    try:
        proc = subprocess.run([interpreter, "-c", code], capture_output=True, text=True, timeout=timeout)
        data = (
            json.loads(proc.stdout.strip().splitlines()[-1])
            if proc.returncode == 0 and proc.stdout.strip()
            else None
        )
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        data = None
        proc_err = str(exc)
    else:
        proc_err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if data is None:
        probe = EnvProbe(
            python=interpreter, versions=dict.fromkeys(PROBED_PACKAGES), errors={"probe": proc_err}
        )
    else:
        probe = EnvProbe.from_mapping(data)
    probe.driver_version, probe.driver_cuda = driver_info()
    return probe


def _version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text or "")[:3])


# ------------------------------------------------------------------------------------------ checks


def _check_cuda(probe: EnvProbe, n_gpus: int, bf16: bool, report: FeatureReport) -> None:
    if not probe.has("torch"):
        report.add(
            "FAIL",
            f"torch is not importable in {probe.python} ({probe.why_missing('torch')}). "
            "Fix: bash scripts/install_env.sh on the GPU node",
        )
        return
    if not probe.torch_cuda:
        report.add(
            "FAIL",
            f"torch {probe.versions['torch']} in {probe.python} is a CPU build; a GPU profile needs "
            "CUDA torch. Fix: bash scripts/install_env.sh on a machine where nvidia-smi works",
        )
        return
    if probe.driver_cuda:
        want, have = _version_tuple(probe.torch_cuda), _version_tuple(probe.driver_cuda)
        if want[:1] > have[:1]:
            report.add(
                "FAIL",
                f"torch is built for CUDA {probe.torch_cuda} but driver {probe.driver_version} supports "
                f"CUDA {probe.driver_cuda} at most. Fix: a torch build for CUDA <= {probe.driver_cuda}, "
                "or a newer driver",
            )
        elif want[:2] > have[:2]:
            report.add(
                "WARN",
                f"torch CUDA {probe.torch_cuda} is newer than the driver's CUDA {probe.driver_cuda} "
                "(minor-version compatibility: most kernels run, PTX JIT may fail)",
            )
        else:
            report.add(
                "OK",
                f"CUDA: torch {probe.versions['torch']} built for CUDA {probe.torch_cuda}, driver "
                f"{probe.driver_version} (CUDA {probe.driver_cuda})",
            )
    if not probe.cuda_available or probe.device_count == 0:
        report.add(
            "FAIL",
            f"torch {probe.versions['torch']} sees no GPU ({probe.why_missing('torch.cuda')}); "
            "a GPU profile cannot start here",
        )
        return
    if probe.device_count < n_gpus:
        report.add(
            "FAIL",
            f"infrastructure.n_gpus_per_node is {n_gpus} but torch sees {probe.device_count} GPU(s) "
            f"({', '.join(probe.device_names)}). Fix: set n_gpus_per_node: {probe.device_count}, or "
            "use a node with more GPUs",
        )
    cap = tuple(probe.capability or (0, 0))
    if bf16 and cap < MIN_CAPABILITY:
        report.add(
            "FAIL",
            f"training.bf16 is true but {probe.device_names[0]} has compute capability "
            f"{cap[0]}.{cap[1]} (bf16 needs >= 8.0). Fix: bf16: false (fp16) or an Ampere+ GPU",
        )


def _check_attention(
    args: Mapping[str, Any], probe: EnvProbe, infra: InfrastructureConfig, on_cpu: bool, report: FeatureReport
) -> None:
    requested = str(args.get("flash_attn", "auto"))
    cutoff = args.get("cutoff_len")
    if requested == "fa2":
        if probe.fa2_available:
            report.add("OK", f"attention: flash_attention_2 (flash-attn {probe.versions.get('flash_attn')})")
            return
        why = probe.why_missing("flash_attn") if not probe.has("flash_attn") else "transformers cannot use it"
        fallback = infra.attn_fallback
        if fallback is None:
            report.add(
                "FAIL",
                f"training.flash_attn is fa2 but flash-attn is not usable in {probe.python} ({why}); "
                "LLaMA-Factory would only warn and train with transformers' default attention (sdpa), "
                f"a different memory profile at cutoff_len {cutoff}. Fix: install flash-attn "
                "(bash scripts/install_env.sh on the GPU node), or allow the fallback with "
                "infrastructure.attn_fallback: sdpa, or set training.flash_attn: sdpa",
            )
            return
        report.changes["flash_attn"] = fallback
        note = f"flash_attn fa2 -> {fallback} (flash-attn not usable: {why}; infrastructure.attn_fallback allows it)"
        report.notes.append(note)
        report.add("WARN", "attention fallback: " + note)
    elif requested == "fa3":
        report.add(
            "WARN",
            "attention: fa3 is loaded by LLaMA-Factory from a kernels Hub repo at model load; "
            "not checked here (needs network or a local kernels cache)",
        )
    elif requested == "sdpa":
        report.add("OK", f"attention: sdpa (torch {probe.versions.get('torch')})")
    elif requested == "disabled":
        report.add("INFO", "attention: eager (flash_attn: disabled)")
    else:
        report.add("INFO", "attention: transformers' default (flash_attn: auto -> sdpa when available)")
    del on_cpu  # the attention choice is the same on CPU and GPU (sdpa runs on both)


def feature_checks(
    args: Mapping[str, Any], infra: InfrastructureConfig, probe: EnvProbe, *, on_cpu: bool
) -> FeatureReport:
    """Check every feature the (final) training YAML ``args`` turns on against ``probe``.

    ``on_cpu``: the run happens on CPU (the CPU adaptations already switched off the GPU-only features),
    so CUDA itself is not required.
    """
    report = FeatureReport()
    if not on_cpu:
        _check_cuda(probe, infra.n_gpus_per_node, bool(args.get("bf16")), report)
    if not probe.has("llamafactory"):
        report.add(
            "FAIL",
            f"llamafactory is not importable in {probe.python} ({probe.why_missing('llamafactory')}). "
            "Fix: bash scripts/install_env.sh",
        )
    tf = probe.versions.get("transformers") or ""
    if args.get("rope_scaling") and tf.startswith("5."):
        report.add(
            "FAIL",
            f"rope_scaling {args['rope_scaling']} crashes at model load on transformers {tf}. "
            "Fix: the pinned transformers 4.57.x (bash scripts/install_env.sh)",
        )
    if args.get("deepspeed"):
        if not probe.has("deepspeed"):
            report.add(
                "FAIL",
                f"training.deepspeed is set but deepspeed is not importable in {probe.python} "
                f"({probe.why_missing('deepspeed')}); LLaMA-Factory stops with check_version('deepspeed', "
                "mandatory=True). Fix: bash scripts/install_env.sh, or training.deepspeed: null",
            )
        else:
            version = probe.versions["deepspeed"] or ""
            low, high = DEEPSPEED_SUPPORTED
            ok = low <= _version_tuple(version) <= high
            report.add(
                "OK" if ok else "WARN",
                f"DeepSpeed {version}"
                + (
                    ""
                    if ok
                    else f" is outside LLaMA-Factory 0.9.5's supported range "
                    f"{'.'.join(map(str, low))}..{'.'.join(map(str, high))}"
                ),
            )
    if args.get("enable_liger_kernel"):
        if probe.has("liger_kernel"):
            report.add("OK", f"Liger kernels: liger-kernel {probe.versions['liger_kernel']}")
        else:
            report.add(
                "FAIL",
                f"training.enable_liger_kernel is true but liger-kernel is not importable in "
                f"{probe.python} ({probe.why_missing('liger_kernel')}); LLaMA-Factory stops before step 0 "
                "(check_version('liger-kernel', mandatory=True)). Fix: bash scripts/install_env.sh on the "
                "GPU node (installs the gpu extra), or enable_liger_kernel: false",
            )
    if args.get("use_unsloth_gc"):
        report.add(
            "OK", "unsloth gradient checkpointing: built into LLaMA-Factory (offloads activations to CPU)"
        )
    _check_attention(args, probe, infra, on_cpu, report)
    return report


# ------------------------------------------------------------------------------------- multi-node


def multinode_checks(infra: InfrastructureConfig, env: Mapping[str, str]) -> FeatureReport:
    """Are ``n_nodes``, ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` and Slurm's view complete and consistent?"""
    report = FeatureReport()
    env_rank = env.get("NODE_RANK") or None
    slurm_rank = env.get("SLURM_NODEID") or None
    slurm_nodes = env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or None
    if infra.n_nodes <= 1:
        return _single_node_checks(env_rank, slurm_nodes, report)
    rank_value = infra.node_rank if infra.node_rank is not None else (env_rank or slurm_rank)
    addr = infra.master_addr or env.get("MASTER_ADDR", "")
    port_value = infra.master_port if infra.master_port is not None else env.get("MASTER_PORT")
    missing = [
        n
        for n, v in (("NODE_RANK", rank_value), ("MASTER_ADDR", addr), ("MASTER_PORT", port_value))
        if v in (None, "")
    ]
    if missing:
        report.add(
            "FAIL",
            f"infrastructure.n_nodes is {infra.n_nodes} but {', '.join(missing)} is not set. Fix: "
            "set infrastructure.node_rank / master_addr / master_port, or export NODE_RANK (or run "
            "under Slurm), MASTER_ADDR and MASTER_PORT on every node",
        )
        return report
    try:
        rank = int(str(rank_value))
        port = int(str(port_value))
    except ValueError:
        report.add("FAIL", f"NODE_RANK {rank_value!r} and MASTER_PORT {port_value!r} must be integers")
        return report
    if not 0 <= rank < infra.n_nodes:
        report.add(
            "FAIL",
            f"node rank {rank} is outside 0..{infra.n_nodes - 1} (infrastructure.n_nodes {infra.n_nodes})",
        )
    if not 1 <= port <= 65535:
        report.add("FAIL", f"MASTER_PORT {port} is not a TCP port (1..65535)")
    _slurm_and_run_id_checks(infra, env, rank, slurm_nodes, slurm_rank, report)
    if not report.failures:
        report.add(
            "OK",
            f"multi-node: node {rank} of {infra.n_nodes}, rendezvous {addr}:{port}; node 0 converts, "
            "registers and records the run, nodes 1.. wait for the registered dataset",
        )
    return report


def _single_node_checks(
    env_rank: str | None, slurm_nodes: str | None, report: FeatureReport
) -> FeatureReport:
    """n_nodes 1: the environment must not say this node is part of a multi-node job."""
    hints = []
    if env_rank not in (None, "0"):
        hints.append(f"NODE_RANK={env_rank}")
    if slurm_nodes not in (None, "1"):
        hints.append(f"SLURM_NNODES={slurm_nodes}")
    if hints:
        report.add(
            "FAIL",
            f"infrastructure.n_nodes is 1 but the environment says this is part of a multi-node job "
            f"({', '.join(hints)}); torchrun would start a separate single-node job here. "
            "Fix: set infrastructure.n_nodes to the number of nodes, or unset those variables",
        )
    else:
        report.add("OK", "single node (infrastructure.n_nodes 1)")
    return report


def _slurm_and_run_id_checks(
    infra: InfrastructureConfig,
    env: Mapping[str, str],
    rank: int,
    slurm_nodes: str | None,
    slurm_rank: str | None,
    report: FeatureReport,
) -> None:
    """Slurm's allocation agrees with the config, and every node knows the run it belongs to."""
    if slurm_nodes is not None and slurm_nodes != str(infra.n_nodes):
        report.add(
            "FAIL",
            f"Slurm allocated {slurm_nodes} node(s) (SLURM_NNODES) but infrastructure.n_nodes is "
            f"{infra.n_nodes}. Fix: make them equal (sbatch --nodes / n_nodes)",
        )
    if slurm_rank is not None and str(rank) != slurm_rank:
        report.add(
            "FAIL",
            f"node rank {rank} (infrastructure.node_rank / NODE_RANK) differs from Slurm's "
            f"SLURM_NODEID {slurm_rank}. Fix: leave NODE_RANK unset under Slurm",
        )
    if not (env.get("SFT_RUN_ID") or env.get("SLURM_JOB_ID")):
        report.add(
            "FAIL",
            "multi-node run without a run id: export SFT_RUN_ID with the same value on every node "
            "(or run under Slurm, which sets SLURM_JOB_ID); nodes 1.. wait for node 0's dataset of "
            "exactly this run",
        )
