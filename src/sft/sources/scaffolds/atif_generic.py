"""Any Harbor agent without a proxy-log adapter: its ATIF ``trajectory.json`` through the generic reader.

Harbor writes ATIF for every agent it runs (codex, gemini-cli, mini-swe-agent, openhands, goose, ...);
``AtifAgentAdapter(agent_name)`` reads it with that agent's hooks (``atif_hooks``), and rows carry the
Harbor agent name as their scaffold. It has no proxy-log reading: with ``trajectory_source: auto`` the
ATIF file is used even when a ``litellm-trajectory.jsonl`` exists (the reason is recorded per trial).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sft.core.canonical import Trajectory
from sft.sources.harbor.job import TrialInfo
from sft.sources.scaffolds.base import AdapterReport, ScaffoldAdapter

GENERIC_ATIF_SCAFFOLD = "atif"  # the scaffold name when not even result.json names the agent


class AtifAgentAdapter(ScaffoldAdapter):
    """ATIF-only adapter for one Harbor agent name (an instance per name: the name is the scaffold)."""

    name: ClassVar[str] = GENERIC_ATIF_SCAFFOLD
    harbor_agent_names: ClassVar[tuple[str, ...]] = ()
    supports_litellm: ClassVar[bool] = False

    def __init__(self, agent_name: str = GENERIC_ATIF_SCAFFOLD) -> None:
        # Instance attributes shadow the ClassVars: one adapter class serves every agent name.
        self.name = agent_name  # type: ignore[misc]
        self.harbor_agent_names = (agent_name,)  # type: ignore[misc]

    def accepts_agent_name(self, agent_name: str) -> bool:  # type: ignore[override]
        """result.json's agent must be this one (``atif`` accepts any); ATIF's own agent.name is free."""
        return (
            self.name == GENERIC_ATIF_SCAFFOLD
            or agent_name == self.name
            or agent_name.startswith(self.name + "-")
        )

    def check_atif_agent(self, atif_agent: str, agent_dir: Path) -> None:
        """ATIF's agent.name may differ from Harbor's agent name (e.g. a version suffix): any is accepted."""

    def trajectories_from_log(
        self, records: list[dict[str, Any]], info: TrialInfo, source_file: str, report: AdapterReport
    ) -> list[Trajectory]:
        raise NotImplementedError(
            f"agent {self.name!r} has no proxy-log adapter; its ATIF file is read instead"
        )
