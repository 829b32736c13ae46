"""local_lf: every file format and layout is read, detected and registered with the exact entry;
bad files are clear errors naming the file and the first offending row."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.engine.ready import ReadyDataError, detect_layout, layout_name, prepare_local_file, read_rows
from sft.rules.lf_rules import FormatInfo
from tests.sources_ready.conftest import (
    OPENAI_TAGS,
    ROLE_CONTENT_TAGS,
    openai_row,
    role_content_row,
    sharegpt_row,
    write_json,
    write_jsonl,
    write_parquet,
)

WRITERS: dict[str, Callable[[Path, list[Any]], Path]] = {
    "array.json": write_json,
    "lines.json": write_jsonl,
    "rows.jsonl": write_jsonl,
    "rows.parquet": write_parquet,
}
LAYOUTS = {
    "sharegpt_from_value": (
        sharegpt_row,
        FormatInfo("sharegpt", {"messages": "conversations", "system": "system", "tools": "tools"}, None),
    ),
    "sharegpt_role_content": (
        role_content_row,
        FormatInfo("sharegpt", {"messages": "messages"}, ROLE_CONTENT_TAGS),
    ),
    "openai_messages": (
        openai_row,
        FormatInfo("openai", {"messages": "messages", "tools": "tools"}, OPENAI_TAGS),
    ),
}


@pytest.mark.parametrize("file_name", sorted(WRITERS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_format_and_layout_is_read_detected_and_registered_as_is(
    tmp_path: Path, proj: Path, local_settings: Any, file_name: str, layout: str
) -> None:
    make_row, expected = LAYOUTS[layout]
    rows = [make_row(i) for i in range(4)]
    path = WRITERS[file_name](tmp_path / file_name, rows)

    result = prepare_local_file(path, local_settings(path), proj, credentials=Credentials())

    assert result.funnel["format"] == {
        "layout": layout,
        "formatting": expected.formatting,
        "columns": expected.columns,
        "tags": expected.tags,
        "converted_from": None,
        "conversion_note": "",
    }
    entry = {"file_name": str(path.resolve()), "formatting": expected.formatting, "columns": expected.columns}
    if expected.tags is not None:
        entry["tags"] = expected.tags
    assert result.funnel["registration"]["entry"] == entry
    assert result.funnel["registration"]["registered"] == "original_file"
    assert "num_samples" not in json.dumps(result.funnel["registration"])
    assert result.funnel["funnel"] == {
        "rows_found": 4,
        "rows_multimodal": 0,
        "rows_unconvertible": 0,
        "rows_invalid": 0,
        "rows_repo_excluded": 0,
        "rows_normalize_rejected": 0,
        "rows_valid": 4,
        "rows_selected": 4,
        "rows_written": 4,
        "rows_with_warnings": 4 if layout == "openai_messages" else 0,
    }
    column = expected.columns["messages"]
    assert [_without_nulls(r[column]) for r in result.lf_rows] == [r[column] for r in rows]
    assert result.rejects == []
    assert result.funnel["selection"]["seed"] == 42 and result.funnel["selection"]["n"] == 0


def _without_nulls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def test_parquet_rows_keep_their_content(tmp_path: Path) -> None:
    rows = [openai_row(i) for i in range(3)]
    back = read_rows(write_parquet(tmp_path / "x.parquet", rows))
    # Arrow gives every message the union of keys (missing ones as None); the values are unchanged.
    assert [_without_nulls(r["messages"]) for r in back] == [r["messages"] for r in rows]
    assert [r["tools"] for r in back] == [r["tools"] for r in rows]


def test_openai_layout_is_reported_with_the_converter_caveat(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    path = write_json(tmp_path / "oa.json", [openai_row(i) for i in range(2)])
    result = prepare_local_file(path, local_settings(path), proj, credentials=Credentials())
    assert any("normalize_ready_data: true" in w for w in result.funnel["warnings"])
    assert result.funnel["warnings_by_code"] == {"non_object_arguments": 2}


def test_detection_distinguishes_the_three_layouts() -> None:
    assert layout_name(detect_layout([sharegpt_row(0)], "x")) == "sharegpt_from_value"
    assert layout_name(detect_layout([role_content_row(0)], "x")) == "sharegpt_role_content"
    assert layout_name(detect_layout([openai_row(0)], "x")) == "openai_messages"
    # role/content without tool_calls or tool roles is plain ShareGPT with renamed tags
    info = detect_layout(
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}], "x"
    )
    assert (info.formatting, info.columns, info.tags) == (
        "sharegpt",
        {"messages": "messages"},
        ROLE_CONTENT_TAGS,
    )


# ------------------------------------------------------------------------------------------ bad files


def test_empty_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    with pytest.raises(ReadyDataError, match=r"empty\.json: the file is empty"):
        read_rows(path)
    path.write_text("  \n\n")
    with pytest.raises(ReadyDataError, match="the file is empty"):
        read_rows(path)


def test_empty_array_and_empty_parquet_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ReadyDataError, match=r"none\.json: the file holds no rows"):
        read_rows(write_json(tmp_path / "none.json", []))
    zero = tmp_path / "zero.parquet"
    zero.write_bytes(b"")
    with pytest.raises(ReadyDataError, match=r"zero\.parquet: the file is empty"):
        read_rows(zero)


def test_unreadable_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()  # reading a directory fails with OSError, also as root
    with pytest.raises(ReadyDataError, match=r"dir\.json: cannot read the file"):
        read_rows(unreadable)


def test_broken_json_array_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n{"conversations": []},\n{"conversations": [}\n]\n')
    with pytest.raises(ReadyDataError, match=r"broken\.json: not valid JSON at line 3"):
        read_rows(path)


def test_broken_json_line_names_the_line_and_row(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(sharegpt_row(0)) + "\n\n" + json.dumps(sharegpt_row(1)) + "\n{not json\n")
    with pytest.raises(ReadyDataError, match=r"broken\.jsonl: line 4 \(row 2\) is not valid JSON"):
        read_rows(path)


def test_single_json_object_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"data": [sharegpt_row(0)]}, indent=2))
    with pytest.raises(ReadyDataError, match=r"ONE JSON object with keys \['data'\]"):
        read_rows(path)


def test_non_object_row_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReadyDataError, match=r"rows\.json: row 1 is a list"):
        read_rows(write_json(tmp_path / "rows.json", [sharegpt_row(0), [1, 2]]))


def test_unsupported_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(
        ReadyDataError, match=r"unsupported file type '\.csv'; use \.json .*\.jsonl or \.parquet"
    ):
        read_rows(path)


def test_unknown_format_names_the_file_and_first_offending_row(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    path = write_jsonl(tmp_path / "alpaca.jsonl", [sharegpt_row(0), {"instruction": "x", "output": "y"}])
    with pytest.raises(
        ReadyDataError,
        match=r"alpaca\.jsonl: no known dataset format .* first offending row: 1 "
        r"\(keys \['instruction', 'output'\]\)",
    ):
        prepare_local_file(path, local_settings(path), proj, credentials=Credentials())
    odd = write_json(tmp_path / "odd.json", [{"messages": [{"speaker": "a", "text": "b"}]}])
    with pytest.raises(ReadyDataError, match=r"odd\.json: no known dataset format .*first offending row: 0"):
        prepare_local_file(odd, local_settings(odd), proj, credentials=Credentials())


def test_only_invalid_rows_is_an_error_naming_the_first_offending_row(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    bad = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
    odd = {"conversations": [{"from": "human", "value": "q"}]}
    path = write_json(tmp_path / "bad.json", [bad, odd])
    with pytest.raises(
        ReadyDataError,
        match=r"bad\.json: no usable row is left \(2 rejected: 2 lf_rules\); first offending row: "
        r".*bad\.json row 0: drop:invalid_role_tag.*fix the data \(see the rejects file",
    ) as raised:
        prepare_local_file(path, local_settings(path), proj, credentials=Credentials())
    # normalising rewrites only rows that pass the checks, so it must not be offered as the fix
    assert "normalize_ready_data" not in str(raised.value)
