"""terminus2 (Harbor agent ``terminus-2``): a text protocol, no native tool calls.

The model answers with JSON or XML (analysis / plan / commands); that raw text is the assistant content,
kept verbatim. LiteLLM log: prefix dedup; conversations that start from the run's initial prompt are main,
the summarisation calls that start elsewhere are subagents. ATIF: in the default mode the message is
rebuilt ("Analysis: ... Plan: ...") with synthetic ``bash_command`` / ``mark_task_complete`` tool calls;
``conversion.rebuilt_atif`` decides (hooks in ``sft.sources.scaffolds.atif_hooks``).
"""

from __future__ import annotations

from typing import Any

from sft.core.canonical import Trajectory
from sft.sources.harbor import litellm
from sft.sources.harbor.job import TrialInfo
from sft.sources.scaffolds.base import AdapterReport, LogConversation, ScaffoldAdapter, ScaffoldMismatchError


def _first_user_text(conv_messages: list[Any]) -> str | None:
    for message in conv_messages:
        if message.role == "user":
            return message.content
    return None


class Terminus2Adapter(ScaffoldAdapter):
    name = "terminus2"
    harbor_agent_names = ("terminus-2", "terminus2", "terminus")

    def check_log_shape(self, records: list[dict[str, Any]], source_file: str) -> None:
        """A text-protocol agent: a log where most calls offer native tools belongs to another scaffold."""
        with_tools = sum(1 for r in records if litellm.request_tools(r))
        if records and with_tools * 2 > len(records):
            raise ScaffoldMismatchError(
                f"{source_file}: {with_tools} of {len(records)} calls offer native tools, but scaffold 'terminus2' "
                "uses a text protocol without tools; set source.scaffold to the agent that produced the job"
            )

    def trajectories_from_log(
        self, records: list[dict[str, Any]], info: TrialInfo, source_file: str, report: AdapterReport
    ) -> list[Trajectory]:
        conversations = self.cumulative_conversations(records, report)
        initial_prompt = self._initial_prompt(records)
        trajectories: list[Trajectory] = []
        n_sub = 0
        for conv in conversations:
            if _first_user_text(conv.messages) == initial_prompt:
                trajectories.append(self.trajectory_from_log(conv, info, source_file=source_file))
            else:
                n_sub += 1
                trajectories.append(self._subagent(conv, info, source_file, f"summarization-{n_sub}"))
        return self.order_and_index(trajectories)

    def _subagent(
        self, conv: LogConversation, info: TrialInfo, source_file: str, agent_id: str
    ) -> Trajectory:
        return self.trajectory_from_log(
            conv, info, source_file=source_file, agent_type="subagent", agent_id=agent_id
        )

    @staticmethod
    def _initial_prompt(records: list[dict[str, Any]]) -> str | None:
        """The first user message of the earliest call: the task prompt every main segment starts from."""
        order = litellm.sort_by_request_time(records)
        for index in order:
            for message in litellm.request_input(records[index]):
                if isinstance(message, dict) and message.get("role") == "user":
                    return litellm.content_text(message.get("content"))
        return None
