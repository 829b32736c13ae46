"""check_lf_row / detect_format: LLaMA-Factory 0.9.5's acceptance rules on hand-written rows."""

from __future__ import annotations

import json

import pytest

from sft.rules.lf_rules import (
    check_column_types,
    check_lf_row,
    detect_format,
    is_fatal,
    resolve_tags,
    violation_code,
    violation_severity,
)

COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
CALL = '{"name": "bash", "arguments": {"command": "ls"}}'


def row(*turns: tuple[str, object], system: object = "sys", tools: object = "") -> dict:
    return {"conversations": [{"from": r, "value": v} for r, v in turns], "system": system, "tools": tools}


def codes(violations: list[str]) -> list[str]:
    return [violation_code(v) for v in violations]


def test_good_row_has_no_violations() -> None:
    good = row(("human", "q"), ("function_call", CALL), ("observation", "o"), ("gpt", "a"))
    assert check_lf_row(good, columns=COLUMNS, tags=None) == []


def test_system_message_first_is_accepted_but_not_later() -> None:
    first = row(("system", "s"), ("human", "q"), ("gpt", "a"))
    assert check_lf_row(first, columns=COLUMNS, tags=None) == []
    later = row(("human", "q"), ("system", "s"), ("gpt", "a"))
    violations = check_lf_row(later, columns=COLUMNS, tags=None)
    assert codes(violations) == ["invalid_role_tag"] and violation_severity(violations[0]) == "drop"


@pytest.mark.parametrize(
    "turns",
    [
        [("gpt", "a"), ("human", "q")],
        [("human", "q"), ("human", "q"), ("gpt", "a")],
        [("human", "q"), ("gpt", "a"), ("function_call", CALL), ("observation", "o")],
        [("human", "q"), ("function_call", CALL), ("observation", "o"), ("observation", "o"), ("gpt", "a")],
    ],
)
def test_position_violations_drop_the_row(turns: list[tuple[str, str]]) -> None:
    violations = check_lf_row(row(*turns), columns=COLUMNS, tags=None)
    assert "invalid_role_tag" in codes(violations)
    assert all(is_fatal(v) for v in violations)


def test_odd_count_and_empty_rows_are_dropped() -> None:
    assert codes(check_lf_row(row(("human", "q")), columns=COLUMNS, tags=None)) == ["odd_message_count"]
    assert codes(
        check_lf_row(row(("human", "q"), ("gpt", "a"), ("human", "q")), columns=COLUMNS, tags=None)
    ) == ["odd_message_count"]
    assert codes(check_lf_row(row(), columns=COLUMNS, tags=None)) == ["empty_conversation"]


def test_function_call_json_rules() -> None:
    ok_forms = [
        CALL,
        f"[{CALL}, {CALL}]",
        f"<think>\nplan\n</think>\n\n{CALL}",
        f"<think>any  spacing</think>\nprose\n<tool_call>\n{CALL}\n</tool_call>",
    ]
    for value in ok_forms:
        assert (
            check_lf_row(row(("human", "q"), ("function_call", value)), columns=COLUMNS, tags=None) == []
        ), value
    bad_forms = ["not json", f"<think>plan</think>{CALL}", '{"name": "bash"}', '["x"]', f"{CALL} trailing"]
    for value in bad_forms:
        violations = check_lf_row(row(("human", "q"), ("function_call", value)), columns=COLUMNS, tags=None)
        assert codes(violations) == ["invalid_function_json"], value
        assert violation_severity(violations[0]) == "abort"
    hinted = check_lf_row(
        row(("human", "q"), ("function_call", f"<think>plan</think>{CALL}")), columns=COLUMNS, tags=None
    )
    assert "exactly" in hinted[0]


def test_string_arguments_are_a_warning() -> None:
    value = json.dumps({"name": "bash", "arguments": json.dumps({"command": "ls"})})
    violations = check_lf_row(row(("human", "q"), ("function_call", value)), columns=COLUMNS, tags=None)
    assert codes(violations) == ["non_object_arguments"] and not is_fatal(violations[0])


@pytest.mark.parametrize(
    ("tools", "code", "severity"),
    [
        ("[]", "empty_tools_array", "warn"),
        ("{not json", "invalid_tools_json", "abort"),
        ([{"name": "x"}], "tools_not_string", "abort"),
        ('{"name": "x"}', "tools_not_object_array", "abort"),
        ('[{"description": "no name"}]', "tool_without_name", "warn"),
    ],
)
def test_tools_column_rules(tools: object, code: str, severity: str) -> None:
    violations = check_lf_row(row(("human", "q"), ("gpt", "a"), tools=tools), columns=COLUMNS, tags=None)
    assert codes(violations) == [code]
    assert violation_severity(violations[0]) == severity


def test_tools_empty_or_none_is_fine_and_plain_schemas_accepted() -> None:
    for tools in ("", None, '[{"name": "x", "parameters": {}}]'):
        assert check_lf_row(row(("human", "q"), ("gpt", "a"), tools=tools), columns=COLUMNS, tags=None) == []


def test_tools_not_checked_when_column_unmapped() -> None:
    assert check_lf_row(row(("human", "q"), ("gpt", "a"), tools="{bad"), columns=None, tags=None) == []


def test_non_string_values_abort() -> None:
    violations = check_lf_row(row(("human", "q"), ("gpt", 5)), columns=COLUMNS, tags=None)
    assert codes(violations) == ["non_string_value"]
    assert codes(check_lf_row(row(("human", "q"), ("gpt", "a"), system=3), columns=COLUMNS, tags=None)) == [
        "system_not_string"
    ]


def test_missing_messages_column() -> None:
    violations = check_lf_row({"messages": []}, columns=COLUMNS, tags=None)
    assert codes(violations) == ["no_messages_column"]


def test_columns_block_without_messages_key_mimics_llamafactory() -> None:
    # A columns block replaces every default, so "messages" is unset and nothing can be read.
    violations = check_lf_row(row(("human", "q"), ("gpt", "a")), columns={"system": "system"}, tags=None)
    assert codes(violations) == ["no_messages_column"]


def test_role_content_tags() -> None:
    tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    good = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert check_lf_row(good, columns={"messages": "messages"}, tags=tags) == []
    # tags omitted from a tags block become None: an "observation" role is then invalid.
    assert resolve_tags(tags)["observation_tag"] is None
    bad = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "observation", "content": "o"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert "invalid_role_tag" in codes(check_lf_row(bad, columns={"messages": "messages"}, tags=tags))


OPENAI_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "bash", "arguments": {"command": "ls"}},
                    },
                    {
                        "id": "2",
                        "type": "function",
                        "function": {"name": "bash", "arguments": {"command": "pwd"}},
                    },
                ],
            },
            {"role": "tool", "content": "r1"},
            {"role": "tool", "content": "r2"},
            {"role": "assistant", "content": "done"},
        ]
    }
]


def test_detect_format_variants() -> None:
    sharegpt = detect_format([row(("human", "q"), ("gpt", "a"))])
    assert (sharegpt.formatting, sharegpt.tags) == ("sharegpt", None)
    assert sharegpt.columns == {"messages": "conversations", "system": "system", "tools": "tools"}
    role_content = detect_format(
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    )
    assert role_content.formatting == "sharegpt" and role_content.tags is not None
    assert role_content.tags["role_tag"] == "role" and role_content.columns == {"messages": "messages"}
    openai = detect_format(OPENAI_ROWS)
    assert (
        openai.formatting == "openai" and openai.tags is not None and openai.tags["observation_tag"] == "tool"
    )
    entry = openai.dataset_info_entry("f.json")
    assert entry["formatting"] == "openai" and entry["tags"]["role_tag"] == "role"
    with pytest.raises(ValueError, match="no message list column"):
        detect_format([{"text": "plain"}])


def test_openai_rows_checked_with_merged_tool_results() -> None:
    info = detect_format(OPENAI_ROWS)
    assert check_lf_row(OPENAI_ROWS[0], columns=info.columns, tags=info.tags, formatting="openai") == []
    string_args = json.loads(json.dumps(OPENAI_ROWS[0]))
    string_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"command": "ls"}'
    violations = check_lf_row(string_args, columns=info.columns, tags=info.tags, formatting="openai")
    assert codes(violations) == ["non_object_arguments"]


def test_column_type_mix_is_reported() -> None:
    rows = [row(("human", "q"), ("gpt", "a"), tools=""), row(("human", "q"), ("gpt", "a"), tools=[{"a": 1}])]
    assert codes(check_column_types(rows)) == ["mixed_column_types"]
    assert check_column_types([rows[0], rows[0]]) == []
