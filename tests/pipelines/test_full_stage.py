"""`kedro run` end to end on the demo profile (real LLaMA-Factory on CPU), and on a local_lf source."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from sft.train.wandb_setup import find_wandb_run_dir
from tests.pipelines.conftest import run_session

pytestmark = pytest.mark.slow


def _output(config: Path) -> dict:
    return yaml.safe_load(config.read_text())["runtime_info"]["output"]


def _files(root: Path) -> dict[Path, int]:
    """Every file under ``root`` with its mtime (symlinked inputs, the demo job and model, not followed)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                found[path] = path.stat().st_mtime_ns
    return found


def _catalog_locations(project: Path) -> list[str]:
    """The file and folder paths the catalog's datasets describe (a handle dataset names several)."""
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=project) as session:
        catalog = session.load_context().catalog
    locations = []
    for name in catalog.keys():
        for value in catalog.get(name)._describe().values():
            if isinstance(value, str | Path) and str(value).startswith(str(project)):
                locations.append(str(value))
    return locations


def test_whole_stage_writes_runtime_output_that_matches_the_files(
    demo_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = demo_project / "config.demo.yaml"
    before = config.read_text()
    files_before = _files(demo_project)
    run_session(demo_project)
    # The catalog owns I/O: every file the stage wrote is a catalog entry's file, or a side file in a location a
    # catalog entry names (a Parquet copy, a lock, the engine's cache and spool, the training files...)
    written = [p for p, mtime in _files(demo_project).items() if files_before.get(p) != mtime]
    locations = [*_catalog_locations(demo_project), str(demo_project / ".viz")]  # kedro-viz's own stats hook
    unowned = [str(p) for p in written if not any(str(p).startswith(loc) for loc in locations)]
    assert written and not unowned, (unowned, locations)
    out = _output(config)
    run_dir = demo_project / "artifacts" / "model" / "tiny_qwen3_demo_agent_sft"
    state = json.loads((run_dir / "trainer_state.json").read_text())
    results = json.loads((run_dir / "train_results.json").read_text())
    ckpt = Path(out["checkpoint_path"]["value"])
    steps = sorted(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*"))
    assert ckpt == run_dir / f"checkpoint-{steps[-1]}" and ckpt.is_dir()
    metrics = out["training_metrics"]["value"]
    assert metrics["final_loss"] == pytest.approx(results["train_loss"])
    assert metrics["train_runtime"] == pytest.approx(results["train_runtime"])
    assert metrics["total_steps"] == state["global_step"] == 4
    arts = out["artifacts"]
    assert Path(arts["train_results"]) == run_dir / "train_results.json"
    assert Path(arts["train_loss_plot"]).is_file()
    log = Path(arts["training_log"])
    assert log.is_file() and log.parent == demo_project / "artifacts" / "logs"
    run_id = out["training_curves"]["value"]
    run_dir_wandb = find_wandb_run_dir(demo_project, run_id)
    assert run_dir_wandb is not None and run_dir_wandb.name.endswith(f"-{run_id}"), list(
        (demo_project / "artifacts").rglob("*run-*")
    )
    # only the output block changed in the config file
    assert config.read_text().split("  output:")[0] == before.split("  output:")[0]
    # the run history and the reporting outputs exist
    index = yaml.safe_load((demo_project / "artifacts" / "index.yaml").read_text())
    assert index["runs"][-1]["status"] == "completed"
    report = demo_project / "data" / "08_reporting" / "tiny_qwen3_demo_agent_sft"
    assert (report / "training_curves.png").is_file()
    assert json.loads((report / "training_metrics.json").read_text())["total_steps"] == 4
    # the dataset was tokenized once: the report took the counts of the convert-side over-length node
    data_report = demo_project / "data" / "08_reporting" / "demo_agent_sft"
    assert (
        json.loads((data_report / "token_stats.json").read_text())["counted_by"] == "apply_length_policy_node"
    )


def test_local_lf_dataset_trains_through_kedro_run(
    demo_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_session(demo_project, "convert")
    lf = demo_project / "artifacts" / "data" / "lf_data" / "demo_agent_sft.json"
    ready = demo_project / "ready.json"
    ready.write_bytes(lf.read_bytes())
    cfg = yaml.safe_load((demo_project / "config.demo.yaml").read_text())
    inp = cfg["runtime_info"]["input"]
    inp["source"] = {"type": "local_lf", "lf_path": str(ready)}
    inp["conversion"].update(data_name="ready_sft", max_instances=3, seed=7)
    inp["training"]["output_dir"] = "tiny_qwen3_ready_sft"
    inp["experiment"]["wandb_mode"] = "disabled"
    (demo_project / "config.ready.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.setenv("SFT_CONFIG", "config.ready.yaml")
    run_session(demo_project)
    out = _output(demo_project / "config.ready.yaml")
    assert out["training_metrics"]["value"]["total_steps"] == 4
    assert out["training_curves"]["value"] is None
    rows = json.loads((demo_project / "artifacts" / "data" / "lf_data" / "ready_sft.json").read_text())
    assert len(rows) == 3  # the seeded subsample is what was registered and trained on
