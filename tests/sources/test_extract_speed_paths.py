"""The speed paths of trial extraction against their plain definitions.

* ``litellm._shared_length`` (packed ``id()`` compare with memcmp, "all but the last" probe, bisection)
  must equal the naive leading-run count of two id lists;
* ``litellm._hash_conversations`` (identity shortcuts, rolling hashes taken over from a fully repeated
  base, no value memo past the base) must equal ``rolling_hashes`` of each conversation;
* ``extract_trial`` pauses the cyclic GC for the whole trial and must leave it as it found it.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sft.sources.harbor import litellm
from sft.sources.harbor.litellm import rolling_hashes
from sft.sources.harbor.trial import extract_trial


def naive_shared(ids: list[int], other: list[int], known: int) -> int:
    """Leading ids the two lists share, the first ``known`` counting as shared."""
    size = min(len(ids), len(other))
    count = min(known, size)
    while count < size and ids[count] == other[count]:
        count += 1
    return count


def packed(objects: list[Any]) -> bytes:
    return litellm._id_bytes(objects)


@settings(max_examples=300, deadline=None)
@given(
    common=st.integers(min_value=0, max_value=40),
    extra_a=st.integers(min_value=0, max_value=5),
    extra_b=st.integers(min_value=0, max_value=5),
    known=st.integers(min_value=0, max_value=1),
    fresh_head=st.booleans(),
)
def test_shared_length_equals_the_naive_count(
    common: int, extra_a: int, extra_b: int, known: int, fresh_head: bool
) -> None:
    shared_objects = [object() for _ in range(common)]
    a = shared_objects + [object() for _ in range(extra_a)]
    b = shared_objects + [object() for _ in range(extra_b)]
    if fresh_head and a and b:
        a[0] = object()  # message 0 differs in object (a fresh out-of-band system message)
    want = naive_shared(list(map(id, a)), list(map(id, b)), known)
    assert litellm._shared_length(packed(a), packed(b), known) == want
    assert litellm._shared_length(packed(b), packed(a), known) == want


def test_shared_length_all_but_the_last_and_empty() -> None:
    objects = [object() for _ in range(10)]
    changed = [*objects[:9], object(), object()]
    assert litellm._shared_length(packed(changed), packed(objects)) == 9
    assert litellm._shared_length(packed(changed), packed(objects), known=1) == 9
    assert litellm._shared_length(packed([]), packed(objects)) == 0
    assert litellm._shared_length(packed(objects[:1]), packed([object()]), known=1) == 1
    assert litellm._shared_length(packed(objects[:3]), packed([object(), object()]), known=1) == 1


def assert_hashes_match_rolling(conversations: list[Any]) -> None:
    full, prefixes = litellm._hash_conversations(conversations)
    want_prefixes: set[int] = set()
    for conversation, got in zip(conversations, full, strict=True):
        hashes = rolling_hashes(list(conversation))
        assert got == hashes[-1]
        want_prefixes.update(hashes[1:-1])
    assert prefixes == want_prefixes


def message(role: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": text, **extra}


def test_cumulative_conversations_sharing_objects_hash_as_rolling() -> None:
    """Each call repeats the previous one's objects (hashes list taken over), then a branch that shares
    only part of it, then a conversation given as a tuple (copied, not taken as is)."""
    system = message("system", "sys cch=abc;")
    turns = [message("user", "task")]
    conversations: list[Any] = []
    for step in range(6):
        conversations.append([system, *turns])
        turns = [*turns, message("assistant", f"answer {step}"), message("user", f"result {step}")]
    branch = [system, *turns[:3], message("assistant", "another way")]
    conversations.append(branch)
    conversations.append(tuple([*branch, message("user", "after the branch")]))
    conversations.append([system, *turns])  # an earlier base again, after the branch replaced it
    assert_hashes_match_rolling(conversations)


def test_fresh_system_and_moved_cache_marker_hash_as_rolling() -> None:
    """Anthropic-shaped logs: a fresh system dict per call and the previously newest message re-sent as a
    new object without its cache marker; the digests ignore the marker, so the prefixes still chain."""
    history: list[dict[str, Any]] = [message("user", "task")]
    conversations: list[list[Any]] = []
    for step in range(5):
        newest = history[-1]
        marked = {**newest, "cache_control": {"type": "ephemeral"}}
        conversations.append([message("system", "you are an agent"), *history[:-1], marked])
        history = [*history, message("assistant", f"a{step}"), message("user", f"r{step}")]
    assert_hashes_match_rolling(conversations)
    dedup = litellm.dedup_conversations(conversations)
    assert dedup.kept == [len(conversations) - 1]
    assert dedup.prefix_dropped == len(conversations) - 1


def test_equal_values_in_distinct_objects_hash_as_rolling() -> None:
    """Lines parsed on their own (no shared objects): equal values in new objects, and new turns past the
    base whose value also occurs earlier (the value memo is skipped there, the digest must not change)."""

    def build(step: int) -> list[Any]:
        return [message("user", "task"), *[message("assistant", "same") for _ in range(step)]]

    assert_hashes_match_rolling([build(step) for step in range(1, 7)])


def test_extract_trial_restores_the_collector_state(tmp_path: Path) -> None:
    """The trial is extracted with the cyclic GC paused; an enabled collector is enabled again after it,
    a disabled one stays disabled, also when the trial is rejected."""
    missing = tmp_path / "job" / "no-such-trial"
    assert gc.isenabled()
    extraction = extract_trial(missing, tmp_path / "job", "claude-code")
    assert extraction.rejects and gc.isenabled()
    gc.disable()
    try:
        extract_trial(missing, tmp_path / "job", "claude-code")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_extract_trial_pauses_the_collector_while_reading(tmp_path: Path, monkeypatch: Any) -> None:
    """The collector is off while the trial's files are read (where the many parsed objects are made)."""
    seen: list[bool] = []
    import sft.sources.harbor.trial as trial_module

    def spy(trial_dir: Path) -> Any:
        seen.append(gc.isenabled())
        raise trial_module.TrialError("no_result_json", f"{trial_dir}: spy")

    monkeypatch.setattr(trial_module, "read_trial_info", spy)
    extraction = extract_trial(tmp_path / "t", tmp_path, "claude-code")
    assert seen == [False]
    assert gc.isenabled()
    assert extraction.rejects
