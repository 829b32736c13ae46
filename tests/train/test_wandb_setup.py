"""wandb environment per docs/config-contract.md §3.7 (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.config.credentials import Credentials, resolve_credentials
from sft.config.schema import SftConfig
from sft.train.wandb_setup import (
    WandbConfigError,
    find_wandb_run_dir,
    wandb_env,
    wandb_run_id_for,
    wandb_unset_vars,
)
from tests.train.helpers import base_config


def _cfg(model_dir: Path, **experiment: str) -> SftConfig:
    data = base_config(model_dir)
    data["runtime_info"]["input"]["experiment"].update(experiment)
    return SftConfig.model_validate(data)


def test_disabled_sets_nothing_and_unsets_wandb_vars(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, wandb_mode="disabled").input
    assert wandb_env(cfg, tmp_path, Credentials(wandb_api_key="k")) == {}
    assert set(wandb_unset_vars(cfg)) == {"WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME"}
    assert wandb_run_id_for(cfg) is None


def test_offline_chooses_the_run_id_up_front(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, wandb_mode="offline", wandb_project="proj-x").input
    env = wandb_env(cfg, tmp_path, Credentials())
    assert env["WANDB_MODE"] == "offline"
    assert env["WANDB_DIR"] == str(tmp_path.resolve() / "artifacts")
    assert env["WANDB_PROJECT"] == "proj-x"
    run_id = env["WANDB_RUN_ID"]
    assert len(run_id) == 8 and run_id.isalnum() and run_id.lower() == run_id
    assert "WANDB_RESUME" not in env and "WANDB_API_KEY" not in env
    assert wandb_unset_vars(cfg) == ()
    assert wandb_env(cfg, tmp_path, Credentials(), run_id="fixed123")["WANDB_RUN_ID"] == "fixed123"


def test_configured_run_id_resumes_that_run(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, wandb_mode="offline", wandb_run_id="abc12345").input
    env = wandb_env(cfg, tmp_path, Credentials())
    assert env["WANDB_RUN_ID"] == "abc12345" and env["WANDB_RESUME"] == "allow"


def test_online_needs_a_key_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "from-env")
    data = base_config(tmp_path)
    data["runtime_info"]["input"]["experiment"]["wandb_mode"] = "online"
    data["runtime_info"]["input"]["credentials"]["wandb_api_key"] = "from-config"
    cfg = SftConfig.model_validate(data).input
    creds = resolve_credentials(cfg.credentials, tmp_path)
    assert wandb_env(cfg, tmp_path, creds)["WANDB_API_KEY"] == "from-env"
    with pytest.raises(WandbConfigError, match="'online' needs an API key"):
        wandb_env(cfg, tmp_path, Credentials())


def test_find_wandb_run_dir(tmp_path: Path) -> None:
    base = tmp_path / "artifacts" / "wandb"
    (base / "offline-run-20260101_000000-abcd1234").mkdir(parents=True)
    (base / "offline-run-20260102_000000-abcd1234").mkdir()
    (base / "offline-run-20260103_000000-zzzz9999").mkdir()
    assert find_wandb_run_dir(tmp_path, "abcd1234") == base / "offline-run-20260102_000000-abcd1234"
    assert find_wandb_run_dir(tmp_path, "nope0000") is None
