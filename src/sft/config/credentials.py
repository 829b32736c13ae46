"""Credentials: where they come from, and how they are kept out of everything sft writes.

Precedence (highest first): the environment (``WANDB_API_KEY``, ``HF_TOKEN`` /
``HUGGING_FACE_HUB_TOKEN``), ``conf/local/credentials.yml`` (keys ``wandb_api_key``, ``hf_token``, at the
top level or under ``sft:``), then ``runtime_info.input.credentials`` in the config file. The schema's
check for ``experiment.wandb_mode: online`` accepts a key from any of the three
(``RuntimeInput._wandb_key_available``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REDACTED = "***REDACTED***"
SECRET_KEY_PATTERN = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential|auth)", re.IGNORECASE)


@dataclass(frozen=True)
class Credentials:
    wandb_api_key: str = ""
    hf_token: str = ""
    wandb_source: str = "none"  # env | conf/local | config | none
    hf_source: str = "none"

    def values(self) -> list[str]:
        """Every secret value (for scrubbing and for tests that grep outputs)."""
        return [v for v in (self.wandb_api_key, self.hf_token) if v]

    def __repr__(self) -> str:  # never show the values, even in a traceback
        return f"Credentials(wandb={self.wandb_source}, hf={self.hf_source})"


def _local_credentials(root: Path) -> dict[str, str]:
    path = root / "conf" / "local" / "credentials.yml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(data.get("sft"), Mapping):
        data = data["sft"]
    return {k: str(v) for k, v in data.items() if isinstance(v, str | int) and v != ""}


def resolve_credentials(
    config_credentials: Any, root: Path, env: Mapping[str, str] | None = None
) -> Credentials:
    """Apply the precedence env > conf/local/credentials.yml > config."""
    env = os.environ if env is None else env
    local = _local_credentials(root)

    def pick(env_names: Iterable[str], key: str) -> tuple[str, str]:
        for name in env_names:
            if env.get(name):
                return env[name], "env"
        if local.get(key):
            return local[key], "conf/local"
        value = getattr(config_credentials, key, "") if config_credentials is not None else ""
        return (value, "config") if value else ("", "none")

    wandb, wandb_src = pick(("WANDB_API_KEY",), "wandb_api_key")
    hf, hf_src = pick(("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"), "hf_token")
    return Credentials(wandb_api_key=wandb, hf_token=hf, wandb_source=wandb_src, hf_source=hf_src)


def redact_mapping(data: Any, secret_values: Iterable[str] = ()) -> Any:
    """A deep copy of ``data`` with secret-looking keys and known secret values replaced."""
    values = [v for v in secret_values if v]

    def scrub_str(text: str) -> str:
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, Mapping):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v) for v in node]
        if isinstance(node, str):
            if key is not None and SECRET_KEY_PATTERN.search(key) and node:
                return REDACTED
            return scrub_str(node)
        return node

    return walk(data)


def redact_text(text: str, secret_values: Iterable[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, REDACTED)
    return text
