"""Typed schema of config.yaml (the reference contract, plus the options where sft does better).

Every model forbids unknown keys; ``sft.config.loader`` turns pydantic's errors into messages that name
the field path, the bad value, what is allowed and, for a typo, the key that was probably meant.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sft.config.harbor_agents import (
    HARBOR_AGENT_NAMES,
    HARBOR_VERSION_OF_AGENT_NAMES,
    PROXY_LOG_SCAFFOLDS,
    SCAFFOLD_CHOICES,
)

SCAFFOLDS = tuple(PROXY_LOG_SCAFFOLDS)  # the scaffolds with a proxy-log adapter
SOURCE_TYPES = ("harbor_job", "hf_lf", "local_lf")
WANDB_MODES = ("online", "offline", "disabled")
TEMPLATES_WITH_REASONING = ("qwen3", "qwen3_5")
_NULL_STRINGS = {"", "none", "null"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MetaEnvironment(_Strict):
    sft_uv: str = "artifacts/env/lf"
    python_version: str = "3.11"
    packages: list[str] = Field(default_factory=list)


class MetaInfo(BaseModel):
    # The generic block schema carries free-form descriptive keys; only a few are checked.
    model_config = ConfigDict(extra="allow")

    name: Literal["sft"]
    label: str = ""
    description: str = ""
    parent: str | None = None
    dependencies: dict[str, Any] = Field(default_factory=dict)
    environment: MetaEnvironment = Field(default_factory=MetaEnvironment)


_URL_RE = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]*)://")
# How to bring a remote copy to local disk, per protocol: (a folder, a file).
_SYNC_HINTS = {
    "s3": ("aws s3 sync {url} {local}", "aws s3 cp {url} {local}"),
    "gs": ("gsutil -m rsync -r {url} {local}", "gsutil cp {url} {local}"),
    "gcs": ("gsutil -m rsync -r {url} {local}", "gsutil cp {url} {local}"),
    "az": ("azcopy sync {url} {local}", "azcopy copy {url} {local}"),
    "abfs": ("azcopy sync {url} {local}", "azcopy copy {url} {local}"),
}


def local_source_path(field: str, value: str) -> str:
    """A source path must be on local disk: a Harbor job is walked with os.scandir (thousands of trial
    folders, fast only locally) and a local_lf file is opened directly. ``file://`` URLs become plain paths;
    any other URL (``s3://``, ``gs://``...) is refused with the command that syncs it to local disk."""
    match = _URL_RE.match(value)
    if match is None:
        return value
    protocol = match["protocol"].lower()
    if protocol in ("file", "local"):
        return value[match.end() :] if value[match.end() :].startswith("/") else "/" + value[match.end() :]
    name = PurePosixPath(value[match.end() :].rstrip("/")).name or "source"
    is_dir = field.endswith("job_dir")
    local = f"jobs/{name}" if is_dir else f"data/{name}"
    what = "a Harbor job directory" if is_dir else "a LLaMA-Factory file"
    hint = _SYNC_HINTS.get(protocol)
    how = (
        f"e.g. `{hint[0 if is_dir else 1].format(url=value, local=local)}`"
        if hint
        else f"with your {protocol}:// storage's own client"
    )
    hub = (
        " (A dataset on the Hugging Face Hub needs no copy: source.type hf_lf with source.hf_hub_url owner/name.)"
        if protocol == "hf" and not is_dir
        else ""
    )
    raise ValueError(
        f"{field}: {value!r} is a remote {protocol}:// URL, but sft reads {what} from local disk. "
        f"Copy it to local disk first ({how}) and set {field} to the local path ({local!r}).{hub}"
    )


class SourceConfig(_Strict):
    type: Literal["harbor_job", "hf_lf", "local_lf"] = "harbor_job"
    # "auto" (an sft extension, as in trajgen's wrapper): per trial from result.json agent_info.name.
    # Besides the four proxy-log scaffolds, every Harbor agent name is accepted (read from its ATIF file).
    scaffold: str | None = None
    job_dir: str = ""
    hf_hub_url: str = ""
    hf_subset: str = ""
    hf_split: str = "train"
    hf_file_name: str = ""
    lf_path: str = ""

    @field_validator("type", mode="before")
    @classmethod
    def _empty_type_is_harbor(cls, value: Any) -> Any:
        return "harbor_job" if value in (None, "") else value

    @field_validator("scaffold", mode="before")
    @classmethod
    def _empty_scaffold_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("scaffold")
    @classmethod
    def _known_scaffold(cls, value: str | None) -> str | None:
        if value is None or value in SCAFFOLD_CHOICES:
            return value
        raise ValueError(
            f"unknown scaffold {value!r}. Valid: auto (per trial from result.json), a proxy-log scaffold "
            f"({' | '.join(PROXY_LOG_SCAFFOLDS)}), or any Harbor {HARBOR_VERSION_OF_AGENT_NAMES} agent name "
            f"read from its ATIF trajectory.json ({', '.join(n for n in HARBOR_AGENT_NAMES if n not in PROXY_LOG_SCAFFOLDS)})"
        )

    @field_validator("job_dir", "lf_path")
    @classmethod
    def _local_path(cls, value: str, info: ValidationInfo) -> str:
        return local_source_path(f"source.{info.field_name}", value)

    @model_validator(mode="after")
    def _required_per_type(self) -> SourceConfig:
        if self.type == "harbor_job":
            if not self.scaffold:
                raise ValueError(
                    "source.scaffold is required for source.type harbor_job. "
                    f"Valid scaffold: auto | {' | '.join(SCAFFOLDS)} | any Harbor agent name (e.g. codex)"
                )
            if not self.job_dir:
                raise ValueError(
                    "source.job_dir is required for source.type harbor_job (a Harbor job directory)"
                )
        elif self.type == "hf_lf":
            if not self.hf_hub_url:
                raise ValueError("source.hf_hub_url is required for source.type hf_lf (e.g. 'org/dataset')")
            if self.hf_hub_url.count("/") != 1 or any(c.isspace() for c in self.hf_hub_url):
                raise ValueError(
                    f"source.hf_hub_url must be a Hub dataset id 'owner/name', got {self.hf_hub_url!r}"
                )
        elif self.type == "local_lf" and not self.lf_path:
            raise ValueError(
                "source.lf_path is required for source.type local_lf (.json, .jsonl or .parquet)"
            )
        return self


class ConversionConfig(_Strict):
    # --- the reference contract ---
    max_instances: int = 0
    exclude_repos_file: str = "artifacts/data/excluded_repos.txt"
    data_name: str
    # --- where sft does better (all optional) ---
    seed: int = 42
    stratify_by_repo: bool = False
    trajectory_source: Literal["auto", "litellm", "atif"] = "auto"
    instance_status: Literal["resolved", "unresolved", "all"] = "resolved"
    resolved_threshold: float = 1.0  # reward >= this counts as resolved
    keep_exception_trials: bool = True  # a trial with an exception *and* a valid reward
    include_subagents: bool = True
    # ATIF copied-context steps (terminus-2 summarisation sub-agents and continuations repeat earlier turns):
    # "drop" starts each such conversation after its last copied assistant turn (those turns are trained in
    # the conversation they were copied from); "context" keeps them as turns, so LLaMA-Factory (which has no
    # per-turn mask) trains them a second time.
    copied_context: Literal["drop", "context"] = "drop"
    # terminus-2 ATIF in its default mode holds assistant text rebuilt as "Analysis:/Plan:" plus synthetic
    # tool calls, not what the model emitted: "drop" rejects such conversations (reason rebuilt_atif; use the
    # proxy log or rerun with raw_content=true), "keep" trains on the rebuilt text (flagged in the row meta).
    rebuilt_atif: Literal["drop", "keep"] = "drop"
    max_trajectories_per_instance: int = 0  # 0 = no cap
    drop_tool_errors: bool = False
    keep_reasoning: bool | None = None  # None = decided by training.template
    dedup: bool = True
    overlength: Literal["drop", "truncate_turns", "keep"] = "drop"
    max_template_mismatch: float = 0.0
    min_score: float | None = None
    scrub_secrets: bool = True
    normalize_ready_data: bool = False
    num_workers: int = 0  # 0 = all cores
    use_cache: bool = True
    # The cache finds a trial by its content hash; with this on, an unchanged trial (same size, mtime, ctime
    # and inode of every file) is not re-read to compute it. Turn off where file stats cannot be trusted
    # (e.g. a job dir on NFS written from another host while converting).
    cache_trust_file_stats: bool = True
    # Write LLaMA-Factory's pre-tokenized dataset (tokenized_path) in the convert stage and train from it.
    pretokenize: bool = False
    # Share of ordinary rows the template fidelity check compares (1.0 = every row); rare structures are
    # always checked. See sft.report.fidelity.SELECTION_RULE.
    fidelity_sample_rate: float = 0.05

    @field_validator("data_name")
    @classmethod
    def _data_name_is_a_file_stem(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError(
                "conversion.data_name is required: it names the dataset files and the dataset key"
            )
        if "/" in value or value.startswith("."):
            raise ValueError(f"conversion.data_name must be a plain file stem without '/', got {value!r}")
        return value

    @field_validator("max_template_mismatch", "fidelity_sample_rate")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be a fraction between 0 and 1, got {value}")
        return value


class DatasetConfig(_Strict):
    name: str = ""


class ModelConfig(_Strict):
    model_name_or_path: str
    trust_remote_code: bool = True


class TrainingConfig(BaseModel):
    """The contract's training block. Further LLaMA-Factory options may be added; they are checked
    against LLaMA-Factory's own argument names (sft.train.lf_args) before anything runs."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    stage: str = "sft"
    finetuning_type: Literal["full", "lora", "freeze", "oft"] = "full"
    deepspeed: str | None = "artifacts/training_config/deepspeed/ds_z3_config.json"
    template: str = "qwen3_nothink"
    cutoff_len: int = Field(131072, gt=0)
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = None
    max_samples: int | None = 1000000
    preprocessing_num_workers: int | None = 16
    dataloader_num_workers: int = 4
    output_dir: str
    logging_steps: int = 1
    save_strategy: Literal["steps", "epoch", "no", "none"] = "steps"
    save_steps: int = 200
    overwrite_output_dir: bool = True
    save_only_model: bool = False
    resume_from_checkpoint: str | None = None
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)
    learning_rate: float = Field(1.0e-4, gt=0)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    num_train_epochs: float = 4.0
    max_steps: int = 0
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    bf16: bool = True
    ddp_timeout: int = 180000000
    enable_liger_kernel: bool = False
    use_unsloth_gc: bool = False
    flash_attn: Literal["fa2", "fa3", "sdpa", "disabled", "auto"] = "auto"

    @field_validator("rope_scaling", "resume_from_checkpoint", "deepspeed", mode="before")
    @classmethod
    def _null_strings(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _NULL_STRINGS:
            return None
        return value

    @property
    def extra_options(self) -> dict[str, Any]:
        """LLaMA-Factory options the user added beyond the contract's fields."""
        return dict(self.model_extra or {})


class InfrastructureConfig(_Strict):
    accelerator: Literal["gpu", "cpu"] = "gpu"  # cpu: a CPU-only profile (the demo); no GPU checks
    n_gpus_per_node: int = Field(8, ge=1)
    n_nodes: int = Field(1, ge=1)
    node_rank: int | None = None
    master_addr: str = ""
    master_port: int | None = None
    # fa2 requested but flash-attn not usable: train with this instead (recorded in the run's history);
    # null = refuse before launch (sft.train.features).
    attn_fallback: Literal["sdpa", "disabled"] | None = None
    # Multi-node: how long nodes 1.. wait for node 0 to convert and register the dataset.
    dataset_wait_s: float = Field(3600.0, gt=0)

    @field_validator("n_gpus_per_node", mode="before")
    @classmethod
    def _positive_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"must be a positive integer (GPUs per node, becomes NPROC_PER_NODE), got {value!r}"
            )
        return value


class ExperimentConfig(_Strict):
    run_name: str = ""
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"
    wandb_run_id: str = ""
    wandb_project: str = "sft"


class CredentialsConfig(_Strict):
    wandb_api_key: str = ""
    hf_token: str = ""


class RuntimeInput(_Strict):
    source: SourceConfig
    conversion: ConversionConfig
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig
    training: TrainingConfig
    infrastructure: InfrastructureConfig = Field(default_factory=InfrastructureConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RuntimeInput:
        if self.experiment.wandb_mode == "online" and not self._wandb_key_available():
            raise ValueError(
                "experiment.wandb_mode is 'online' but no key is set: export WANDB_API_KEY, or put "
                "wandb_api_key into conf/local/credentials.yml (git-ignored), or set credentials.wandb_api_key; "
                "or use wandb_mode offline / disabled"
            )
        if self.training.save_only_model and self.training.resume_from_checkpoint:
            raise ValueError(
                "training.save_only_model is true together with training.resume_from_checkpoint: "
                "checkpoints saved with save_only_model hold no optimizer/RNG state, so they cannot be resumed. "
                "Set save_only_model: false for resumable runs, or drop resume_from_checkpoint"
            )
        return self

    def _wandb_key_available(self) -> bool:
        """A W&B key from any source the README names (sft.config.credentials: env > conf/local > config)."""
        if os.environ.get("WANDB_API_KEY") or self.credentials.wandb_api_key:
            return True
        # Imported here: the loader imports this module (project_root finds conf/local/credentials.yml).
        from sft.config.credentials import resolve_credentials
        from sft.config.loader import project_root

        return bool(resolve_credentials(self.credentials, project_root()).wandb_api_key)

    @property
    def dataset_key(self) -> str:
        """The key in dataset_info.json: dataset.name, else conversion.data_name."""
        return self.dataset.name or self.conversion.data_name

    @property
    def run_name(self) -> str:
        return self.experiment.run_name or Path(self.training.output_dir).name or self.dataset_key

    def keeps_reasoning(self) -> bool:
        """Whether reasoning is written into the dataset (qwen3 keeps it, qwen3_nothink drops it)."""
        if self.conversion.keep_reasoning is not None:
            return self.conversion.keep_reasoning
        return self.training.template in TEMPLATES_WITH_REASONING


class RuntimeInfo(_Strict):
    input: RuntimeInput
    output: dict[str, Any] | None = None


class SftConfig(_Strict):
    meta_info: MetaInfo
    runtime_info: RuntimeInfo
    evolving: dict[str, Any] | None = None  # the block schema's tunable parameters (informational)
    run: dict[str, Any] | None = None  # a `kedro run --config` section, if the user adds one

    @property
    def input(self) -> RuntimeInput:
        return self.runtime_info.input
