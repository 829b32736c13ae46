"""Scaffold adapters: one per agent with a proxy-log reader, and the generic ATIF adapter for all others.

``get_adapter`` accepts the config names (``claude-code``, ``open-code``, ``openhands-sdk``,
``terminus2``), Harbor's agent names of those four (``opencode``, ``terminus-2``, ...), and any other
Harbor agent name (``codex``, ``gemini-cli``, ``openhands``, ...), which is read from its ATIF file.
"""

from __future__ import annotations

from sft.config.harbor_agents import HARBOR_AGENT_NAMES, PROXY_LOG_SCAFFOLDS
from sft.sources.scaffolds.atif_generic import GENERIC_ATIF_SCAFFOLD, AtifAgentAdapter
from sft.sources.scaffolds.atif_hooks import ATIF_HOOKS, AtifHooks, atif_hooks_for, register_atif_hooks
from sft.sources.scaffolds.base import AdapterReport, ScaffoldAdapter, ScaffoldMismatchError
from sft.sources.scaffolds.claude_code import ClaudeCodeAdapter
from sft.sources.scaffolds.open_code import OpenCodeAdapter
from sft.sources.scaffolds.openhands_sdk import OpenHandsSdkAdapter
from sft.sources.scaffolds.terminus2 import Terminus2Adapter

# The adapters with a proxy-log reader, by config name.
ADAPTERS: dict[str, type[ScaffoldAdapter]] = {
    cls.name: cls for cls in (ClaudeCodeAdapter, OpenCodeAdapter, OpenHandsSdkAdapter, Terminus2Adapter)
}
assert set(ADAPTERS) == set(PROXY_LOG_SCAFFOLDS), (
    "sft.config.harbor_agents.PROXY_LOG_SCAFFOLDS is out of date"
)


class UnknownScaffoldError(KeyError):
    """A scaffold name that no adapter handles."""

    def __str__(self) -> str:
        return str(self.args[0])


def proxy_log_scaffold_of(agent_name: str | None) -> str | None:
    """The proxy-log scaffold whose Harbor agent names include ``agent_name``, or None."""
    for name, cls in ADAPTERS.items():
        if cls.accepts_agent_name(agent_name or ""):
            return name
    return None


def get_adapter(scaffold_name: str) -> ScaffoldAdapter:
    """The adapter for a config scaffold name or a Harbor agent name.

    A proxy-log scaffold (by config or Harbor name) gets its own adapter; any other Harbor agent name,
    and ``atif`` (agent unknown), gets the generic ATIF adapter.
    """
    if scaffold_name in ADAPTERS:
        return ADAPTERS[scaffold_name]()
    for cls in ADAPTERS.values():
        if scaffold_name in cls.harbor_agent_names:
            return cls()
    if scaffold_name in HARBOR_AGENT_NAMES or scaffold_name == GENERIC_ATIF_SCAFFOLD:
        return AtifAgentAdapter(scaffold_name)
    raise UnknownScaffoldError(
        f"unknown scaffold {scaffold_name!r}; valid: {' | '.join(ADAPTERS)} (proxy log or ATIF), or a Harbor "
        f"agent name read from ATIF ({', '.join(n for n in HARBOR_AGENT_NAMES if n not in PROXY_LOG_SCAFFOLDS)})"
    )


def adapter_for_agent(agent_name: str | None) -> ScaffoldAdapter:
    """``source.scaffold: auto``: the proxy-log adapter of result.json's agent, else the generic ATIF adapter
    named after the agent (any name, listed by Harbor or not; ``atif`` when the trial names none)."""
    scaffold = proxy_log_scaffold_of(agent_name)
    if scaffold is not None:
        return ADAPTERS[scaffold]()
    return AtifAgentAdapter(agent_name or GENERIC_ATIF_SCAFFOLD)


__all__ = [
    "ADAPTERS",
    "ATIF_HOOKS",
    "AdapterReport",
    "AtifAgentAdapter",
    "AtifHooks",
    "ScaffoldAdapter",
    "ScaffoldMismatchError",
    "UnknownScaffoldError",
    "adapter_for_agent",
    "atif_hooks_for",
    "get_adapter",
    "proxy_log_scaffold_of",
    "register_atif_hooks",
]
