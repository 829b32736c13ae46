"""Side-effect-free preflight of the selected config: one line per check, then a summary.

    bash scripts/dryrun.sh                      # config.yaml
    SFT_CONFIG=config.demo.yaml bash scripts/dryrun.sh

Each line starts with [OK], [WARN], [FAIL] or [INFO]; the last line is ``PASS: n  WARN: n  FAIL: n``;
the exit code is 1 when anything failed. Nothing is written, downloaded or started.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sft.config.credentials import resolve_credentials
from sft.config.loader import ConfigError, config_path, load_config, project_root, resolve_path
from sft.config.paths import lf_data_dir, training_output_dir, training_yaml_path
from sft.config.schema import SftConfig
from sft.train.yaml_gen import output_dir_entries, overwrite_allowed

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Checklist:
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"OK": 0, "WARN": 0, "FAIL": 0, "INFO": 0})

    def add(self, level: str, message: str) -> None:
        self.counts[level] += 1
        line = f"[{level}] {message}"
        self.lines.append(line)
        print(line, flush=True)

    def summary(self) -> str:
        return f"PASS: {self.counts['OK']}  WARN: {self.counts['WARN']}  FAIL: {self.counts['FAIL']}"


def _env_python(cfg: SftConfig, root: Path) -> Path | None:
    env_dir = resolve_path(cfg.meta_info.environment.sft_uv, root)
    py = env_dir / "bin" / "python"
    return py if py.exists() else None


def check_environment(cfg: SftConfig, root: Path, out: Checklist) -> None:
    py = _env_python(cfg, root)
    env_rel = cfg.meta_info.environment.sft_uv
    if py is None:
        out.add("FAIL", f"training env {env_rel} not found: run `bash scripts/install_env.sh`")
        return
    code = (
        "import json, importlib; v={}\n"
        "for m in ['torch','transformers','datasets','deepspeed','llamafactory']:\n"
        "    v[m]=importlib.import_module(m).__version__\n"
        "from transformers import PreTrainedModel\n"
        "print(json.dumps(v))"
    )
    try:
        proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        out.add("FAIL", f"training env {env_rel}: import check timed out")
        return
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        out.add("FAIL", f"training env {env_rel}: imports fail ({last}); rerun `bash scripts/install_env.sh`")
        return
    versions = json.loads(proc.stdout.strip().splitlines()[-1])
    out.add("OK", "training env " + env_rel + ": " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    cli = py.parent / "llamafactory-cli"
    if not cli.exists():
        out.add("FAIL", f"{cli} missing: rerun `bash scripts/install_env.sh`")


def check_source(cfg: SftConfig, root: Path, out: Checklist) -> None:
    src = cfg.input.source
    if src.type == "harbor_job":
        job = resolve_path(src.job_dir, root)
        if not job.is_dir():
            out.add(
                "FAIL",
                f"source.job_dir {job} is not a readable directory (a Harbor job dir with one folder per trial)",
            )
            return
        trials = [p for p in sorted(job.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        with_result = sum(1 for t in trials if (t / "result.json").is_file())
        logs = sum(1 for t in trials if (t / "agent" / "litellm-trajectory.jsonl").is_file())
        atif = sum(1 for t in trials if (t / "agent" / "trajectory.json").is_file())
        level = "OK" if trials else "FAIL"
        out.add(
            level,
            f"source harbor_job {job}: {len(trials)} trial dir(s), {with_result} finished (result.json), "
            f"{logs} proxy log(s), {atif} ATIF trajectory file(s); scaffold {src.scaffold}",
        )
        if trials and with_result < len(trials):
            out.add(
                "WARN",
                f"{len(trials) - with_result} trial(s) have no result.json yet (still running?): they will be rejected",
            )
    elif src.type == "hf_lf":
        level = "OK" if HUB_ID.match(src.hf_hub_url) else "FAIL"
        out.add(
            level,
            f"source hf_lf {src.hf_hub_url!r}"
            + (f" file {src.hf_file_name}" if src.hf_file_name else "")
            + ("" if level == "OK" else ": expected a Hub dataset id 'owner/name'"),
        )
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            out.add("INFO", "HF_HUB_OFFLINE=1: the dataset must already be in the local Hub cache")
    else:
        path = resolve_path(src.lf_path, root)
        if not path.is_file():
            out.add("FAIL", f"source.lf_path {path} does not exist")
            return
        if path.suffix not in {".json", ".jsonl", ".parquet"}:
            out.add(
                "FAIL",
                f"source.lf_path {path}: unsupported extension {path.suffix} (use .json, .jsonl or .parquet)",
            )
            return
        out.add("OK", f"source local_lf {path} ({path.stat().st_size} bytes)")


def check_exclusions(cfg: SftConfig, root: Path, out: Checklist) -> None:
    value = cfg.input.conversion.exclude_repos_file
    if not value:
        out.add("WARN", "conversion.exclude_repos_file is empty: no eval-leak protection")
        return
    path = resolve_path(value, root)
    if not path.is_file():
        out.add(
            "FAIL", f'conversion.exclude_repos_file {path} does not exist (restore it or set "" to disable)'
        )
        return
    entries = [
        ln.strip()
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    out.add("OK", f"exclusion list {value}: {len(entries)} repos")


def check_registration(cfg: SftConfig, root: Path, out: Checklist) -> None:
    lf_dir = lf_data_dir(root)
    info = lf_dir / "dataset_info.json"
    key = cfg.input.dataset_key
    lf_file = lf_dir / f"{cfg.input.conversion.data_name}.json"
    state = "present" if lf_file.is_file() else "not converted yet (kedro run --pipeline=convert)"
    entry = None
    if info.is_file():
        try:
            entry = json.loads(info.read_text(encoding="utf-8")).get(key)
        except json.JSONDecodeError:
            out.add("FAIL", f"{info} is not valid JSON: fix or delete it")
            return
    reg = "registered" if entry else "not registered yet"
    out.add("INFO", f"dataset '{key}': LF file {state}; {reg} in {info.relative_to(root)}")
    stats = lf_dir / f"{cfg.input.conversion.data_name}.stats.json"
    if stats.is_file():
        try:
            data = json.loads(stats.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = {}
        if data:
            from sft.report.card import dryrun_lines

            for line in dryrun_lines(data):
                level = "WARN" if line.startswith("WARN ") or "FAILED" in line else "INFO"
                out.add(level, line.removeprefix("WARN "))


def _model_config(cfg: SftConfig, root: Path) -> dict | None:
    path = resolve_path(cfg.input.model.model_name_or_path, root)
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        return json.loads(cfg_file.read_text(encoding="utf-8"))
    return None


def check_model(cfg: SftConfig, root: Path, out: Checklist) -> dict | None:
    name = cfg.input.model.model_name_or_path
    path = resolve_path(name, root)
    model_cfg = _model_config(cfg, root)
    if model_cfg is not None:
        out.add(
            "OK",
            f"model {path} ({model_cfg.get('model_type', '?')}, max_position_embeddings {model_cfg.get('max_position_embeddings')})",
        )
        return model_cfg
    if path.is_dir():
        out.add("FAIL", f"model.model_name_or_path {path} has no config.json")
    elif name.startswith(("/", ".", "~")) or "/" not in name or not HUB_ID.match(name):
        out.add(
            "FAIL",
            f"model.model_name_or_path {path} does not exist (a local model dir with config.json, or a Hub id)",
        )
    else:
        out.add("WARN", f"model {name} looks like a Hub id: availability is only checked at train time")
    return None


def check_deepspeed(cfg: SftConfig, root: Path, out: Checklist) -> int | None:
    ds = cfg.input.training.deepspeed
    if not ds:
        out.add("INFO", "training.deepspeed not set: plain (DDP/single-process) training")
        return None
    path = resolve_path(ds, root)
    if not path.is_file():
        out.add("FAIL", f"training.deepspeed {path} not found: restore artifacts/training_config/deepspeed/")
        return None
    try:
        stage = json.loads(path.read_text(encoding="utf-8"))["zero_optimization"]["stage"]
    except (json.JSONDecodeError, KeyError, TypeError):
        out.add("FAIL", f"{path}: not a DeepSpeed config with zero_optimization.stage")
        return None
    out.add("OK", f"DeepSpeed {path.name}: ZeRO stage {stage}")
    return int(stage)


def check_output_dir(cfg: SftConfig, root: Path, out: Checklist) -> None:
    """The same rule as the launch (``sft.train.yaml_gen.check_output_dir``): sft's own lock files, left by
    an earlier or running launch, do not make the folder "not empty"."""
    tr = cfg.input.training
    try:
        out_dir = training_output_dir(tr.output_dir, root)
    except ValueError as exc:
        out.add("FAIL", f"{exc}: give it a folder name")
        return
    yaml_path = training_yaml_path(out_dir, root)
    entries = output_dir_entries(out_dir)
    shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
    if not entries:
        out.add("OK", f"output_dir {out_dir} is new/empty; training YAML -> {yaml_path.relative_to(root)}")
    elif tr.resume_from_checkpoint:
        out.add("OK", f"output_dir {out_dir} is not empty; resuming from {tr.resume_from_checkpoint}")
    elif overwrite_allowed(tr, os.environ):
        out.add(
            "WARN",
            f"output_dir {out_dir} is not empty ({shown}) and WILL BE OVERWRITTEN (SFT_ALLOW_OVERWRITE_OUTPUT=1)",
        )
    else:
        out.add(
            "FAIL",
            f"output_dir {out_dir} is not empty ({shown}): rename training.output_dir, set "
            "training.resume_from_checkpoint (a checkpoint or 'auto'), or allow overwriting with "
            "overwrite_output_dir: true and SFT_ALLOW_OVERWRITE_OUTPUT=1",
        )


def check_wandb(cfg: SftConfig, root: Path, out: Checklist) -> None:
    mode = cfg.input.experiment.wandb_mode
    creds = resolve_credentials(cfg.input.credentials, root)
    if mode == "online":
        level = "OK" if creds.wandb_api_key else "FAIL"
        out.add(
            level,
            f"wandb online: key from {creds.wandb_source}"
            if creds.wandb_api_key
            else "wandb online needs WANDB_API_KEY",
        )
    else:
        out.add("OK", f"wandb {mode}" + (" (runs under artifacts/wandb/)" if mode == "offline" else ""))


def _gpus() -> tuple[int, list[int]]:
    if not shutil.which("nvidia-smi"):
        return -1, []
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return -1, []
    mems = [int(x) for x in re.findall(r"\d+", proc.stdout)]
    return len(mems), mems


def _param_count(model_cfg: dict | None, name: str) -> float | None:
    if model_cfg:
        h = model_cfg.get("hidden_size")
        n = model_cfg.get("num_hidden_layers")
        v = model_cfg.get("vocab_size")
        i = model_cfg.get("intermediate_size")
        heads = model_cfg.get("num_attention_heads") or 1
        kv = model_cfg.get("num_key_value_heads") or heads
        hd = model_cfg.get("head_dim") or (h // heads if h else None)
        if all(isinstance(x, int) for x in (h, n, v, i, hd)):
            attn = h * heads * hd * 2 + h * kv * hd * 2
            mlp = 3 * h * i
            emb = v * h * (1 if model_cfg.get("tie_word_embeddings") else 2)
            return float(n * (attn + mlp) + emb)
    m = re.search(r"(\d+(?:\.\d+)?)\s*[bB]\b", name)
    return float(m.group(1)) * 1e9 if m else None


def check_compute(cfg: SftConfig, model_cfg: dict | None, zero_stage: int | None, out: Checklist) -> None:
    inp = cfg.input
    infra = inp.infrastructure
    count, mems = _gpus()
    if infra.accelerator == "cpu":
        out.add(
            "INFO",
            f"CPU profile (infrastructure.accelerator: cpu): {max(count, 0)} GPU(s) visible, none required",
        )
    elif count < 0:
        out.add("FAIL", "nvidia-smi not found: no GPUs visible (are you on a compute node?)")
    elif count < infra.n_gpus_per_node:
        out.add("WARN", f"{count} GPU(s) visible, infrastructure.n_gpus_per_node is {infra.n_gpus_per_node}")
    else:
        out.add("OK", f"{count} GPU(s) visible for n_gpus_per_node {infra.n_gpus_per_node}")
    tr = inp.training
    world = infra.n_gpus_per_node * infra.n_nodes
    out.add(
        "INFO",
        f"effective global batch = {tr.per_device_train_batch_size} x {tr.gradient_accumulation_steps} x "
        f"{world} = {tr.per_device_train_batch_size * tr.gradient_accumulation_steps * world}",
    )
    params = _param_count(model_cfg, inp.model.model_name_or_path)
    if params and infra.accelerator == "gpu":
        shards = world if zero_stage == 3 else 1
        state_gb = params * 16 / shards / 1e9  # bf16 weights+grads, fp32 master + Adam m/v
        gpu_gb = (min(mems) / 1024) if mems else 80.0
        ratio = state_gb / gpu_gb
        grade = "ok" if ratio < 0.6 else "tight" if ratio < 0.9 else "over"
        level = {"ok": "OK", "tight": "WARN", "over": "FAIL"}[grade]
        out.add(
            level,
            f"memory estimate (ZeRO-{zero_stage or 0} + Adam, {params / 1e9:.2f}B params): "
            f"~{state_gb:.1f} GB/GPU of model+optimizer state before activations vs {gpu_gb:.0f} GB -> {grade}",
        )
    base = None
    if model_cfg:
        rs = model_cfg.get("rope_scaling") or {}
        base = rs.get("original_max_position_embeddings") or model_cfg.get("max_position_embeddings")
    if tr.rope_scaling and base:
        if tr.cutoff_len > base:
            factor = float(math.ceil(tr.cutoff_len / base))
            out.add(
                "INFO",
                f"rope_scaling {tr.rope_scaling}: LLaMA-Factory will use factor {factor} "
                f"(ceil({tr.cutoff_len}/{base})), max positions {int(base * factor)}",
            )
        else:
            out.add(
                "WARN",
                f"rope_scaling {tr.rope_scaling} has no effect: cutoff_len {tr.cutoff_len} <= native context {base}",
            )
    elif not tr.rope_scaling and base and tr.cutoff_len > base:
        out.add(
            "WARN",
            f"cutoff_len {tr.cutoff_len} exceeds the model's native context {base} without rope_scaling",
        )


def check_features(cfg: SftConfig, root: Path, out: Checklist, env: dict[str, str] | None = None) -> None:
    """The train node's pre-launch gate, run here (sft.train.features): every feature the profile turns on
    must be importable in the training env, CUDA / driver must fit, multi-node variables must agree; then
    what LLaMA-Factory will do with the YAML."""
    from sft.train.features import feature_checks, multinode_checks, probe_environment
    from sft.train.launch import distributed_env
    from sft.train.multinode import node_rank
    from sft.train.yaml_gen import TrainingConfigError, build_training_args

    env = dict(os.environ if env is None else env)
    inp = cfg.input
    on_cpu = inp.infrastructure.accelerator == "cpu"
    try:
        args = build_training_args(
            inp,
            root=root,
            dataset_dir=lf_data_dir(root),
            run_name=inp.run_name,
            on_cpu=on_cpu,
        )
    except TrainingConfigError as exc:
        out.add("FAIL", str(exc).replace("\n", "\n       "))
        return
    python = _env_python(cfg, root) or Path(sys.executable)
    probe = probe_environment(python)
    report = feature_checks(args, inp.infrastructure, probe, on_cpu=on_cpu)
    report.findings += multinode_checks(inp.infrastructure, env).findings
    for finding in report.findings:
        out.add(finding.level, finding.message)
    args.update(report.changes)
    attn = {
        "fa2": "flash_attention_2",
        "sdpa": "sdpa",
        "disabled": "eager",
        "auto": "transformers' default (sdpa)",
    }
    chosen = attn.get(str(args.get("flash_attn")), str(args.get("flash_attn")))
    if args.get("flash_attn") == "fa2" and not probe.fa2_available:
        chosen = "sdpa after a warning (its silent fallback; refused above)"
    will = [f"attention {chosen}"]
    if args.get("enable_liger_kernel"):
        will.append(
            "Liger kernels patched into the model (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy)"
        )
    if args.get("use_unsloth_gc"):
        will.append("unsloth gradient checkpointing (activations offloaded to CPU)")
    if args.get("deepspeed"):
        will.append(f"DeepSpeed {Path(str(args['deepspeed'])).name}")
    will.append("bf16" if args.get("bf16") else "fp32")
    if on_cpu:
        will.append("CPU run: liger / unsloth gc switched off, use_cpu for bf16")
    out.add("INFO", "LLaMA-Factory will use: " + "; ".join(will))
    if not report.failures:
        try:
            dist = distributed_env(
                n_gpus=inp.infrastructure.n_gpus_per_node,
                n_nodes=inp.infrastructure.n_nodes,
                node_rank=inp.infrastructure.node_rank,
                master_addr=inp.infrastructure.master_addr,
                master_port=inp.infrastructure.master_port,
                base_env=env,
            )
        except Exception as exc:  # already a FAIL line above
            out.add("FAIL", str(exc))
            return
        out.add(
            "INFO",
            f"launch (node {node_rank(inp.infrastructure, env)}): torchrun --nnodes {dist['NNODES']} "
            f"--node_rank {dist['NODE_RANK']} --nproc_per_node {dist['NPROC_PER_NODE']} --master_addr "
            f"{dist['MASTER_ADDR']} --master_port {dist.get('MASTER_PORT', '<free port>')}",
        )


def run_checks(path: Path | None = None) -> Checklist:
    out = Checklist()
    root = project_root()
    path = path or config_path(root)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        out.add("FAIL", str(exc).replace("\n", "\n       "))
        return out
    out.add(
        "OK",
        f"config {path.name}: schema valid (source {cfg.input.source.type}, dataset '{cfg.input.dataset_key}')",
    )
    check_environment(cfg, root, out)
    check_source(cfg, root, out)
    if cfg.input.source.type == "harbor_job" or cfg.input.conversion.exclude_repos_file:
        check_exclusions(cfg, root, out)
    check_registration(cfg, root, out)
    model_cfg = check_model(cfg, root, out)
    stage = check_deepspeed(cfg, root, out)
    check_output_dir(cfg, root, out)
    check_wandb(cfg, root, out)
    check_compute(cfg, model_cfg, stage, out)
    check_features(cfg, root, out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    path = Path(argv[0]) if argv else None
    out = run_checks(path)
    print(out.summary(), flush=True)
    if out.counts["FAIL"]:
        print("Fix the above failures before running the training (kedro run).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
