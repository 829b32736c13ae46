"""artifacts/index.yaml and artifacts/archives/run_NNN/ (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sft.train.history import HistoryError, next_run_id, read_index, record_run

SECRET = "wk-live-0123456789abcdef"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "meta_info: {name: sft}\n"
        "runtime_info:\n"
        "  input:\n"
        "    model: {model_name_or_path: /m}\n"
        "    experiment: {run_name: 'uses " + SECRET + " by mistake'}\n"
        "    credentials:\n"
        "      wandb_api_key: " + SECRET + "\n"
        "      hf_token: hf_abcdefghijklmnop\n"
        "  output: {}\n",
        encoding="utf-8",
    )
    return path


def _record(root: Path, config: Path, status: str = "completed", **kw: object) -> str:
    training_yaml = root / "artifacts" / "training_config" / "run.yaml"
    training_yaml.parent.mkdir(parents=True, exist_ok=True)
    training_yaml.write_text("model_name_or_path: /m\nreport_to: none\n", encoding="utf-8")
    return record_run(
        root,
        started_at="2026-01-01T00:00:00Z",
        completed_at="2026-01-01T00:10:00Z",
        exit_code=0 if status == "completed" else 1,
        status=status,
        config_path=config,
        training_yaml_path=training_yaml,
        secret_values=[SECRET],
        **kw,  # type: ignore[arg-type]
    )


def test_runs_are_numbered_and_archived(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _record(tmp_path, config, notes="first") == "run_001"
    assert _record(tmp_path, config, status="failed", notes="second") == "run_002"
    runs = read_index(tmp_path)
    assert [list(r) for r in runs] == [["id", "started_at", "completed_at", "status", "archive", "notes"]] * 2
    assert [(r["id"], r["status"], r["archive"]) for r in runs] == [
        ("run_001", "completed", "artifacts/archives/run_001/"),
        ("run_002", "failed", "artifacts/archives/run_002/"),
    ]
    archive = tmp_path / "artifacts" / "archives" / "run_002"
    meta = yaml.safe_load((archive / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["id"] == "run_002" and meta["block"] == "sft" and meta["exit_code"] == 1
    assert set(meta["versions"]) == {
        "llamafactory",
        "transformers",
        "torch",
        "deepspeed",
        "liger-kernel",
        "flash-attn",
    }
    assert meta["versions"]["liger-kernel"] is None  # not installed in this CPU env: recorded as absent
    assert "git_commit" in meta and meta["results"] is None
    assert (archive / "training.yaml").read_text(encoding="utf-8").startswith("model_name_or_path: /m")


def test_archived_config_and_notes_are_redacted(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _record(tmp_path, config, notes=f"key {SECRET} leaked into a note", results={"x": f"path/{SECRET}"})
    archive = tmp_path / "artifacts" / "archives" / "run_001"
    for path in [*archive.iterdir(), tmp_path / "artifacts" / "index.yaml"]:
        assert SECRET not in path.read_text(encoding="utf-8"), path
    archived = yaml.safe_load((archive / "config.yaml").read_text(encoding="utf-8"))
    creds = archived["runtime_info"]["input"]["credentials"]
    assert creds == {"wandb_api_key": "***REDACTED***", "hf_token": "***REDACTED***"}
    assert archived["runtime_info"]["input"]["experiment"]["run_name"] == "uses ***REDACTED*** by mistake"
    assert SECRET in config.read_text(encoding="utf-8")  # the live config is not modified


def test_next_id_is_max_plus_one_and_skips_orphan_archives(tmp_path: Path) -> None:
    assert next_run_id([{"id": "run_003"}, {"id": "run_007"}, {"id": "other"}]) == "run_008"
    assert next_run_id([]) == "run_001"
    index = tmp_path / "artifacts" / "index.yaml"
    index.parent.mkdir(parents=True)
    index.write_text(
        "runs:\n- {id: run_004, started_at: a, completed_at: b, status: failed, archive: x, notes: ''}\n"
    )
    (tmp_path / "artifacts" / "archives" / "run_005").mkdir(parents=True)  # left by a crash
    assert _record(tmp_path, _config(tmp_path)) == "run_006"


def test_a_broken_index_is_an_error_not_an_overwrite(tmp_path: Path) -> None:
    index = tmp_path / "artifacts" / "index.yaml"
    index.parent.mkdir(parents=True)
    index.write_text("runs: [unclosed\n")
    with pytest.raises(HistoryError, match="index.yaml: not valid YAML"):
        _record(tmp_path, _config(tmp_path))
    assert index.read_text() == "runs: [unclosed\n"
    with pytest.raises(ValueError, match="status must be one of"):
        _record(tmp_path, _config(tmp_path), status="weird")
