"""The explicit over-length policy (``conversion.overlength``), applied before the LLaMA-Factory file is written.

LLaMA-Factory never drops an over-long sample: it truncates it at ``cutoff_len`` pair by pair, which can cut
the system/tools block mid-text and leaves the final response without its end token
(docs/llamafactory-rules.md §8.1). ``sft`` decides instead, per sample, from the exact per-turn token counts of
``sft.report.tokens.token_stats``:

- ``drop``: a sample over ``cutoff_len`` is removed (a reject line, stage ``overlength``);
- ``truncate_turns``: the sample is cut after the last whole assistant turn that still fits, so it ends on
  a ``gpt`` / ``function_call`` turn (never mid-message, never on a tool result). Since LLaMA-Factory
  tokenizes turn by turn, the kept prefix has exactly the counted length. A sample whose first assistant
  turn alone does not fit is dropped;
- ``keep``: the sample is left to LLaMA-Factory's truncation; the decision records how many tokens (and
  supervised tokens) it will cut and whether the final end-of-turn token is lost.

Every sample gets one decision; the summary counts them for the funnel.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sft.core.canonical import Reject
from sft.rules.render import lf_meta_column, lf_meta_of_row

logger = logging.getLogger(__name__)

OverlengthPolicy = Literal["drop", "truncate_turns", "keep"]
POLICIES: tuple[str, ...] = ("drop", "truncate_turns", "keep")


def turns_that_fit(pair_lengths: list[tuple[int, int]] | list[list[int]], cutoff_len: int) -> tuple[int, int]:
    """(number of whole prompt/response pairs that fit in ``cutoff_len``, their token count)."""
    total = 0
    for count, (source, target) in enumerate(pair_lengths):
        if total + source + target > cutoff_len:
            return count, total
        total += source + target
    return len(pair_lengths), total


def _reject(row: dict[str, Any], index: int, reason: str, detail: str) -> dict[str, Any]:
    meta = lf_meta_of_row(row)
    uid = row.get("_uid") or f"row#{index}"
    return Reject(
        trial_name=meta.get("trial_name") or str(uid).split("#", 1)[0],
        instance_id=row.get("_instance_id") or meta.get("instance_id"),
        trajectory=uid,
        stage="overlength",
        reason=reason,
        detail=detail,
    ).model_dump()


def _with_truncation_note(row: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
    """Record the cut in ``_meta.extra.overlength`` (TrajectoryMeta.extra, so the column stays parseable)."""
    raw = row.get("_meta")
    if not isinstance(raw, str | dict):
        return row
    meta = dict(lf_meta_of_row(row))  # a copy: the input row (and a dict _meta in it) stays untouched
    extra = dict(meta.get("extra") or {})
    extra["overlength"] = note
    meta["extra"] = extra
    updated = dict(row)
    updated["_meta"] = meta if isinstance(raw, dict) else lf_meta_column(meta)
    return updated


@dataclass(frozen=True)
class RowLayout:
    """Where a row keeps its turns (from the dataset_info.json entry): needed to cut whole turns."""

    formatting: str = "sharegpt"
    messages: str = "conversations"
    role_tag: str = "from"
    system_tag: str | None = "system"

    @classmethod
    def of(cls, entry: Mapping[str, Any] | None) -> RowLayout:
        if not entry:
            return cls()
        columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
        formatting = entry.get("formatting", "alpaca")
        if formatting == "openai":  # LLaMA-Factory's defaults for openai are role/content tags
            return cls(
                formatting,
                columns.get("messages") or "messages",
                tags.get("role_tag", "role"),
                tags.get("system_tag", "system"),
            )
        return cls(
            formatting,
            columns.get("messages") or "conversations",
            tags.get("role_tag", "from"),
            tags.get("system_tag", "system"),
        )

    def cut(self, row: dict[str, Any], pairs: int) -> dict[str, Any] | None:
        """The row with only its first ``pairs`` prompt/response pairs; None where turns do not map 1:1."""
        if self.formatting != "sharegpt":
            return None  # openai rows merge tool messages into one turn: no safe 1:1 cut
        turns = row.get(self.messages) or []
        lead = 1 if turns and self.system_tag and turns[0].get(self.role_tag) == self.system_tag else 0
        return {**row, self.messages: turns[: lead + 2 * pairs]}


def _decide(
    row: dict[str, Any], index: int, sample: dict[str, Any], policy: str, cutoff_len: int, layout: RowLayout
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """(kept row or None, reject or None, decision) for one sample."""
    uid = row.get("_uid") or f"row#{index}"
    decision: dict[str, Any] = {
        "index": index,
        "uid": uid,
        "policy": policy,
        "total_tokens": sample.get("total_tokens"),
    }
    if sample.get("lf_status", "ok") != "ok" or sample.get("total_tokens") is None:
        decision.update(action="not_counted", reason=sample.get("lf_status", "no_token_count"))
        return row, None, decision
    total = int(sample["total_tokens"])
    if total <= cutoff_len:
        decision["action"] = "kept"
        return row, None, decision
    if policy == "keep":
        decision.update(
            action="kept_over_cutoff",
            tokens_lf_will_cut=sample.get("tokens_cut_by_lf", total - cutoff_len),
            supervised_tokens_lf_will_cut=sample.get("supervised_tokens_cut_by_lf"),
            loses_final_eos=sample.get("loses_final_eos"),
        )
        return row, None, decision
    if policy == "drop":
        decision.update(action="dropped", tokens_removed=total)
        return (
            None,
            _reject(row, index, "over_cutoff_len", f"{total} tokens > training.cutoff_len {cutoff_len}"),
            decision,
        )
    pairs = sample.get("pair_lengths") or []
    fit, fit_tokens = turns_that_fit(pairs, cutoff_len)
    if fit == 0:
        decision.update(action="dropped", tokens_removed=total)
        detail = (
            f"{total} tokens > training.cutoff_len {cutoff_len} and the first assistant turn alone needs "
            f"{sum(pairs[0]) if pairs else total} tokens"
        )
        return None, _reject(row, index, "first_turn_over_cutoff_len", detail), decision
    cut = layout.cut(row, fit)
    if cut is None:
        decision.update(action="dropped", tokens_removed=total)
        detail = (
            f"{total} tokens > training.cutoff_len {cutoff_len}; truncate_turns cannot cut "
            f"formatting={layout.formatting!r} rows turn by turn, so the row is dropped"
        )
        return None, _reject(row, index, "over_cutoff_len_uncuttable", detail), decision
    removed_turns = len(pairs) - fit
    note = {
        "policy": "truncate_turns",
        "cutoff_len": cutoff_len,
        "tokens_before": total,
        "tokens_after": fit_tokens,
        "assistant_turns_removed": removed_turns,
    }
    truncated = _with_truncation_note(cut, note)
    decision.update(
        action="truncated",
        tokens_after=fit_tokens,
        tokens_removed=total - fit_tokens,
        assistant_turns_removed=removed_turns,
    )
    return truncated, None, decision


@dataclass
class OverlengthPlan:
    """What the policy does to each row: the indices kept (in order), the truncated rows that replace their
    originals, the reject lines of dropped rows and one decision per input row."""

    keep: list[int]
    replacements: dict[int, dict[str, Any]]
    rejects: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    # token_stats of each truncated row (by input index) when it was re-counted (tokenizer + template given)
    truncated_samples: dict[int, dict[str, Any]] = field(default_factory=dict)


def plan_overlength_policy(
    rows: Sequence[dict[str, Any]],
    per_sample_tokens: list[dict[str, Any]],
    *,
    policy: str,
    cutoff_len: int,
    tokenizer: Any | None = None,
    template: str | None = None,
    lf_options: dict[str, Any] | None = None,
    dataset_entry: Mapping[str, Any] | None = None,
    ids_sink: Any = None,
) -> OverlengthPlan:
    """Decide ``policy`` for rows with their ``token_stats`` per-sample numbers (same order), holding only the
    truncated rows: the rows may be spooled on disk (``sft.core.spool``) and far larger than memory.

    With ``tokenizer`` and ``template``, every truncated row is re-counted and must fit (a guard against a
    counting bug, not a normal path). ``dataset_entry`` (the dataset_info.json entry) says where the turns
    are; default: render_lf_row's rows. ``ids_sink(index, input_ids, labels)`` receives LLaMA-Factory's ids of
    each truncated row (by input index) from that re-count (``conversion.pretokenize``).
    """
    layout = RowLayout.of(dataset_entry)
    if policy not in POLICIES:
        raise ValueError(
            f"conversion.overlength: {policy!r} is not a policy; use one of {' | '.join(POLICIES)}"
        )
    if len(rows) != len(per_sample_tokens):
        raise ValueError(
            f"apply_overlength_policy: {len(rows)} rows but {len(per_sample_tokens)} token records; "
            "pass the per_sample list token_stats returned for exactly these rows"
        )
    plan = OverlengthPlan(keep=[], replacements={}, rejects=[], decisions=[])
    for index, (row, sample) in enumerate(zip(rows, per_sample_tokens, strict=True)):
        new_row, reject, decision = _decide(row, index, sample, policy, cutoff_len, layout)
        if new_row is not None:
            plan.keep.append(index)
            if new_row is not row:
                plan.replacements[index] = new_row
        if reject is not None:
            plan.rejects.append(reject)
        plan.decisions.append(decision)
    if tokenizer is not None and template is not None:
        indices = list(plan.replacements)
        sink = (
            None
            if ids_sink is None
            else (lambda position, ids, labels: ids_sink(indices[position], ids, labels))
        )
        samples = _verify_truncated(
            list(plan.replacements.values()),
            tokenizer,
            template=template,
            cutoff_len=cutoff_len,
            lf_options=lf_options,
            dataset_entry=dataset_entry,
            ids_sink=sink,
        )
        plan.truncated_samples = dict(zip(plan.replacements, samples, strict=True))
    return plan


def apply_overlength_policy(
    rows: list[dict[str, Any]], per_sample_tokens: list[dict[str, Any]], **options: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """``plan_overlength_policy`` (same keyword options) for rows in a list: returns (kept rows, reject dicts,
    one decision per row)."""
    plan = plan_overlength_policy(rows, per_sample_tokens, **options)
    kept = [plan.replacements.get(index, rows[index]) for index in plan.keep]
    return kept, plan.rejects, plan.decisions


def _verify_truncated(
    truncated: list[dict[str, Any]],
    tokenizer: Any,
    *,
    template: str,
    cutoff_len: int,
    lf_options: dict[str, Any] | None,
    dataset_entry: Mapping[str, Any] | None,
    ids_sink: Any = None,
) -> list[dict[str, Any]]:
    """The truncated rows' token numbers; each must fit."""
    from sft.report.tokens import token_stats

    if not truncated:
        return []
    per_sample, _ = token_stats(
        truncated,
        tokenizer,
        cutoff_len=cutoff_len,
        template=template,
        lf_options=lf_options,
        dataset_entry=dataset_entry,
        ids_sink=ids_sink,
        purpose="truncated_recount",
    )
    for sample in per_sample:
        if sample.get("total_tokens") is not None and sample["total_tokens"] > cutoff_len:
            raise AssertionError(
                f"truncate_turns left {sample['uid']} at {sample['total_tokens']} tokens "
                f"> cutoff_len {cutoff_len}: a token-counting bug, please report it"
            )
    return per_sample


def overlength_summary(decisions: list[dict[str, Any]], *, policy: str, cutoff_len: int) -> dict[str, Any]:
    """The funnel entry: one count per action plus the tokens each action removes or leaves to LLaMA-Factory."""
    actions = Counter(d["action"] for d in decisions)
    return {
        "policy": policy,
        "cutoff_len": cutoff_len,
        "samples": len(decisions),
        "actions": dict(sorted(actions.items())),
        "over_cutoff": sum(actions[a] for a in ("dropped", "truncated", "kept_over_cutoff")),
        "dropped": actions["dropped"],
        "truncated": actions["truncated"],
        "kept_over_cutoff": actions["kept_over_cutoff"],
        "not_counted": actions["not_counted"],
        "tokens_removed": sum(d.get("tokens_removed", 0) for d in decisions),
        "assistant_turns_removed": sum(d.get("assistant_turns_removed", 0) for d in decisions),
        "tokens_lf_will_cut": sum(d.get("tokens_lf_will_cut", 0) or 0 for d in decisions),
        "supervised_tokens_lf_will_cut": sum(
            d.get("supervised_tokens_lf_will_cut", 0) or 0 for d in decisions
        ),
        "samples_losing_final_eos": sum(1 for d in decisions if d.get("loses_final_eos")),
    }
