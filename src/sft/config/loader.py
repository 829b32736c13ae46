"""Find, read and validate the active config file.

``SFT_CONFIG`` selects a profile (``config.<name>.yaml``); the default is ``config.yaml`` in the project
root. Relative paths inside the config resolve against the directory of the config file.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sft.config.schema import SftConfig

CONFIG_ENV = "SFT_CONFIG"
DEFAULT_CONFIG = "config.yaml"


class ConfigError(ValueError):
    """A config problem; the message names the file, the field, the value and the fix."""


def project_root() -> Path:
    """The project directory: $SFT_PROJECT_ROOT, else the nearest parent holding pyproject.toml."""
    env = os.environ.get("SFT_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "conf").is_dir():
            return candidate
    pkg_root = Path(__file__).resolve().parents[3]
    return pkg_root


def config_path(root: Path | None = None) -> Path:
    """The selected config file: $SFT_CONFIG (absolute or relative to the project root) or config.yaml."""
    root = root or project_root()
    name = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    path = Path(name)
    if not path.is_absolute():
        path = root / path
    return path


def _did_you_mean(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    choices = list(model.model_fields)
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{close[0]}'?"
    return f" Allowed keys: {', '.join(choices)}."


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the container at ``loc`` (for did-you-mean hints)."""
    model: type[BaseModel] | None = SftConfig
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def format_validation_error(err: ValidationError, path: Path) -> str:
    lines = [f"{path}: {err.error_count()} problem(s) in the config:"]
    for item in err.errors():
        loc = tuple(item["loc"])
        field = ".".join(str(p) for p in loc) or "<root>"
        value = item.get("input")
        kind = item["type"]
        if kind == "extra_forbidden":
            hint = _did_you_mean(str(loc[-1]), _model_at(loc[:-1]))
            lines.append(f"  - {field}: unknown key.{hint}")
            continue
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if kind == "missing":
            lines.append(f"  - {field}: required field is missing")
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            lines.append(f"  - {field}: {shown} is not allowed; expected {expected}")
        else:
            lines.append(f"  - {field}: {msg} (got {shown})")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path}: config file not found. Set {CONFIG_ENV} to an existing file "
            f"(e.g. SFT_CONFIG=config.demo.yaml) or create {DEFAULT_CONFIG}."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "runtime_info" not in data:
        raise ConfigError(
            f"{path}: expected a mapping with meta_info and runtime_info.input (the sft contract)"
        )
    return data


def validate_config(data: dict[str, Any], path: Path) -> SftConfig:
    try:
        return SftConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, path)) from None


def load_config(path: Path | str | None = None) -> SftConfig:
    """Read and validate a config file (default: the selected one)."""
    path = Path(path) if path else config_path()
    return validate_config(read_yaml(path), path)


@lru_cache(maxsize=8)
def _cached(path_str: str, mtime: float) -> SftConfig:
    return load_config(Path(path_str))


def load_selected_config() -> SftConfig:
    """The selected config, cached per file version (cheap to call from resolvers and hooks)."""
    path = config_path()
    mtime = path.stat().st_mtime if path.exists() else 0.0
    return _cached(str(path), mtime)


def resolve_path(value: str | os.PathLike[str], base: Path | None = None) -> Path:
    """Resolve a path from the config: absolute as-is, relative against the project root."""
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else (base or project_root()) / p
