"""Scaffold adapters: one per supported agent, behind the ScaffoldAdapter interface.

``get_adapter`` accepts the config names (``claude-code``, ``open-code``, ``openhands-sdk``,
``terminus2``) and Harbor's agent names (``opencode``, ``terminus-2``, ...).
"""

from __future__ import annotations

from sft.sources.scaffolds.base import AdapterReport, ScaffoldAdapter, ScaffoldMismatchError
from sft.sources.scaffolds.claude_code import ClaudeCodeAdapter
from sft.sources.scaffolds.open_code import OpenCodeAdapter
from sft.sources.scaffolds.openhands_sdk import OpenHandsSdkAdapter
from sft.sources.scaffolds.terminus2 import Terminus2Adapter

ADAPTERS: dict[str, type[ScaffoldAdapter]] = {
    cls.name: cls for cls in (ClaudeCodeAdapter, OpenCodeAdapter, OpenHandsSdkAdapter, Terminus2Adapter)
}


class UnknownScaffoldError(KeyError):
    """A scaffold name that no adapter handles."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_adapter(scaffold_name: str) -> ScaffoldAdapter:
    """The adapter for a config scaffold name or a Harbor agent name."""
    if scaffold_name in ADAPTERS:
        return ADAPTERS[scaffold_name]()
    for cls in ADAPTERS.values():
        if scaffold_name in cls.harbor_agent_names:
            return cls()
    raise UnknownScaffoldError(
        f"unknown scaffold {scaffold_name!r}; valid: {' | '.join(ADAPTERS)} "
        "(Harbor agent names opencode, terminus-2 are accepted too)"
    )


__all__ = [
    "ADAPTERS",
    "AdapterReport",
    "ScaffoldAdapter",
    "ScaffoldMismatchError",
    "UnknownScaffoldError",
    "get_adapter",
]
