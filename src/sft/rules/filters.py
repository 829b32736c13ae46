"""Which trials and trajectories go into the dataset: outcome, eval-leak exclusion, sampling, caps, dedup.

All pure and deterministic: the same inputs (and seed) give the same selection whatever order the trials
were discovered in, so a rerun reproduces a dataset and a report can name exactly what was left out.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from sft.core.canonical import Trajectory

# --------------------------------------------------------------------------------------------------
# outcome
# --------------------------------------------------------------------------------------------------


def outcome_keep(
    reward: float | None,
    exception_type: str | None,
    *,
    instance_status: str,
    resolved_threshold: float,
    keep_exception_trials: bool,
) -> tuple[bool, str]:
    """Keep a trial by its verifier reward and exception; returns ``(keep, reason code)``.

    - an exception with ``keep_exception_trials=False`` -> ``exception`` (a timeout can still carry a
      valid reward, which is why keeping them is the default);
    - no reward (None / NaN): kept only for ``instance_status="all"``, else ``no_reward``;
    - ``resolved`` means ``reward >= resolved_threshold``; ``instance_status`` keeps resolved,
      unresolved or all trials (reasons ``not_resolved`` / ``resolved``).
    """
    if instance_status not in ("resolved", "unresolved", "all"):
        raise ValueError(
            f"conversion.instance_status must be resolved | unresolved | all, got {instance_status!r}"
        )
    if exception_type and not keep_exception_trials:
        return False, "exception"
    if reward is None or (isinstance(reward, float) and math.isnan(reward)):
        return (True, "kept") if instance_status == "all" else (False, "no_reward")
    resolved = reward >= resolved_threshold
    if instance_status == "resolved" and not resolved:
        return False, "not_resolved"
    if instance_status == "unresolved" and resolved:
        return False, "resolved"
    return True, "kept"


# --------------------------------------------------------------------------------------------------
# eval-leak exclusion
# --------------------------------------------------------------------------------------------------

_REPO_LINE = re.compile(r"^[^/\s]+/[^/\s]+$")
_PUNCT = "-_."


def _fuzzy(part: str) -> str:
    """Escape a repo-name part; '-', '_' and '.' each match any one of the three (forks/renames)."""
    return "".join("[-_.]" if ch in _PUNCT else re.escape(ch) for ch in part)


def repo_pattern(repo: str) -> str:
    """``owner/name`` -> ``owner__name-\\d+(__\\w+)?`` (the reference's rule, metacharacters escaped).

    Also SWE-bench Pro's ids, ``instance_owner__name-<commit sha>[-v<sha>|-vnan]``: the reference's rule misses
    them, so the Pro repositories in the list would otherwise exclude nothing.
    """
    owner, name = repo.split("/", 1)
    number_or_commit = r"(?:\d+|[0-9a-f]{7,40}(?:-v\w+)?)"  # Pro suffixes: -v<sha> or -vnan
    return rf"(?:instance_)?{_fuzzy(owner)}__{_fuzzy(name)}-{number_or_commit}(?:__\w+)?"


@dataclass(frozen=True)
class ExclusionList:
    """Repositories whose instances must never be trained on (SWE-bench Verified / Pro / Multilingual)."""

    source: str
    repos: tuple[str, ...]
    sha256: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def entries(self) -> int:
        return len(self.repos)

    @classmethod
    def empty(cls) -> ExclusionList:
        """No exclusion (``conversion.exclude_repos_file: ""``)."""
        return cls(source="", repos=(), sha256="")

    @classmethod
    def load(cls, path: str | Path) -> ExclusionList:
        """Read ``owner/repo`` lines; ``#`` comment lines and blank lines are ignored."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(
                f"conversion.exclude_repos_file: {file} does not exist. Create it (one owner/repo per line, "
                'e.g. with scripts/generate_excluded_repos.py) or set exclude_repos_file: "" to disable'
            )
        data = file.read_bytes()
        return cls.from_text(data.decode("utf-8"), source=str(file), sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_text(cls, text: str, *, source: str = "<memory>", sha256: str | None = None) -> ExclusionList:
        repos: list[str] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not _REPO_LINE.match(line):
                raise ValueError(
                    f"{source}:{number}: {line!r} is not 'owner/repo' (one repository per line, "
                    "'#' starts a comment line)"
                )
            repos.append(line)
        digest = sha256 if sha256 is not None else hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(source=source, repos=tuple(dict.fromkeys(repos)), sha256=digest)

    def __post_init__(self) -> None:
        # One alternation, one named group per entry: a single regex search per instance id.
        parts = [f"(?P<e{i}>{repo_pattern(repo)})" for i, repo in enumerate(self.repos)]
        regex = re.compile(r"^(?:" + "|".join(parts) + r")$", re.IGNORECASE) if parts else None
        object.__setattr__(self, "_regex", regex)

    def match(self, instance_id: str) -> str | None:
        """The excluded ``owner/repo`` this instance belongs to, or None."""
        regex = self._regex
        if regex is None:
            return None
        found = regex.match(instance_id.strip())
        if found is None or found.lastgroup is None:
            return None
        return self.repos[int(found.lastgroup[1:])]


# --------------------------------------------------------------------------------------------------
# instance selection, caps, dedup
# --------------------------------------------------------------------------------------------------


def _largest_remainder(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` proportionally to ``sizes``; leftover units go to the largest fractions (ties: name)."""
    total = sum(sizes.values())
    exact = {key: n * size / total for key, size in sizes.items()}
    quota = {key: math.floor(value) for key, value in exact.items()}
    leftover = n - sum(quota.values())
    by_fraction = sorted(sizes, key=lambda key: (-(exact[key] - quota[key]), key))
    for key in by_fraction[:leftover]:
        quota[key] += 1
    return quota


def select_instances(
    instance_ids: list[str],
    n: int,
    seed: int,
    stratify_by_repo: bool,
    repo_of: Callable[[str], str | None],
) -> list[str]:
    """A seeded sample of ``n`` distinct instance ids, returned sorted.

    Independent of input order (ids are de-duplicated and sorted first), without replacement; ``n <= 0``
    or ``n >= available`` returns all. Stratified: each repo gets ``n`` in proportion to its size
    (largest-remainder rounding, ties by repo name), sampled with its own ``seed:repo`` stream.
    """
    ids = sorted(set(instance_ids))
    if n <= 0 or n >= len(ids):
        return ids
    if not stratify_by_repo:
        return sorted(random.Random(seed).sample(ids, n))
    groups: dict[str, list[str]] = defaultdict(list)
    for instance_id in ids:
        groups[repo_of(instance_id) or ""].append(instance_id)
    quota = _largest_remainder({repo: len(members) for repo, members in groups.items()}, n)
    chosen: list[str] = []
    for repo in sorted(groups):
        chosen.extend(random.Random(f"{seed}:{repo}").sample(groups[repo], quota[repo]))
    return sorted(chosen)


class _RowMeta(Protocol):
    instance_id: str
    agent_type: str
    trial_name: str
    trajectory_index: int


class HasMeta(Protocol):
    """Anything carrying the provenance the cap reads: a Trajectory, or the engine's light candidate."""

    @property
    def meta(self) -> _RowMeta: ...


RowT = TypeVar("RowT", bound=HasMeta)
T = TypeVar("T")


def cap_per_instance(trajs: Iterable[RowT], k: int) -> tuple[list[RowT], list[RowT]]:
    """At most ``k`` trajectories per instance (``k <= 0``: no cap); returns ``(kept, dropped)``.

    Preference is deterministic: main-agent rows first, then by trial name and trajectory index. Kept
    rows keep their input order.
    """
    items = list(trajs)
    if k <= 0:
        return items, []
    ranked = sorted(
        range(len(items)),
        key=lambda i: (
            items[i].meta.instance_id,
            items[i].meta.agent_type != "main",
            items[i].meta.trial_name,
            items[i].meta.trajectory_index,
        ),
    )
    taken: dict[str, int] = defaultdict(int)
    keep: set[int] = set()
    for index in ranked:
        instance = items[index].meta.instance_id
        if taken[instance] < k:
            taken[instance] += 1
            keep.add(index)
    kept = [t for i, t in enumerate(items) if i in keep]
    dropped = [t for i, t in enumerate(items) if i not in keep]
    return kept, dropped


def content_hash(traj: Trajectory) -> str:
    """sha256 over messages and tools only (not provenance): equal hashes = the same training sample.

    The hashed bytes are ``json.dumps({"messages": [each message's model_dump(mode="json")], "tools": tools},
    sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` in UTF-8 (``surrogatepass``).
    """
    messages = traj.model_dump(mode="json", include={"messages"})["messages"]
    return content_hash_of_dump(messages, traj.tools)


def content_hash_of_dump(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """``content_hash`` from the messages as ``Trajectory.model_dump(mode="json")`` gives them.

    Why: a caller that already dumped the trajectory (the engine dumps it for the IM row) saves the second
    dump. ``tools`` is the trajectory's own list, not its dump (the dump turns NaN into null).
    """
    payload = {"messages": messages, "tools": tools}
    # Only the call arguments and the tool schemas are free-form (``Any``): every other member of a message
    # dump is a str, bool or None by the canonical model, and needs no check.
    arguments = [call["arguments"] for message in messages for call in message["tool_calls"]]
    data = orjson_if_same_as_json(payload, sort_keys=True, free_form=(arguments, tools))
    if data is None:
        data = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    return hashlib.sha256(data).hexdigest()


def compact_json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Exactly ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)`` encoded
    as UTF-8 (``surrogatepass``), produced by orjson (~10x faster) whenever that gives the same bytes."""
    data = orjson_if_same_as_json(value, sort_keys=sort_keys, free_form=value)
    if data is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        data = text.encode("utf-8", "surrogatepass")
    return data


def orjson_if_same_as_json(value: Any, *, sort_keys: bool, free_form: Any) -> bytes | None:
    """``orjson.dumps(value)`` when it is byte for byte the compact ``json.dumps`` of ``value``, else None.

    The two agree on strings (checked on every code point: same escapes, non-ASCII kept), on ints, bools,
    None, and on key order when sorting (orjson sorts by UTF-8 bytes, which is code point order). They
    differ on floats (``1e-05`` vs ``0.00001``, ``NaN`` vs ``null``) and on types json cannot encode but
    orjson can (UUID, datetime, Enum, subclasses); orjson refuses lone surrogates, non-str keys, ints past
    64 bits, cycles and nesting past 255 levels. So: orjson first (a refusal means None), then
    ``free_form`` (the parts of ``value`` that may hold other types) must hold JSON-native exact types only.
    """
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return None
    # orjson accepted it, so ``free_form`` is acyclic and finite: the walk ends.
    return data if _exact_json_types_without_floats(free_form) else None


def _exact_json_types_without_floats(value: Any) -> bool:
    """Only dict (str keys), list, str, int, bool and None, by exact type (no float, no subclass)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            if not all(type(key) is str for key in item):
                return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif not (kind is str or kind is int or kind is bool or item is None):
            return False
    return True


def dedup_exact(
    items: Iterable[T],
    key: Callable[[T], str] = content_hash,  # type: ignore[assignment]
) -> tuple[list[T], list[T]]:
    """Drop exact duplicates (same content hash), keeping the first occurrence; returns ``(kept, dropped)``.

    ``key`` defaults to ``content_hash``; the engine passes the hash its workers already computed.
    """
    seen: set[str] = set()
    kept: list[T] = []
    dropped: list[T] = []
    for item in items:
        digest = key(item)
        if digest in seen:
            dropped.append(item)
        else:
            seen.add(digest)
            kept.append(item)
    return kept, dropped
