"""Credential precedence (env > conf/local/credentials.yml > config) and redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.config.credentials import REDACTED, Credentials, redact_mapping, redact_text, resolve_credentials
from sft.config.schema import CredentialsConfig


def _local(root: Path, text: str) -> None:
    (root / "conf" / "local").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "local" / "credentials.yml").write_text(text)


def test_config_value_used_when_nothing_else(tmp_path: Path) -> None:
    creds = resolve_credentials(CredentialsConfig(wandb_api_key="cfg-w", hf_token="cfg-h"), tmp_path, env={})
    assert (creds.wandb_api_key, creds.wandb_source, creds.hf_token, creds.hf_source) == (
        "cfg-w",
        "config",
        "cfg-h",
        "config",
    )


def test_local_credentials_beat_config(tmp_path: Path) -> None:
    _local(tmp_path, "sft:\n  wandb_api_key: local-w\n")
    creds = resolve_credentials(CredentialsConfig(wandb_api_key="cfg-w"), tmp_path, env={})
    assert creds.wandb_api_key == "local-w" and creds.wandb_source == "conf/local"


def test_environment_beats_everything(tmp_path: Path) -> None:
    _local(tmp_path, "wandb_api_key: local-w\nhf_token: local-h\n")
    env = {"WANDB_API_KEY": "env-w", "HUGGING_FACE_HUB_TOKEN": "env-h"}
    creds = resolve_credentials(CredentialsConfig(wandb_api_key="cfg-w", hf_token="cfg-h"), tmp_path, env=env)
    assert (creds.wandb_api_key, creds.hf_token) == ("env-w", "env-h")
    assert (creds.wandb_source, creds.hf_source) == ("env", "env")


def test_repr_never_shows_values() -> None:
    creds = Credentials(wandb_api_key="SECRET-W", hf_token="SECRET-H", wandb_source="env", hf_source="env")
    assert "SECRET" not in repr(creds) and "SECRET" not in str(creds)


def test_redaction_of_keys_and_values() -> None:
    data = {
        "runtime_info": {
            "input": {
                "credentials": {"wandb_api_key": "abc123", "hf_token": ""},
                "note": "token abc123 in text",
                "list": ["x abc123"],
            }
        }
    }
    red = redact_mapping(data, ["abc123"])
    text = repr(red)
    assert "abc123" not in text
    assert red["runtime_info"]["input"]["credentials"]["wandb_api_key"] == REDACTED
    assert red["runtime_info"]["input"]["credentials"]["hf_token"] == ""  # empty stays empty
    assert data["runtime_info"]["input"]["credentials"]["wandb_api_key"] == "abc123"  # input untouched
    assert redact_text("Bearer abc123", ["abc123"]) == f"Bearer {REDACTED}"


@pytest.mark.parametrize("key", ["api_key", "HF_TOKEN", "password", "client_secret"])
def test_secret_looking_keys_are_redacted(key: str) -> None:
    assert redact_mapping({key: "v"})[key] == REDACTED


def test_wandb_online_accepts_a_key_kept_in_conf_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README names conf/local/credentials.yml as a key source: the schema's online check takes it."""
    import copy

    from sft.config.loader import ConfigError, load_config, validate_config

    root = Path(__file__).resolve().parents[2]
    data = load_config(root / "config.demo.yaml").model_dump(mode="json")
    data["runtime_info"]["input"]["experiment"]["wandb_mode"] = "online"
    data["runtime_info"]["input"]["credentials"]["wandb_api_key"] = ""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("SFT_PROJECT_ROOT", str(tmp_path))
    with pytest.raises(ConfigError, match="conf/local/credentials.yml"):
        validate_config(copy.deepcopy(data), tmp_path / "config.yaml")
    _local(tmp_path, "sft:\n  wandb_api_key: local-w\n")
    cfg = validate_config(copy.deepcopy(data), tmp_path / "config.yaml")
    assert cfg.input.experiment.wandb_mode == "online"
    creds = resolve_credentials(cfg.input.credentials, tmp_path, env={})
    assert (creds.wandb_api_key, creds.wandb_source) == ("local-w", "conf/local")
