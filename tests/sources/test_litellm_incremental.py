"""Prefix-sharing parsing of the LiteLLM proxy log gives exactly what a plain per-line parse gives.

``read_log`` re-uses the message objects (and tools list) of earlier lines whose raw bytes repeat, and
``_hash_conversations`` re-uses hashes of shared message objects. The oracle here is the original reader
(every line split off and parsed in full with ``orjson.loads``, else the lenient parser) and
``rolling_hashes``; records are compared by ``orjson.dumps`` (types and key order included).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft.sources.harbor import litellm
from sft.sources.harbor.litellm import (
    LogReadResult,
    PrefixSharingParser,
    hashing_view,
    is_failed,
    loads_lenient,
    read_log,
    rolling_hashes,
    sort_by_request_time,
)
from sft.sources.harbor.trial import extract_trial
from tests.support.jobgen import SCAFFOLDS, generate_job

LOG_NAME = "litellm-trajectory.jsonl"
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "harbor"  # copies of the real Harbor samples


# ----------------------------------------------------------------------------------------------------------
# the oracle: the reader as it was before prefix sharing


def full_parse_read(path: Path) -> LogReadResult:
    """Every line split off and parsed on its own (the pre-sharing ``_read_lines``, verbatim logic)."""
    data = path.read_bytes()
    result = LogReadResult(records=[])
    lines = data.split(b"\n")
    last_content_index = max((i for i, line in enumerate(lines) if line and not line.isspace()), default=-1)
    for index, raw in enumerate(lines):
        if not raw or raw.isspace():
            continue
        result.n_lines += 1
        where = f"{path}:{index + 1}"
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:
                record = loads_lenient(raw, where, result.problems)
            except ValueError as exc:
                result.invalid_lines += 1
                if index == last_content_index and not data.endswith(b"\n"):
                    result.problems.append(
                        f"{where}: truncated last line ignored (the log was still being written)"
                    )
                else:
                    result.problems.append(f"{where}: invalid JSON ignored ({exc})")
                continue
        if not isinstance(record, dict):
            result.invalid_lines += 1
            result.problems.append(f"{where}: a JSON {type(record).__name__}, expected an object; ignored")
            continue
        if is_failed(record):
            result.failed_dropped += 1
            continue
        result.records.append(record)
        result.line_numbers.append(index + 1)
    if result.failed_dropped:
        result.problems.append(f"{path}: {result.failed_dropped} failed request(s) (success: false) dropped")
    return result


def assert_same_as_full_parse(path: Path) -> LogReadResult:
    got, want = read_log(path), full_parse_read(path)
    assert len(got.records) == len(want.records), path
    for number, (a, b) in enumerate(zip(got.records, want.records, strict=True)):
        assert orjson.dumps(a) == orjson.dumps(b), (path, got.line_numbers[number])
    assert got.problems == want.problems, path
    assert got.line_numbers == want.line_numbers, path
    assert (got.failed_dropped, got.invalid_lines, got.n_lines) == (
        want.failed_dropped,
        want.invalid_lines,
        want.n_lines,
    ), path
    return got


def assert_hashes_match_rolling(conversations: list[list[Any]]) -> None:
    """``_hash_conversations`` (object and byte memos, shared prefixes) == per-conversation rolling hashes."""
    full, prefixes = litellm._hash_conversations(conversations)
    want_prefixes: set[int] = set()
    for conversation, got in zip(conversations, full, strict=True):
        hashes = rolling_hashes(conversation)
        assert got == hashes[-1]
        want_prefixes.update(hashes[1:-1])
    assert prefixes == want_prefixes


def shared_message_count(records: list[dict[str, Any]]) -> int:
    """How many request messages are the very object of the previous record's message at that place."""
    shared = 0
    for before, after in zip(records, records[1:], strict=False):
        old, new = litellm.request_input(before), litellm.request_input(after)
        shared += sum(1 for a, b in zip(old, new, strict=False) if a is b)
    return shared


def log_paths(job_dir: Path) -> list[Path]:
    return sorted(job_dir.glob(f"*/agent/{LOG_NAME}"))


# ----------------------------------------------------------------------------------------------------------
# real and generated logs


def assert_job_logs_parse_as_full_parse(paths: list[Path]) -> int:
    """Every log parses as the full parse and hashes as ``rolling_hashes``; returns the messages shared."""
    shared = 0
    for path in paths:
        records = assert_same_as_full_parse(path).records
        shared += shared_message_count(records)
        order = sort_by_request_time(records)
        assert_hashes_match_rolling([hashing_view(records[i]) for i in order])
    return shared


def test_bundled_demo_job_logs_parse_as_full_parse(project_root: Path) -> None:
    paths = log_paths(project_root / "data" / "01_raw" / "demo_job")
    assert len(paths) >= 10
    # the fast path ran (else this test would only compare the plain path with itself)
    assert assert_job_logs_parse_as_full_parse(paths) > 0


def test_real_harbor_samples_hold_no_proxy_log() -> None:
    """Documents why no real proxy log is compared here: the public Harbor samples ship none."""
    assert (SAMPLES / "SOURCES.md").is_file() and not list(SAMPLES.rglob(LOG_NAME))


@pytest.fixture(scope="module")
def generated_job(tmp_path_factory: pytest.TempPathFactory):
    return generate_job(tmp_path_factory.mktemp("gen") / "job", n_trials=40, seed=7, max_turns=30)


def test_generated_job_of_all_scaffolds_parses_as_full_parse(generated_job) -> None:
    assert {t.scaffold for t in generated_job.trials} == set(SCAFFOLDS)
    paths = log_paths(generated_job.job_dir)
    assert len(paths) >= 30
    assert assert_job_logs_parse_as_full_parse(paths) > 1000


def _extract_all(job) -> list[tuple[str, Any]]:
    out = []
    for trial in job.trials:
        ex = extract_trial(
            job.job_dir / trial.trial_name, job.job_dir, trial.scaffold, trajectory_source="litellm"
        )
        out.append(
            (
                trial.trial_name,
                [t.model_dump(mode="json") for t in ex.trajectories],
                [r.model_dump(mode="json") for r in ex.rejects],
                sorted(ex.problems),
                dict(ex.counters),
            )
        )
    return out


def test_extraction_is_unchanged_without_prefix_sharing(
    generated_job, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = _extract_all(generated_job)
    monkeypatch.setattr(PrefixSharingParser, "parse", lambda self, begin, end: None)
    plain = _extract_all(generated_job)
    assert shared == plain
    assert sum(len(t[1]) for t in shared) >= 40


# ----------------------------------------------------------------------------------------------------------
# hand-made lines: every way a line can differ from the expected shape


def _message(i: int, text: str = "") -> dict[str, Any]:
    role = ("user", "assistant", "tool")[i % 3]
    message: dict[str, Any] = {"role": role, "content": f"turn {i} {text}"}
    if role == "assistant":
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": "bash", "arguments": '{"cmd":"ls"}'}}
        ]
    if role == "tool":
        message["tool_call_id"] = f"c{i - 1}"
    return message


TOOLS = [
    {"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}}
]


def _line(messages: list[Any], *, success: bool = True, tools: Any = TOOLS, **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"session_id": "s", "success": success, "request_time": 1}
    line.update(extra.pop("before", {}))
    body: dict[str, Any] = {"model": "m", "messages": messages}
    if tools is not None:
        body["tools"] = tools
    body.update(extra.pop("body", {}))
    line["request_body"] = body
    line["response_body"] = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    line["usage"] = {"prompt_tokens": 1, "cost": 0.5}
    line.update(extra)
    return line


def _write(path: Path, lines: list[bytes], *, newline_at_end: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline_at_end else b""))
    return path


def _cumulative(n: int, text: str = "") -> list[list[dict[str, Any]]]:
    system = {"role": "system", "content": "You are a helpful agent."}
    return [[system, *(_message(i, text) for i in range(k))] for k in range(1, n + 1)]


def test_cumulative_lines_share_message_objects_and_tools(tmp_path: Path) -> None:
    lines = [orjson.dumps(_line(messages)) for messages in _cumulative(12)]
    records = assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines)).records
    for before, after in zip(records, records[1:], strict=False):
        old, new = before["request_body"]["messages"], after["request_body"]["messages"]
        assert old is not new
        assert all(
            a is b for a, b in zip(old, new, strict=False)
        )  # every repeated message is the same object
        assert after["request_body"]["tools"] is before["request_body"]["tools"]


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param(
            lambda d: json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode(), id="compact"
        ),
        pytest.param(lambda d: json.dumps(d, ensure_ascii=True, separators=(",", ":")).encode(), id="ascii"),
        pytest.param(lambda d: json.dumps(d, ensure_ascii=False).encode(), id="spaced"),
        pytest.param(
            lambda d: json.dumps(d, ensure_ascii=False, indent=None, separators=(", ", ":")).encode(),
            id="comma-space",
        ),
        pytest.param(
            lambda d: json.dumps(d, ensure_ascii=False, separators=(",", ": ")).encode(), id="colon-space"
        ),
    ],
)
def test_writers_with_other_escapes_and_whitespace(tmp_path: Path, writer: Callable[[Any], bytes]) -> None:
    text = 'é 修复 🐛 "quoted" \\ back\\slash \n newline \t tab \u2028 "messages":[ "tools":[ 1e-05'
    lines = [writer(_line(m, body={"temperature": 1e-05, "top_p": 1.0})) for m in _cumulative(8, text)]
    assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines))


def test_whitespace_inside_the_messages_array(tmp_path: Path) -> None:
    """Spaces between elements: element ends are not dumps-exact, the array end is found another way."""
    lines = []
    for messages in _cumulative(7, "ü"):
        compact = orjson.dumps(_line([]))
        elements = b" , ".join(orjson.dumps(m) for m in messages)
        lines.append(compact.replace(b'"messages":[]', b'"messages":[' + elements + b" ]", 1))
    lines.append(orjson.dumps(_line(_cumulative(9)[-1])))
    assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines))


def test_divergence_mid_message_shorter_lines_compaction_and_branches(tmp_path: Path) -> None:
    convs = _cumulative(10)
    edited = [dict(m) for m in convs[6]]
    edited[3] = {**edited[3], "content": edited[3]["content"][:3] + "X" + edited[3]["content"][3:]}
    compacted = [convs[0][0], {"role": "user", "content": "summary of the work so far"}]
    sequence = [
        convs[2],
        convs[5],
        convs[3],  # shorter after longer
        edited,  # diverges inside message 3
        convs[7],  # back to the first branch
        compacted,  # compaction
        [*compacted, _message(4), _message(5)],
        convs[9],
        convs[9],  # an exact retry
        [],  # empty messages
        convs[9][:1],
        [convs[9][0], "a bare string", 12, None, [1, 2]],  # not message objects
    ]
    lines = [orjson.dumps(_line(m)) for m in sequence]
    records = assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines)).records
    assert shared_message_count(records) > 10
    assert_hashes_match_rolling([hashing_view(r) for r in records])


def test_a_repeated_prefix_must_end_where_an_element_ends(tmp_path: Path) -> None:
    """``[s,1`` repeats in ``[s,1.5,...]``: sharing the ``1`` would skip a byte and parse ``5``."""
    system = {"role": "system", "content": "s"}
    sequences = [
        [system, 1],
        [system, 1.5, 2],
        [system, 1, 5],
        [system, 15],
        [system, "a", 1],
        [system, "a", 10],
    ]
    lines = [orjson.dumps(_line(m)) for m in sequences]
    assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines))


def test_bad_lines_between_good_ones(tmp_path: Path) -> None:
    convs = _cumulative(9)
    good = [orjson.dumps(_line(m)) for m in convs]
    lines = [
        good[0],
        good[1],
        good[2][: len(good[2]) // 2],  # an invalid (cut) line in the middle
        good[3],
        orjson.dumps(_line(convs[4], success=False)),  # failed
        good[4].replace(b"turn 3", b"turn \\ud800 3", 1),  # lone surrogate escape in the shared part
        good[5].replace(b"turn 4", b"turn \xff 4", 1),  # invalid UTF-8 in the shared part
        good[6].replace(b'"content":"ok"', b'"content":"\\udc00"', 1),  # lone surrogate in the response
        b"   ",
        b"[1, 2]",
        b'"just a string"',
        good[7],
        good[8].replace(b'"request_time":1', b'"request_time":NaN', 1),
        good[8][:-40],  # truncated last line, still being written
    ]
    result = assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines, newline_at_end=False))
    assert result.invalid_lines == 4 and result.failed_dropped == 1
    assert any(":14: truncated last line" in p for p in result.problems)
    assert any(":3: invalid JSON" in p for p in result.problems)
    assert sum(":6: lone UTF-16 surrogate" in p or ":8: lone UTF-16" in p for p in result.problems) == 2


def test_keys_that_only_look_like_the_request_array(tmp_path: Path) -> None:
    convs = _cumulative(6)
    lines = [
        orjson.dumps(
            _line(convs[0], before={"metadata": {"messages": [{"role": "user", "content": "decoy"}]}})
        ),
        orjson.dumps(_line(convs[1], before={"metadata": {"messages": convs[1]}})),
        orjson.dumps(_line(convs[2], before={'x"messages': convs[2]})),
        orjson.dumps(_line(convs[3], body={"extra": {"tools": TOOLS}})),
        # tools array bytes inside a new message before the real tools
        orjson.dumps(_line([*convs[4], {"role": "user", "content": [{"type": "x", "tools": TOOLS}]}])),
        # request_body.messages given twice: whichever orjson keeps
        orjson.dumps(_line(convs[5])).replace(b'"messages":[', b'"messages":[],"messages":[', 1),
        orjson.dumps(_line(convs[5])).replace(
            b'"model":"m"', b'"model":"m","messages":' + orjson.dumps(convs[5]), 1
        ),
        # another spelling of the key
        orjson.dumps(_line(convs[5])).replace(b'"messages":[', b'"m\\u0065ssages":[', 1),
        # the request_body key repeated: the later one wins
        orjson.dumps(_line(convs[5], response_body=None)).replace(
            b'"response_body":null', b'"request_body":{"messages":' + orjson.dumps(convs[2]) + b"}", 1
        ),
        # tools changed, then absent, then a different value type
        orjson.dumps(_line(convs[5], tools=[*TOOLS, {"type": "function", "function": {"name": "edit"}}])),
        orjson.dumps(_line(convs[5], tools=None)),
        orjson.dumps(_line(convs[5], tools=[])),
        orjson.dumps(_line(convs[5], tools=TOOLS)),
        # tools before the messages, a request_body that is no object, a decoy array before it
        orjson.dumps({"request_body": {"tools": TOOLS, "messages": convs[5]}}),
        orjson.dumps({"request_body": {"tools": TOOLS, "messages": convs[5]}}),
        orjson.dumps({"metadata": {"messages": convs[5]}, "request_body": "messages"}),
        orjson.dumps({"metadata": {"messages": convs[5], "tools": TOOLS}, "request_body": {"tools": 1}}),
        orjson.dumps(_line(convs[5])),
        b"",
        b" \t ",
    ]
    assert_same_as_full_parse(_write(tmp_path / "log.jsonl", lines))


@pytest.mark.parametrize("tail", [b"", b"\n", b"\n\n  \n\t", b"  ", b'\n{"request_body": {"mess'])
def test_blank_and_cut_endings(tmp_path: Path, tail: bytes) -> None:
    lines = [orjson.dumps(_line(m)) for m in _cumulative(4)]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + tail)
    assert_same_as_full_parse(path)
    path.write_bytes(tail)
    assert_same_as_full_parse(path)


def test_hash_conversations_with_unencodable_and_repeated_objects() -> None:
    shared = {"role": "user", "content": "same object"}
    system = {"role": "system", "content": "s"}
    conversations: list[list[Any]] = [
        [system, shared, {"role": "assistant", "content": "a"}],
        [
            system,
            shared,
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "b", "reasoning_content": "\ud800"},
        ],
        [{"role": "system", "content": "s"}, shared],  # equal system message, another object
        [shared, system, shared],  # the same object first as the first user message, then not
        [system, {"role": "user", "content": "same object"}],
        [],
        ["text", 1, None],
    ]
    assert_hashes_match_rolling(conversations)


def test_anthropic_and_responses_shapes(tmp_path: Path) -> None:
    turns = [_message(i) for i in range(8)]
    anthropic = []
    for k in range(1, 8):
        messages = [dict(m) for m in turns[:k]]
        last = messages[-1]
        messages[-1] = {
            "role": last["role"],
            "content": [{"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}],
        }
        system = [
            {"type": "text", "text": f"x-anthropic-billing-header: cch={k:05x};"},
            {"type": "text", "text": "sys"},
        ]
        anthropic.append(orjson.dumps(_line(messages, body={"system": system})))
    responses = []
    for k in range(1, 6):
        items = [{"type": "message", "role": "user", "content": "hi"}]
        items += [
            {"type": "function_call", "call_id": f"c{i}", "name": "bash", "arguments": "{}"} for i in range(k)
        ]
        line = _line([], tools=None)
        del line["request_body"]["messages"]
        line["request_body"]["input"] = items
        responses.append(orjson.dumps(line))
    result = assert_same_as_full_parse(_write(tmp_path / "log.jsonl", anthropic + responses))
    assert shared_message_count(result.records) > 10
    assert_hashes_match_rolling([hashing_view(r) for r in result.records])


# ----------------------------------------------------------------------------------------------------------
# fuzzed logs

_TEXT = st.lists(
    st.sampled_from(list('ab é修🐛"\\/\n\t\u2028{}[],:') + ['"messages":[', '"tools":[', "\\u0041"]),
    max_size=8,
).map("".join)
_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), _TEXT
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=6,
)
_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system"]), "content": _TEXT}
    ),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(_VALUE, max_size=2)}),
    _VALUE,
)
_OP = st.one_of(
    st.tuples(st.just("extend"), st.lists(_MESSAGE, min_size=1, max_size=3)),
    st.tuples(st.just("truncate"), st.integers(0, 6)),
    st.tuples(st.just("edit"), st.integers(0, 6), _MESSAGE),
    st.tuples(st.just("side"), st.lists(_MESSAGE, max_size=3)),
    st.tuples(st.just("retry"), st.none()),
)
_LINE_STYLE = st.sampled_from(
    ["orjson", "orjson", "orjson", "ascii", "spaced", "failed", "cut", "surrogate", "tools"]
)


def _render(conv: list[Any], style: str, extra: Any) -> bytes:
    line = _line(conv, success=style != "failed", body={"extra": extra})
    if style == "tools":
        line["request_body"]["tools"] = [*TOOLS, {"type": "function", "function": {"name": "x"}}]
    if style == "ascii":
        return json.dumps(line, ensure_ascii=True, separators=(",", ":")).encode()
    if style == "spaced":
        return json.dumps(line).encode()
    encoded = orjson.dumps(line)
    if style == "cut":
        return encoded[: max(1, len(encoded) * 2 // 3)]
    if style == "surrogate":
        return encoded.replace(b'"content":"ok"', b'"content":"\\ud800"', 1)
    return encoded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(st.tuples(_OP, _LINE_STYLE, _VALUE), min_size=1, max_size=12),
    newline_at_end=st.booleans(),
)
def test_fuzzed_cumulative_logs_parse_as_full_parse(
    tmp_path: Path, ops: list[Any], newline_at_end: bool
) -> None:
    conv: list[Any] = [{"role": "system", "content": "sys"}]
    lines = []
    for (op, arg, *more), style, extra in ops:
        if op == "extend":
            conv = conv + arg
        elif op == "truncate":
            conv = conv[:arg]
        elif op == "edit" and conv:
            conv = list(conv)
            conv[arg % len(conv)] = more[0]
        elif op == "side":
            lines.append(_render([{"role": "system", "content": "title"}, *arg], style, extra))
            continue
        lines.append(_render(conv, style, extra))
    path = _write(tmp_path / "fuzz.jsonl", lines, newline_at_end=newline_at_end)
    result = assert_same_as_full_parse(path)
    assert_hashes_match_rolling([hashing_view(r) for r in result.records])
