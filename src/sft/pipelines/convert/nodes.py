"""Nodes of the convert pipeline: thin calls into sft.engine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sft.config.schema import RuntimeInput
from sft.core.results import ConversionResult
from sft.core.spool import rows_sha256
from sft.core.turns import agent_lines, summary_line
from sft.engine.harbor import convert_job
from sft.pipelines.common import run_credentials
from sft.pipelines.report.nodes import handover_token_samples
from sft.sources.handle import SourceHandle

logger = logging.getLogger(__name__)


def build_dataset(
    trajectory_source: SourceHandle, settings: RuntimeInput, project_root: str
) -> ConversionResult:
    """Harbor job -> converted rows; a ready-made dataset -> checked (and optionally normalised) rows."""
    root = Path(project_root)
    creds = run_credentials()
    if trajectory_source.type == "harbor_job":
        assert trajectory_source.path is not None
        return convert_job(settings, trajectory_source.path, root, secret_values=creds.values())
    from sft.engine.ready import prepare_ready_dataset

    return prepare_ready_dataset(trajectory_source, settings, root, credentials=creds)


def split_conversion_result(
    result: ConversionResult,
) -> tuple[
    Sequence[dict[str, Any]],
    Sequence[dict[str, Any]],
    list[dict[str, Any]],
    dict[str, Any],
    dict[str, Any],
    list[dict[str, Any]],
]:
    """Fan the result out into the catalog outputs (LF rows, IM rows, rejects, funnel, manifest, and the token
    counts of the rows for the report)."""
    manifest = {
        "rows": len(result.lf_rows),
        "rows_sha256": rows_sha256(result.lf_rows),
        "registration": result.funnel.get("registration", {}),
    }
    funnel = result.funnel.get("funnel", {})
    logger.info(
        "conversion: %s trial(s)/row(s) found -> %s row(s) written, %s reject line(s)",
        funnel.get("trials_found", funnel.get("rows_found", "?")),
        len(result.lf_rows),
        len(result.rejects),
    )
    if result.funnel.get("model_turns"):  # a Harbor job: the share of the model's turns the rows keep (final:
        # after the over-length policy)
        logger.info(
            "%s",
            "\n".join(
                [summary_line(result.funnel["model_turns"]), *agent_lines(result.funnel["model_turns"])]
            ),
        )
    token_samples = handover_token_samples(result, manifest["rows_sha256"])
    return result.lf_rows, result.im_rows, result.rejects, result.funnel, manifest, token_samples
