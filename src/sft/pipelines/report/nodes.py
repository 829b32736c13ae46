"""Nodes of the report pipeline: thin calls into sft.report (the token pass itself runs in the convert pipeline)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from matplotlib.figure import Figure

from sft.config.schema import RuntimeInput
from sft.core.spool import Spool, SpooledRows, spool_row
from sft.pipelines.token_pass import (
    dataset_entry_of,
    lf_options_of,
    load_model_tokenizer,
    model_tokenizer_path,
    pass_workers,
    token_count_key,
)
from sft.report.card import build_stats, dryrun_lines, render_card
from sft.report.fidelity import (
    check_template_fidelity,
    enforce_fidelity,
    skipped_report,
)
from sft.report.plots import dataset_plots
from sft.report.tokens import (
    counts_only_stats,
    summarize,
    token_stats,
)
from sft.rules.filters import ExclusionList

logger = logging.getLogger(__name__)

FIDELITY_REPORT_FILE = "template_fidelity.json"  # conf/base/catalog_report.yml: template_fidelity_report

# --------------------------------------------------------------------------------------------- convert side


def _same(a: Any, b: Any) -> bool:
    return orjson.loads(orjson.dumps(a)) == orjson.loads(orjson.dumps(b))


def _row_lines(path: Path) -> Iterator[bytes]:
    """The row lines of a JSON array written one row per line (``write_json_array``); ValueError otherwise."""
    with path.open("rb") as fh:
        for line in fh:
            data = line.strip()
            if data in (b"[", b"]", b""):
                continue
            data = data.removesuffix(b",")
            if not (data.startswith(b"{") and data.endswith(b"}")):
                raise ValueError(f"{path}: not one row per line")
            yield data


def file_rows_sha256(path: Path) -> str | None:
    """``rows_sha256`` of the rows in a written LLaMA-Factory file, from its bytes (streamed, nothing parsed):
    the file holds exactly the serialised rows the manifest hashed. None when the file is not laid out so."""
    digest = hashlib.sha256()
    try:
        for data in _row_lines(path):
            digest.update(data)
    except (OSError, ValueError):
        return None
    return digest.hexdigest()


def _reusable_handover(
    handover: list[dict[str, Any]] | None, key: dict[str, Any], path: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(header, per-sample numbers) of the convert side when they describe exactly the rows in the file (its
    bytes hash to the hand-over's ``rows_sha256``), counted the same way; else None."""
    if not handover or not handover[0].get("key") or not _same(handover[0]["key"], key):
        return None
    header, samples = handover[0], handover[1:]
    if header.get("samples") != len(samples):
        return None
    if not header.get("rows_sha256") or file_rows_sha256(path) != header["rows_sha256"]:
        return None
    return header, samples


def stream_lf_rows(path: Path, spool_dir: str) -> Sequence[dict[str, Any]]:
    """The rows of a written LLaMA-Factory file without holding them: each row line goes to a scratch spool
    in ``spool_dir``; a file in another layout is parsed whole."""
    from sft.datasets.llamafactory import LlamaFactoryDataset

    spool = Spool(Path(spool_dir))
    try:
        refs = [spool_row(spool, data) for data in _row_lines(path)]
    except ValueError:
        return LlamaFactoryDataset(str(path)).load()
    return SpooledRows(spool, refs)


# --------------------------------------------------------------------------------------------- report side


def compute_token_statistics(
    conversion_token_samples: list[dict[str, Any]],
    conversion_report: dict[str, Any],
    settings: RuntimeInput,
    project_root: str,
    paths: dict[str, str],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-sample token numbers (sample_stats.jsonl) and their summary; counts only without a tokenizer.

    The convert pipeline's over-length node already counted every written row: when its handover matches
    the written rows (the file's bytes hash to it) and settings (tokenizer, template, cutoff, options), its numbers
    are used and the dataset is not read at all; otherwise the rows are streamed from the file and counted.
    """
    cutoff = settings.training.cutoff_len
    entry = dataset_entry_of(conversion_report)
    path = Path(paths["lf_json"])  # the catalog's lf_dataset
    reused = _reusable_handover(
        conversion_token_samples, token_count_key(settings, project_root, entry), path
    )
    if reused is not None:
        header, per_sample = reused
        summary = {
            **summarize(per_sample, cutoff_len=cutoff),
            **header["summary_fields"],
            "counted_by": "apply_length_policy_node",
        }
        logger.info(
            "token statistics: %s samples, %s tokens (counted during conversion, reused)",
            summary["samples"],
            summary["tokens"]["total"],
        )
        return [{k: v for k, v in s.items() if k != "pair_lengths"} for s in per_sample], summary
    rows = stream_lf_rows(path, paths["spool_dir"])
    loaded = load_model_tokenizer(settings, project_root)
    if not loaded.ok:
        return counts_only_stats(
            rows,
            cutoff_len=cutoff,
            reason=loaded.error,
            template=settings.training.template,
            dataset_entry=entry,
        )
    per_sample, summary = token_stats(
        rows,
        loaded.tokenizer,
        cutoff_len=cutoff,
        template=settings.training.template,
        lf_options=lf_options_of(settings),
        dataset_entry=entry,
        num_workers=pass_workers(settings),
    )
    logger.info(
        "token statistics: %s samples, %s tokens in %.1f s (%s tokens/s)",
        summary["samples"],
        summary["tokens"]["total"],
        summary["elapsed_s"],
        summary["tokens_per_s"],
    )
    return [{k: v for k, v in s.items() if k != "pair_lengths"} for s in per_sample], summary


def check_fidelity(
    conversion_token_samples: list[dict[str, Any]],
    conversion_report: dict[str, Any],
    settings: RuntimeInput,
    project_root: str,
    paths: dict[str, str],
) -> dict[str, Any]:
    """The template fidelity report (never raises; ``enforce_data_checks`` decides).

    Made by the convert side's token pass (handed over); computed here, on rows streamed from the file, only
    when that hand-over does not describe the written rows.
    """
    template = settings.training.template
    threshold = settings.conversion.max_template_mismatch
    entry = dataset_entry_of(conversion_report)
    path = Path(paths["lf_json"])  # the catalog's lf_dataset
    reused = _reusable_handover(
        conversion_token_samples, token_count_key(settings, project_root, entry), path
    )
    if reused is not None and reused[0].get("fidelity_report"):
        report = dict(reused[0]["fidelity_report"])
        report["max_template_mismatch"] = threshold
        return report
    if reused is not None:  # the pass had a tokenizer but no plan: the tokenizer has no chat template
        return skipped_report(
            f"{model_tokenizer_path(settings, project_root)}: the tokenizer has no chat_template to "
            "compare with (a base model?); nothing to check",
            template=template,
            max_mismatch=threshold,
        )
    loaded = load_model_tokenizer(settings, project_root)
    if not loaded.ok:
        return skipped_report(loaded.error, template=template, max_mismatch=threshold)
    return check_template_fidelity(
        stream_lf_rows(path, paths["spool_dir"]),
        model_tokenizer_path(settings, project_root),
        template=template,
        lf_options=lf_options_of(settings),
        dataset_entry=entry,
        max_mismatch=threshold,
        trust_remote_code=settings.model.trust_remote_code,
        dataset_repairs=conversion_report.get("repairs"),
    )


def enforce_data_checks(
    template_fidelity_report: dict[str, Any],
    dataset_token_summary: dict[str, Any],
    settings: RuntimeInput,
    report_dir: str,
) -> dict[str, Any]:
    """Fail before training when the fidelity check fails (the message names the report file, the catalog's
    ``template_fidelity_report`` in ``report_dir``).

    Returns the record the train pipeline can depend on, so that training waits for (and only follows)
    passed checks.
    """
    report_path = str(Path(report_dir) / FIDELITY_REPORT_FILE)
    enforce_fidelity(
        template_fidelity_report,
        report_path=report_path,
        max_mismatch=settings.conversion.max_template_mismatch,
    )
    over = dataset_token_summary.get("over_cutoff") or {}
    return {
        "passed": True,
        "template": settings.training.template,
        "fidelity_skipped": bool(template_fidelity_report.get("skipped")),
        "fidelity_summary": template_fidelity_report.get("summary", {}),
        "fidelity_report": report_path,
        "tokens_skipped": dataset_token_summary.get("tokens_skipped"),
        "over_cutoff_in_written_rows": over.get("samples"),
        "tokens_lf_will_cut": over.get("tokens_cut_by_lf"),
    }


def build_dataset_stats(
    dataset_sample_stats: list[dict[str, Any]],
    dataset_token_summary: dict[str, Any],
    conversion_report: dict[str, Any],
    conversion_rejects: list[dict[str, Any]],
    template_fidelity_report: dict[str, Any],
    repo_exclusions: ExclusionList | None,
    settings: RuntimeInput,
    job_dir: str,
) -> dict[str, Any]:
    """The machine-readable ``<data_name>.stats.json``."""
    stats = build_stats(
        per_sample=dataset_sample_stats,
        token_summary=dataset_token_summary,
        settings=settings,
        conversion_report=conversion_report,
        rejects=conversion_rejects,
        fidelity_report=template_fidelity_report,
        exclusions=repo_exclusions,
        job_dir=job_dir,
    )
    for line in dryrun_lines(stats):
        (logger.warning if line.startswith("WARN") else logger.info)("%s", line)
    return stats


def render_dataset_card(dataset_stats: dict[str, Any]) -> str:
    """The Markdown dataset card next to the dataset."""
    return render_card(dataset_stats)


def plot_dataset(
    dataset_sample_stats: list[dict[str, Any]], dataset_stats: dict[str, Any]
) -> dict[str, Figure]:
    """Token lengths vs cutoff, turns, tool calls per turn, rows per repository."""
    return dataset_plots(dataset_sample_stats, dataset_stats)
