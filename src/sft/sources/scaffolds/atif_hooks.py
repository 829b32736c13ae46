"""Per-agent hooks on top of the generic ATIF reader: the only place agent-specific ATIF knowledge lives.

Every Harbor agent converts through ``sft.sources.harbor.atif`` (one reader); an agent whose ATIF needs
more than the generic rules registers an ``AtifHooks`` here, keyed by its Harbor agent name (like
LLaMA-Factory's converter registry). ``atif_hooks_for`` finds the hooks of an agent name, also for derived
names (``terminus-2-summarization-summary`` -> ``terminus-2``); an unregistered agent gets the generic rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sft.core.canonical import Message
from sft.sources.harbor.atif import AtifOptions, StrippedText
from sft.sources.scaffolds.decorations import strip_harbor_decorations


@dataclass(frozen=True)
class AtifHooks:
    """What one agent's ATIF needs beyond the generic reader."""

    prefer_raw_tool_result: bool = False  # read extra.tool_result_metadata.raw_tool_result first
    split_sidechains: bool = False  # extra.is_sidechain steps are subagents (by extra.agent_id)
    strip_decorations: Callable[[str], StrippedText | None] | None = None
    empty_result_calls: frozenset[str] = frozenset()  # synthetic calls an observation answers implicitly
    # True when the assistant text is not what the model emitted (conversion.rebuilt_atif decides)
    is_rebuilt: Callable[[list[Message]], bool] | None = None
    rebuilt_fix: str = ""  # how to get the verbatim text instead
    # a step that hands the context over (later steps saw only what follows it), beyond the generic
    # extra.context_management.boundary == "replace"
    replace_boundary: Callable[[dict[str, Any]], bool] | None = None
    caveats: tuple[str, ...] = field(default_factory=tuple)  # what this agent's ATIF cannot hold

    def options(self, *, include_subagents: bool, copied_context: str) -> AtifOptions:
        return AtifOptions(
            prefer_raw_tool_result=self.prefer_raw_tool_result,
            split_sidechains=self.split_sidechains,
            include_subagents=include_subagents,
            strip_decorations=self.strip_decorations,
            empty_result_calls=self.empty_result_calls,
            copied_context=copied_context,
            replace_boundary=self.replace_boundary,
        )


GENERIC_HOOKS = AtifHooks()
ATIF_HOOKS: dict[str, AtifHooks] = {}


def register_atif_hooks(hooks: AtifHooks, *agent_names: str) -> AtifHooks:
    """Register ``hooks`` for Harbor agent names (a name registered twice is a bug)."""
    for name in agent_names:
        if name in ATIF_HOOKS:
            raise ValueError(f"ATIF hooks for agent {name!r} are registered twice")
        ATIF_HOOKS[name] = hooks
    return hooks


def atif_hooks_for(agent_name: str | None) -> AtifHooks:
    """The hooks of a Harbor agent name (exact, else the longest registered ``<name>-`` prefix)."""
    if not agent_name:
        return GENERIC_HOOKS
    if agent_name in ATIF_HOOKS:
        return ATIF_HOOKS[agent_name]
    prefixes = [n for n in ATIF_HOOKS if agent_name.startswith(n + "-")]
    return ATIF_HOOKS[max(prefixes, key=len)] if prefixes else GENERIC_HOOKS


# ---------------------------------------------------------------------------------------------------------
# terminus-2: default-mode ATIF is rebuilt from the parsed response

TERMINUS_SYNTHETIC_TOOLS = frozenset({"bash_command", "mark_task_complete"})


def terminus_is_rebuilt(messages: list[Message]) -> bool:
    """Default-mode terminus-2 ATIF: synthetic tool calls or an "Analysis: ...\\nPlan: ..." message.

    Harbor's Terminus2 (``trajectory_config.raw_content`` false, the default) writes
    ``"Analysis: {analysis}\\nPlan: {plan}"`` as the message and one ``bash_command`` call per parsed
    command (plus ``mark_task_complete``); the model itself answered with JSON or XML text.
    """
    for message in messages:
        if message.role != "assistant" or not message.trainable:
            continue
        if any(call.name in TERMINUS_SYNTHETIC_TOOLS for call in message.tool_calls):
            return True
        if message.content.startswith("Analysis:") and "\nPlan:" in message.content:
            return True
    return False


def terminus_summarization_handoff(step: dict[str, Any]) -> bool:
    """terminus-2's summarisation step: a ``system`` step whose observation points at the
    ``summarization-<n>-*`` sub-agent files. Harbor marks it ``context_management.boundary: replace`` since
    ATIF-v1.7; older files (ATIF-v1.5 golden ``hello-world-context-summarization``) carry only the refs.
    After it the model's chat was reset to the hand-off (Terminus2._summarize: ``chat._messages = [...]``).
    """
    if step.get("source") != "system":
        return False
    results = (step.get("observation") or {}).get("results") or []
    for result in results if isinstance(results, list) else []:
        for ref in (result.get("subagent_trajectory_ref") or []) if isinstance(result, dict) else []:
            if isinstance(ref, dict) and "summarization-" in str(ref.get("trajectory_path") or ""):
                return True
    return False


register_atif_hooks(
    AtifHooks(
        prefer_raw_tool_result=True,
        split_sidechains=True,
        strip_decorations=strip_harbor_decorations,
        caveats=("no system prompt or tool schemas in ATIF",),
    ),
    "claude-code",
)
register_atif_hooks(
    AtifHooks(
        # Harbor 0.25 links an observation to a call only for single-command batches and never to
        # mark_task_complete (ATIF-v1.6 files never link): the terminal screen answers the whole step.
        empty_result_calls=frozenset({"mark_task_complete"}),
        is_rebuilt=terminus_is_rebuilt,
        replace_boundary=terminus_summarization_handoff,
        rebuilt_fix=(
            "use the job's proxy log (trajectory_source auto/litellm), rerun terminus-2 with "
            "trajectory_config raw_content=true, or set conversion.rebuilt_atif: keep"
        ),
    ),
    "terminus-2",
    "terminus2",
    "terminus",
    "terminus-1",
)
register_atif_hooks(
    AtifHooks(caveats=("no system prompt or tool schemas in ATIF",)),
    "opencode",
    "open-code",
    "opencode-v2",
)
register_atif_hooks(
    AtifHooks(caveats=("per-call thoughts lost; parallel observations overwrite each other",)),
    "openhands-sdk",
)
