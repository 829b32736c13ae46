"""A Harbor job dir or local LF file on an object store (s3://, gs://...) is refused with the field, the value and
the command that syncs it to local disk, both where the config is validated (what `kedro run` and
scripts/dryrun.sh show first) and in the catalog's TrajectorySourceDataset; file:// URLs are plain paths and Hub
ids are untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.io import DatasetError

from sft.config.loader import ConfigError, validate_config
from sft.datasets.source import TrajectorySourceDataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        (
            {"type": "harbor_job", "scaffold": "auto", "job_dir": "s3://bucket/jobs/run1/"},
            [
                "source.job_dir: 's3://bucket/jobs/run1/' is a remote s3:// URL",
                "aws s3 sync s3://bucket/jobs/run1/ jobs/run1",
            ],
        ),
        (
            {"type": "harbor_job", "scaffold": "auto", "job_dir": "gs://bucket/run2"},
            ["source.job_dir: 'gs://bucket/run2'", "gsutil -m rsync -r gs://bucket/run2 jobs/run2"],
        ),
        (
            {"type": "local_lf", "lf_path": "S3://bucket/d/rows.json"},
            ["source.lf_path: 'S3://bucket/d/rows.json'", "aws s3 cp S3://bucket/d/rows.json data/rows.json"],
        ),
        (
            {"type": "local_lf", "lf_path": "hf://datasets/org/x/rows.parquet"},
            ["source.lf_path", "hf:// storage's own client", "source.type hf_lf with source.hf_hub_url"],
        ),
    ],
)
def test_remote_source_paths_name_field_value_and_fix(source: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(DatasetError) as exc:
        TrajectorySourceDataset(source, project_root="/tmp")
    message = str(exc.value)
    assert message.startswith("trajectory_source: source.")
    for needle in needles:
        assert needle in message
    assert "not a directory" not in message


def test_the_config_check_refuses_a_remote_job_dir_first() -> None:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["runtime_info"]["input"]["source"]["job_dir"] = "s3://bucket/jobs/run1"
    with pytest.raises(ConfigError) as exc:
        validate_config(raw, Path("config.yaml"))
    message = str(exc.value)
    assert "runtime_info.input.source.job_dir" in message
    assert "'s3://bucket/jobs/run1' is a remote s3:// URL" in message
    assert "aws s3 sync s3://bucket/jobs/run1 jobs/run1" in message


def test_file_urls_are_local_paths_and_hub_ids_stay(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    handle = TrajectorySourceDataset(
        {"type": "harbor_job", "scaffold": "auto", "job_dir": f"file://{job}"}, project_root="/elsewhere"
    ).load()
    assert handle.path == job
    lf = tmp_path / "rows.json"
    lf.write_text("[]\n")
    assert (
        TrajectorySourceDataset({"type": "local_lf", "lf_path": f"file://{lf}"}, str(tmp_path)).load().path
        == lf
    )
    hub = TrajectorySourceDataset({"type": "hf_lf", "hf_hub_url": "org/data"}, str(tmp_path)).load()
    assert hub.path is None and hub.extra == {"hf_hub_url": "org/data"}


def test_a_missing_local_job_dir_still_says_so(tmp_path: Path) -> None:
    dataset = TrajectorySourceDataset(
        {"type": "harbor_job", "scaffold": "auto", "job_dir": "jobs/absent"}, project_root=str(tmp_path)
    )
    assert not dataset.exists()
    with pytest.raises(DatasetError, match=r"source\.job_dir: .*jobs/absent is not a directory"):
        dataset.load()
