"""claude-code: Anthropic-shaped cumulative log with main and subagent (Task) conversations.

LiteLLM log: prefix dedup (docs/input-formats.md §9.2); the main conversation is the one with the edit
and spawn tools (Edit/Write, Task/Agent), other survivors are subagents. ATIF: the raw tool results the
model saw (``raw_tool_result``) replace Harbor's decorated observation text, and sidechain steps are split
into subagent conversations by ``extra.agent_id``.
"""

from __future__ import annotations

from typing import Any

from sft.core.canonical import Trajectory
from sft.sources.harbor.job import TrialInfo
from sft.sources.scaffolds.base import AdapterReport, LogConversation, ScaffoldAdapter, classify_main


def main_and_subagents(
    adapter: ScaffoldAdapter, conversations: list[LogConversation], info: TrialInfo, source_file: str
) -> list[Trajectory]:
    """Trajectories for prefix-deduplicated survivors: main ones, then subagents numbered in time order."""
    flags = classify_main(conversations)
    trajectories: list[Trajectory] = []
    n_sub = 0
    for conv, is_main in zip(conversations, flags, strict=True):
        conv.extra.setdefault("tool_names", sorted(conv.tool_names()))
        if is_main:
            trajectories.append(adapter.trajectory_from_log(conv, info, source_file=source_file))
        else:
            n_sub += 1
            trajectories.append(
                adapter.trajectory_from_log(
                    conv, info, source_file=source_file, agent_type="subagent", agent_id=f"subagent-{n_sub}"
                )
            )
    return adapter.order_and_index(trajectories)


class ClaudeCodeAdapter(ScaffoldAdapter):
    name = "claude-code"
    harbor_agent_names = ("claude-code",)

    def trajectories_from_log(
        self, records: list[dict[str, Any]], info: TrialInfo, source_file: str, report: AdapterReport
    ) -> list[Trajectory]:
        conversations = self.cumulative_conversations(records, report)
        return main_and_subagents(self, conversations, info, source_file)
