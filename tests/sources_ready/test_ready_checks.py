"""local_lf without normalisation: invalid rows are reported (rejects + funnel) before training and the
filtered copy is registered; repo exclusion applies where rows carry instance ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.core.canonical import Reject
from sft.engine.ready import ReadyDataError, prepare_local_file
from tests.sources_ready.conftest import TOOLS_JSON, sharegpt_row, write_json, write_jsonl

BAD_ORDER = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
ODD_COUNT = {
    "conversations": [
        {"from": "human", "value": "q"},
        {"from": "gpt", "value": "a"},
        {"from": "human", "value": "again"},
    ]
}


def _bad_json_call() -> dict[str, Any]:
    row = sharegpt_row(9)
    row["conversations"][1]["value"] = "<think>x</think>{not json"
    return row


def _tools_as_list() -> dict[str, Any]:
    row = sharegpt_row(8)
    row["tools"] = json.loads(row["tools"])  # a JSON array object instead of a string: aborts LLaMA-Factory
    return row


def test_invalid_rows_are_rejected_counted_and_the_filtered_copy_is_registered(
    tmp_path: Path, proj: Path, local_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        sharegpt_row(0),
        BAD_ORDER,
        sharegpt_row(2),
        ODD_COUNT,
        _bad_json_call(),
        sharegpt_row(5),
        _tools_as_list(),
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="sft.engine.ready"):
        result = prepare_local_file(path, local_settings(path), proj, credentials=Credentials())

    assert [r["conversations"][0]["value"] for r in result.lf_rows] == ["task 0", "task 2", "task 5"]
    assert result.funnel["funnel"]["rows_found"] == 7
    assert result.funnel["funnel"]["rows_invalid"] == 4
    assert result.funnel["funnel"]["rows_written"] == 3
    assert result.funnel["rejects_by_stage"] == {"lf_rules": 4}
    assert result.funnel["rejects_by_reason"] == {
        "lf_rules:invalid_role_tag": 1,
        "lf_rules:odd_message_count": 1,
        "lf_rules:invalid_function_json": 1,
        "lf_rules:tools_not_string": 1,
    }
    by_row = {r["trial_name"]: r for r in result.rejects}
    assert sorted(by_row) == ["mixed#row1", "mixed#row3", "mixed#row4", "mixed#row6"]
    for reject in result.rejects:
        Reject.model_validate(reject)
        assert reject["stage"] == "lf_rules"
    assert by_row["mixed#row1"]["detail"].startswith(
        f"{path} row 1: drop:invalid_role_tag: message 0 has role 'gpt'"
    )
    assert "row 4: abort:invalid_function_json" in by_row["mixed#row4"]["detail"]
    assert "a reasoning prefix must be exactly" in by_row["mixed#row4"]["detail"]

    copy = proj / "artifacts" / "data" / "lf_data" / "ready_test.json"
    registration = result.funnel["registration"]
    assert registration["registered"] == "filtered_copy"
    assert registration["entry"] == {
        "file_name": str(copy),
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }
    assert "4 row(s) removed" in registration["note"]
    assert "4 of 7 row(s) break LLaMA-Factory's rules" in caplog.text


def test_warning_only_rows_are_kept_and_counted(tmp_path: Path, proj: Path, local_settings: Any) -> None:
    row = sharegpt_row(1)
    # string arguments render as a JSON string inside the call: a warning, LLaMA-Factory keeps the row
    row["conversations"][1]["value"] = json.dumps({"name": "bash", "arguments": "ls"})
    path = write_json(tmp_path / "warn.json", [sharegpt_row(0), row])
    result = prepare_local_file(path, local_settings(path), proj, credentials=Credentials())
    assert len(result.lf_rows) == 2 and result.rejects == []
    assert result.funnel["funnel"]["rows_with_warnings"] == 1
    assert result.funnel["warnings_by_code"] == {"non_object_arguments": 1}
    assert result.funnel["registration"]["registered"] == "original_file"


def test_an_empty_tools_array_is_written_as_no_tools_and_counted(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    row = sharegpt_row(1)
    row["tools"] = " [ ] "  # LLaMA-Factory would train an empty '# Tools' block the chat template never shows
    path = write_json(tmp_path / "empty_tools.json", [sharegpt_row(0), row])
    result = prepare_local_file(path, local_settings(path), proj, credentials=Credentials())
    assert [r["tools"] for r in result.lf_rows] == [TOOLS_JSON, ""]
    assert result.rejects == [] and result.funnel["warnings_by_code"] == {}
    assert result.funnel["repairs"] == {"empty_tools_array": 1}
    registration = result.funnel["registration"]
    assert registration["registered"] == "filtered_copy"
    assert "1 tools column(s) '[]' written as ''" in registration["note"]


def test_a_column_whose_type_changes_between_kept_rows_is_an_error(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    path = write_json(tmp_path / "types.json", [sharegpt_row(0, _score=0.5), sharegpt_row(1, _score="high")])
    with pytest.raises(
        ReadyDataError,
        match=r"types\.json: abort:mixed_column_types: column '_score'.*"
        r"normalize_ready_data: true",
    ):
        prepare_local_file(path, local_settings(path), proj, credentials=Credentials())


def test_the_source_file_is_never_overwritten_by_its_filtered_copy(proj: Path, local_settings: Any) -> None:
    path = write_json(
        proj / "artifacts" / "data" / "lf_data" / "ready_test.json", [sharegpt_row(0), BAD_ORDER]
    )
    with pytest.raises(ReadyDataError, match="choose another conversion.data_name"):
        prepare_local_file(path, local_settings(path), proj, credentials=Credentials())
    assert len(json.loads(path.read_text())) == 2


def test_repo_exclusion_applies_to_rows_with_instance_ids(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    exclusions = proj / "artifacts" / "data" / "excluded_repos.txt"
    exclusions.parent.mkdir(parents=True)
    exclusions.write_text("# benchmark repos\ndjango/django\n")
    rows = [
        sharegpt_row(0, _instance_id="django__django-123"),
        sharegpt_row(1, _meta=json.dumps({"instance_id": "psf__requests-7"})),
        sharegpt_row(2, instance_id="Django__Django-9__abc"),
    ]
    path = write_json(tmp_path / "ids.json", rows)
    settings = local_settings(path, exclude_repos_file="artifacts/data/excluded_repos.txt")
    result = prepare_local_file(path, settings, proj, credentials=Credentials())

    assert [r["conversations"][0]["value"] for r in result.lf_rows] == ["task 1"]
    assert result.funnel["funnel"]["rows_repo_excluded"] == 2
    assert {r["instance_id"] for r in result.rejects} == {"django__django-123", "Django__Django-9__abc"}
    assert {r["reason"] for r in result.rejects} == {"excluded_repo"}
    assert result.funnel["exclusion"]["applied"] is True
    assert result.funnel["exclusion"]["rows_with_instance_id"] == 3
    assert result.funnel["registration"]["registered"] == "filtered_copy"


def test_repo_exclusion_is_reported_as_not_applied_without_instance_ids(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    exclusions = proj / "artifacts" / "data" / "excluded_repos.txt"
    exclusions.parent.mkdir(parents=True)
    exclusions.write_text("django/django\n")
    path = write_json(tmp_path / "plain.json", [sharegpt_row(0)])
    settings = local_settings(path, exclude_repos_file="artifacts/data/excluded_repos.txt")
    result = prepare_local_file(path, settings, proj, credentials=Credentials())
    assert result.funnel["exclusion"]["applied"] is False
    assert "no row carries an instance id" in result.funnel["exclusion"]["note"]


@pytest.mark.parametrize("instance_id", ["django__django-1", None])
def test_a_configured_exclusion_file_that_is_missing_is_an_error(
    tmp_path: Path, proj: Path, local_settings: Any, instance_id: str | None
) -> None:
    """As for a Harbor job: a list the config names must exist, whether or not the rows carry instance ids
    (a typo in the path must not silently switch eval-leak protection off)."""
    extra = {"_instance_id": instance_id} if instance_id else {}
    path = write_json(tmp_path / "ids.json", [sharegpt_row(0, **extra)])
    settings = local_settings(path, exclude_repos_file="artifacts/data/missing.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        prepare_local_file(path, settings, proj, credentials=Credentials())
