"""The bridge between config.yaml and Kedro's OmegaConfigLoader: the ``${cfg:<key>}`` resolver.

Keys are dotted paths into ``runtime_info.input`` (``${cfg:conversion.max_instances}``), into the
whole file with a ``file.`` prefix (``${cfg:file.meta_info.name}``), or one of the derived values below
(``${cfg:dataset_key}``, ``${cfg:paths.lf_json}``...), which are what the catalog uses for its file paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from sft.config.loader import config_path, load_selected_config, project_root, resolve_path
from sft.config.paths import (
    ARCHIVES_DIR,
    HF_DATA_DIR,
    IM_DATA_DIR,
    LOGS_DIR,
    MODEL_OUTPUT_DIR,
    REPORTING_DIR,
    RUN_INDEX,
    WANDB_RUNS_DIR,
    conversion_cache_dir,
    lf_data_dir,
    report_dir,
    spool_dir,
    training_output_dir,
    training_yaml_path,
)
from sft.config.schema import RuntimeInput, SftConfig


def derived_values(cfg: SftConfig, root: Path) -> dict[str, Any]:
    """Values computed from the config that the catalog and the nodes share.

    ``paths`` is every file and folder a node reads or writes: the catalog's ``${cfg:paths.<key>}`` and the
    nodes' ``params:paths`` (conf/base/parameters.yml) both come from here, so a path is defined once.
    """
    inp = cfg.input
    return {
        "config_path": str(config_path(root)),
        "project_root": str(root),
        "data_name": inp.conversion.data_name,
        "dataset_key": inp.dataset_key,
        "run_name": inp.run_name,
        "source_type": inp.source.type,
        "paths": run_paths(inp, root),
    }


def run_paths(inp: RuntimeInput, root: Path) -> dict[str, str]:
    """Every file and folder of a run, absolute ("" where the setting is off)."""
    data_name = inp.conversion.data_name
    lf_dir = lf_data_dir(root)
    exclusions = inp.conversion.exclude_repos_file
    try:
        output_dir = str(training_output_dir(inp.training.output_dir, root))
    except ValueError:  # the train pipeline names the error (sft.train.yaml_gen); conversion does not need it
        output_dir = ""
    return {
        "job_dir": str(resolve_path(inp.source.job_dir, root)) if inp.source.job_dir else "",
        "exclude_repos_file": str(resolve_path(exclusions, root)) if exclusions else "",
        "lf_dir": str(lf_dir),
        "lf_json": str(lf_dir / f"{data_name}.json"),
        "lf_parquet": str(lf_dir / f"{data_name}.parquet"),
        "dataset_info": str(lf_dir / "dataset_info.json"),
        "im_jsonl": str(root / IM_DATA_DIR / f"{data_name}.jsonl"),
        "spool_dir": str(spool_dir(root)),
        "conversion_cache": str(conversion_cache_dir(root)),
        "hub_dir": str(root / HF_DATA_DIR),
        "report_dir": str(report_dir(root, data_name)),
        "reporting_dir": str(root / REPORTING_DIR),
        "model_output_dir": str(root / MODEL_OUTPUT_DIR),
        "training_output_dir": output_dir,
        "trainer_log": str(Path(output_dir) / "trainer_log.jsonl") if output_dir else "",
        "training_yaml": str(training_yaml_path(output_dir, root)) if output_dir else "",
        "run_index": str(root / RUN_INDEX),
        "archives_dir": str(root / ARCHIVES_DIR),
        "logs_dir": str(root / LOGS_DIR),
        "wandb_dir": str(root / WANDB_RUNS_DIR),
    }


def _lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"${{cfg:{dotted}}}: no such key in the sft config ({config_path()})")
    return node


def cfg_resolver(key: str) -> Any:
    """Resolve ``${cfg:key}`` against the selected, validated config."""
    cfg = load_selected_config()
    root = project_root()
    if key.startswith("file."):
        return _lookup(cfg.model_dump(mode="json"), key[len("file.") :])
    derived = derived_values(cfg, root)
    head = key.split(".", 1)[0]
    if head in derived:
        return _lookup(derived, key)
    return _lookup(cfg.input.model_dump(mode="json"), key)


class SftConfigLoader(OmegaConfigLoader):
    """OmegaConfigLoader that resolves ``${cfg:...}`` parameters *before* merging ``--params``.

    Kedro merges runtime params into the raw parameters first and resolves afterwards, so
    ``--params conversion.max_instances=8`` would replace the whole ``${cfg:conversion}`` section
    instead of one key. Resolving first makes the override deep: siblings are kept.
    """

    def _merge_and_resolve(self, key: str, config_per_file: dict[Any, Any]) -> dict[str, Any]:  # type: ignore[override]
        if key != "parameters" or not self.runtime_params:
            return super()._merge_and_resolve(key, config_per_file)
        aggregate = list(config_per_file.values())
        if not aggregate:
            return dict(self.runtime_params)
        resolved = OmegaConf.to_container(OmegaConf.unsafe_merge(*aggregate), resolve=True)
        merged = OmegaConf.merge(OmegaConf.create(resolved), OmegaConf.create(dict(self.runtime_params)))
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
