"""Nodes of the report pipeline (and the over-length node the convert pipeline runs): thin calls into sft.report."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from matplotlib.figure import Figure

from sft.config.paths import lf_data_dir, report_dir
from sft.config.schema import RuntimeInput
from sft.core.results import ConversionResult, TrajectoryView
from sft.core.spool import Spool, SpooledRows, select_rows, spool_row
from sft.core.turns import apply_overlength
from sft.report.card import build_stats, dryrun_lines, render_card
from sft.report.fidelity import (
    FidelityPlan,
    check_template_fidelity,
    enforce_fidelity,
    fidelity_plan,
    report_from_samples,
    skipped_report,
    topup_indices,
)
from sft.report.overlength import overlength_summary, plan_overlength_policy
from sft.report.plots import dataset_plots
from sft.report.pretokenize import IdsSpool, tokenized_path, unsupported_reason, write_tokenized
from sft.report.tokens import (
    TokenizerLoad,
    counts_only_stats,
    lf_data_options,
    load_tokenizer,
    summarize,
    token_stats,
)

logger = logging.getLogger(__name__)

FIDELITY_REPORT_FILE = "template_fidelity.json"  # conf/base/catalog_report.yml: template_fidelity_report


def _tokenizer_path(settings: RuntimeInput, project_root: str | None) -> str:
    """model.model_name_or_path; a relative path that exists under the project root is resolved there."""
    raw = settings.model.model_name_or_path
    if project_root and not Path(raw).is_absolute() and (Path(project_root) / raw).exists():
        return str(Path(project_root) / raw)
    return raw


def _load_model_tokenizer(settings: RuntimeInput, project_root: str | None) -> TokenizerLoad:
    loaded = load_tokenizer(
        _tokenizer_path(settings, project_root), trust_remote_code=settings.model.trust_remote_code
    )
    if not loaded.ok:
        logger.warning("WARN %s", loaded.error)
    return loaded


def _lf_options(settings: RuntimeInput) -> dict[str, Any]:
    return lf_data_options(settings.training.extra_options)


def _dataset_entry(conversion_report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dataset_info.json entry the rows are registered with (ready-made data may use other columns / tags)."""
    entry = ((conversion_report or {}).get("registration") or {}).get("entry")
    return entry if isinstance(entry, dict) else None


_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "subset", "split", "folder")


def _register_changed_copy(report: dict[str, Any], settings: RuntimeInput, project_root: str) -> None:
    """Ready-made data registered as the original file / Hub id must now point at the written (changed) copy."""
    registration = dict(report.get("registration") or {})
    if registration.get("registered") not in ("original_file", "hub"):
        return
    from sft.engine.ready import lf_copy_path

    copy = str(lf_copy_path(settings, Path(project_root)))
    entry = {k: v for k, v in (registration.get("entry") or {}).items() if k not in _HUB_KEYS}
    entry["file_name"] = copy
    registration.update(
        entry=entry,
        registered="filtered_copy",
        file=copy,
        note=f"registered the copy {copy}: the over-length policy changed rows",
    )
    report["registration"] = registration


def _report_dir(settings: RuntimeInput, project_root: str) -> Path:
    """The catalog's ${cfg:paths.report_dir} (from the config file, as the catalog resolves it)."""
    try:
        from sft.config.kedro_bridge import derived_values
        from sft.config.loader import load_selected_config

        return Path(derived_values(load_selected_config(), Path(project_root))["paths"]["report_dir"])
    except Exception:  # no config file selected (a test calling the node directly)
        return report_dir(project_root, settings.conversion.data_name)


# --------------------------------------------------------------------------------------------- convert side


def _uid_of_im_row(im_row: dict[str, Any]) -> str:
    meta = im_row.get("meta") or {}
    return f"{meta.get('trial_name')}#{meta.get('trajectory_index', 0)}"


def _without_uids(im_rows: Sequence[dict[str, Any]], uids: set[str]) -> Sequence[dict[str, Any]]:
    """The IM rows whose trajectory uid is not in ``uids`` (spooled rows are not parsed for it)."""
    if not uids:
        return im_rows
    row_uids = im_rows.uids if isinstance(im_rows, SpooledRows) else [_uid_of_im_row(r) for r in im_rows]
    return select_rows(im_rows, [i for i, uid in enumerate(row_uids) if uid not in uids])


def _instance_ids(lf_rows: Sequence[dict[str, Any]]) -> list[str | None]:
    if isinstance(lf_rows, SpooledRows):
        return lf_rows.instance_ids
    return [r.get("_instance_id") for r in lf_rows]


def _pass_workers(settings: RuntimeInput) -> int | None:
    """conversion.num_workers for the token pass (0 = one per core)."""
    return settings.conversion.num_workers or None


def lf_dataset_dir(settings: RuntimeInput, project_root: str) -> Path:
    """The catalog's LLaMA-Factory data folder (``${cfg:paths.lf_json}``'s folder, the training dataset_dir)."""
    try:
        from sft.config.kedro_bridge import derived_values
        from sft.config.loader import load_selected_config

        return Path(derived_values(load_selected_config(), Path(project_root))["paths"]["lf_json"]).parent
    except Exception:  # no config file selected (a test calling the node directly)
        return lf_data_dir(project_root)


def _fidelity_topup(
    rows: Sequence[dict[str, Any]],
    per_sample: list[dict[str, Any]],
    plan: FidelityPlan,
    loaded: TokenizerLoad,
    settings: RuntimeInput,
    entry: dict[str, Any] | None,
) -> None:
    """Check, after the pass, the rare-structure rows and one row of every stratum the seeded sample missed
    (a few rows: rare by definition)."""
    chosen = topup_indices(per_sample)
    by_reason: dict[str, list[int]] = {}
    for index, reason in chosen.items():
        by_reason.setdefault(reason, []).append(index)
    for reason, indices in by_reason.items():
        forced = dataclasses.replace(plan, force=reason)
        extra, _ = token_stats(
            [rows[i] for i in indices],
            loaded.tokenizer,
            cutoff_len=settings.training.cutoff_len,
            template=settings.training.template,
            lf_options=_lf_options(settings),
            dataset_entry=entry,
            fidelity=forced,
            num_workers=_pass_workers(settings),
            purpose="fidelity_topup",
        )
        for index, sample in zip(indices, extra, strict=True):
            per_sample[index]["fidelity"] = dict(sample["fidelity"])


def apply_length_policy(
    conversion_result: ConversionResult, settings: RuntimeInput, project_root: str
) -> ConversionResult:
    """conversion.overlength applied to the converted rows before they are written (drop / truncate_turns / keep).

    Dropped rows leave the LF rows, the IM rows and the kept trajectories and get a reject line (stage
    ``overlength``); truncated rows are cut at the last whole assistant turn that fits; every decision is
    counted in ``funnel["overlength"]``. Without a loadable tokenizer nothing can be measured: the rows pass
    unchanged and the funnel says the policy was not applied.

    This is the run's one tokenization pass (``token_stats`` in worker processes): it yields the token
    statistics, the over-length decisions, the template fidelity check (``FidelityPlan``: every row, or a
    seeded stratified sample plus every rare-structure row) and, with ``conversion.pretokenize``, LLaMA-Factory's
    pre-tokenized dataset. The report pipeline reads the hand-over instead of the rows.
    """
    policy = settings.conversion.overlength
    cutoff = settings.training.cutoff_len
    report = dict(conversion_result.funnel)
    loaded = _load_model_tokenizer(settings, project_root)
    if not loaded.ok:
        report["overlength"] = {
            "policy": policy,
            "cutoff_len": cutoff,
            "applied": False,
            "reason": loaded.error,
        }
        logger.warning(
            "WARN over-length policy %r NOT applied (no tokenizer): LLaMA-Factory will silently truncate "
            "rows over cutoff_len %s",
            policy,
            cutoff,
        )
        return dataclasses.replace(conversion_result, funnel=report)
    rows = conversion_result.lf_rows
    template = settings.training.template
    entry = _dataset_entry(report)
    conv = settings.conversion
    plan_fid = fidelity_plan(
        loaded.tokenizer, len(rows), seed=conv.seed, sample_rate=conv.fidelity_sample_rate
    )
    ids_spool = _ids_spool(settings, project_root)
    per_sample, first_summary = token_stats(
        rows,
        loaded.tokenizer,
        cutoff_len=cutoff,
        template=template,
        lf_options=_lf_options(settings),
        dataset_entry=entry,
        num_workers=_pass_workers(settings),
        fidelity=plan_fid,
        ids_sink=ids_spool.add if ids_spool else None,
    )
    fidelity_report = None
    if plan_fid is not None:
        fidelity_started = time.perf_counter()
        if plan_fid.rate < 1.0:
            _fidelity_topup(rows, per_sample, plan_fid, loaded, settings, entry)
        fidelity_report = report_from_samples(
            per_sample,
            plan_fid.describe(),
            template=template,
            max_mismatch=conv.max_template_mismatch,
            lf_options=_lf_options(settings),
            tokenizer=getattr(loaded.tokenizer, "name_or_path", ""),
            elapsed_s=round(time.perf_counter() - fidelity_started, 3),
            dataset_repairs=report.get("repairs"),
        )
        for sample in per_sample:
            sample.pop("fidelity", None)
    truncated_ids: dict[int, tuple[Any, Any]] = {}
    plan = plan_overlength_policy(
        rows,
        per_sample,
        policy=policy,
        cutoff_len=cutoff,
        tokenizer=loaded.tokenizer,
        template=template,
        lf_options=_lf_options(settings),
        dataset_entry=entry,
        ids_sink=(lambda index, ids, labels: truncated_ids.__setitem__(index, (ids, labels)))
        if ids_spool
        else None,
    )
    new_rejects, decisions = plan.rejects, plan.decisions
    kept_rows = select_rows(rows, plan.keep, plan.replacements)  # spooled rows stay on disk
    dropped = {d["uid"] for d in decisions if d["action"] == "dropped"}
    im_rows = _without_uids(conversion_result.im_rows, dropped)
    kept = TrajectoryView(im_rows)  # lazy: no third in-memory copy of every trajectory
    rejects = list(conversion_result.rejects) + new_rejects
    summary = overlength_summary(decisions, policy=policy, cutoff_len=cutoff)
    summary["applied"] = True
    if summary["dropped"] or summary["truncated"]:
        _register_changed_copy(report, settings, project_root)
    funnel = dict(report.get("funnel") or {})
    funnel["rows_after_overlength"] = len(kept_rows)
    funnel["rows_written"] = len(kept_rows)
    funnel["instances_written"] = len({iid for iid in _instance_ids(kept_rows) if iid})
    report.update(
        funnel=funnel,
        overlength=summary,
        rejects_by_stage=dict(Counter(r["stage"] for r in rejects)),
        rejects_by_reason=dict(Counter(f"{r['stage']}:{r['reason']}" for r in rejects)),
    )
    # "model_turns" and "repairs" without the dropped rows and the cut turns (sft.core.turns)
    report.update(apply_overlength(conversion_result.turn_ledger, decisions, new_rejects) or {})
    logger.info(
        "over-length policy %s at cutoff_len %s: %s over, %s dropped, %s truncated, %s left to LLaMA-Factory",
        policy,
        cutoff,
        summary["over_cutoff"],
        summary["dropped"],
        summary["truncated"],
        summary["kept_over_cutoff"],
    )
    key = token_count_key(settings, project_root, entry)
    if ids_spool is not None:
        report["pretokenized"] = write_tokenized(
            ids_spool,
            plan.keep,
            truncated_ids,
            tokenized_path(lf_dataset_dir(settings, project_root), conv.data_name),
            pretokenized_key(settings, project_root, entry),
            max_samples=settings.training.max_samples,
        )
        logger.info(
            "pretokenize: %s row(s), %s token(s) -> %s",
            report["pretokenized"]["rows"],
            report["pretokenized"]["tokens"],
            report["pretokenized"]["path"],
        )
    written_samples = []  # the numbers of exactly the rows written, for the report (no second tokenization)
    for position, index in enumerate(plan.keep):
        sample = dict(plan.truncated_samples.get(index) or per_sample[index])
        sample.pop("fidelity", None)
        sample["index"] = position
        written_samples.append(sample)
    token_samples = {
        "key": key,
        "samples": written_samples,
        "summary_fields": {k: first_summary[k] for k in _SUMMARY_RUN_FIELDS},
        "fidelity_report": fidelity_report,
    }
    return dataclasses.replace(
        conversion_result,
        lf_rows=kept_rows,
        im_rows=im_rows,
        rejects=rejects,
        funnel=report,
        kept=kept,
        token_samples=token_samples,
    )


def _ids_spool(settings: RuntimeInput, project_root: str) -> IdsSpool | None:
    """Where the pass writes LLaMA-Factory's ids when ``conversion.pretokenize`` is on (and can be honoured)."""
    if not settings.conversion.pretokenize:
        return None
    reason = unsupported_reason(settings.training)
    if reason is not None:
        raise ValueError(
            f"conversion.pretokenize: true cannot be used with {reason}. Fix: set conversion.pretokenize: "
            "false (LLaMA-Factory then tokenizes on the training node) or change that setting"
        )
    return IdsSpool(lf_dataset_dir(settings, project_root))


def pretokenized_key(
    settings: RuntimeInput, project_root: str | None, entry: dict[str, Any] | None
) -> dict[str, Any]:
    """What a pre-tokenized dataset depends on; train/yaml_gen only uses one whose key matches the run."""
    return {
        "template": settings.training.template,
        "cutoff_len": settings.training.cutoff_len,
        "lf_options": _lf_options(settings),
        "tokenizer": _tokenizer_path(settings, project_root),
        "dataset_entry": entry,
    }


# The token_stats summary fields that describe the counting run rather than the samples.
_SUMMARY_RUN_FIELDS = ("template", "lf_options", "tokenizer", "elapsed_s", "tokens_per_s")


def token_count_key(
    settings: RuntimeInput, project_root: str | None, entry: dict[str, Any] | None
) -> dict[str, Any]:
    """Everything token counts depend on besides the rows: if any differs, counts are not reused."""
    path = _tokenizer_path(settings, project_root)
    files = {}
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        candidate = Path(path) / name
        if candidate.is_file():
            stat = candidate.stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
    return {
        "tokenizer": path,
        "tokenizer_files": files,
        "template": settings.training.template,
        "cutoff_len": settings.training.cutoff_len,
        "lf_options": _lf_options(settings),
        "dataset_entry": entry,
    }


def handover_token_samples(result: ConversionResult, rows_sha256: str) -> list[dict[str, Any]]:
    """The catalog form of ``result.token_samples``: a header line (key, rows hash, count, the fidelity report),
    then one line per row."""
    if result.token_samples is None:
        return [{"key": None, "note": "no token counts (no tokenizer, or the over-length node did not run)"}]
    handover = result.token_samples
    header = {
        "key": handover["key"],
        "rows_sha256": rows_sha256,
        "samples": len(handover["samples"]),
        "summary_fields": handover["summary_fields"],
        "fidelity_report": handover.get("fidelity_report"),
    }
    return [header, *handover["samples"]]


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


def lf_file(settings: RuntimeInput, project_root: str) -> Path:
    """The written LLaMA-Factory file (the catalog's ``lf_dataset``)."""
    return lf_dataset_dir(settings, project_root) / f"{settings.conversion.data_name}.json"


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


def stream_lf_rows(path: Path, project_root: str) -> Sequence[dict[str, Any]]:
    """The rows of a written LLaMA-Factory file without holding them: each row line goes to a scratch spool;
    a file in another layout is parsed whole."""
    from sft.datasets.llamafactory import LlamaFactoryDataset
    from sft.engine.harbor import spool_dir

    spool = Spool(spool_dir(Path(project_root)))
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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-sample token numbers (sample_stats.jsonl) and their summary; counts only without a tokenizer.

    The convert pipeline's over-length node already counted every written row: when its handover matches
    the written rows (the file's bytes hash to it) and settings (tokenizer, template, cutoff, options), its numbers
    are used and the dataset is not read at all; otherwise the rows are streamed from the file and counted.
    """
    cutoff = settings.training.cutoff_len
    entry = _dataset_entry(conversion_report)
    path = lf_file(settings, project_root)
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
    rows = stream_lf_rows(path, project_root)
    loaded = _load_model_tokenizer(settings, project_root)
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
        lf_options=_lf_options(settings),
        dataset_entry=entry,
        num_workers=_pass_workers(settings),
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
) -> dict[str, Any]:
    """The template fidelity report (never raises; ``enforce_data_checks`` decides).

    Made by the convert side's token pass (handed over); computed here, on rows streamed from the file, only
    when that hand-over does not describe the written rows.
    """
    template = settings.training.template
    threshold = settings.conversion.max_template_mismatch
    entry = _dataset_entry(conversion_report)
    path = lf_file(settings, project_root)
    reused = _reusable_handover(
        conversion_token_samples, token_count_key(settings, project_root, entry), path
    )
    if reused is not None and reused[0].get("fidelity_report"):
        report = dict(reused[0]["fidelity_report"])
        report["max_template_mismatch"] = threshold
        return report
    if reused is not None:  # the pass had a tokenizer but no plan: the tokenizer has no chat template
        return skipped_report(
            f"{_tokenizer_path(settings, project_root)}: the tokenizer has no chat_template to "
            "compare with (a base model?); nothing to check",
            template=template,
            max_mismatch=threshold,
        )
    loaded = _load_model_tokenizer(settings, project_root)
    if not loaded.ok:
        return skipped_report(loaded.error, template=template, max_mismatch=threshold)
    return check_template_fidelity(
        stream_lf_rows(path, project_root),
        _tokenizer_path(settings, project_root),
        template=template,
        lf_options=_lf_options(settings),
        dataset_entry=entry,
        max_mismatch=threshold,
        trust_remote_code=settings.model.trust_remote_code,
        dataset_repairs=conversion_report.get("repairs"),
    )


def enforce_data_checks(
    template_fidelity_report: dict[str, Any],
    dataset_token_summary: dict[str, Any],
    settings: RuntimeInput,
    project_root: str,
) -> dict[str, Any]:
    """Fail before training when the fidelity check fails (the message names the report file).

    Returns the record the train pipeline can depend on, so that training waits for (and only follows)
    passed checks.
    """
    report_path = str(_report_dir(settings, project_root) / FIDELITY_REPORT_FILE)
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
    settings: RuntimeInput,
    project_root: str,
) -> dict[str, Any]:
    """The machine-readable ``<data_name>.stats.json``."""
    stats = build_stats(
        per_sample=dataset_sample_stats,
        token_summary=dataset_token_summary,
        settings=settings,
        conversion_report=conversion_report,
        rejects=conversion_rejects,
        fidelity_report=template_fidelity_report,
        project_root=project_root,
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
