"""The config.yaml schema: every rule with its error text."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from sft.config.loader import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def check(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(data, Path("config.yaml"))
    return str(exc.value)


def inp(data: dict) -> dict:
    return data["runtime_info"]["input"]


def test_shipped_configs_are_valid() -> None:
    cfg = load_config(ROOT / "config.yaml")
    assert cfg.meta_info.name == "sft"
    assert cfg.input.source.type == "harbor_job" and cfg.input.source.scaffold == "claude-code"
    assert cfg.input.conversion.max_instances == 64
    assert cfg.input.model.model_name_or_path == "/mnt/public/models/Qwen3-8B"
    assert cfg.input.infrastructure.n_gpus_per_node == 8
    assert cfg.input.experiment.wandb_mode == "offline"
    assert cfg.input.dataset_key == "m_2.7_swerebenchv2-200-260429_cc_test"
    demo = load_config(ROOT / "config.demo.yaml")
    assert demo.input.infrastructure.accelerator == "cpu"


def test_unknown_key_gets_did_you_mean(raw: dict) -> None:
    inp(raw)["conversion"]["max_instance"] = 3
    msg = check(raw)
    assert "runtime_info.input.conversion.max_instance: unknown key" in msg
    assert "Did you mean 'max_instances'?" in msg


def test_unknown_section_lists_allowed_keys(raw: dict) -> None:
    inp(raw)["trainer"] = {}
    msg = check(raw)
    assert "runtime_info.input.trainer: unknown key" in msg
    assert "training" in msg


def test_bad_scaffold_names_valid_values(raw: dict) -> None:
    inp(raw)["source"]["scaffold"] = "cursor"
    msg = check(raw)
    assert "runtime_info.input.source.scaffold" in msg and "'cursor'" in msg
    for name in ("claude-code", "open-code", "openhands-sdk", "terminus2"):
        assert name in msg


def test_bad_source_type_names_valid_values(raw: dict) -> None:
    inp(raw)["source"]["type"] = "s3"
    msg = check(raw)
    assert "source.type" in msg and "'s3'" in msg and "harbor_job" in msg and "local_lf" in msg


def test_empty_source_type_means_harbor_job(raw: dict) -> None:
    inp(raw)["source"]["type"] = ""
    assert validate_config(raw, Path("c.yaml")).input.source.type == "harbor_job"


@pytest.mark.parametrize(
    ("type_", "fields", "needle"),
    [
        ("harbor_job", {"scaffold": ""}, "source.scaffold is required"),
        ("harbor_job", {"job_dir": ""}, "source.job_dir is required"),
        ("hf_lf", {"hf_hub_url": ""}, "source.hf_hub_url is required"),
        ("hf_lf", {"hf_hub_url": "not a hub id"}, "must be a Hub dataset id"),
        ("local_lf", {"lf_path": ""}, "source.lf_path is required"),
    ],
)
def test_source_type_requires_its_fields(raw: dict, type_: str, fields: dict, needle: str) -> None:
    src = inp(raw)["source"]
    src["type"] = type_
    if type_ != "harbor_job":
        src["hf_hub_url"] = "org/data"
        src["lf_path"] = "data.json"
    src.update(fields)
    assert needle in check(raw)


def test_non_harbor_sources_do_not_need_job_dir_or_exclusions(raw: dict) -> None:
    src = inp(raw)["source"]
    src.update(type="local_lf", lf_path="x.json", job_dir="", scaffold="")
    inp(raw)["conversion"]["exclude_repos_file"] = ""
    assert validate_config(raw, Path("c.yaml")).input.source.type == "local_lf"


@pytest.mark.parametrize("value", [0, -1, "8", 2.5, True])
def test_n_gpus_per_node_must_be_positive_int(raw: dict, value: object) -> None:
    inp(raw)["infrastructure"]["n_gpus_per_node"] = value
    msg = check(raw)
    assert "infrastructure.n_gpus_per_node" in msg and "positive integer" in msg


def test_wandb_online_needs_key(raw: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("SFT_PROJECT_ROOT", str(tmp_path))  # no conf/local/credentials.yml there
    inp(raw)["experiment"]["wandb_mode"] = "online"
    assert "WANDB_API_KEY" in check(raw)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert validate_config(copy.deepcopy(raw), Path("c.yaml")).input.experiment.wandb_mode == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    inp(raw)["credentials"]["wandb_api_key"] = "from-config"
    assert validate_config(raw, Path("c.yaml"))


def test_wandb_mode_must_be_known(raw: dict) -> None:
    inp(raw)["experiment"]["wandb_mode"] = "cloud"
    msg = check(raw)
    assert "experiment.wandb_mode" in msg and "'online'" in msg and "'disabled'" in msg


def test_save_only_model_with_resume_is_explained(raw: dict) -> None:
    inp(raw)["training"].update(save_only_model=True, resume_from_checkpoint="auto")
    msg = check(raw)
    assert "save_only_model" in msg and "cannot be resumed" in msg


@pytest.mark.parametrize("value", ["", "None", "null"])
def test_null_strings_mean_null(raw: dict, value: str) -> None:
    inp(raw)["training"]["resume_from_checkpoint"] = value
    inp(raw)["training"]["rope_scaling"] = value
    cfg = validate_config(raw, Path("c.yaml"))
    assert cfg.input.training.resume_from_checkpoint is None and cfg.input.training.rope_scaling is None


def test_meta_name_must_be_sft(raw: dict) -> None:
    raw["meta_info"]["name"] = "trainer"
    msg = check(raw)
    assert "meta_info.name" in msg and "'sft'" in msg


def test_data_name_required(raw: dict) -> None:
    inp(raw)["conversion"]["data_name"] = " "
    assert "conversion.data_name is required" in check(raw)


def test_every_problem_is_listed_at_once(raw: dict) -> None:
    inp(raw)["experiment"]["wandb_mode"] = "cloud"
    inp(raw)["infrastructure"]["n_gpus_per_node"] = 0
    msg = check(raw)
    assert "2 problem(s)" in msg


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtime_info: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_reasoning_follows_template(raw: dict) -> None:
    inp(raw)["training"]["template"] = "qwen3"
    assert validate_config(copy.deepcopy(raw), Path("c.yaml")).input.keeps_reasoning() is True
    inp(raw)["training"]["template"] = "qwen3_nothink"
    assert validate_config(copy.deepcopy(raw), Path("c.yaml")).input.keeps_reasoning() is False
    inp(raw)["conversion"]["keep_reasoning"] = True
    assert validate_config(raw, Path("c.yaml")).input.keeps_reasoning() is True
