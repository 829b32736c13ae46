"""openhands-sdk: the last successful call's request plus its response is the whole conversation.

docs/input-formats.md §9.4. ATIF is a lossy fallback here: each action is its own step with an empty
message (per-call thoughts are lost) and parallel observations overwrite each other.
"""

from __future__ import annotations

from typing import Any

from sft.core.canonical import Trajectory
from sft.sources.harbor import litellm
from sft.sources.harbor.job import TrialInfo
from sft.sources.scaffolds.base import AdapterReport, LogConversation, ScaffoldAdapter


class OpenHandsSdkAdapter(ScaffoldAdapter):
    name = "openhands-sdk"
    harbor_agent_names = ("openhands-sdk",)

    def trajectories_from_log(
        self, records: list[dict[str, Any]], info: TrialInfo, source_file: str, report: AdapterReport
    ) -> list[Trajectory]:
        order = litellm.sort_by_request_time(records)
        for skipped, index in enumerate(reversed(order)):
            record = records[index]
            built = litellm.build_conversation(record, report.problems)
            if not built.has_response:
                report.problems.append(
                    f"{source_file}: last call {index} has no usable response; trying the one before"
                )
                continue
            report.counters["earlier_calls_ignored"] += len(order) - 1
            extra: dict[str, Any] = {"log_call_position": len(order) - 1 - skipped, "log_calls": len(order)}
            conv = LogConversation(len(order) - 1 - skipped, record, built.messages, built.tools, extra)
            return self.order_and_index([self.trajectory_from_log(conv, info, source_file=source_file)])
        return []
