"""Integration: rendered rows load through LLaMA-Factory 0.9.5's own data path with zero drops.

Uses ``llamafactory.hparams.get_train_args`` + ``load_tokenizer`` + ``get_template_and_fix_tokenizer`` +
``get_dataset`` (the code ``llamafactory-cli train`` runs before training) with the tiny offline Qwen3
tokenizer, for both ``qwen3`` and ``qwen3_nothink``. Also checks that our ``lf_rules`` verdicts agree with
what LLaMA-Factory actually does on bad rows, and that a rendered row tokenises to exactly the text of
Qwen3's official chat template.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sft.core.canonical import Trajectory
from sft.rules.lf_rules import check_lf_row, violation_severity
from sft.rules.render import dataset_info_entry, render_lf_row
from sft.rules.validate import repair_and_validate
from tests.convert.builders import assistant, call, system, tool, traj, user

pytestmark = pytest.mark.slow

COLUMNS = dataset_info_entry("x.json")["columns"]


def shapes() -> list[Trajectory]:
    """Every rendering shape: parallel calls, narration + call, reasoning, errors, repairs, unicode, cuts."""
    surrogate = json.loads('"bad \\ud800 char"')
    raw = [
        traj(system(), user(), assistant(calls=[call(id="a")]), tool("a.py", id="a"), assistant("Done.")),
        traj(
            system(),
            user(),
            assistant(
                reasoning="Both at once.", calls=[call(id="a"), call("read_file", {"path": "x"}, id="b")]
            ),
            tool("r1", id="a"),
            tool("r2", id="b"),
            assistant("Fine.", reasoning="All read."),
        ),
        traj(
            system(),
            user(),
            assistant("Let me look.", reasoning="plan", calls=[call(id="a")]),
            tool(id="a"),
            assistant("Let me look twice.", calls=[call(id="b"), call(id="c")]),
            tool(id="b"),
            tool(id="c"),
            assistant("ok"),
        ),
        traj(
            user(),
            assistant("trying", calls=[call(id="a")]),
            tool("<tool_use_error>no</tool_use_error>", id="a"),
            assistant(calls=[call(id="b"), call(id="c")]),
            tool(id="b"),
            tool(id="c", is_error=True),
            assistant("recovered"),
        ),
        traj(user(), assistant(calls=[call()]), tool("(empty)"), assistant(calls=[call()]), tool("trailing")),
        traj(
            system(),
            user("中文 ✓ " + surrogate),
            assistant(calls=[call(arguments={"command": "echo 😀 " + surrogate})]),
            tool(surrogate),
            assistant("完成 😀"),
        ),
        traj(
            system(),
            user(),
            assistant(
                reasoning="x",
                calls=[call("edit", {"new": "<tool_call>{}</tool_call>\n</think>\n\n"}, id="a")],
            ),
            tool(id="a"),
            assistant("ok", reasoning="odd </think> inside"),
        ),
        traj(user(), assistant("no tools here"), tools=[]),
        traj(
            system(),
            user(),
            assistant("mine"),
            user("more"),
            assistant("copied", trainable=False),
            user(),
            assistant("later"),
        ),
        traj(system(), user(), assistant(reasoning="thinking only"), user("and?"), assistant("answer")),
    ]
    fixed = []
    for item in raw:
        repaired, issues = repair_and_validate(item, drop_tool_errors=True)
        assert repaired is not None, issues
        fixed.append(repaired)
    return fixed


def rows_for_all_shapes() -> list[dict[str, Any]]:
    rows = []
    for shape in shapes():
        for keep in (True, False):
            if not keep and any(m.reasoning_content == "thinking only" for m in shape.messages):
                continue  # reasoning-only turn cannot be rendered without reasoning (RenderError, tested elsewhere)
            rows.append(render_lf_row(shape, keep_reasoning=keep))
    return rows


def write_dataset(directory: Path, rows: list[dict[str, Any]], name: str = "convert_test") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    (directory / "dataset_info.json").write_text(json.dumps({name: dataset_info_entry(f"{name}.json")}))


def load_with_llamafactory(
    tmp_path: Path, model_dir: Path, template_name: str, name: str = "convert_test"
) -> Any:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _finetuning, _generating = get_train_args(
        {
            "model_name_or_path": str(model_dir),
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "full",
            "dataset": name,
            "dataset_dir": str(tmp_path / "data"),
            "template": template_name,
            "cutoff_len": 8192,
            "overwrite_cache": True,
            "cache_dir": str(tmp_path / "cache"),
            "output_dir": str(tmp_path / "out"),
            "report_to": "none",
            "per_device_train_batch_size": 1,
        }
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    return module["train_dataset"], tokenizer_module["tokenizer"]


class _Collect(logging.Handler):
    """LLaMA-Factory's library logger does not propagate, so pytest's caplog cannot see it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Collect:
        logging.getLogger("llamafactory").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("llamafactory").removeHandler(self)

    def text(self) -> str:
        return "\n".join(self.messages)


@pytest.mark.parametrize("template_name", ["qwen3", "qwen3_nothink"])
def test_every_rendered_shape_loads_without_drops(
    tmp_path: Path, tiny_model_dir: Path, template_name: str
) -> None:
    rows = rows_for_all_shapes()
    assert len(rows) == 19
    for row in rows:
        assert check_lf_row(row, columns=COLUMNS, tags=None) == [], row
    write_dataset(tmp_path / "data", rows)
    with _Collect() as logs:
        dataset, _tokenizer = load_with_llamafactory(tmp_path, tiny_model_dir, template_name)
    assert len(dataset) == len(rows)
    assert "Skipping this abnormal example" not in logs.text()
    assert "Dropped invalid example" not in logs.text()


def test_lf_rules_verdicts_match_llamafactory(tmp_path: Path, tiny_model_dir: Path) -> None:
    good = rows_for_all_shapes()[:4]
    dropped = [
        {
            "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}],
            "system": "s",
            "tools": "",
        },
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
            ],
            "system": "s",
            "tools": "",
        },
        {"conversations": [{"from": "human", "value": "q"}], "system": "s", "tools": ""},
    ]
    for row in dropped:
        assert [violation_severity(v) for v in check_lf_row(row, columns=COLUMNS, tags=None)] == ["drop"]
    write_dataset(tmp_path / "data", good + dropped)
    with _Collect() as logs:
        dataset, _ = load_with_llamafactory(tmp_path, tiny_model_dir, "qwen3_nothink")
    assert len(dataset) == len(good)
    assert logs.text().count("Dropped invalid example") == len(dropped)  # the log capture works

    aborting = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": '<think>x</think>{"name": "a", "arguments": {}}'},
        ],
        "system": "s",
        "tools": "",
    }
    assert [violation_severity(v) for v in check_lf_row(aborting, columns=COLUMNS, tags=None)] == ["abort"]
    write_dataset(tmp_path / "data2", good + [aborting], name="abort_test")
    (tmp_path / "data").rename(tmp_path / "data_ok")
    (tmp_path / "data2").rename(tmp_path / "data")
    with pytest.raises(RuntimeError, match="Invalid JSON format in function message"):
        load_with_llamafactory(tmp_path, tiny_model_dir, "qwen3_nothink", name="abort_test")


def test_rendered_row_matches_qwen3_chat_template(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With reasoning on every turn, qwen3_nothink + our row == the official template's text, byte for byte."""
    t = traj(
        system("You are an agent."),
        user("find the weather in two cities"),
        assistant(
            "Searching both.",
            reasoning="Search both cities in parallel.",
            calls=[
                call("bash", {"command": "weather a"}, id="a"),
                call("bash", {"command": "weather b"}, id="b"),
            ],
        ),
        tool("sunny", id="a"),
        tool("rain", id="b"),
        assistant(reasoning="Now read notes.", calls=[call("read_file", {"path": "notes.txt"}, id="c")]),
        tool("none", id="c"),
        assistant("City a is sunny and city b has rain.", reasoning="Both results are in."),
    )
    write_dataset(tmp_path / "data", [render_lf_row(t, keep_reasoning=True)])
    dataset, tokenizer = load_with_llamafactory(tmp_path, tiny_model_dir, "qwen3_nothink")
    ours = tokenizer.decode(dataset[0]["input_ids"], skip_special_tokens=False)

    messages: list[dict[str, Any]] = []
    for m in t.messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.reasoning_content:
            entry["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            entry["tool_calls"] = [
                {"type": "function", "id": c.id, "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_call_id"] = m.tool_call_id
        messages.append(entry)
    official = tokenizer.apply_chat_template(messages, tools=t.tools, tokenize=False)
    assert ours == official
