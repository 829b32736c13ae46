"""The LiteLLM proxy log: tolerant reading, OpenAI/Anthropic/Responses normalisation, linear prefix dedup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sft.core.canonical import Message, ToolCall
from sft.sources.harbor.litellm import (
    LogShapeError,
    canonical_view,
    convert_message,
    dedup_conversations,
    message_digest,
    model_view,
    normalize_request,
    normalize_response,
    prefix_dedup,
    read_log,
    sort_by_request_time,
)

# ---------------------------------------------------------------------------------------------------------
# read_log


def test_read_log_tolerates_truncation_bad_lines_and_failures(harbor, tmp_path: Path) -> None:
    good = harbor.oai_record([{"role": "user", "content": "hi"}], {"content": "hello"})
    no_success = harbor.oai_record([{"role": "user", "content": "x"}], {"content": "y"}, success=None)
    failed = harbor.oai_record([{"role": "user", "content": "x"}], {"content": "y"}, success=False)
    path = harbor.write_log(
        tmp_path / "agent", [good, failed, no_success], raw_tail=b'not json\n[1,2]\n{"request_body": {"mess'
    )
    result = read_log(path)
    assert [r["request_body"]["messages"][0]["content"] for r in result.records] == ["hi", "x"]
    assert "success" not in result.records[1]  # missing success counts as true
    assert result.failed_dropped == 1
    assert result.invalid_lines == 3
    assert result.line_numbers == [1, 3]
    assert any(":4: invalid JSON" in p for p in result.problems)
    assert any("a JSON list" in p for p in result.problems)
    assert any(":6: truncated last line" in p for p in result.problems)


def test_read_log_unicode_invalid_utf8_and_lone_surrogate(tmp_path: Path) -> None:
    cjk = {
        "request_body": {"messages": [{"role": "user", "content": "修复这个错误 🐛🚀"}]},
        "response_body": {},
    }
    line1 = json.dumps(cjk, ensure_ascii=False).encode("utf-8")
    line2 = b'{"request_body": {"messages": [{"role": "user", "content": "bad \xff\xfe byte"}]}}'
    line3 = b'{"request_body": {"messages": [{"role": "user", "content": "lone \\ud800 surrogate \\ud83d\\ude00"}]}}'
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join([line1, line2, line3]) + b"\n")
    result = read_log(path)
    contents = [r["request_body"]["messages"][0]["content"] for r in result.records]
    assert contents[0] == "修复这个错误 🐛🚀"
    assert contents[1] == "bad \ufffd\ufffd byte"
    assert contents[2] == "lone \ufffd surrogate 😀"  # the valid pair decodes, the lone half is replaced
    assert any(":2: invalid UTF-8" in p for p in result.problems)
    assert any(":3: lone UTF-16 surrogate" in p for p in result.problems)
    assert result.invalid_lines == 0
    # the recovered text can be encoded (it will be written as UTF-8 later)
    for text in contents:
        text.encode("utf-8")


def test_sort_by_request_time_is_stable_and_tolerates_missing() -> None:
    records = [{"request_time": 30}, {"request_time": 10}, {}, {"request_time": 20}]
    # the record without request_time stays right after its file predecessor (request_time 10)
    assert sort_by_request_time(records) == [1, 2, 3, 0]


# ---------------------------------------------------------------------------------------------------------
# normalisation


def test_openai_shape_conversation_round_trip(harbor) -> None:
    messages = [
        {"role": "system", "content": "You are an agent."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Fix it"}, {"type": "text", "text": "please 🙏"}],
        },
        {
            "role": "assistant",
            "content": "Let me look at both files.",
            "reasoning_content": "Two reads in parallel.",
            "tool_calls": [
                harbor.call("c1", "read", {"path": "a.py"}),
                harbor.call("c2", "read", {"path": "b.py", "lines": [1, 2]}),
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "print('a')"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "print('b')"}]},
        {"role": "assistant", "content": None, "tool_calls": [harbor.call("c3", "bash", "{not json")]},
        {"role": "tool", "tool_call_id": "c3", "content": "<tool_use_error>bad args</tool_use_error>"},
    ]
    record = harbor.oai_record(
        messages, {"content": "Done.", "reasoning_content": "All good."}, tools=["read", "bash"]
    )
    got, tools = normalize_request(record)
    assert got == [
        Message(role="system", content="You are an agent."),
        Message(role="user", content="Fix it\nplease 🙏"),
        Message(
            role="assistant",
            content="Let me look at both files.",
            reasoning_content="Two reads in parallel.",
            tool_calls=[
                ToolCall(id="c1", name="read", arguments={"path": "a.py"}),
                ToolCall(id="c2", name="read", arguments={"path": "b.py", "lines": [1, 2]}),
            ],
        ),
        Message(role="tool", content="print('a')", tool_call_id="c1"),
        Message(role="tool", content="print('b')", tool_call_id="c2"),
        Message(role="assistant", tool_calls=[ToolCall(id="c3", name="bash", arguments="{not json")]),
        Message(
            role="tool", content="<tool_use_error>bad args</tool_use_error>", tool_call_id="c3", is_error=True
        ),
    ]
    assert [t["function"]["name"] for t in tools] == ["read", "bash"]
    assert normalize_response(record) == Message(
        role="assistant", content="Done.", reasoning_content="All good."
    )


def test_anthropic_shape_conversation_round_trip(harbor) -> None:
    system = [
        {
            "type": "text",
            "text": "x-anthropic-billing-header: cch=ab12;",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "You are Claude Code."},
    ]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>r</system-reminder>"},
                {"type": "text", "text": "Fix the bug", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should grep.", "signature": "sig=="},
                {"type": "text", "text": "Searching."},
                {"type": "tool_use", "id": "toolu_1", "name": "Grep", "input": {"pattern": "错误"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"file_path": "/a.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "a.py:1",
                    "cache_control": {"type": "ephemeral"},
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "File does not exist."}],
                },
                {"type": "text", "text": "<system-reminder>todo</system-reminder>"},
            ],
        },
    ]
    response = [
        {"type": "thinking", "thinking": "Check again.", "signature": "zz"},
        {
            "type": "tool_use",
            "id": "toolu_3",
            "name": "Edit",
            "input": {"file_path": "/a.py", "old_string": "a", "new_string": "b"},
        },
    ]
    record = harbor.anth_record(system, messages, response, tools=["Grep", "Read", "Edit"])
    got, tools = normalize_request(record)
    assert got == [
        Message(role="system", content="x-anthropic-billing-header: cch=ab12;\nYou are Claude Code."),
        Message(role="user", content="<system-reminder>r</system-reminder>\nFix the bug"),
        Message(
            role="assistant",
            content="Searching.",
            reasoning_content="I should grep.",
            tool_calls=[
                ToolCall(id="toolu_1", name="Grep", arguments={"pattern": "错误"}),
                ToolCall(id="toolu_2", name="Read", arguments={"file_path": "/a.py"}),
            ],
        ),
        Message(role="tool", content="a.py:1", tool_call_id="toolu_1"),
        Message(role="tool", content="File does not exist.", tool_call_id="toolu_2", is_error=True),
        Message(role="user", content="<system-reminder>todo</system-reminder>"),
    ]
    assert tools[0] == {
        "type": "function",
        "function": {
            "name": "Grep",
            "description": "Grep tool",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
    assert "cache_control" not in json.dumps(tools)
    assert normalize_response(record) == Message(
        role="assistant",
        reasoning_content="Check again.",
        tool_calls=[
            ToolCall(
                id="toolu_3",
                name="Edit",
                arguments={"file_path": "/a.py", "old_string": "a", "new_string": "b"},
            )
        ],
    )


def test_inline_think_is_split_and_unknown_response_raises(harbor) -> None:
    record = harbor.oai_record(
        [{"role": "user", "content": "q"}], {"content": "<think>\nhmm\n</think>\n\nanswer"}
    )
    assert normalize_response(record) == Message(role="assistant", content="answer", reasoning_content="hmm")
    record["response_body"] = {"error": {"message": "rate limited"}}
    with pytest.raises(LogShapeError, match="neither choices"):
        normalize_response(record)


def test_responses_api_shape() -> None:
    record = {
        "request_body": {
            "instructions": "Be brief.",
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "list files"}],
                },
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "use ls"}]},
                {"type": "function_call", "call_id": "f1", "name": "shell", "arguments": '{"cmd": "ls"}'},
                {"type": "function_call_output", "call_id": "f1", "output": "a b"},
            ],
            "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}],
        },
        "response_body": {
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a, b"}]}
            ]
        },
    }
    messages, tools = normalize_request(record)
    assert messages == [
        Message(role="system", content="Be brief."),
        Message(role="user", content="list files"),
        Message(
            role="assistant",
            reasoning_content="use ls",
            tool_calls=[ToolCall(id="f1", name="shell", arguments={"cmd": "ls"})],
        ),
        Message(role="tool", content="a b", tool_call_id="f1"),
    ]
    assert tools == [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]
    assert normalize_response(record) == Message(role="assistant", content="a, b")


# ---------------------------------------------------------------------------------------------------------
# prefix dedup


def _cumulative(n_calls: int) -> list[list[dict]]:
    """A conversation logged cumulatively: call k sends the system+user prompt and k earlier turns."""
    history: list[dict] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    conversations = []
    for k in range(n_calls):
        conversations.append(list(history))
        history.append(
            {
                "role": "assistant",
                "content": f"step {k}",
                "tool_calls": [
                    {"id": f"c{k}", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
                ],
            }
        )
        history.append({"role": "tool", "tool_call_id": f"c{k}", "content": f"out {k}"})
    return conversations


def test_cumulative_log_of_2000_calls_dedups_to_one() -> None:
    conversations = _cumulative(2000)
    result = dedup_conversations(conversations)
    assert result.kept == [1999]
    assert result.prefix_dropped == 1999 and result.short_dropped == 0


def test_dedup_keeps_branches_drops_short_and_exact_duplicates() -> None:
    main = _cumulative(4)
    sub = [
        [
            {"role": "system", "content": "sub"},
            {"role": "user", "content": "explore"},
            {"role": "assistant", "content": "found"},
            {"role": "user", "content": "ok"},
        ]
    ]
    short = [[{"role": "user", "content": "title?"}]]
    conversations = main[:3] + sub + short + [main[3], main[3]]
    result = dedup_conversations(conversations)
    assert result.kept == [3, 6]  # the subagent and the LAST copy of the longest main call
    assert result.exact_dropped == 1 and result.short_dropped == 1 and result.prefix_dropped == 3
    assert prefix_dedup(conversations) == [3, 6]


def test_dedup_ignores_cache_markers_signatures_thinking_and_cch() -> None:
    first = [
        {"role": "system", "content": "billing cch=0a1b2c; rest"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "s1"},
                {"type": "text", "text": "x"},
            ],
        },
    ]
    later = [
        {"role": "system", "content": "billing cch=ffff; rest"},
        {"role": "user", "content": "a\nb"},  # the first user message re-split: flattened before hashing
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "user", "content": "next"},
    ]
    assert dedup_conversations([first, later]).kept == [1]
    different = [dict(m) for m in later[:3]] + [{"role": "user", "content": "other"}]
    different[2] = {"role": "assistant", "content": "y"}
    assert dedup_conversations([first, different]).kept == [0, 1]


def test_min_messages_uses_given_lengths() -> None:
    conv = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    assert dedup_conversations([conv]).kept == [0]
    result = dedup_conversations([conv], lengths=[2])
    assert result.kept == [] and result.short_dropped == 1


# ---------------------------------------------------------------------------------------------------------
# what the model saw: per-request churn must not split a conversation, in either proxy-log shape

_REMINDER = "<system-reminder>\nThe TodoWrite tool hasn't been used recently.\n</system-reminder>"
_CC = {"type": "ephemeral"}


def _billing(n: int) -> str:
    return f"x-anthropic-billing-header: cc_version=2.1.118.{n:03x}; cc_entrypoint=sdk-cli; cch={n:05x};"


def _openai_request(turns: int, n: int) -> list[dict]:
    """claude-code through the proxy's OpenAI translation, request ``n`` of a cumulative log: the system prompt as
    text parts after a per-request billing part; the newest message as text parts with cache_control and a
    reminder part; every older message a plain string; null keys on echoed assistant messages."""
    messages: list[dict] = [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": _billing(n)},
                {"type": "text", "text": "You are Claude Code.", "cache_control": _CC},
            ],
        },
        {"role": "user", "content": "fix the bug"},
    ]
    for k in range(turns):
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "function_call": None,
                "tool_calls": [
                    {
                        "id": f"c{k}",
                        "type": "function",
                        "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"c{k}", "content": f"out {k}"})
    newest = dict(messages[-1])
    newest["content"] = [
        {"type": "text", "text": newest["content"]},
        {"type": "text", "text": _REMINDER, "cache_control": _CC},
    ]
    messages[-1] = newest
    return messages


def _anthropic_request(turns: int, n: int) -> list[dict]:
    """The same conversation Anthropic-shaped (``hashing_view``: the system blocks as message 0): the billing
    block, then the prompt; cache_control on the newest message only."""
    messages: list[dict] = [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": _billing(n)},
                {"type": "text", "text": "You are Claude Code.", "cache_control": _CC},
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
    ]
    for k in range(turns):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"t{k}", "signature": f"s{k}"},
                    {"type": "tool_use", "id": f"c{k}", "name": "Bash", "input": {"command": "ls"}},
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"c{k}", "content": f"out {k}"}],
            }
        )
    newest = {**messages[-1], "content": [dict(b) for b in messages[-1]["content"]]}
    newest["content"][-1]["cache_control"] = _CC
    newest["content"].append({"type": "text", "text": _REMINDER})
    messages[-1] = newest
    return messages


@pytest.mark.parametrize("shape", [_openai_request, _anthropic_request], ids=["openai", "anthropic"])
def test_per_request_churn_does_not_split_a_conversation(shape) -> None:
    requests = [shape(turns, n) for n, turns in enumerate(range(6))]
    result = dedup_conversations(requests)
    assert result.kept == [5] and result.prefix_dropped == 5


def test_string_and_text_parts_are_the_same_message_but_other_text_is_not() -> None:
    plain = {"role": "tool", "tool_call_id": "c1", "content": "a\nb"}
    parts = {
        "role": "tool",
        "tool_call_id": "c1",
        "content": [{"type": "text", "text": "a", "cache_control": _CC}, {"type": "text", "text": "b"}],
    }
    assert message_digest(plain) == message_digest(parts)
    assert model_view(parts) == plain
    assert message_digest({**plain, "content": "a b"}) != message_digest(parts)
    # a reminder is ignored only as a whole part, never inside a longer text
    inline = {"role": "tool", "tool_call_id": "c1", "content": f"a\nb\n{_REMINDER}"}
    assert message_digest(inline) != message_digest(plain)
    # an assistant's text part is not a reminder slot; the billing rule only applies to system messages
    said = {"role": "assistant", "content": [{"type": "text", "text": _REMINDER}]}
    assert model_view(said)["content"] == _REMINDER
    assert model_view({"role": "user", "content": _billing(1)})["content"] == _billing(1)


def test_two_system_blocks_and_canonical_view_agree_with_the_conversion() -> None:
    """The output check (canonical_view) sees what the conversion wrote: billing values and reasoning ignored."""
    a = Message(role="system", content=_billing(1) + "\nYou are Claude Code.")
    b = Message(role="system", content=_billing(2) + "\nYou are Claude Code.")
    assert canonical_view(a) == canonical_view(b)
    assert canonical_view(Message(role="assistant", content="x", reasoning_content="r")) == canonical_view(
        Message(role="assistant", content="x")
    )
    assert canonical_view(Message(role="user", content="x")) != canonical_view(
        Message(role="user", content="y")
    )


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=12), min_size=1, max_size=4),
    cached=st.integers(0, 3),
    role=st.sampled_from(["user", "tool", "assistant", "system"]),
)
def test_text_parts_compare_as_the_text_the_conversion_writes(
    texts: list[str], cached: int, role: str
) -> None:
    """One rule: text parts (cache_control on any of them) compare equal to the plain string exactly when the
    conversion writes that string for them, so the de-dup and the rows agree."""
    parts = [{"type": "text", "text": t} for t in texts]
    parts[cached % len(parts)]["cache_control"] = _CC
    as_parts = {"role": role, "content": parts, **({"tool_call_id": "c1"} if role == "tool" else {})}
    written = convert_message(as_parts)[0].content
    as_string = {**as_parts, "content": written}
    assert convert_message(as_string)[0].content == written
    assert message_digest(as_parts) == message_digest(as_string)
    assert message_digest(as_parts) != message_digest({**as_string, "content": written + "x"})
