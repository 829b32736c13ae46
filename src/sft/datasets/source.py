"""The raw input of the stage, as a catalog dataset.

Loading returns a light handle (paths and ids, no trajectory data): a Harbor job directory, a local
LLaMA-Factory file, or a Hub dataset. The convert pipeline streams the actual data from it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from pydantic import ValidationError

from sft.config.loader import resolve_path
from sft.config.schema import SourceConfig
from sft.sources.handle import SourceHandle


def _problem(error: Any) -> str:
    """One pydantic error as sft's validators word them (``source.<field>: ...``), else field + message."""
    msg = str(error["msg"]).removeprefix("Value error, ")
    field = ".".join(str(part) for part in error["loc"])
    return msg if msg.startswith("source.") or not field else f"source.{field}: {msg}"


class TrajectorySourceDataset(AbstractDataset[None, SourceHandle]):
    def __init__(
        self, source: dict[str, Any], project_root: str, metadata: dict[str, Any] | None = None
    ) -> None:
        try:
            self._source = SourceConfig.model_validate(source)
        except ValidationError as exc:  # e.g. an s3:// job_dir: the validator's message names field and fix
            problems = "; ".join(_problem(e) for e in exc.errors())
            raise DatasetError(f"trajectory_source: {problems}") from exc
        self._root = Path(project_root)
        self.metadata = metadata

    def load(self) -> SourceHandle:
        src = self._source
        if src.type == "harbor_job":
            job_dir = resolve_path(src.job_dir, self._root)
            if not job_dir.is_dir():
                raise DatasetError(
                    f"source.job_dir: {job_dir} is not a directory. Point runtime_info.input.source.job_dir "
                    "at a Harbor job dir (the folder holding result.json and one sub-folder per trial)."
                )
            return SourceHandle(type=src.type, config=src, path=job_dir)
        if src.type == "local_lf":
            path = resolve_path(src.lf_path, self._root)
            if not path.is_file():
                raise DatasetError(
                    f"source.lf_path: {path} does not exist (expected a .json, .jsonl or .parquet file)"
                )
            return SourceHandle(type=src.type, config=src, path=path)
        return SourceHandle(type=src.type, config=src, path=None, extra={"hf_hub_url": src.hf_hub_url})

    def save(self, data: None) -> None:
        raise DatasetError("the trajectory source is read-only")

    def _exists(self) -> bool:
        src = self._source
        if src.type == "harbor_job":
            return resolve_path(src.job_dir, self._root).is_dir()
        if src.type == "local_lf":
            return resolve_path(src.lf_path, self._root).is_file()
        return True

    def _describe(self) -> dict[str, Any]:
        src = self._source
        where = src.job_dir or src.lf_path or src.hf_hub_url
        return {"type": src.type, "scaffold": src.scaffold, "location": str(PurePosixPath(where))}
