"""Ready-made data written by other tools: LLaMA-Factory's own demo files (tests/fixtures/ready/SOURCES.md) as
``local_lf``: glaive tool calls (``"tools": "[]"``, no system prompt), v1 typed-part messages with reasoning,
multimodal rows and alpaca rows. Each shape has a real file, and each expectation is exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.config.schema import RuntimeInput
from sft.engine.ready import ReadyDataError, adapt_rows, prepare_local_file, read_rows
from sft.report.fidelity import TemplateFidelityError, check_template_fidelity, classify, enforce_fidelity
from sft.rules.render import DEFAULT_SYSTEM, dataset_info_entry
from tests.sources_ready.conftest import make_settings, role_content_row, write_json, write_jsonl

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ready"
GLAIVE = FIXTURES / "glaive_toolcall_en_demo.json"
TYPED = FIXTURES / "reason_tool_use_demo_50.jsonl"
MLLM = FIXTURES / "mllm_demo.json"
ALPACA = FIXTURES / "alpaca_en_demo.json"
GLAIVE_EMPTY_TOOLS = [1, 2, 4, 5, 6, 8, 9]  # "tools": "[]"
GLAIVE_WITH_TOOLS = [0, 3, 7, 10, 11]
TYPED_REJECTS = {  # defects of the data itself (see the reasons), not of the converter
    "reason_tool_use_demo_50#row2": ("format", "fewer_results_than_calls"),
    "reason_tool_use_demo_50#row5": ("format", "think_tag_in_text"),
    "reason_tool_use_demo_50#row6": ("format", "think_tag_in_text"),
}
TYPED_KEPT = [0, 1, 3, 4, 7, 8, 9, 10]
TYPED_TWO_QUERIES = [1, 10]  # a second user query: Qwen3 hides the reasoning of the turns before it


def _settings(path: Path, template: str = "qwen3_nothink", **conversion: Any) -> RuntimeInput:
    settings = make_settings({"type": "local_lf", "lf_path": str(path)}, **conversion)
    return settings.model_copy(
        update={"training": settings.training.model_copy(update={"template": template})}
    )


def _prepare(path: Path, proj: Path, template: str = "qwen3_nothink", **conversion: Any) -> Any:
    return prepare_local_file(path, _settings(path, template, **conversion), proj, credentials=Credentials())


def _fidelity(result: Any, tokenizer: Path, template: str) -> dict[str, Any]:
    entry = result.funnel["registration"]["entry"]
    return check_template_fidelity(result.lf_rows, str(tokenizer), template=template, dataset_entry=entry)


# ------------------------------------------------------------------------------------------ glaive


def test_glaive_empty_tools_arrays_are_written_as_no_tools_by_default(proj: Path) -> None:
    result = _prepare(GLAIVE, proj)
    source = json.loads(GLAIVE.read_text())
    assert [r["tools"] for r in result.lf_rows] == [
        "" if i in GLAIVE_EMPTY_TOOLS else source[i]["tools"] for i in range(12)
    ]
    assert [r["conversations"] for r in result.lf_rows] == [r["conversations"] for r in source]
    assert result.rejects == []
    assert result.funnel["repairs"] == {"empty_tools_array": 7}
    assert result.funnel["warnings_by_code"] == {"tools_without_system": 5}
    assert any(
        w.startswith("5 row(s) offer tools but have no system prompt") and "normalize_ready_data: true" in w
        for w in result.funnel["warnings"]
    )
    registration = result.funnel["registration"]
    assert registration["registered"] == "filtered_copy"
    assert "7 tools column(s) '[]' written as ''" in registration["note"]


@pytest.mark.slow
def test_glaive_fidelity_failure_names_the_cause_and_the_option_that_fixes_it(
    proj: Path, tiny_model_dir: Path
) -> None:
    report = _fidelity(_prepare(GLAIVE, proj), tiny_model_dir, "qwen3_nothink")
    assert report["summary"]["statuses"] == {"by_design:empty_think": 7, "mismatch": 5}
    assert report["summary"]["causes"] == {"tools_without_system": 5}
    assert [s["index"] for s in report["mismatches"]] == GLAIVE_WITH_TOOLS
    with pytest.raises(TemplateFidelityError) as raised:
        enforce_fidelity(report, report_path="fidelity.json", max_mismatch=0.0)
    message = str(raised.value)
    assert "5 of 12 rows differ" in message
    assert "Known causes: 5 row(s) offer tools but have no system prompt" in message
    assert "'<|im_start|>system\\n\\n\\n# Tools'" in message and "'<|im_start|>system\\n# Tools'" in message
    assert "conversion.normalize_ready_data: true" in message


@pytest.mark.slow
def test_fidelity_names_the_empty_tools_array_cause_of_rows_registered_unrepaired(
    tiny_model_dir: Path,
) -> None:
    """The glaive file as LLaMA-Factory's own dataset_info entry registers it (before sft's '[]' rewrite)."""
    entry = {
        "file_name": str(GLAIVE),
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    }
    report = check_template_fidelity(
        read_rows(GLAIVE), str(tiny_model_dir), template="qwen3_nothink", dataset_entry=entry
    )
    assert report["summary"]["statuses"] == {"mismatch": 12}
    assert report["summary"]["causes"] == {"empty_tools_array": 7, "tools_without_system": 5}
    with pytest.raises(TemplateFidelityError, match=r"7 row\(s\) have tools '\[\]'.*write '' for no tools"):
        enforce_fidelity(report, report_path="fidelity.json", max_mismatch=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("template", ["qwen3", "qwen3_nothink"])
def test_glaive_normalised_has_no_fidelity_failure(proj: Path, tiny_model_dir: Path, template: str) -> None:
    result = _prepare(GLAIVE, proj, template, normalize_ready_data=True)
    assert [r["system"] for r in result.lf_rows] == [DEFAULT_SYSTEM] * 12
    report = _fidelity(result, tiny_model_dir, template)
    assert report["summary"]["failing"] == 0 and report["passed"] is True


# ------------------------------------------------------------------------------------ typed parts


def test_typed_part_rows_are_converted_and_always_normalised(proj: Path) -> None:
    result = _prepare(TYPED, proj, "qwen3", keep_reasoning=True)  # normalize_ready_data stays false
    assert {r["trial_name"]: (r["stage"], r["reason"]) for r in result.rejects} == TYPED_REJECTS
    assert [json.loads(r["_meta"])["extra"]["ready_row"] for r in result.lf_rows] == TYPED_KEPT
    funnel = result.funnel["funnel"]
    assert (funnel["rows_found"], funnel["rows_unconvertible"], funnel["rows_written"]) == (11, 3, 8)
    assert result.funnel["normalized"] is True
    assert result.funnel["format"]["converted_from"] == "typed_parts"
    assert result.funnel["format"]["layout"] == "openai_messages"
    assert result.funnel["registration"]["entry"] == dataset_info_entry(
        str(proj / "artifacts" / "data" / "lf_data" / "ready_test.json")
    )

    source = [json.loads(line) for line in TYPED.read_text().splitlines()]
    system, user, answer = (m["content"] for m in source[0]["messages"])
    assert result.lf_rows[0]["system"] == system[0]["value"]
    assert result.lf_rows[0]["conversations"] == [
        {"from": "human", "value": user[0]["value"]},
        {"from": "gpt", "value": f"<think>\n{answer[0]['value'].strip()}\n</think>\n\n{answer[1]['value']}"},
    ]
    assert json.loads(result.lf_rows[0]["tools"]) == json.loads(source[0]["tools"])
    # row 8 ends on a call: reasoning part -> think block, tool_call part -> the call (the bare JSON form
    # LLaMA-Factory's FunctionFormatter wraps in <tool_call> tags, render._render_function_call)
    reasoning, call = (p["value"] for p in source[8]["messages"][2]["content"])
    assert result.lf_rows[5]["conversations"][-1] == {
        "from": "function_call",
        "value": f"<think>\n{reasoning.strip()}\n</think>\n\n{call}",
    }


def test_typed_part_reasoning_follows_the_template_policy(proj: Path) -> None:
    result = _prepare(TYPED, proj)  # qwen3_nothink: reasoning is dropped, and the report says so
    assert "<think>" not in json.dumps([r["conversations"] for r in result.lf_rows])
    assert result.funnel["reasoning"]["kept"] is False
    source = [json.loads(line) for line in TYPED.read_text().splitlines()]
    with_reasoning = sum(
        any(part["type"] == "reasoning" for part in m["content"])
        for i in TYPED_KEPT
        for m in source[i]["messages"]
        if m["role"] == "assistant"
    )
    assert result.funnel["reasoning"]["turns_with_reasoning"] == with_reasoning


def test_typed_part_defects_are_refused_with_the_reason(tmp_path: Path, proj: Path) -> None:
    base = json.loads(TYPED.read_text().splitlines()[0])
    untrained = json.loads(json.dumps(base))
    untrained["messages"][2]["loss_weight"] = 0.0
    unknown = json.loads(json.dumps(base))
    unknown["messages"][1]["content"].append({"type": "citation", "value": "x"})
    image = json.loads(json.dumps(base))
    image["messages"][1]["content"].append({"type": "image_url", "value": "a.jpg"})
    bad_call = json.loads(json.dumps(base))
    bad_call["messages"][2]["content"][1] = {"type": "tool_call", "value": "{not json"}
    path = write_jsonl(tmp_path / "typed.jsonl", [base, untrained, unknown, image, bad_call])
    result = _prepare(path, proj)
    assert [(r["trial_name"], r["stage"], r["reason"]) for r in result.rejects] == [
        ("typed#row1", "format", "loss_weight_not_representable"),
        ("typed#row2", "format", "unsupported_content_part"),
        ("typed#row3", "multimodal", "multimodal_row"),
        ("typed#row4", "format", "invalid_tool_call_part"),
    ]
    assert "message 2 (assistant) has loss_weight 0.0" in result.rejects[0]["detail"]
    assert result.funnel["rejects_by_stage"] == {"format": 3, "multimodal": 1}
    assert len(result.lf_rows) == 1


@pytest.mark.slow
def test_typed_part_rows_render_as_llamafactorys_own_v1_qwen3_renderer(
    proj: Path, tiny_model_dir: Path
) -> None:
    """Our normalised row through LLaMA-Factory 0.9.5's training path == the typed row through LLaMA-Factory's
    v1 qwen3 renderer (its own code for this format), up to Qwen3's history-reasoning rule."""
    from llamafactory.v1.plugins.model_plugins.templates.qwen3 import render_qwen3_messages
    from transformers import AutoTokenizer

    result = _prepare(TYPED, proj, "qwen3", keep_reasoning=True)
    source = [json.loads(line) for line in TYPED.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ours = _lf_095_ids(result.lf_rows, tiny_model_dir, "qwen3")
    statuses = {}
    for index, ids in zip(TYPED_KEPT, ours, strict=True):
        v1 = render_qwen3_messages(tokenizer, source[index]["messages"], tools=source[index]["tools"])
        statuses[index] = classify(ids, list(v1["input_ids"]), tokenizer)
    assert statuses == {
        i: "by_design:history_reasoning" if i in TYPED_TWO_QUERIES else "equal" for i in TYPED_KEPT
    }

    report = _fidelity(result, tiny_model_dir, "qwen3")
    assert report["summary"]["failing"] == 0
    assert report["summary"]["statuses"] == {"by_design:history_reasoning": 2, "equal": 6}


def _lf_095_ids(rows: list[dict[str, Any]], tokenizer_dir: Path, template: str) -> list[list[int]]:
    """Input ids exactly as ``llamafactory-cli train`` (0.9.5) builds them for our registered rows."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    from sft.report.tokens import align_row, dataset_converter, lf_data_args, lf_template, load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_dir)).tokenizer
    data_args = lf_data_args(template)
    processor = SupervisedDatasetProcessor(
        template=lf_template(tokenizer, data_args), tokenizer=tokenizer, processor=None, data_args=data_args
    )
    converter = dataset_converter(data_args, dataset_info_entry("x"))
    out = []
    for row in rows:
        aligned = align_row(row, converter)
        assert aligned.status == "ok", aligned.detail
        batch = {
            "_prompt": [aligned.prompt],
            "_response": [aligned.response],
            "_system": [aligned.system],
            "_tools": [aligned.tools],
            "_images": [None],
            "_videos": [None],
            "_audios": [None],
        }
        out.append(list(processor.preprocess_dataset(batch)["input_ids"][0]))
    return out


# ------------------------------------------------------------------------------------------ multimodal


def test_a_multimodal_file_is_refused_with_a_clear_message(proj: Path) -> None:
    with pytest.raises(ReadyDataError) as raised:
        _prepare(MLLM, proj)
    message = str(raised.value)
    assert "no usable row is left (6 rejected: 6 multimodal)" in message
    assert (
        "row 0: column 'images' holds 2 file(s) (['mllm_demo_data/1.jpg', 'mllm_demo_data/1.jpg'])" in message
    )
    assert "sft trains text-only models" in message and "'<image>'" in message
    assert "normalize_ready_data" not in message


def test_multimodal_rows_among_text_rows_are_counted_rejects(tmp_path: Path, proj: Path) -> None:
    mllm = json.loads(MLLM.read_text())
    text = [role_content_row(0), role_content_row(1)]
    path = write_json(tmp_path / "mixed.json", [text[0], *mllm, text[1]])
    result = _prepare(path, proj)
    assert [r["messages"] for r in result.lf_rows] == [t["messages"] for t in text]
    assert [(r["trial_name"], r["stage"], r["reason"]) for r in result.rejects] == [
        (f"mixed#row{i}", "multimodal", "multimodal_row") for i in range(1, 7)
    ]
    assert result.funnel["funnel"]["rows_multimodal"] == 6
    assert result.funnel["rejects_by_reason"] == {"multimodal:multimodal_row": 6}
    assert "6 of 8 row(s) are multimodal and are not trained" in " ".join(result.funnel["warnings"])
    assert result.funnel["registration"]["registered"] == "filtered_copy"


# ------------------------------------------------------------------------------------------ alpaca


def test_alpaca_rows_become_single_turn_conversations(proj: Path) -> None:
    result = _prepare(ALPACA, proj)
    source = json.loads(ALPACA.read_text())
    assert [r["conversations"] for r in result.lf_rows] == [
        [
            {"from": "human", "value": s["instruction"] + ("\n" + s["input"] if s["input"] else "")},
            {"from": "gpt", "value": s["output"]},
        ]
        for s in source
    ]
    assert result.lf_rows[5]["conversations"][0]["value"] == (
        "Given the parameters of a triangle, find out its perimeter.\nSide 1 = 4\nSide 2 = 6\nSide 3 = 8"
    )
    assert result.funnel["format"]["converted_from"] == "alpaca"
    registration = result.funnel["registration"]
    assert registration["registered"] == "filtered_copy" and "converted from alpaca" in registration["note"]
    assert registration["entry"]["columns"] == {"messages": "conversations"}


def test_alpaca_system_history_and_defects(tmp_path: Path, proj: Path) -> None:
    rows = [
        {
            "instruction": "2+2?",
            "input": "",
            "output": "4",
            "system": "Be brief.",
            "history": [["hi", "hello"]],
        },
        {"instruction": "rank", "input": "", "output": ["a", "b"], "system": ""},
        {"instruction": "q", "input": "", "output": "a", "system": "", "history": [["only one"]]},
    ]
    result = _prepare(write_json(tmp_path / "alp.json", rows), proj)
    assert result.lf_rows == [
        {
            "conversations": [
                {"from": "human", "value": "hi"},
                {"from": "gpt", "value": "hello"},
                {"from": "human", "value": "2+2?"},
                {"from": "gpt", "value": "4"},
            ],
            "system": "Be brief.",
        }
    ]
    assert [(r["trial_name"], r["stage"], r["reason"]) for r in result.rejects] == [
        ("alp#row1", "format", "alpaca_output_not_string"),
        ("alp#row2", "format", "alpaca_bad_history"),
    ]
    assert result.funnel["funnel"]["rows_unconvertible"] == 2


@pytest.mark.slow
def test_alpaca_conversion_trains_the_tokens_llamafactory_trains_from_the_alpaca_file(
    tmp_path: Path, proj: Path, tiny_model_dir: Path
) -> None:
    from sft.datasets.llamafactory import DatasetInfoDataset, LlamaFactoryDataset
    from tests.sources_ready.test_ready_lf_load import _load_with_llamafactory

    result = _prepare(ALPACA, proj)
    ours_file = Path(result.funnel["registration"]["entry"]["file_name"])  # what the convert pipeline writes
    lf_dir = ours_file.parent
    LlamaFactoryDataset(str(ours_file)).save(result.lf_rows)
    DatasetInfoDataset(str(lf_dir / "dataset_info.json")).save(
        {
            "ours": result.funnel["registration"]["entry"],
            "theirs": {"file_name": str(ALPACA)},
        }  # alpaca default
    )
    ours = _load_with_llamafactory(lf_dir, "ours", tiny_model_dir, tmp_path / "a")
    theirs = _load_with_llamafactory(lf_dir, "theirs", tiny_model_dir, tmp_path / "b")
    assert len(ours) == len(theirs) == 12
    assert ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]


# ------------------------------------------------------------------------------------------ detection


def test_adaptation_leaves_known_layouts_alone() -> None:
    rows = read_rows(GLAIVE)
    adapted = adapt_rows(rows)
    assert adapted.layout is None and adapted.problems == {} and adapted.rows == rows
