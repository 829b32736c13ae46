"""The conversion's fast paths give exactly what the straightforward code gave.

Each speed-up in ``filters``, ``score``, ``validate`` and ``render`` is checked against an oracle: the
implementation it replaced, copied here verbatim (``old_*``), on the demo job's real trajectories and on
hypothesis-generated values (floats, NaN, ints past 64 bits, lone surrogates, non-ASCII text, non-str keys).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sft.core.canonical import Message, ToolCall, Trajectory
from sft.rules import render, score, validate
from sft.rules.filters import compact_json_bytes, content_hash, content_hash_of_dump
from sft.rules.validate import repair_and_validate
from sft.sources.harbor.trial import extract_trial
from sft.sources.scaffolds import ADAPTERS
from tests.convert.builders import assistant, call, tool, traj, user

ROOT = Path(__file__).resolve().parents[2]
DEMO_JOB = ROOT / "data" / "01_raw" / "demo_job"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------ oracles


def old_content_hash(traj: Trajectory) -> str:
    payload = {"messages": [m.model_dump(mode="json") for m in traj.messages], "tools": traj.tools}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def old_top_keywords(text: str, k: int = 10) -> list[str]:
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for position, match in enumerate(_WORD.finditer(text, 0, score.KEYWORD_SCAN_CHARS)):
        word = match.group(0).lower()
        if word in score._STOP_WORDS:
            continue
        counts[word] += 1
        first.setdefault(word, position)
    return sorted(counts, key=lambda w: (-counts[w], first[w]))[:k]


def old_assistant_text(message: Message) -> str:
    args = " ".join(json.dumps(c.arguments, ensure_ascii=False) for c in message.tool_calls)
    return f"{message.content}\n{message.reasoning_content}\n{args}".lower()


def old_observation_utilization(messages: list[Message]) -> float:
    shares: list[float] = []
    for index, message in enumerate(messages):
        if message.role != "tool":
            continue
        following = next((m for m in messages[index + 1 :] if m.role == "assistant"), None)
        keywords = old_top_keywords(message.content)
        if following is None or not keywords:
            continue
        reply = old_assistant_text(following)
        shares.append(sum(1 for word in keywords if word in reply) / len(keywords))
    return sum(shares) / len(shares) if shares else 0.0


def old_iter_calls(messages: list[Message]) -> list[tuple[int, ToolCall, Message | None]]:
    out = []
    turn = 0
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        results: dict[str | None, Message] = {}
        for following in messages[index + 1 :]:
            if following.role != "tool":
                break
            results.setdefault(following.tool_call_id, following)
        for c in message.tool_calls:
            out.append((turn, c, results.get(c.id)))
        turn += 1
    return out


def old_delete_then_modify(calls: list[Any]) -> int:
    deleted: set[str] = set()
    count = 0
    for item in calls:
        for path in score.edited_paths(item.call):
            if path in deleted:
                count += 1
                deleted.discard(path)
        deleted.update(score.deleted_paths(item.call))
    return count


def old_dumps_call_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    for tag in render._TAGS_TO_ESCAPE:
        if tag in text:
            text = text.replace(tag, "\\u003c" + tag[1:])
    return text


def old_following_tool_block(messages: list[Message], start: int) -> list[Message]:
    block: list[Message] = []
    for message in messages[start:]:
        if message.role != "tool":
            break
        block.append(message)
    return block


# ------------------------------------------------------------------------------------------------ inputs


@pytest.fixture(scope="module")
def demo_trajectories() -> list[Trajectory]:
    """Every trajectory of the demo job (all scaffolds, main and subagents), repaired as the engine does."""
    out: list[Trajectory] = []
    for trial in sorted(p for p in DEMO_JOB.iterdir() if (p / "result.json").is_file()):
        for name in ADAPTERS:
            extraction = extract_trial(trial, DEMO_JOB, name)
            if extraction.trajectories:
                break
        for trajectory in extraction.trajectories:
            repaired, _ = repair_and_validate(trajectory, drop_tool_errors=False)
            out.append(repaired if repaired is not None else trajectory)
    assert len(out) >= 10, "the demo job should give trajectories of every scaffold"
    return out


# Text with what the fast paths treat specially: identifier runs after digits, stop words, letters whose
# lower case is ASCII (Kelvin sign, dotted I), a final sigma, JSON escapes, tags, lone surrogates.
_ALPHABET = st.sampled_from(
    list('aZ_9 .:,"\\\n\t<>/{}')
    + ["\u212a", "\u0130", "\u03a3", "\u00e9", "\U0001f600", "\ud83d", "\x00", "\x7f", "\u2028"]
)
TEXT = st.one_of(
    st.text(_ALPHABET, max_size=60),
    st.lists(
        st.sampled_from(
            [
                "the",
                "error",
                "foo",
                "Foo",
                "FOO",
                "bar_baz",
                "x1",
                "9abc",
                "12",
                "file",
                "tool_call",
                "<tool_call>",
                "</think>",
                "null",
                "nan",
                "e16",
                "1e-05",
            ]
        ),
        max_size=40,
    ).map(" ".join),
    st.text(max_size=40),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
VALUES_WITH_ODD_KEYS = st.dictionaries(st.one_of(TEXT, st.integers()), JSON_VALUES, max_size=3)


def _calls(values: list[Any]) -> list[ToolCall]:
    return [
        ToolCall(id=f"c{i}", name=["bash", "str_replace_editor", "Write"][i % 3], arguments=v)
        for i, v in enumerate(values)
    ]


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """user, then turns of assistant (text and/or calls with any arguments) followed by tool results."""
    messages = [user(draw(TEXT))]
    for _ in range(draw(st.integers(0, 5))):
        arguments = draw(st.lists(st.one_of(JSON_VALUES, VALUES_WITH_ODD_KEYS), max_size=3))
        messages.append(assistant(draw(TEXT), draw(TEXT), calls=_calls(arguments)))
        for index in range(draw(st.integers(0, len(arguments) + 1))):
            messages.append(tool(draw(TEXT), id=f"c{index}", is_error=draw(st.booleans())))
    if draw(st.booleans()):
        messages.append(assistant(draw(TEXT)))
    return messages


# ------------------------------------------------------------------------------------------------ filters


@SETTINGS
@given(value=st.one_of(JSON_VALUES, VALUES_WITH_ODD_KEYS), sort_keys=st.booleans())
@example(value={"b": 1.5, "a": [1e-05, float("nan"), 2**64]}, sort_keys=True)
@example(value={"\uffff": 1, "\U0001f600": 2, "é": 3, "z": 4}, sort_keys=True)
def test_compact_json_bytes_is_json_dumps(value: Any, sort_keys: bool) -> None:
    try:
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    except TypeError:  # mixed key types cannot be sorted: the fast path must not hide that
        with pytest.raises(TypeError):
            compact_json_bytes(value, sort_keys=sort_keys)
        return
    assert compact_json_bytes(value, sort_keys=sort_keys) == expected.encode("utf-8", "surrogatepass")


def test_compact_json_bytes_on_every_code_point() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    expected = json.dumps({text: [text]}, ensure_ascii=False, separators=(",", ":")).encode()
    assert compact_json_bytes({text: [text]}, sort_keys=True) == expected


@SETTINGS
@given(messages=conversations(), tools=st.lists(st.dictionaries(TEXT, JSON_VALUES, max_size=3), max_size=3))
@example(messages=[user(), assistant(calls=[call("bash", {"x": 1e-05}, id="a")])], tools=[{"minimum": 1e-07}])
def test_content_hash_is_the_old_hash(messages: list[Message], tools: list[dict[str, Any]]) -> None:
    t = traj(*messages, tools=tools)
    try:
        expected = old_content_hash(t)
    except (TypeError, ValueError) as exc:  # unsortable keys; a surrogate in a key (pydantic cannot dump it)
        with pytest.raises(type(exc)):
            content_hash(t)
        return
    assert content_hash(t) == expected


def test_content_hash_on_the_demo_job(demo_trajectories: list[Trajectory]) -> None:
    for t in demo_trajectories:
        assert content_hash(t) == old_content_hash(t), t.uid
        dump = t.model_dump(mode="json")
        assert content_hash_of_dump(dump["messages"], t.tools) == content_hash(t), t.uid


def test_content_hash_keeps_nan_apart_from_null() -> None:
    """orjson writes NaN as null; the hash must still tell the two apart (it falls back to json.dumps)."""
    with_nan = traj(user(), assistant("x"), tools=[{"type": "function", "function": {"x": math.nan}}])
    with_null = traj(user(), assistant("x"), tools=[{"type": "function", "function": {"x": None}}])
    assert content_hash(with_nan) != content_hash(with_null)
    assert content_hash(with_nan) == old_content_hash(with_nan)


# ------------------------------------------------------------------------------------------------ score


@SETTINGS
@given(text=TEXT, k=st.integers(-2, 12))
@example(text="Foo foo FOO bar bar baz 9qux \u212aelvin the error x_y_z", k=10)
def test_top_keywords_is_the_old_ranking(text: str, k: int) -> None:
    assert score.top_keywords(text, k) == old_top_keywords(text, k)


def test_top_keywords_reads_only_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score, "KEYWORD_SCAN_CHARS", 32)
    text = "alpha beta alpha gamma delta_epsilon zeta zeta zeta zeta"
    assert score.top_keywords(text) == old_top_keywords(text) == ["alpha", "beta", "gamma", "delta_eps"]


@SETTINGS
@given(messages=conversations())
def test_observation_utilization_is_the_old_value(messages: list[Message]) -> None:
    assert score.observation_utilization(messages) == old_observation_utilization(messages)


def test_observation_utilization_ignores_json_float_and_separator_differences() -> None:
    """Keywords that only the json.dumps text of the arguments has (``e16``, ``nan``) or that the separators
    could touch: the value must not move."""
    messages = [
        user(),
        assistant(calls=[call("bash", {"x": 1e16, "y": math.nan, "z": 1e-05, "w": "a:b"}, id="a")]),
        tool("nan e16 nan e16 1e-05 a:b ab", id="a"),
        assistant("done"),
    ]
    assert score.observation_utilization(messages) == old_observation_utilization(messages)


@SETTINGS
@given(messages=conversations())
def test_iter_calls_and_delete_then_modify_are_unchanged(messages: list[Message]) -> None:
    calls = list(score._iter_calls(messages))
    assert [(c.turn, c.call, c.result) for c in calls] == old_iter_calls(messages)
    assert score.delete_then_modify(calls) == old_delete_then_modify(calls)


def test_score_parts_on_the_demo_job(demo_trajectories: list[Trajectory]) -> None:
    for t in demo_trajectories:
        assert score.observation_utilization(t.messages) == old_observation_utilization(t.messages), t.uid
        calls = list(score._iter_calls(t.messages))
        assert [(c.turn, c.call, c.result) for c in calls] == old_iter_calls(t.messages), t.uid
        assert score.delete_then_modify(calls) == old_delete_then_modify(calls), t.uid
        for message in t.messages:
            if message.role == "tool":
                assert score.top_keywords(message.content) == old_top_keywords(message.content), t.uid


def test_delete_then_modify_counts_a_removed_then_rewritten_file() -> None:
    messages = [
        user(),
        assistant(calls=[call("bash", {"command": "rm a.py"}, id="a")]),
        tool("", id="a"),
        assistant(calls=[call("Write", {"file_path": "a.py", "content": "x"}, id="b")]),
        tool("ok", id="b"),
        assistant("done"),
    ]
    features = score.score_features(traj(*messages))
    assert features is not None and features["delete_then_modify_count"] == 1


# ------------------------------------------------------------------------------------------------ validate


def _with_surrogates(messages: list[Message]) -> list[Message]:
    """A lone surrogate in a text, a call's argument key and value (the cases the fast check must catch)."""
    out = list(messages)
    out.append(assistant("a\ud83d", calls=[call("bash", {"k\udc00": ["v\ud800"]}, id="s")]))
    out.append(tool("r", id="s"))
    out.append(assistant("end"))
    return out


@SETTINGS
@given(messages=conversations(), plant=st.booleans(), drop=st.booleans())
def test_repair_is_the_same_with_and_without_the_surrogate_precheck(
    messages: list[Message], plant: bool, drop: bool
) -> None:
    t = traj(
        *(_with_surrogates(messages) if plant else messages),
        tools=[{"type": "function", "function": {"name": "x\ud83d" if plant else "x"}}],
    )
    fast = repair_and_validate(t, drop_tool_errors=drop)
    original = validate._surely_surrogate_free
    validate._surely_surrogate_free = lambda _traj: False  # type: ignore[assignment]
    try:
        slow = repair_and_validate(t, drop_tool_errors=drop)
    finally:
        validate._surely_surrogate_free = original
    assert fast[1] == slow[1]
    assert (fast[0] is None) == (slow[0] is None)
    if fast[0] is not None and slow[0] is not None:
        assert fast[0].model_dump() == slow[0].model_dump()
    if plant:
        assert any(note.startswith("repair_lone_surrogates") for note in fast[1]) or fast[0] is None


@SETTINGS
@given(messages=conversations(), start=st.integers(0, 12))
def test_following_tool_block_is_unchanged(messages: list[Message], start: int) -> None:
    assert validate._following_tool_block(messages, start) == old_following_tool_block(messages, start)


# ------------------------------------------------------------------------------------------------ render


@SETTINGS
@given(value=st.one_of(JSON_VALUES, VALUES_WITH_ODD_KEYS))
def test_dumps_call_json_is_unchanged(value: Any) -> None:
    assert render.dumps_call_json(value) == old_dumps_call_json(value)


def test_render_columns_on_the_demo_job(demo_trajectories: list[Trajectory]) -> None:
    for t in demo_trajectories:
        assert render.tools_column(t) == (json.dumps(t.tools, ensure_ascii=False) if t.tools else "")
        meta = t.meta.model_dump(mode="json")
        assert render.lf_meta_column(meta) == json.dumps(meta, ensure_ascii=False, sort_keys=True)
        for message in t.messages:
            if message.tool_calls:
                calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
                value = calls[0] if len(calls) == 1 else calls
                assert render.dumps_call_json(value) == old_dumps_call_json(value)
