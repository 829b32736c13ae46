"""Nodes of the convert pipeline: thin calls into sft.engine, and the over-length policy with the run's one token
pass (sft.report), whose hand-over the report pipeline reads."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sft.config.schema import RuntimeInput
from sft.core.results import ConversionResult, TrajectoryView
from sft.core.spool import SpooledRows, rows_sha256, select_rows
from sft.core.turns import agent_lines, apply_overlength, summary_line
from sft.engine.harbor import convert_job
from sft.engine.workspace import ConversionWorkspace
from sft.pipelines.common import run_credentials
from sft.pipelines.token_pass import (
    dataset_entry_of,
    lf_options_of,
    load_model_tokenizer,
    pass_workers,
    pretokenized_key,
    token_count_key,
)
from sft.report.fidelity import FidelityPlan, fidelity_plan, report_from_samples, topup_indices
from sft.report.overlength import overlength_summary, plan_overlength_policy
from sft.report.pretokenize import IdsSpool, tokenized_path, unsupported_reason, write_tokenized
from sft.report.tokens import TokenizerLoad, token_stats
from sft.rules.filters import ExclusionList
from sft.sources.handle import SourceHandle

logger = logging.getLogger(__name__)


def build_dataset(
    trajectory_source: SourceHandle,
    repo_exclusions: ExclusionList | None,
    conversion_workspace: ConversionWorkspace,
    settings: RuntimeInput,
    project_root: str,
    lf_json: str,
) -> ConversionResult:
    """Harbor job -> converted rows; a ready-made dataset -> checked (and optionally normalised) rows.

    Everything besides the source comes from the catalog: the exclusion list, the engine's folders, and
    ``lf_json`` (``params:paths.lf_json``, where ``lf_dataset`` writes the rows: ready-made data that changes
    is registered under that file).
    """
    root = Path(project_root)
    creds = run_credentials()
    if trajectory_source.type == "harbor_job":
        assert trajectory_source.path is not None
        return convert_job(
            settings,
            trajectory_source.path,
            root,
            secret_values=creds.values(),
            workspace=conversion_workspace,
            exclusions=repo_exclusions,
        )
    from sft.engine.ready import ReadyPlaces, prepare_ready_dataset

    places = ReadyPlaces(
        exclusions=repo_exclusions, copy_path=Path(lf_json), hub_dir=conversion_workspace.hub_dir
    )
    return prepare_ready_dataset(trajectory_source, settings, root, credentials=creds, places=places)


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


# --------------------------------------------------------------------------- over-length policy and token pass


_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "subset", "split", "folder")


def _register_changed_copy(report: dict[str, Any], copy: str) -> None:
    """Ready-made data registered as the original file / Hub id must now point at the written (changed) copy
    (``copy``: the catalog's ``lf_dataset`` file)."""
    registration = dict(report.get("registration") or {})
    if registration.get("registered") not in ("original_file", "hub"):
        return
    entry = {k: v for k, v in (registration.get("entry") or {}).items() if k not in _HUB_KEYS}
    entry["file_name"] = copy
    registration.update(
        entry=entry,
        registered="filtered_copy",
        file=copy,
        note=f"registered the copy {copy}: the over-length policy changed rows",
    )
    report["registration"] = registration


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
            lf_options=lf_options_of(settings),
            dataset_entry=entry,
            fidelity=forced,
            num_workers=pass_workers(settings),
            purpose="fidelity_topup",
        )
        for index, sample in zip(indices, extra, strict=True):
            per_sample[index]["fidelity"] = dict(sample["fidelity"])


def apply_length_policy(
    conversion_result: ConversionResult, settings: RuntimeInput, project_root: str, paths: dict[str, str]
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

    ``paths`` (``params:paths``): ``lf_json`` is where the catalog writes the rows; the pre-tokenized dataset
    (``lf_dataset``'s documented side folder) goes next to it.
    """
    policy = settings.conversion.overlength
    cutoff = settings.training.cutoff_len
    report = dict(conversion_result.funnel)
    loaded = load_model_tokenizer(settings, project_root)
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
    entry = dataset_entry_of(report)
    conv = settings.conversion
    plan_fid = fidelity_plan(
        loaded.tokenizer, len(rows), seed=conv.seed, sample_rate=conv.fidelity_sample_rate
    )
    lf_dir = Path(paths["lf_json"]).parent
    ids_spool = _ids_spool(settings, lf_dir)
    per_sample, first_summary = token_stats(
        rows,
        loaded.tokenizer,
        cutoff_len=cutoff,
        template=template,
        lf_options=lf_options_of(settings),
        dataset_entry=entry,
        num_workers=pass_workers(settings),
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
            lf_options=lf_options_of(settings),
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
        lf_options=lf_options_of(settings),
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
        _register_changed_copy(report, paths["lf_json"])
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
            tokenized_path(lf_dir, conv.data_name),
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


def _ids_spool(settings: RuntimeInput, lf_dir: Path) -> IdsSpool | None:
    """Where the pass writes LLaMA-Factory's ids when ``conversion.pretokenize`` is on (and can be honoured)."""
    if not settings.conversion.pretokenize:
        return None
    reason = unsupported_reason(settings.training)
    if reason is not None:
        raise ValueError(
            f"conversion.pretokenize: true cannot be used with {reason}. Fix: set conversion.pretokenize: "
            "false (LLaMA-Factory then tokenizes on the training node) or change that setting"
        )
    return IdsSpool(lf_dir)


# The token_stats summary fields that describe the counting run rather than the samples.
_SUMMARY_RUN_FIELDS = ("template", "lf_options", "tokenizer", "elapsed_s", "tokens_per_s")


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
