"""Turn splitting of ShareGPT and messages rows, and row access for both JSON layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft.dashboard.datasets import build_row_index, histogram, parse_tool_calls, row_turns, split_reasoning


def test_split_reasoning() -> None:
    assert split_reasoning("<think>\nplan\n</think>\n\nanswer") == ("plan", "answer")
    assert split_reasoning("<think>\n\n</think>\n\nanswer") == ("", "answer")
    assert split_reasoning("no thoughts") == (None, "no thoughts")


def test_parse_tool_calls_bare_object_list_and_tagged() -> None:
    one, prose = parse_tool_calls('{"name": "ls", "arguments": {"path": "."}}')
    assert one == [{"name": "ls", "arguments": {"path": "."}}] and prose == ""
    two, _ = parse_tool_calls('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]')
    assert [c["name"] for c in two] == ["a", "b"]
    tagged, prose = parse_tool_calls(
        'Reading.\n<tool_call>\n{"name": "cat", "arguments": {"f": "x"}}\n</tool_call>'
    )
    assert tagged == [{"name": "cat", "arguments": {"f": "x"}}] and prose == "Reading."
    openai, _ = parse_tool_calls(
        '{"type": "function", "function": {"name": "q", "arguments": "{\\"k\\": 1}"}}'
    )
    assert openai == [{"name": "q", "arguments": {"k": 1}}]


def test_a_call_that_is_not_json_is_kept_raw() -> None:
    calls, _ = parse_tool_calls("<tool_call>\n{broken\n</tool_call>")
    assert calls == [{"name": None, "arguments": None, "raw": "{broken"}]


def test_messages_rows_in_the_reference_layout() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "task"},
            {
                "role": "assistant",
                "content": '<think>\nhmm\n</think>\n\n<tool_call>\n{"name": "ls", "arguments": {}}\n</tool_call>',
            },
            {
                "role": "user",
                "content": "<tool_response>\na.py\n</tool_response>\n<tool_response>\nb.py\n</tool_response>",
            },
            {"role": "assistant", "content": "done"},
        ],
        "_instance_id": "x",
    }
    view = row_turns(row)
    assert view["system"] == "sys" and view["meta"] == {"_instance_id": "x"}
    assert [t["role"] for t in view["turns"]] == ["user", "assistant", "tool", "assistant"]
    assert view["turns"][1]["reasoning"] == "hmm" and view["turns"][1]["tool_calls"][0]["name"] == "ls"
    assert view["turns"][2]["results"] == ["a.py", "b.py"]


def test_histogram_bins_every_value() -> None:
    hist = histogram([1, 2, 3, 10], bins=3)
    assert hist["counts"] == [3, 0, 1] and hist["edges"][0] == 1 and hist["edges"][-1] == 10
    assert histogram([5, 5])["counts"] == [2]
    assert histogram([]) == {"edges": [], "counts": []}


ROWS = [
    {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]} for i in range(4)
]


@pytest.mark.parametrize("layout", ["sft_lines", "pretty", "jsonl", "compact"])
def test_row_index_reads_every_layout(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "d.json"
    if layout == "sft_lines":
        path.write_text("[\n" + ",\n".join(json.dumps(r) for r in ROWS) + "\n]\n")
    elif layout == "pretty":
        path.write_text(json.dumps(ROWS, indent=4))
    elif layout == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        path.write_text(json.dumps(ROWS))
    index = build_row_index(path)
    assert index.count == 4
    assert (index.offsets is not None) == (layout in ("sft_lines", "jsonl"))
