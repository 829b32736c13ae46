"""What the stage reads: a Harbor job directory, a local LLaMA-Factory file or a Hub dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft.config.schema import SourceConfig


@dataclass(frozen=True)
class SourceHandle:
    """What to read. ``path`` is the job dir (harbor_job) or the file (local_lf)."""

    type: str
    config: SourceConfig
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
