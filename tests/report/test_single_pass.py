"""The one token pass: LLaMA-Factory's ids from it, and the template fidelity check on them (every row or a
seeded stratified sample plus the rare structures), which still fails on a planted mismatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sft.config.kedro_bridge import run_paths
from sft.core.results import ConversionResult
from sft.pipelines.convert.nodes import apply_length_policy, split_conversion_result
from sft.pipelines.report.nodes import check_fidelity
from sft.report import fidelity as fidelity_module
from sft.report import tokens as tokens_module
from sft.report.fidelity import TemplateFidelityError, enforce_fidelity
from sft.report.tokens import TOKENIZATION_PASSES, token_stats
from tests.report.conftest import agent_row, settings_for


def _convert(
    rows: list[dict[str, Any]], settings: Any, root: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from sft.datasets.llamafactory import write_json_array

    result = ConversionResult(lf_rows=rows, im_rows=[], rejects=[], funnel={"funnel": {}}, kept=[])
    lf_rows, _, _, funnel, _, handover = split_conversion_result(
        apply_length_policy(result, settings, str(root), run_paths(settings, Path(root)))
    )
    path = Path(run_paths(settings, Path(root))["lf_json"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_array(path, lf_rows)
    return handover, funnel


@pytest.mark.parametrize(
    ("template", "options", "cutoff"),
    [
        ("qwen3", {}, 4096),
        ("qwen3_nothink", {}, 4096),
        ("qwen3", {}, 150),
        ("qwen3", {"mask_history": True}, 150),
        ("qwen3_nothink", {"train_on_prompt": True}, 150),
    ],
)
def test_the_pass_ids_equal_llamafactorys_supervised_processor(
    tokenizer: Any, template: str, options: dict[str, Any], cutoff: int
) -> None:
    """input_ids and labels from the pass (pieces batch-encoded once) == SupervisedDatasetProcessor's, row by row,
    including LLaMA-Factory's own cutoff truncation, mask_history and train_on_prompt."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    from sft.report.tokens import align_row, dataset_converter, lf_data_args, lf_template, load_tokenizer

    rows = [agent_row(f"t{n}#0", n + 1, reasoning=n % 2 == 0) for n in range(6)]
    got: dict[int, tuple[list[int], list[int]]] = {}
    token_stats(
        rows,
        tokenizer,
        cutoff_len=cutoff,
        template=template,
        lf_options=options,
        ids_sink=lambda i, ids, labels: got.__setitem__(i, (ids.tolist(), labels.tolist())),
    )
    lf_tok = load_tokenizer(tokenizer.name_or_path).tokenizer
    data_args = lf_data_args(template, cutoff_len=cutoff, options=options)
    processor = SupervisedDatasetProcessor(
        template=lf_template(lf_tok, data_args), tokenizer=lf_tok, processor=None, data_args=data_args
    )
    converter = dataset_converter(data_args)
    assert sorted(got) == list(range(len(rows)))
    for index, row in enumerate(rows):
        aligned = align_row(row, converter)
        want = processor.preprocess_dataset(
            {
                "_prompt": [aligned.prompt],
                "_response": [aligned.response],
                "_system": [aligned.system],
                "_tools": [aligned.tools],
                "_images": [None],
                "_videos": [None],
                "_audios": [None],
            }
        )
        assert got[index] == (want["input_ids"][0], want["labels"][0]), index


def test_a_planted_mismatch_fails_the_run_through_the_handover(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir)
    rows = [agent_row(f"t{n}#0", n + 1) for n in range(4)] + [agent_row("bad#0", 1, system="")]
    TOKENIZATION_PASSES.clear()
    handover, funnel = _convert(rows, settings, tmp_path)
    report = check_fidelity(handover, funnel, settings, str(tmp_path), run_paths(settings, tmp_path))
    assert report["computed_by"].startswith("apply_length_policy_node") and TOKENIZATION_PASSES["rows"] == 1
    assert report["selection"]["mode"] == "all" and report["summary"]["checked"] == 5
    assert report["passed"] is False and [m["uid"] for m in report["mismatches"]] == ["bad#0"]
    with pytest.raises(TemplateFidelityError, match="fidelity.json"):
        enforce_fidelity(report, report_path="fidelity.json", max_mismatch=0.0)
    # the same rows without the planted one pass
    handover, funnel = _convert(rows[:4], settings, tmp_path)
    assert (
        check_fidelity(handover, funnel, settings, str(tmp_path), run_paths(settings, tmp_path))["passed"]
        is True
    )


def test_the_sample_checks_every_rare_row_and_every_stratum(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the full-check size: rare rows (reasoning) all checked, ordinary rows sampled by a seeded hash, and a
    stratum the sample missed still gets its lowest-ranked row checked -- so a mismatch confined to one
    structure (here: long conversations without a system prompt) fails the run."""
    monkeypatch.setattr(fidelity_module, "FIDELITY_MIN_ROWS", 4)
    settings = settings_for(tiny_model_dir, **{"conversion.fidelity_sample_rate": 0.05})
    plain = [agent_row(f"p{n}#0", 1, reasoning=False) for n in range(60)]
    rare = [agent_row(f"r{n}#0", 1, reasoning=True) for n in range(3)]
    bad = [agent_row(f"b{n}#0", 6, reasoning=False, system="") for n in range(3)]
    handover, funnel = _convert(plain + rare + bad, settings, tmp_path)
    report = check_fidelity(handover, funnel, settings, str(tmp_path), run_paths(settings, tmp_path))
    selection = report["selection"]
    assert selection["mode"] == "sample" and selection["seed"] == settings.conversion.seed
    assert "rare structure" in selection["rule"] and set(selection["checked_by_reason"]) <= {
        "sample",
        "rare",
        "stratum_cover",
    }
    checked = {s["uid"]: s for s in report["samples"]}
    assert all(f"r{n}#0" in checked for n in range(3))  # every rare row
    assert 0 < sum(uid.startswith("p") for uid in checked) < 60  # a sample of the ordinary ones
    assert any(uid.startswith("b") for uid in checked)  # the stratum of the planted rows is covered
    assert report["passed"] is False
    # same seed, same selection (independent of order and workers); another seed, another sample
    again = check_fidelity(
        _convert(plain + rare + bad, settings, tmp_path)[0],
        funnel,
        settings,
        str(tmp_path),
        run_paths(settings, tmp_path),
    )
    assert [s["uid"] for s in again["samples"]] == [s["uid"] for s in report["samples"]]


def test_the_pass_and_the_report_never_hold_the_rows(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spooled rows stay on disk through the token pass (the workers get bytes), and the report reads the
    hand-over and the file's bytes, never the rows: peak Python memory of this process stays far below them."""
    import tracemalloc

    import orjson

    from sft.core.spool import Spool, SpooledRows, spool_row
    from sft.datasets.llamafactory import LlamaFactoryDataset, write_json_array
    from sft.pipelines.report import nodes as report_nodes

    spool = Spool(tmp_path / "spool")
    rows = [agent_row(f"m{n}#0", 2, observation=f"{n} " + "lorem ipsum " * 15_000) for n in range(60)]
    refs = [spool_row(spool, orjson.dumps(r), uid=r["_uid"]) for r in rows]
    size = sum(ref.length for ref in refs)
    del rows
    spooled = SpooledRows(spool, refs)
    settings = settings_for(tiny_model_dir, **{"conversion.num_workers": 2, "training.cutoff_len": 1_000_000})
    result = ConversionResult(lf_rows=spooled, im_rows=[], rejects=[], funnel={"funnel": {}}, kept=[])
    _convert(
        [agent_row("warm#0", 1)], settings, tmp_path / "warm"
    )  # imports (LLaMA-Factory, torch) outside the trace
    # What the parent holds is the chunks in flight (2 per worker), each capped at POOL_CHUNK_BYTES of rows (16 MB;
    # 1 MB here so that the cap, not the dataset, bounds it at this test's size).
    monkeypatch.setattr(tokens_module, "POOL_CHUNK_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        lf_rows, _, _, funnel, _, handover = split_conversion_result(
            apply_length_policy(result, settings, str(tmp_path), run_paths(settings, tmp_path))
        )
        _, pass_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (
        size > 10_000_000 and len(lf_rows) == 60
    )  # not vacuous: MBs of rows, all kept (none over the cutoff)
    assert pass_peak < size / 3, (pass_peak, size)
    path = Path(run_paths(settings, tmp_path)["lf_json"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_array(path, lf_rows)

    def no_read(*_: Any, **__: Any) -> Any:
        raise AssertionError("the report read the rows back")

    monkeypatch.setattr(LlamaFactoryDataset, "load", no_read)
    monkeypatch.setattr(report_nodes, "stream_lf_rows", no_read)
    tracemalloc.start()
    try:
        per_sample, summary = report_nodes.compute_token_statistics(
            handover, funnel, settings, str(tmp_path), run_paths(settings, tmp_path)
        )
        fidelity = check_fidelity(handover, funnel, settings, str(tmp_path), run_paths(settings, tmp_path))
        report_nodes.build_dataset_stats(per_sample, summary, funnel, [], fidelity, None, settings, "")
        _, report_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["counted_by"] == "apply_length_policy_node" and fidelity["passed"] is True
    assert report_peak < size / 10, (report_peak, size)


def test_rare_structures_are_checked_up_to_the_cap_lowest_rank_first() -> None:
    """A structure under RARE_SHARE of the rows is checked on up to RARE_CAP rows (the lowest-ranked, counting
    rows the sample already checked), so a job where many rows carry some rare structure stays cheap."""
    from sft.report.fidelity import RARE_CAP, topup_indices

    plain = [{"fidelity": {"stratum": "main|cc|turns<=8|-", "rank": 0.5, "why": None}} for _ in range(9000)]
    sub = [
        {"fidelity": {"stratum": "subagent|cc|turns<=8|subagent", "rank": n / 300, "why": None}}
        for n in range(300)
    ]
    sub[299]["fidelity"]["why"] = "sample"  # one already checked in the pass: counts towards the cap
    chosen = topup_indices(plain + sub)
    rare = sorted(p for p, why in chosen.items() if why == "rare:subagent")
    assert len(rare) == RARE_CAP - 1
    assert rare == [9000 + n for n in range(RARE_CAP - 1)]  # lowest rank first
    assert "stratum_cover" in chosen.values()  # the plain stratum still gets its one row
