"""`conversion.pretokenize`: `kedro run --pipeline=convert` tokenizes the demo rows once and writes LLaMA-Factory's
pre-tokenized dataset, byte for byte what LLaMA-Factory's own preprocessing makes; LLaMA-Factory then loads it
instead of tokenizing, and the training YAML points at it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sft.report.tokens import TOKENIZATION_PASSES
from tests.pipelines.conftest import run_session


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _lf_get_dataset(
    project: Path, template: str, tokenized_path: Path, cutoff_len: int = 4096
) -> tuple[Any, list[str]]:
    """LLaMA-Factory 0.9.5's own get_dataset as `llamafactory-cli train` calls it, and its log lines."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.extras import logging as lf_logging
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = {
        "model_name_or_path": str(project / "artifacts" / "demo" / "tiny-qwen3"),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "dataset": "demo_agent_sft",
        "dataset_dir": str(project / "artifacts" / "data" / "lf_data"),
        "template": template,
        "cutoff_len": cutoff_len,
        "max_samples": 1000000,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(project / "lf_out"),
        "report_to": "none",
        "use_cpu": True,
        "tokenized_path": str(tokenized_path),
    }
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    tpl = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    handler = _Lines()
    lf_logging.add_handler(handler)
    try:
        module = get_dataset(tpl, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    finally:
        lf_logging.remove_handler(handler)
    return module, handler.lines


@pytest.mark.parametrize(
    ("template", "overlength", "cutoff"),
    [("qwen3", "drop", 4096), ("qwen3_nothink", "drop", 4096), ("qwen3", "truncate_turns", 1024)],
)
def test_pretokenized_dataset_equals_llamafactorys_preprocessing(
    demo_project: Path, template: str, overlength: str, cutoff: int
) -> None:
    from datasets import load_from_disk

    TOKENIZATION_PASSES.clear()
    run_session(
        demo_project,
        "convert",
        runtime_params={
            "conversion": {"pretokenize": True, "overlength": overlength},
            "training": {"template": template, "cutoff_len": cutoff},
        },
    )
    # one tokenization pass over the rows in the whole convert + register + report run
    assert TOKENIZATION_PASSES["rows"] == 1, dict(TOKENIZATION_PASSES)
    lf_dir = demo_project / "artifacts" / "data" / "lf_data"
    ours_path = lf_dir / "demo_agent_sft.tokenized"
    key = json.loads((ours_path / "sft_pretokenized.json").read_text())
    assert key["template"] == template and key["cutoff_len"] == cutoff and key["rows"] > 0
    if overlength == "truncate_turns":  # not vacuous: rows were cut, and their ids come from the re-count
        funnel = json.loads(
            (demo_project / "data" / "08_reporting" / "demo_agent_sft" / "funnel.json").read_text()
        )
        assert funnel["overlength"]["truncated"] > 0

    theirs_path = demo_project / "lf_tokenized"
    _, lines = _lf_get_dataset(
        demo_project, template, theirs_path, cutoff
    )  # LLaMA-Factory tokenizes and saves
    assert any("Tokenized dataset is saved" in line for line in lines)
    ours, theirs = load_from_disk(str(ours_path)), load_from_disk(str(theirs_path))
    assert list(ours) == list(theirs) == ["train"]
    assert ours["train"].features == theirs["train"].features
    assert ours["train"].num_rows == theirs["train"].num_rows == key["rows"]
    assert ours["train"].data.table.equals(theirs["train"].data.table)  # every id, mask and label

    # LLaMA-Factory loads ours without tokenizing ("Loaded tokenized dataset from ...")
    module, lines = _lf_get_dataset(demo_project, template, ours_path, cutoff)
    assert any(f"Loaded tokenized dataset from {ours_path}" in line for line in lines), lines
    assert not any("Running tokenizer" in line or "Tokenized dataset is saved" in line for line in lines)
    assert module["train_dataset"].num_rows == key["rows"]


def test_the_training_yaml_points_at_a_matching_pretokenized_dataset(demo_project: Path) -> None:
    from sft.config.loader import load_selected_config
    from sft.train.yaml_gen import TrainingConfigError, build_training_args

    run_session(demo_project, "convert", runtime_params={"conversion": {"pretokenize": True}})
    cfg = load_selected_config().runtime_info.input.model_copy(deep=True)
    cfg.conversion.pretokenize = True
    lf_dir = demo_project / "artifacts" / "data" / "lf_data"
    args = build_training_args(cfg, root=demo_project, dataset_dir=lf_dir, run_name="r", on_cpu=True)
    assert args["tokenized_path"] == str((lf_dir / "demo_agent_sft.tokenized").resolve())
    cfg.training.cutoff_len = 2048  # made for 4096: LLaMA-Factory would silently train on the wrong cutoff
    with pytest.raises(TrainingConfigError, match="pretokenize"):
        build_training_args(cfg, root=demo_project, dataset_dir=lf_dir, run_name="r", on_cpu=True)
    cfg.conversion.pretokenize = False
    assert "tokenized_path" not in build_training_args(
        cfg, root=demo_project, dataset_dir=lf_dir, run_name="r", on_cpu=True
    )


@pytest.mark.slow
def test_a_pretokenized_training_run_starts_without_llamafactory_tokenizing(
    demo_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kedro run` with pretokenize: the real LLaMA-Factory run on CPU loads the tokenized dataset (its log line)
    and never runs its tokenizer over the dataset."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_session(
        demo_project, runtime_params={"conversion": {"pretokenize": True}, "training": {"max_steps": 1}}
    )
    logs = sorted((demo_project / "artifacts" / "logs").glob("*.log"))
    assert logs, "no training log"
    text = logs[-1].read_text(encoding="utf-8", errors="replace")
    tokenized = demo_project / "artifacts" / "data" / "lf_data" / "demo_agent_sft.tokenized"
    assert (
        f"Loaded tokenized dataset from {tokenized.resolve()}" in text
        or f"Loaded tokenized dataset from {tokenized}" in text
    ), text[-3000:]
    assert "Running tokenizer on dataset" not in text
    assert "'train_runtime'" in text or "train_runtime" in text
