"""What the dashboard may read and what it must scrub before anything leaves the process.

Why a module of its own: the dashboard is read-only and reachable over HTTP, so every file it opens goes
through ONE containment check (``ProjectFiles.resolve``) and every byte it sends goes through ONE scrubber
(``Scrubber``). The rules:

- only regular files under ``<project>/artifacts`` and ``<project>/data`` (after resolving symlinks, so a
  link inside ``artifacts/`` that points at ``conf/local/`` or ``/etc`` is refused);
- never credential files: hidden names (``.env``, ``.netrc``, ``.git``), ``credentials.yml``, anything whose
  name says secret / password / api key / credential / token file, the Python environment
  (``artifacts/env``) and the wandb folder (its settings may hold a key);
- known secret values (environment, ``conf/local/credentials.yml``, ``config.yaml``'s credentials) and
  Hugging Face token shapes are replaced in every text and JSON answer; config documents additionally go
  through ``sft.config.credentials.redact_mapping`` (secret-looking keys).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import yaml

from sft.config.credentials import REDACTED, redact_mapping, resolve_credentials

logger = logging.getLogger(__name__)

SERVED_TOP_DIRS: tuple[str, ...] = ("artifacts", "data")
# Sub-trees of the served roots that hold nothing for the dashboard and may hold secrets or huge files.
DENIED_SUBTREES: tuple[tuple[str, ...], ...] = (
    ("artifacts", "env"),
    ("artifacts", "wandb"),
    ("data", "wandb"),
)
CREDENTIAL_NAME_RE = re.compile(
    r"(secret|credential|passw|api[_-]?key|netrc|private[_-]?key|id_rsa|id_ed25519|\.pem$|\.key$|^token$|"
    r"^hf_token|^wandb_token|\.env$|^env$)",
    re.IGNORECASE,
)
HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
CONFIG_SECRET_KEYS: frozenset[str] = frozenset({"wandb_api_key", "hf_token"})
LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})


class ForbiddenPath(Exception):
    """A requested path is outside the served folders or names a credential; the message says which rule."""


@dataclass(frozen=True)
class ProjectFiles:
    """The project directory and the containment rules for everything the dashboard opens."""

    root: Path

    @classmethod
    def at(cls, project_dir: str | os.PathLike[str]) -> ProjectFiles:
        return cls(Path(project_dir).resolve())

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def served_roots(self) -> list[Path]:
        """The resolved served folders (a symlinked ``artifacts/`` is followed once, here, on purpose)."""
        return [(self.root / name).resolve() for name in SERVED_TOP_DIRS]

    def resolve(self, relative: str | os.PathLike[str]) -> Path:
        """``relative`` (to the project root) as an absolute, contained, non-credential path.

        Raises ForbiddenPath when the path escapes ``artifacts/`` and ``data/`` (``..``, absolute paths,
        symlinks pointing out) or names something that may hold a credential.
        """
        text = str(relative).replace("\\", "/")
        if "\x00" in text:
            raise ForbiddenPath("NUL byte in path")
        pure = PurePosixPath(text)
        if pure.is_absolute() or ".." in pure.parts:
            raise ForbiddenPath(f"{text!r}: absolute paths and '..' are not served")
        return self.check(self.root / pure)

    def check(self, path: Path) -> Path:
        """``path`` resolved (symlinks followed) if it lies in a served folder and is not credential-like."""
        resolved = Path(os.path.realpath(path))
        inside = [root for root in self.served_roots() if resolved == root or root in resolved.parents]
        if not inside:
            raise ForbiddenPath(f"{path}: outside the served folders {', '.join(SERVED_TOP_DIRS)}/")
        root = inside[0]
        rel_parts = (root.name, *resolved.relative_to(root).parts)
        for denied in DENIED_SUBTREES:
            if rel_parts[: len(denied)] == denied:
                raise ForbiddenPath(f"{path}: {'/'.join(denied)}/ is never served")
        for part in (*Path(path).parts[len(self.root.parts) :], *resolved.relative_to(root).parts):
            if is_credential_name(part):
                raise ForbiddenPath(
                    f"{path}: {part!r} looks like a credential or hidden file and is never served"
                )
        return resolved

    def contained(self, path: Path) -> Path | None:
        """``check`` that returns None instead of raising (for discovery loops)."""
        try:
            return self.check(path)
        except ForbiddenPath:
            return None

    def relative(self, path: Path) -> str:
        """``path`` relative to the project root (POSIX), or its name when it lies elsewhere."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).name


def is_credential_name(name: str) -> bool:
    """Hidden names and names that say they hold a secret (``tokenizer.json`` and ``total_tokens`` do not)."""
    if name.startswith("."):
        return True
    return bool(CREDENTIAL_NAME_RE.search(name))


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class Scrubber:
    """Replaces known secret values (and HF token shapes) in text and JSON-like documents."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        # Longest first so a value that contains another is replaced whole.
        self._values = sorted({v for v in secret_values if v and len(v) >= 4}, key=len, reverse=True)

    @classmethod
    def for_project(cls, root: Path, env: Mapping[str, str] | None = None) -> Scrubber:
        """Every credential value the project could hold: env > conf/local > config.yaml (all of them)."""
        values: list[str] = []
        config_creds = _config_credentials(root / "config.yaml")
        creds = resolve_credentials(config_creds, root, env)
        values += creds.values()
        values += [config_creds.wandb_api_key, config_creds.hf_token, *config_creds.others]
        values += _local_credential_values(root)
        return cls(values)

    @property
    def secret_count(self) -> int:
        return len(self._values)

    def text(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return HF_TOKEN_RE.sub(REDACTED, text)

    def data(self, node: Any) -> Any:
        """A copy of a JSON-like document with secret values replaced in every string (keys kept)."""
        if isinstance(node, Mapping):
            return {k: self.data(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [self.data(v) for v in node]
        if isinstance(node, str):
            return self.text(node)
        return node

    def config(self, node: Any) -> Any:
        """A config-like document: secret-looking keys redacted (``redact_mapping``) and values scrubbed."""
        return self.data(redact_mapping(node, self._values))


def _config_credentials(config_file: Path) -> SimpleNamespace:
    """Credential values written in config.yaml: every string under a ``credentials`` mapping and any
    ``wandb_api_key`` / ``hf_token`` key, wherever the block sits (top level or under a block name)."""
    try:
        doc = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        doc = {}
    found: dict[str, str] = {}
    extra: list[str] = []

    def walk(node: Any, under_credentials: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(value, str) and value:
                    if str(key) in CONFIG_SECRET_KEYS:
                        found.setdefault(str(key), value)
                    elif under_credentials:
                        extra.append(value)
                else:
                    walk(value, under_credentials or str(key) == "credentials")
        elif isinstance(node, list):
            for value in node:
                walk(value, under_credentials)

    walk(doc, False)
    return SimpleNamespace(
        wandb_api_key=found.get("wandb_api_key", ""), hf_token=found.get("hf_token", ""), others=extra
    )


def _local_credential_values(root: Path) -> list[str]:
    """Every string value of conf/local/credentials.yml, whatever its key (not only the two sft knows)."""
    path = root / "conf" / "local" / "credentials.yml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.append(node)

    walk(doc)
    return found
