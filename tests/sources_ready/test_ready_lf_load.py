"""Integration: what we register for a ready-made dataset loads through LLaMA-Factory 0.9.5's own data path
(``get_dataset``, the code ``llamafactory-cli train`` runs first) with exactly the rows we counted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.datasets.llamafactory import DatasetInfoDataset, LlamaFactoryDataset
from sft.engine.ready import prepare_local_file, read_rows
from tests.sources_ready.conftest import (
    make_settings,
    openai_row,
    role_content_row,
    sharegpt_row,
    write_jsonl,
)

pytestmark = pytest.mark.slow

BAD = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ready"  # LLaMA-Factory's own demo files
CASES = {
    "glaive_empty_tools_rewritten": (
        read_rows(FIXTURES / "glaive_toolcall_en_demo.json"),
        False,
        "filtered_copy",
    ),
    "typed_parts_normalised": (
        read_rows(FIXTURES / "reason_tool_use_demo_50.jsonl"),
        False,
        "normalized_copy",
    ),
    "alpaca_converted": (read_rows(FIXTURES / "alpaca_en_demo.json"), False, "filtered_copy"),
    "from_value_with_invalid_rows": (
        [sharegpt_row(0), BAD, sharegpt_row(2), sharegpt_row(3)],
        False,
        "filtered_copy",
    ),
    "role_content_as_is": ([role_content_row(i) for i in range(3)], False, "original_file"),
    "openai_as_is": ([openai_row(i) for i in range(3)], False, "original_file"),
    "openai_normalised": ([openai_row(i) for i in range(3)], True, "normalized_copy"),
}


def _load_with_llamafactory(dataset_dir: Path, name: str, model_dir: Path, scratch: Path) -> Any:
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
            "dataset_dir": str(dataset_dir),
            "template": "qwen3_nothink",
            "cutoff_len": 4096,
            "overwrite_cache": True,
            "cache_dir": str(scratch / "cache"),
            "output_dir": str(scratch / "out"),
            "report_to": "none",
            "per_device_train_batch_size": 1,
        }
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    return get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)[
        "train_dataset"
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_entry_loads_in_llamafactory_without_drops(
    tmp_path: Path, proj: Path, tiny_model_dir: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows, normalise, registered = CASES[case]
    source = write_jsonl(tmp_path / "input" / f"{case}.jsonl", rows)
    settings = make_settings(
        {"type": "local_lf", "lf_path": str(source)}, data_name=case, normalize_ready_data=normalise
    )
    result = prepare_local_file(source, settings, proj, credentials=Credentials())
    assert result.funnel["registration"]["registered"] == registered

    lf_dir = proj / "artifacts" / "data" / "lf_data"  # what the convert + register pipelines write
    LlamaFactoryDataset(str(lf_dir / f"{case}.json")).save(result.lf_rows)
    DatasetInfoDataset(str(lf_dir / "dataset_info.json")).save({case: result.funnel["registration"]["entry"]})

    with caplog.at_level(logging.WARNING):
        dataset = _load_with_llamafactory(lf_dir, case, tiny_model_dir, tmp_path)
    assert len(dataset) == result.funnel["funnel"]["rows_written"]
    assert "Skipping this abnormal example" not in caplog.text
    assert "Dropped invalid example" not in caplog.text
