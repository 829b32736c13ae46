"""Config variants (SFT_CONFIG) and `--params` overrides reach Kedro's parameters and catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.config.kedro_bridge import SftConfigLoader, cfg_resolver
from sft.config.loader import config_path, load_selected_config


def _loader(root: Path, runtime_params: dict | None = None) -> SftConfigLoader:
    from sft import settings

    return SftConfigLoader(
        conf_source=str(root / "conf"), runtime_params=runtime_params, **settings.CONFIG_LOADER_ARGS
    )


def test_default_profile_is_config_yaml(project_copy: Path) -> None:
    assert config_path() == project_copy / "config.yaml"
    params = _loader(project_copy)["parameters"]
    assert params["conversion"]["data_name"] == "m_2.7_swerebenchv2-200-260429_cc_test"
    assert params["project_root"] == str(project_copy)


def test_sft_config_selects_a_variant_everywhere(project_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFT_CONFIG", "config.demo.yaml")
    assert config_path() == project_copy / "config.demo.yaml"
    assert load_selected_config().input.conversion.data_name == "demo_agent_sft"
    loader = _loader(project_copy)
    assert loader["parameters"]["training"]["template"] == "qwen3"
    catalog = loader["catalog"]
    assert catalog["lf_dataset"]["filepath"].endswith("artifacts/data/lf_data/demo_agent_sft.json")
    assert cfg_resolver("config_path") == str(project_copy / "config.demo.yaml")


def test_params_override_one_nested_key_and_keeps_siblings(project_copy: Path) -> None:
    params = _loader(project_copy, {"conversion": {"max_instances": 8}, "training": {"learning_rate": 2e-5}})[
        "parameters"
    ]
    assert params["conversion"]["max_instances"] == 8
    assert params["conversion"]["data_name"] == "m_2.7_swerebenchv2-200-260429_cc_test"
    assert params["conversion"]["exclude_repos_file"] == "artifacts/data/excluded_repos.txt"
    assert params["training"]["learning_rate"] == 2e-5
    assert params["training"]["template"] == "qwen3_nothink"


def test_overridden_params_are_revalidated(project_copy: Path) -> None:
    from pydantic import ValidationError

    from sft.pipelines.common import validate_settings

    params = _loader(project_copy, {"experiment": {"wandb_mode": "cloud"}})["parameters"]
    sections = ("source", "conversion", "dataset", "model", "training", "infrastructure", "experiment")
    with pytest.raises(ValidationError, match="wandb_mode"):
        validate_settings(*(params[s] for s in sections))


def test_resolver_reads_file_keys_and_fails_clearly(project_copy: Path) -> None:
    assert cfg_resolver("file.meta_info.name") == "sft"
    assert cfg_resolver("model.model_name_or_path") == "/mnt/public/models/Qwen3-8B"
    with pytest.raises(KeyError, match="no such key"):
        cfg_resolver("conversion.nope")
