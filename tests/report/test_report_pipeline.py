"""The report pipeline in a Kedro session: catalog outputs are written, and a fidelity failure stops the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from sft.pipelines.report import create_pipeline
from tests.report.conftest import agent_row

PROJECT = Path(__file__).resolve().parents[2]
OUTPUTS = (
    "dataset_sample_stats",
    "dataset_token_summary",
    "template_fidelity_report",
    "data_check",
    "dataset_stats",
    "dataset_card",
    "dataset_plots",
)


def test_nodes_are_named_tagged_and_use_the_shared_settings_node() -> None:
    pipeline = create_pipeline()
    assert "validate_settings_node" in {n.name for n in pipeline.nodes}
    assert all(n.name and n.tags for n in pipeline.nodes)
    assert {
        "conversion_token_samples",
        "conversion_report",
        "conversion_rejects",
        "run_settings",
    } <= pipeline.all_inputs()
    assert "lf_dataset" not in pipeline.all_inputs()  # no full read-back: the hand-over is enough
    assert set(OUTPUTS) <= pipeline.all_outputs()


def test_every_report_catalog_entry_has_a_kedro_viz_layer() -> None:
    catalog = yaml.safe_load((PROJECT / "conf" / "base" / "catalog_report.yml").read_text(encoding="utf-8"))
    assert set(OUTPUTS) <= set(catalog)
    for name, entry in catalog.items():
        # checks that gate training sit in "feature" (before "models"); the card, stats and plots in "reporting"
        expected = (
            "feature"
            if name
            in {"dataset_sample_stats", "dataset_token_summary", "template_fidelity_report", "data_check"}
            else "reporting"
        )
        assert entry["metadata"]["kedro-viz"]["layer"] == expected, name


def _prepare(project: Path, tiny_model_dir: Path, rows: list[dict]) -> Path:
    (project / "src").mkdir(exist_ok=True)
    (project / "artifacts" / "demo").mkdir(parents=True, exist_ok=True)
    link = project / "artifacts" / "demo" / "tiny-qwen3"
    if not link.exists():
        os.symlink(tiny_model_dir, link)
    lf_dir = project / "artifacts" / "data" / "lf_data"
    lf_dir.mkdir(parents=True, exist_ok=True)
    (lf_dir / "demo_agent_sft.json").write_text(json.dumps(rows), encoding="utf-8")
    report_dir = project / "data" / "08_reporting" / "demo_agent_sft"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "funnel.json").write_text(
        json.dumps({"funnel": {"trials_found": len(rows)}}), encoding="utf-8"
    )
    (report_dir / "rejects.jsonl").write_text("", encoding="utf-8")
    return report_dir


def _run(project: Path) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["report"])


@pytest.mark.slow
def test_report_pipeline_writes_card_stats_plots_and_stops_on_template_mismatch(
    project_copy: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SFT_CONFIG", "config.demo.yaml")
    monkeypatch.chdir(project_copy)
    report_dir = _prepare(project_copy, tiny_model_dir, [agent_row(f"t{n}#0", n + 1) for n in range(3)])
    _run(project_copy)
    lf_dir = project_copy / "artifacts" / "data" / "lf_data"
    stats = json.loads((lf_dir / "demo_agent_sft.stats.json").read_text(encoding="utf-8"))
    assert stats["count"] == 3 and stats["statistics"]["samples_counted"] == 3
    assert stats["template_fidelity"]["passed"] is True
    assert "# demo_agent_sft" in (lf_dir / "demo_agent_sft.README.md").read_text(encoding="utf-8")
    assert len(list((report_dir / "plots").glob("*.png"))) == 4
    assert json.loads((report_dir / "data_check.json").read_text(encoding="utf-8"))["passed"] is True
    assert len((report_dir / "sample_stats.jsonl").read_text(encoding="utf-8").splitlines()) == 3

    (report_dir / "data_check.json").unlink()
    _prepare(
        project_copy, tiny_model_dir, [agent_row("bad#0", 1, system="")]
    )  # "\n\n# Tools": a real mismatch
    with pytest.raises(Exception, match="template_fidelity.json") as failure:
        _run(project_copy)
    assert str(report_dir / "template_fidelity.json") in str(failure.value)
    assert json.loads((report_dir / "template_fidelity.json").read_text(encoding="utf-8"))["passed"] is False
    assert not (report_dir / "data_check.json").exists()
