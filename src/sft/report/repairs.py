"""Every repair kind the conversion makes, documented: what the model saw, what is written, and what the
template-fidelity report finds when it compares the written row (rendered by LLaMA-Factory) with the model's
chat template.

Repairs are counted per row in ``meta.extra["repairs"]`` (kind -> count): extraction repairs by the source
readers (``sft.sources``), ``repair_and_validate``'s own ones (``sft.rules.validate``, notes
``repair_<kind>``), ready-data ones (``sft.engine.ready``, counted for the dataset only). The fidelity report
has a ``repairs`` section (``repairs_section``): per kind present, the rows carrying it, how many were checked
and their statuses, with this registry's explanation.

Two different questions, kept apart on purpose:

- ``model_saw`` / ``written``: the repair's difference from the *source* (README "Repair and normalisation
  rules"). The fidelity check cannot see it (it compares the row with itself, through two renderers).
- ``fidelity``: what the check finds for the row. ``equal`` means the repair writes ordinary turns that both
  renderers show alike, so a repaired row differs only in the template-wide ways every row does
  (``by_design:empty_think``/``history_reasoning``) or not at all; a mismatch on it is a real defect and fails
  the run. ``by_design`` means the repair's output renders differently by construction: the entry must name
  the difference and give a ``verify`` that recognises exactly it; only a mismatch it recognises is reported
  as ``by_design:repair:<kind>`` (explained, not counted); any other mismatch on the row still fails.

A kind missing here is reported as ``unregistered`` (and fails ``tests/report/test_fidelity_repairs.py``, which
scans the code for every kind it can write): a new repair must be documented before it ships.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sft.rules.render import lf_meta_of_row

Stage = Literal["extraction", "validation", "ready_data"]
# lf_ids, chat-template ids, the tokenizer -> the difference is exactly the documented one
Verifier = Callable[[list[int], list[int], Any], bool]


class RepairRule(BaseModel):
    """One repair kind: where it is made, the source difference, and the template-fidelity outcome."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    stage: Stage
    model_saw: str
    written: str
    fidelity: Literal["equal", "by_design"]
    why: str  # why the rendered row is equal to the chat template, or why (and how) it differs by design
    verify: Verifier | None = None  # by_design only: recognises the documented difference

    def explanation(self) -> str:
        return f"model saw: {self.model_saw}; written: {self.written}; template fidelity {self.fidelity}: {self.why}"


_ORDINARY = (
    "the repaired row is ordinary turns (text, calls, results) that LLaMA-Factory's template and the "
    "chat template render alike"
)


def _rule(kind: str, stage: Stage, model_saw: str, written: str, why: str = _ORDINARY) -> RepairRule:
    return RepairRule(kind=kind, stage=stage, model_saw=model_saw, written=written, fidelity="equal", why=why)


REPAIRS: dict[str, RepairRule] = {
    rule.kind: rule
    for rule in (
        # ------------------------------------------------------------------ extraction (sft.sources.harbor.atif)
        _rule(
            "merged_system_messages",
            "extraction",
            "several leading system messages (OpenCode: provider prompt, then environment block; ATIF leading "
            "system steps)",
            "one system prompt, the texts in order joined with '\\n' (also done in validation)",
            "the row holds one system prompt, rendered as one system turn by both; two system turns of the "
            "source are one turn in training (README)",
        ),
        _rule(
            "paired_result_without_id",
            "extraction",
            "ATIF observation results without source_call_id after the step's calls",
            "each result paired with an unanswered call in call order (tool_call_id set)",
        ),
        _rule(
            "empty_result_for_batched_call",
            "extraction",
            "one result (the terminal screen) for a batch of several calls",
            "the result answers the first call, the others get an empty result (LLaMA-Factory needs one per call)",
            "an empty tool result renders as '<tool_response>\\n\\n</tool_response>' in both templates",
        ),
        _rule(
            "empty_result_for_synthetic_call",
            "extraction",
            "terminus-2's synthetic mark_task_complete call, whose step observation answered another call",
            "an empty result for the synthetic call",
            "an empty tool result renders as '<tool_response>\\n\\n</tool_response>' in both templates",
        ),
        _rule(
            "mid_run_system_to_context",
            "extraction",
            "a mid-run ATIF system step (OpenHands 'Retrieving content for: ...') shown to the model as context",
            "user-side text (a user turn, or part of the next observation), never a second system message",
        ),
        _rule(
            "context_into_observation",
            "extraction",
            "user-side text right after a tool result",
            "joined to that observation with a blank line ('\\n\\n')",
        ),
        _rule(
            "merged_user_turns",
            "extraction",
            "two user-side turns in a row",
            "one user turn, joined with a blank line",
        ),
        _rule(
            "merged_consecutive_agent_steps",
            "extraction",
            "one response written as two agent steps (codex: the message, then its function_call)",
            "one assistant turn: the text and the calls",
        ),
        _rule(
            "dropped_copied_context",
            "extraction",
            "copied main-history steps at the start of a summarisation sub-agent / continuation (is_copied_context)",
            "with conversion.copied_context: drop the conversation starts after the last copied assistant turn "
            "(counted in copied assistant turns); the same turns are never trained twice",
            "the row starts at a user turn like any other row; what is left out is not in the row at all",
        ),
        _rule(
            "stripped_harbor_decorations",
            "extraction",
            "the tool result text without Harbor's '[metadata] {...}' suffix and '[stdout]' copies (ClaudeCode."
            "_format_tool_result adds them to the ATIF file, not to what the model read)",
            "the model-visible tool result (the raw result when the file has it)",
        ),
        # ------------------------------------------------------------------ validation (sft.rules.validate)
        _rule(
            "trimmed_aborted_final_turn",
            "validation",
            "an aborted last request: an empty final assistant response",
            "the trajectory up to its last complete assistant turn; the empty turn is counted in "
            "dropped_model_turns.aborted_empty_response",
        ),
        _rule(
            "lone_surrogates",
            "validation",
            "text with lone UTF-16 surrogates (not encodable as UTF-8)",
            "each replaced with U+FFFD",
            "the row's text is valid UTF-8 and tokenized alike by both",
        ),
        _rule(
            "filled_tool_call_ids",
            "validation",
            "tool calls / results without ids",
            "ids call_NNNNNN, results matched to the turn's calls in order",
            "neither template renders call ids; only the pairing (one result per call, in order) matters",
        ),
        _rule(
            "reordered_tool_results",
            "validation",
            "parallel results in another order than the calls",
            "results in call order (matched by id)",
            "both templates render results in the order written; call order is the order both expect",
        ),
        _rule(
            "empty_tool_output",
            "validation",
            "the scaffold placeholder '(empty)' (the model saw no output)",
            "an empty tool result",
            "an empty tool result renders alike in both templates",
        ),
        _rule(
            "dropped_tool_errors",
            "validation",
            "failed tool calls and their error results (conversion.drop_tool_errors: true)",
            "the turn without the failed calls; a turn left without calls is removed",
        ),
        _rule(
            "trimmed_tail",
            "validation",
            "trailing tool results / user text after the last assistant turn",
            "the row ends on its last assistant turn (a training row must end on one)",
        ),
        # ------------------------------------------------------------------ ready-made data (sft.engine.ready)
        _rule(
            "empty_tools_array",
            "ready_data",
            "tools '[]' (no tools)",
            "tools '' (no tools)",
            "with '' neither renders a tools block; '[]' would make LLaMA-Factory render an empty '# Tools' block "
            "the chat template omits (the mismatch this repair removes)",
        ),
    )
}


def kind_of(name: str) -> str:
    """A repair kind from a counter key (``repair_<kind>`` note codes and bare kinds alike)."""
    return str(name).removeprefix("repair_")


def row_repairs(row: Mapping[str, Any]) -> dict[str, int]:
    """The repairs a written row carries (``_meta.extra.repairs``), kind -> count."""
    extra = lf_meta_of_row(row).get("extra") or {}
    counts = extra.get("repairs") if isinstance(extra, dict) else None
    if not isinstance(counts, dict):
        return {}
    return {kind_of(k): int(v) for k, v in sorted(counts.items()) if isinstance(v, int) and v > 0}


def verify_by_design(
    repairs: Iterable[str],
    lf_ids: list[int],
    hf_ids: list[int],
    tokenizer: Any,
    registry: Mapping[str, RepairRule] | None = None,
) -> str | None:
    """The first of a mismatching row's ``by_design`` repair kinds whose verifier recognises the difference."""
    rules = REPAIRS if registry is None else registry
    for kind in sorted(repairs):
        rule = rules.get(kind)
        if (
            rule is not None
            and rule.fidelity == "by_design"
            and rule.verify is not None
            and rule.verify(lf_ids, hf_ids, tokenizer)
        ):
            return kind
    return None


def _bucket(status: str) -> str:
    """``equal``, the ``by_design:<reason>`` status as is, or ``mismatch`` for every failing status."""
    if status == "equal" or status.startswith("by_design:"):
        return status
    return "mismatch"  # mismatch, chat-template render error, LLaMA-Factory drop / abort: all fail


SECTION_RULE = (
    "Per repair kind present: rows carrying it, rows checked (every row with a rare repair kind is "
    "checked, see selection), their statuses (equal / by_design / mismatch) and the registry's "
    "explanation (sft.report.repairs.REPAIRS). A repaired row mismatching for its repair's documented "
    "by-design reason is by_design:repair:<kind>; by_design:empty_think / history_reasoning are the template's "
    "own differences on any row (see by_design), not the repair's; any mismatch fails like on any row."
)


def repairs_section(
    samples: Iterable[Mapping[str, Any]],
    *,
    dataset_counts: Mapping[str, int] | None = None,
    registry: Mapping[str, RepairRule] | None = None,
) -> dict[str, Any]:
    """The fidelity report's ``repairs`` section from per-row records (``repairs``, and ``status`` when checked).

    ``dataset_counts`` is the conversion report's ``repairs`` (kind -> count over the written rows): it names
    kinds counted for the dataset but not per row (ready-made data).
    """
    rules = REPAIRS if registry is None else registry
    kinds: dict[str, dict[str, Any]] = {}

    def entry(kind: str) -> dict[str, Any]:
        return kinds.setdefault(kind, {"rows": 0, "count": 0, "checked": 0, "statuses": Counter()})

    for sample in samples:
        repairs = sample.get("repairs") or {}
        for kind, count in repairs.items():
            item = entry(kind_of(kind))
            item["rows"] += 1
            item["count"] += int(count)
            if sample.get("status"):
                item["checked"] += 1
                item["statuses"][_bucket(str(sample["status"]))] += 1
    for kind, count in (dataset_counts or {}).items():
        if count:
            entry(kind_of(kind))["dataset_count"] = int(count)
    for kind, item in kinds.items():
        item["statuses"] = dict(sorted(item["statuses"].items()))
        rule = rules.get(kind)
        item["registered"] = rule is not None
        if rule is not None:
            item.update(
                stage=rule.stage,
                fidelity=rule.fidelity,
                model_saw=rule.model_saw,
                written=rule.written,
                explanation=rule.why,
            )
    unregistered = sorted(k for k, v in kinds.items() if not v["registered"])
    mismatching = sorted(k for k, v in kinds.items() if v["statuses"].get("mismatch"))
    return {
        "rule": SECTION_RULE,
        "kinds": dict(sorted(kinds.items())),
        "unregistered": unregistered,
        "mismatching": mismatching,
        "all_explained": not unregistered and not mismatching,
    }
