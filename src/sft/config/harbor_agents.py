"""The agent names Harbor knows, and how they map to this project's scaffold names.

``HARBOR_AGENT_NAMES`` is the value list of Harbor's ``AgentName`` enum, copied from the Harbor package
itself: PyPI ``harbor==0.25.0``, ``harbor/models/agent/name.py`` (GitHub ``harbor-framework/harbor``,
``src/harbor/models/agent/name.py``). Harbor is not imported (it needs Python >= 3.12), so the list is
kept here; a newer Harbor may add names, and an agent that is not listed still converts through its
ATIF file with ``source.scaffold: auto`` (the list only validates explicit config values).

This module imports nothing from ``sft`` so that the config schema can use it.
"""

from __future__ import annotations

HARBOR_VERSION_OF_AGENT_NAMES = "0.25.0"

# harbor==0.25.0 AgentName, in enum order.
HARBOR_AGENT_NAMES: tuple[str, ...] = (
    "oracle",
    "nop",
    "acp",
    "claude-code",
    "cline-cli",
    "cortex-code",
    "terminus",
    "terminus-1",
    "terminus-2",
    "aider",
    "codex",
    "cursor-cli",
    "gemini-cli",
    "antigravity-cli",
    "rovodev-cli",
    "goose",
    "grok-build",
    "hermes",
    "junie",
    "mini-swe-agent",
    "nemo-agent",
    "swe-agent",
    "opencode",
    "openclaw",
    "openhands",
    "openhands-sdk",
    "antigravity-sdk",
    "kimi-code",
    "kimi-cli",
    "langgraph",
    "deerflow",
    "mimo",
    "mcode",
    "pi",
    "qwen-coder",
    "copilot-cli",
    "code-puppy",
    "devin",
    "trae-agent",
    "computer-1",
    "eve",
    "fx",
    "fx-dev",
    "dspy-rlm",
    "vibe",
    "muse-code",
    "strands",
    "fabric",
)

# The scaffolds with a proxy-log adapter (config name -> the Harbor agent names it reads).
PROXY_LOG_SCAFFOLDS: dict[str, tuple[str, ...]] = {
    "claude-code": ("claude-code",),
    "open-code": ("opencode", "open-code", "opencode-v2"),
    "openhands-sdk": ("openhands-sdk",),
    "terminus2": ("terminus-2", "terminus2", "terminus"),
}

# Every value ``source.scaffold`` accepts: the proxy-log scaffolds, every Harbor agent name, and ``auto``.
SCAFFOLD_CHOICES: tuple[str, ...] = tuple(dict.fromkeys([*PROXY_LOG_SCAFFOLDS, *HARBOR_AGENT_NAMES, "auto"]))
