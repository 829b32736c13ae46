"""Model-turn accounting: how many of the assistant turns the model produced end up as trainable turns.

Trials and trajectories say little about faithfulness (one trajectory may keep 2 of 60 turns); this module
counts **model turns** per agent (``<scaffold>/<main|subagent>``):

* **source**: the model turns in the trial's files. A LiteLLM proxy log: every logged call that succeeded
  is one model response (its copies re-sent in later requests' history are the same turn, not new ones;
  ``success: false`` calls returned nothing and are not turns). ATIF: every ``source == "agent"`` step the
  model produced (``is_copied_context`` steps and ``llm_call_count == 0`` dispatches are copies or
  deterministic, not new turns). See ``sft.sources.harbor.turns`` for the counting.
* **output**: the distinct trainable assistant turns of the rows written. A turn is identified by its
  conversation prefix (``turn_keys``: a hash of every message up to and including it, reasoning excluded,
  since a scaffold may echo it back or not), so the same turn in two rows of a trial (a shared prefix,
  copied context) is one output turn.
* **lost**: every other source turn, with the stage and reason that removed it: ``extract:*`` (never part
  of a conversation), ``repair:*`` (removed by a repair, ``meta.extra["dropped_model_turns"]``),
  ``render:after_untrainable_turn`` (the LF renderer cuts a row before its first untrainable turn), and the
  ``<stage>:<reason>`` of the reject line of the trial or trajectory that held it (a rejected trajectory
  loses the turns it still held with that reason, a turn a repair had already removed keeps the repair's
  reason; a turn held by several trajectories of a trial is lost with the reason of the first, and is
  output when any of them is written). Conversations refused while the files are read (ATIF
  ``rebuilt_atif``, ``ambiguous_results_without_id``, ``unanswered_tool_call``: ``RefusedConversation``)
  are trajectories with that fate from the start, so their turns are lost as ``parse:<reason>``.
* **copies are no turns**: ATIF ``is_copied_context`` steps repeat turns of another conversation; they are
  not source turns, and ``copied_context: drop`` removes them without a loss (repair
  ``dropped_copied_context``); with ``context`` a copy has the original's key (same history), so it is
  the same output turn.
* **unsourced**: output turns that the source count does not hold (an assistant turn in a request's history
  whose call is not in the log). Expected 0; it keeps the invariant exact when it is not:
  ``source + unsourced == output + sum(lost)``, per agent and in total (checked on every report).

Trials filtered on ``result.json`` alone (outcome, repo exclusion) are never parsed, so their turns are not
counted: they appear as ``trials_not_counted`` by reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from sft.core.canonical import Message, Trajectory, first_untrainable_assistant, issue_code
from sft.core.text import replace_lone_surrogates

# Counters the extraction adds (``TrialExtraction.counters``): model turns found in the source files.
SOURCE_LITELLM = "model_turns_source_litellm"
SOURCE_ATIF = {"main": "model_turns_source_atif_main", "subagent": "model_turns_source_atif_subagent"}
SIDE_CALLS = "side_calls_dropped"  # adapters' counter of side calls (e.g. open-code title generator)

REASON_SIDE_CALL = "extract:side_call"
REASON_SUBAGENTS_SKIPPED = "extract:subagents_skipped"
REASON_NOT_IN_TRAJECTORY = "extract:not_in_any_trajectory"
REASON_AFTER_UNTRAINABLE = "render:after_untrainable_turn"


def agent_label(scaffold: str, agent_type: str) -> str:
    """``claude-code/main``, ``claude-code/subagent``."""
    return f"{scaffold}/{agent_type}"


def _message_bytes(message: Message) -> bytes:
    calls = [[c.id, c.name, c.arguments] for c in message.tool_calls]
    value = [message.role, message.content, calls, message.tool_call_id]
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):  # lone surrogates (repaired later) or odd argument values
        return repr(value).encode("utf-8", "surrogatepass")


def turn_keys(traj: Trajectory | Sequence[Message]) -> tuple[list[str], list[str]]:
    """(keys of the trainable assistant turns a rendered row holds, keys of those the renderer cuts).

    A key hashes the conversation up to and including the turn, so equal turns with equal history in two
    trajectories of a trial have the same key. The renderer cuts a row before its first untrainable
    assistant turn (``sft.rules.render``): trainable turns after it are not in the row.
    """
    messages = traj.messages if isinstance(traj, Trajectory) else list(traj)
    cut_at = first_untrainable_assistant(messages)
    kept: list[str] = []
    cut: list[str] = []
    digest = hashlib.blake2b(digest_size=8)
    for index, message in enumerate(messages):
        digest.update(_message_bytes(message))
        digest.update(b"\x00")
        if message.role == "assistant" and message.trainable:
            (kept if cut_at is None or index < cut_at else cut).append(digest.copy().hexdigest())
    return kept, cut


def _trainable_assistants(traj: Trajectory) -> list[Message]:
    return [m for m in traj.messages if m.role == "assistant" and m.trainable]


# ------------------------------------------------------------------------------------------------- per trial


@dataclass(frozen=True)
class RefusedConversation:
    """A conversation a reader recovered but refused (e.g. ATIF ``rebuilt_atif``, ``unanswered_tool_call``):
    its model turns are lost with the reason of its reject line, not as ``extract:not_in_any_trajectory``."""

    uid: str  # the reject line's ``trajectory`` (``<trial>#<label>``)
    scaffold: str
    agent_type: str
    reason: str  # "<stage>:<reason>" of the reject line
    messages: Sequence[Message]


class TrajectoryTurns(BaseModel):
    """One trajectory's model turns and what became of them."""

    model_config = ConfigDict(extra="forbid")

    uid: str
    agent: str
    keys: list[str] = Field(default_factory=list)  # turns the written row holds (in order)
    lost: dict[str, str] = Field(default_factory=dict)  # turn key -> why this trajectory does not hold it
    fate: str | None = None  # None: written; else "<stage>:<reason>" of its reject line
    repairs: dict[str, int] = Field(default_factory=dict)  # repair kind -> count (extraction + validate)

    def all_keys(self) -> list[str]:
        return [*self.keys, *self.lost]


class TrialTurns(BaseModel):
    """A trial's model turns: the source count and the extraction's losses per agent, and its trajectories."""

    model_config = ConfigDict(extra="forbid")

    source: dict[str, int] = Field(default_factory=dict)
    lost: dict[str, dict[str, int]] = Field(
        default_factory=dict
    )  # agent -> reason -> turns (before validation)
    unsourced: dict[str, int] = Field(default_factory=dict)
    trajectories: list[TrajectoryTurns] = Field(default_factory=list)  # TrialExtraction.trajectories order


def _source_by_agent(counters: Mapping[str, int], scaffold: str) -> Counter[str]:
    """Source turns per agent as far as the files say: ATIF files are main or sub-agent files; a proxy
    log's calls are split by the conversations they end up in (``account_extraction``), here all main."""
    source: Counter[str] = Counter()
    source[agent_label(scaffold, "main")] += counters.get(SOURCE_LITELLM, 0)
    for agent_type, key in SOURCE_ATIF.items():
        source[agent_label(scaffold, agent_type)] += counters.get(key, 0)
    return source


def account_extraction(
    trajectories: Sequence[Trajectory],
    skipped: Sequence[Trajectory],
    counters: Mapping[str, int],
    scaffold: str,
    *,
    include_subagents: bool = True,
    refused: Sequence[RefusedConversation] = (),
) -> TrialTurns:
    """The turns of an extracted trial: ``trajectories`` are kept (uids final), ``skipped`` were dropped by
    ``include_subagents: false`` (with it, the ATIF reader does not even read sub-agent files: their turns are
    skipped too), ``refused`` were refused while reading (their turns are lost with their reject's reason);
    ``counters`` hold the source counts (``SOURCE_*``) and side calls.

    A turn belongs to the first trajectory that holds it (main ones come first, refused ones last). What the
    source holds beyond the trajectories' turns is lost at extraction: side calls, skipped sub-agents, turns
    removed by an extraction repair (``dropped_model_turns``), the rest ``extract:not_in_any_trajectory`` (a
    retried call's discarded answer, a call no kept conversation continues).
    """
    result = TrialTurns()
    owners: dict[str, str] = {}
    owned: Counter[str] = Counter()
    owned_litellm_sub: Counter[str] = Counter()
    lost: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for traj in trajectories:
        kept, cut = turn_keys(traj)
        record = TrajectoryTurns(
            uid=traj.uid,
            agent=agent_label(traj.meta.scaffold, traj.meta.agent_type),
            keys=kept,
            lost=dict.fromkeys(cut, REASON_AFTER_UNTRAINABLE),
        )
        record.repairs = {str(k): int(v) for k, v in (traj.meta.extra.get("repairs") or {}).items()}
        result.trajectories.append(record)
        claimed = _claim(owners, record.all_keys(), record.agent)
        owned[record.agent] += claimed
        if traj.meta.source_kind == "litellm" and traj.meta.agent_type != "main":
            owned_litellm_sub[record.agent] += claimed
    for conversation in refused:  # a trajectory rejected from the start: every turn it holds has its fate
        kept, cut = turn_keys(conversation.messages)
        record = TrajectoryTurns(
            uid=conversation.uid,
            agent=agent_label(conversation.scaffold, conversation.agent_type),
            keys=[*kept, *cut],
            fate=conversation.reason,
        )
        result.trajectories.append(record)
        owned[record.agent] += _claim(owners, record.keys, record.agent)
    for traj in skipped:
        agent = agent_label(traj.meta.scaffold, traj.meta.agent_type)
        claimed = _claim(owners, [key for keys in turn_keys(traj) for key in keys], agent)
        if claimed:
            lost[agent][REASON_SUBAGENTS_SKIPPED] += claimed
        if traj.meta.source_kind == "litellm":
            owned_litellm_sub[agent] += claimed
    for traj in [*trajectories, *skipped]:
        agent = agent_label(traj.meta.scaffold, traj.meta.agent_type)
        for reason, count in (traj.meta.extra.get("dropped_model_turns") or {}).items():
            lost[agent][f"repair:{reason}"] += int(count)
    # The trajectories' own scaffold name labels the source too (an adapter may name its rows another way).
    scaffold = next((t.meta.scaffold for t in [*trajectories, *skipped]), None) or next(
        (c.scaffold for c in refused), scaffold
    )
    source = _source_by_agent(counters, scaffold)
    # A proxy log's calls are not labelled main/sub-agent: the sub-agent conversations' turns move over.
    main = agent_label(scaffold, "main")
    for agent, count in owned_litellm_sub.items():
        source[agent] += count
        source[main] -= count
    result.unsourced = _settle_remainders(
        source,
        owned,
        lost,
        main=main,
        side_calls=counters.get(SIDE_CALLS, 0),
        include_subagents=include_subagents,
    )
    result.source = {agent: n for agent, n in sorted(source.items()) if n}
    result.lost = {agent: dict(sorted((+c).items())) for agent, c in sorted(lost.items()) if +c}
    return result


def _claim(owners: dict[str, str], keys: Iterable[str], agent: str) -> int:
    """Give ``agent`` the turns no earlier trajectory holds; how many it got (a turn is counted once)."""
    claimed = 0
    for key in keys:
        if key not in owners:
            owners[key] = agent
            claimed += 1
    return claimed


def _settle_remainders(
    source: Counter[str],
    owned: Counter[str],
    lost: defaultdict[str, Counter[str]],
    *,
    main: str,
    side_calls: int,
    include_subagents: bool,
) -> dict[str, int]:
    """Source turns no trajectory holds are lost at extraction (side calls first, then skipped sub-agents,
    else ``extract:not_in_any_trajectory``); more held than the source has is returned as unsourced."""
    unsourced: dict[str, int] = {}
    for agent in sorted(set(source) | set(owned) | set(lost)):
        remainder = source[agent] - owned[agent] - sum(lost[agent].values())
        if remainder < 0:
            unsourced[agent] = -remainder
            continue
        if agent == main and side_calls:
            side = min(side_calls, remainder)
            lost[agent][REASON_SIDE_CALL] += side
            remainder -= side
        if remainder and not include_subagents and agent.endswith("/subagent"):
            lost[agent][REASON_SUBAGENTS_SKIPPED] += remainder
        elif remainder:
            lost[agent][REASON_NOT_IN_TRAJECTORY] += remainder
    return unsourced


def account_rejected_trial(counters: Mapping[str, int], scaffold: str, stage: str, reason: str) -> TrialTurns:
    """A trial rejected as a whole after its files were read: every source turn is lost with its reason."""
    source = _source_by_agent(counters, scaffold)
    return TrialTurns(
        source={a: n for a, n in sorted(source.items()) if n},
        lost={a: {f"{stage}:{reason}": n} for a, n in sorted(source.items()) if n},
    )


def _same_turn(before: Message, after: Message) -> bool:
    """``after`` is ``before`` as validation left it (surrogates fixed, failed calls removed)."""
    if replace_lone_surrogates(before.content)[0] != after.content:
        return False
    names = Counter(c.name for c in before.tool_calls)
    names.subtract(c.name for c in after.tool_calls)
    return min(names.values(), default=0) >= 0


def after_validation(
    record: TrajectoryTurns, before: Trajectory, after: Trajectory | None, issues: list[str]
) -> None:
    """Update a trajectory's turns after ``repair_and_validate``: a reject takes all its turns with the first
    issue's code; turns a repair removed (``drop_tool_errors``, or one that records ``dropped_model_turns``)
    are lost with its reason; the repaired copy's ``meta.extra["repairs"]`` (extraction's and validation's
    repairs together) becomes the trajectory's repair counts."""
    if after is None:
        record.fate = f"validate:{issue_code(issues[0]) if issues else 'invalid_trajectory'}"
        return
    record.repairs = dict(sorted((after.meta.extra.get("repairs") or {}).items()))
    old, new = _trainable_assistants(before), _trainable_assistants(after)
    if len(new) >= len(old) or not record.keys:
        return
    reasons, default = _removal_reasons(before, after, issues)
    # The rendered turns are a prefix of the trainable ones (keys first, cut keys after): align greedily.
    kept: list[str] = []
    position = 0
    for key, message in zip(record.keys, old, strict=False):
        if position < len(new) and _same_turn(message, new[position]):
            kept.append(key)
            position += 1
        else:
            record.lost[key] = reasons.pop(0) if reasons else default
    record.keys = kept


def _removal_reasons(before: Trajectory, after: Trajectory, issues: list[str]) -> tuple[list[str], str]:
    """Why validation removed turns: first the ``dropped_model_turns`` a repair recorded on the trajectory
    there, then ``drop_tool_errors`` (its note counts calls, not turns), else ``repair:validation``."""
    added: Counter[str] = Counter(
        {str(k): int(v) for k, v in (after.meta.extra.get("dropped_model_turns") or {}).items()}
    )
    added.subtract({str(k): int(v) for k, v in (before.meta.extra.get("dropped_model_turns") or {}).items()})
    reasons = [f"repair:{reason}" for reason, n in sorted(added.items()) for _ in range(max(0, n))]
    dropped_errors = any(issue_code(issue) == "repair_dropped_tool_errors" for issue in issues)
    return reasons, "repair:dropped_tool_errors" if dropped_errors else "repair:validation"


# ------------------------------------------------------------------------------------------------- job-wide


class TurnLedger:
    """Every parsed trial's turns, the fate of its trajectories, and the report (``model_turns``, ``repairs``).

    Kept by the engine and handed on in ``ConversionResult`` so the over-length policy, which drops or cuts
    rows after conversion, can account for its turns too (``apply_overlength``).
    """

    def __init__(self) -> None:
        self.trials: dict[str, TrialTurns] = {}
        self.by_uid: dict[str, TrajectoryTurns] = {}
        self.not_counted: Counter[str] = Counter()  # "<stage>:<reason>" -> trials whose files were not read

    def add(
        self,
        trial_name: str,
        turns: Mapping[str, Any] | TrialTurns | None,
        rejects: Sequence[Mapping[str, Any]],
    ) -> None:
        """One trial's outcome; ``turns`` None: not parsed (filtered on result.json), counted as a trial."""
        if turns is None:
            trial_level = [r for r in rejects if not r.get("trajectory")]
            first = trial_level[0] if trial_level else (rejects[0] if rejects else None)
            self.not_counted[f"{first['stage']}:{first['reason']}" if first else "unknown"] += 1
            return
        parsed = turns if isinstance(turns, TrialTurns) else TrialTurns.model_validate(turns)
        self.trials[trial_name] = parsed
        for record in parsed.trajectories:
            self.by_uid[record.uid] = record

    def set_fates(self, rejects: Iterable[Mapping[str, Any]]) -> None:
        """Trajectory reject lines (``trajectory`` = uid) decide the fate of trajectories not yet rejected."""
        for reject in rejects:
            record = self.by_uid.get(reject.get("trajectory") or "")
            if record is not None and record.fate is None:
                record.fate = f"{reject['stage']}:{reject['reason']}"

    def truncate(self, uid: str, turns_removed: int, reason: str) -> None:
        """A written row lost its last ``turns_removed`` assistant turns (over-length ``truncate_turns``)."""
        record = self.by_uid.get(uid)
        if record is None or turns_removed <= 0:
            return
        for key in record.keys[len(record.keys) - turns_removed :]:
            record.lost[key] = reason
        record.keys = record.keys[: max(0, len(record.keys) - turns_removed)]

    def report(self) -> dict[str, Any]:
        """``{"model_turns": {...}, "repairs": {...}}`` for the conversion report; checks the invariant."""
        per_agent: dict[str, dict[str, Any]] = {}

        def agent_entry(agent: str) -> dict[str, Any]:
            return per_agent.setdefault(agent, {"source": 0, "output": 0, "lost": Counter(), "unsourced": 0})

        repairs: Counter[str] = Counter()
        for trial in self.trials.values():
            for agent, count in trial.source.items():
                agent_entry(agent)["source"] += count
            for agent, reasons in trial.lost.items():
                agent_entry(agent)["lost"].update(reasons)
            for agent, count in trial.unsourced.items():
                agent_entry(agent)["unsourced"] += count
            owner, written, why = _turn_fates(trial, repairs)
            for key, agent in owner.items():
                entry = agent_entry(agent)
                if key in written:
                    entry["output"] += 1
                else:
                    entry["lost"][why[key]] += 1
        total_lost: Counter[str] = Counter()
        for entry in per_agent.values():
            total_lost.update(entry["lost"])
        out_agents = {
            agent: {
                "source": e["source"],
                "output": e["output"],
                "lost": dict(sorted(e["lost"].items())),
                "unsourced": e["unsourced"],
            }
            for agent, e in sorted(per_agent.items())
        }
        totals = {
            "source": sum(e["source"] for e in out_agents.values()),
            "output": sum(e["output"] for e in out_agents.values()),
            "lost": dict(sorted(total_lost.items())),
            "unsourced": sum(e["unsourced"] for e in out_agents.values()),
        }
        model_turns = {
            **totals,
            "per_agent": out_agents,
            "trials_counted": len(self.trials),
            "trials_not_counted": dict(sorted(self.not_counted.items())),
        }
        check_invariant(model_turns)
        return {"model_turns": model_turns, "repairs": dict(sorted(repairs.items()))}


def _turn_fates(trial: TrialTurns, repairs: Counter[str]) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """Per turn key of one trial: its agent, whether a written row holds it, and else why it was lost.

    Adds the repairs of the written trajectories to ``repairs``.
    """
    owner: dict[str, str] = {}
    written: set[str] = set()
    why: dict[str, str] = {}
    for record in trial.trajectories:
        for key in record.all_keys():
            owner.setdefault(key, record.agent)
        if record.fate is None:
            written.update(record.keys)
            repairs.update(record.repairs)
            for key, reason in record.lost.items():
                why.setdefault(key, reason)
        else:  # a rejected trajectory loses the turns it held with its reject's reason; those a
            # repair or the renderer had already removed keep that cause (it holds either way)
            for key in record.keys:
                why.setdefault(key, record.fate)
            for key, reason in record.lost.items():
                why.setdefault(key, reason)
    return owner, written, why


def check_invariant(model_turns: Mapping[str, Any]) -> None:
    """``source + unsourced == output + sum(lost)`` in total and per agent; a gap is a counting bug."""
    entries = [("total", model_turns), *model_turns.get("per_agent", {}).items()]
    for name, entry in entries:
        left = entry["source"] + entry.get("unsourced", 0)
        right = entry["output"] + sum(entry["lost"].values())
        if left != right:
            raise AssertionError(
                f"model-turn accounting of {name} does not add up: source {entry['source']} + "
                f"unsourced {entry.get('unsourced', 0)} != output {entry['output']} + lost "
                f"{sum(entry['lost'].values())} ({entry['lost']})"
            )


def kept_share(model_turns: Mapping[str, Any]) -> float | None:
    """output / source, or None without source turns."""
    source = model_turns.get("source") or 0
    return model_turns.get("output", 0) / source if source else None


def _lost_text(lost: Mapping[str, int] | None) -> str:
    """``reason n, ...``, most turns first; "" when nothing was lost."""
    return ", ".join(
        f"{reason} {n}" for reason, n in sorted((lost or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    )


def summary_line(model_turns: Mapping[str, Any] | None) -> str:
    """``model turns: kept X of Y (Z%), lost: reason n, ...`` for logs and the demo command."""
    if not model_turns:
        return "model turns: not counted (not a Harbor job)"
    share = kept_share(model_turns)
    pct = f"{100 * share:.1f}%" if share is not None else "n/a"
    lost_text = _lost_text(model_turns.get("lost"))
    line = f"model turns: kept {model_turns.get('output', 0)} of {model_turns.get('source', 0)} ({pct}), lost: {lost_text or 'none'}"
    if model_turns.get("unsourced"):
        line += f"; {model_turns['unsourced']} output turn(s) without a logged source call"
    not_counted = sum((model_turns.get("trials_not_counted") or {}).values())
    if not_counted:
        line += f"; {not_counted} filtered trial(s) not counted"
    return line


def agent_lines(model_turns: Mapping[str, Any] | None) -> list[str]:
    """``  <agent>: kept X of Y, lost: reason n, ...`` per agent (the convert log and the demo command)."""
    lines = []
    for agent, entry in sorted(((model_turns or {}).get("per_agent") or {}).items()):
        lost_text = _lost_text(entry.get("lost"))
        line = f"  {agent}: kept {entry.get('output', 0)} of {entry.get('source', 0)}, lost: {lost_text or 'none'}"
        if entry.get("unsourced"):
            line += f"; {entry['unsourced']} unsourced"
        lines.append(line)
    return lines


def apply_overlength(
    ledger: TurnLedger | None, decisions: Sequence[Mapping[str, Any]], rejects: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The over-length policy's drops (reject lines) and cuts (``assistant_turns_removed``), then the report."""
    if ledger is None:
        return None
    ledger.set_fates(rejects)
    for decision in decisions:
        if decision.get("action") == "truncated":
            ledger.truncate(
                str(decision.get("uid")),
                int(decision.get("assistant_turns_removed") or 0),
                "overlength:truncated",
            )
    return ledger.report()
