"""The dataset's machine-readable ``stats.json`` and its human ``README.md`` card.

Why both: the stats file is what scripts, the dry run and the next pipeline stage read; the card is what a
person opens next to the data. The stats keep the reference's sidecar keys (``token_lens``, ``n_turns``,
``total_tokens``, ``count``, ``scores``, ``tool_call_errors``; docs/config-contract.md §12.3) as a superset,
so consumers of the reference's ``<data_name>.stats.json`` keep working.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from sft.core.turns import kept_share, summary_line
from sft.core.versions import package_versions as versions_of
from sft.report.tokens import distribution
from sft.rules.filters import ExclusionList

logger = logging.getLogger(__name__)

STATS_SCHEMA = "sft.dataset_stats/1"
TOP_REPOS = 20
REFERENCE_LONG_TOKENS = 131072  # the reference's gt_128k threshold
REFERENCE_MANY_TURNS = 100  # the reference's gte_100 threshold
SCORE_DIMENSIONS: tuple[str, ...] = (
    "efficiency_score",
    "style_score",
    "tool_mastery_score",
    "completion_score",
    "precision_score",
)
VERSIONED_PACKAGES: tuple[str, ...] = ("sft", "llamafactory", "transformers", "tokenizers", "kedro")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the output (None when not installed)."""
    return versions_of(VERSIONED_PACKAGES)


def exclusion_info(exclusions: ExclusionList | None) -> dict[str, Any]:
    """The exclusion list actually used (the catalog's ``repo_exclusions``): file, SHA-256 and entry count."""
    if exclusions is None:
        return {
            "file": "",
            "sha256": None,
            "entries": 0,
            "note": 'exclusion disabled (exclude_repos_file: "")',
        }
    return {"file": exclusions.source, "sha256": exclusions.sha256, "entries": exclusions.entries}


def _counter_top(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
    return [{"name": name, "rows": count} for name, count in counter.most_common(limit)]


def _score_summary(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference's ``scores`` (max / min / mean of composite_score) plus percentiles and the dimensions."""
    scores = [m["score"] for m in metas if isinstance(m.get("score"), dict)]
    composite = [
        float(s["composite_score"]) for s in scores if isinstance(s.get("composite_score"), int | float)
    ]
    dist = distribution(composite)
    summary: dict[str, Any] = {
        "count": dist["count"],
        "max": dist["max"],
        "min": dist["min"],
        "mean": dist["mean"],
        "p50": dist["p50"],
        "p90": dist["p90"],
        "version": None,
    }
    if scores:
        summary["version"] = scores[0].get("version")
        summary["dimensions"] = {
            dim: distribution([float(s[dim]) for s in scores if isinstance(s.get(dim), int | float)])
            for dim in SCORE_DIMENSIONS
        }
    return summary


def _reference_keys(per_sample: list[dict[str, Any]], token_summary: dict[str, Any]) -> dict[str, Any]:
    counted = [s for s in per_sample if s.get("total_tokens") is not None]
    lens = [s["total_tokens"] for s in counted]
    turns = [s.get("turns", 0) for s in per_sample]
    return {
        "token_lens": {
            "max": max(lens) if lens else None,
            "min": min(lens) if lens else None,
            "mean": round(sum(lens) / len(lens), 3) if lens else None,
            "gt_128k": sum(1 for n in lens if n > REFERENCE_LONG_TOKENS),
        },
        "n_turns": {
            "max": max(turns) if turns else None,
            "min": min(turns) if turns else None,
            "mean": round(sum(turns) / len(turns), 3) if turns else None,
            "gte_100": sum(1 for n in turns if n >= REFERENCE_MANY_TURNS),
        },
        "total_tokens": token_summary.get("tokens", {}).get("total") if counted else None,
        "count": len(per_sample),
    }


def build_stats(
    *,
    per_sample: list[dict[str, Any]],
    token_summary: dict[str, Any],
    settings: Any,
    conversion_report: dict[str, Any] | None = None,
    rejects: list[dict[str, Any]] | None = None,
    fidelity_report: dict[str, Any] | None = None,
    exclusions: ExclusionList | None = None,
    job_dir: str = "",
) -> dict[str, Any]:
    """The ``<data_name>.stats.json`` document. ``settings`` is the validated ``RuntimeInput``; ``exclusions``
    the list the conversion used, ``job_dir`` the Harbor job's folder (``params:paths.job_dir``).

    Everything per row comes from ``per_sample`` (``tokens.row_identity`` carries the instance, repo, agent
    type, scaffold, teacher and score of each row): the rows themselves are never read back.
    """
    report = conversion_report or {}
    metas = per_sample
    source = settings.source
    conv = settings.conversion
    repos: Counter[str] = Counter(m.get("repo") or "(unknown)" for m in metas)
    reject_list = rejects or []
    stats: dict[str, Any] = {
        "schema": STATS_SCHEMA,
        "dataset": {
            "data_name": conv.data_name,
            "dataset_key": settings.dataset_key,
            "rows": len(per_sample),
            "instances": len({m.get("instance_id") for m in metas} - {None}),
        },
        "source": {
            "type": source.type,
            "scaffold": source.scaffold,
            "job_dir": job_dir,
            "hf_hub_url": source.hf_hub_url or None,
            "lf_path": source.lf_path or None,
            "harbor_version": report.get("harbor_version") if source.type == "harbor_job" else None,
            "teacher_models": dict(
                Counter(m.get("teacher_model") or "(unknown)" for m in metas).most_common()
            ),
            "scaffolds": dict(Counter(m.get("scaffold") or "(unknown)" for m in metas).most_common()),
            "agent_types": dict(Counter(m.get("agent_type") or "(unknown)" for m in metas).most_common()),
        },
        "funnel": report.get("funnel", {}),
        # model turns in the source vs trainable turns in the rows, per agent and reason (sft.core.turns)
        "model_turns": report.get("model_turns"),
        "repairs": dict(report.get("repairs") or {}),
        "secrets_redacted": dict(report.get("secrets_redacted") or {}),
        "rejects": {
            "total": len(reject_list),
            "by_stage": dict(Counter(r.get("stage", "?") for r in reject_list).most_common()),
            "by_reason": dict(
                Counter(f"{r.get('stage', '?')}:{r.get('reason', '?')}" for r in reject_list).most_common()
            ),
        },
        "settings": {
            "seed": conv.seed,
            "max_instances": conv.max_instances,
            "stratify_by_repo": conv.stratify_by_repo,
            "instance_status": conv.instance_status,
            "resolved_threshold": conv.resolved_threshold,
            "include_subagents": conv.include_subagents,
            "max_trajectories_per_instance": conv.max_trajectories_per_instance,
            "dedup": conv.dedup,
            "drop_tool_errors": conv.drop_tool_errors,
            "keep_reasoning": settings.keeps_reasoning(),
            "min_score": conv.min_score,
            "exclusion": exclusion_info(exclusions),
            "overlength": conv.overlength,
            "max_template_mismatch": conv.max_template_mismatch,
            "template": settings.training.template,
            "cutoff_len": settings.training.cutoff_len,
            "model": settings.model.model_name_or_path,
        },
        "statistics": token_summary,
        "overlength": report.get("overlength") or _projected_overlength(token_summary, conv.overlength),
        "template_fidelity": _fidelity_digest(fidelity_report),
        "per_repo": {"repos": len(repos), "top": _counter_top(repos, TOP_REPOS)},
        "scores": _score_summary(metas),
        "tool_call_errors": token_summary.get("tool_errors"),
        "versions": package_versions(),
    }
    stats.update(_reference_keys(per_sample, token_summary))
    return stats


def _projected_overlength(token_summary: dict[str, Any], policy: str) -> dict[str, Any]:
    """When the policy was not applied at conversion: what LLaMA-Factory will do with the rows as written."""
    over = token_summary.get("over_cutoff") or {}
    return {
        "policy": policy,
        "applied": False,
        "note": "computed on the written rows; rows over cutoff_len are truncated by LLaMA-Factory",
        "over_cutoff": over.get("samples"),
        "tokens_lf_will_cut": over.get("tokens_cut_by_lf"),
        "supervised_tokens_lf_will_cut": over.get("supervised_tokens_cut_by_lf"),
        "samples_losing_final_eos": over.get("samples_losing_final_eos"),
    }


def _fidelity_digest(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {"skipped": True, "reason": "not run"}
    return {
        "skipped": bool(report.get("skipped")),
        "reason": report.get("reason"),
        "passed": report.get("passed"),
        "template": report.get("template"),
        "max_template_mismatch": report.get("max_template_mismatch"),
        "summary": report.get("summary", {}),
        "by_design": sorted((report.get("by_design") or {}).keys()),
        "repairs": _repairs_digest(report.get("repairs")),
    }


def _repairs_digest(section: dict[str, Any] | None) -> dict[str, Any]:
    """Per repair kind: rows, rows checked, statuses and the registry's verdict (``sft.report.repairs``)."""
    section = section or {}
    kinds = {
        kind: {k: entry.get(k) for k in ("rows", "checked", "statuses", "fidelity", "registered")}
        for kind, entry in (section.get("kinds") or {}).items()
    }
    return {
        "kinds": kinds,
        "all_explained": section.get("all_explained"),
        "unregistered": list(section.get("unregistered") or []),
    }


# --------------------------------------------------------------------------------------------- card


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _statistics_section(stats: dict[str, Any]) -> list[str]:
    summary = stats.get("statistics") or {}
    lines = ["## Token statistics", ""]
    if summary.get("tokens_skipped"):
        lines += [f"**Token counts unavailable:** {summary['tokens_skipped']}", ""]
    else:
        lines += [
            f"Counted with `{summary.get('tokenizer')}` as LLaMA-Factory renders template "
            f"`{summary.get('template')}` (cutoff_len {_fmt(summary.get('cutoff_len'))}).",
            "",
        ]
    dists = summary.get("distributions") or {}
    rows = [
        [metric, d.get("min"), d.get("mean"), d.get("p50"), d.get("p90"), d.get("p99"), d.get("max")]
        for metric, d in dists.items()
        if d.get("count")
    ]
    if rows:
        lines += _table(["per sample", "min", "mean", "p50", "p90", "p99", "max"], rows) + [""]
    shares = summary.get("shares") or {}
    if any(v is not None for v in shares.values()):
        lines += [
            f"- Supervised share of all tokens: {_fmt(shares.get('supervised_of_total'))}; reasoning share: "
            f"{_fmt(shares.get('reasoning_of_total'))} (of supervised: {_fmt(shares.get('reasoning_of_supervised'))}); "
            f"tool-output share: {_fmt(shares.get('tool_output_of_total'))}.",
            f"- Rows with reasoning: {_fmt(summary.get('rows_with_reasoning'))}; tool results that report an "
            f"error: {_fmt(summary.get('tool_errors'))}.",
            "",
        ]
    return lines


def _overlength_section(stats: dict[str, Any]) -> list[str]:
    over = stats.get("overlength") or {}
    lines = [
        "## Over-length policy",
        "",
        f"Policy `{over.get('policy')}`"
        + (
            " (applied before writing the dataset)."
            if over.get("applied", True)
            else " (projected; not applied)."
        ),
    ]
    keys = (
        "over_cutoff",
        "dropped",
        "truncated",
        "kept_over_cutoff",
        "tokens_removed",
        "assistant_turns_removed",
        "tokens_lf_will_cut",
        "supervised_tokens_lf_will_cut",
        "samples_losing_final_eos",
    )
    rows = [[k, over[k]] for k in keys if k in over]
    return lines + [""] + (_table(["decision", "count"], rows) if rows else []) + [""]


def _fidelity_section(stats: dict[str, Any]) -> list[str]:
    fid = stats.get("template_fidelity") or {}
    lines = ["## Template fidelity", ""]
    if fid.get("skipped"):
        return lines + [f"**Skipped:** {fid.get('reason')}", ""]
    summary = fid.get("summary") or {}
    verdict = "passed" if fid.get("passed") else "FAILED"
    lines += [
        f"{verdict}: {_fmt(summary.get('checked'))} rows checked against the chat template, mismatch rate "
        f"{_fmt(summary.get('mismatch_rate'))} (limit {_fmt(fid.get('max_template_mismatch'))}).",
        "",
    ]
    lines += _table(["status", "rows"], [[k, v] for k, v in (summary.get("statuses") or {}).items()]) + [""]
    if fid.get("by_design"):
        lines += [
            "By-design differences (explained in the fidelity report, not counted): "
            + ", ".join(f"`{name}`" for name in fid["by_design"])
            + ".",
            "",
        ]
    repairs = (fid.get("repairs") or {}).get("kinds") or {}
    if repairs:
        lines += [
            "Repaired rows against the chat template (each kind explained in `template_fidelity.json` → "
            '`repairs`; README "Repair and normalisation rules"):',
            "",
        ]
        lines += _table(
            ["repair", "rows", "checked", "statuses", "registry"],
            [
                [
                    f"`{kind}`",
                    e.get("rows"),
                    e.get("checked"),
                    ", ".join(f"{k} {v}" for k, v in (e.get("statuses") or {}).items()) or "–",
                    e.get("fidelity") if e.get("registered") else "UNREGISTERED",
                ]
                for kind, e in repairs.items()
            ],
        ) + [""]
    return lines


def _model_turns_section(stats: dict[str, Any]) -> list[str]:
    """Model turns kept per agent, where the others went, and the repairs made (README "Model-turn accounting")."""
    turns = stats.get("model_turns")
    lines = ["", "## Model turns", ""]
    if not turns:
        return lines + ["Not counted: the source is a ready-made dataset, not a Harbor job."]
    lines += [
        summary_line(turns) + ".",
        "",
        "A model turn is one assistant turn the model produced in the source (a successful proxy-log call, an "
        "ATIF agent step); kept = a trainable assistant turn of a written row, each counted once.",
        "",
    ]
    rows = []
    for agent, entry in (turns.get("per_agent") or {}).items():
        share = kept_share(entry)
        lost = ", ".join(f"{reason} {n}" for reason, n in (entry.get("lost") or {}).items()) or "–"
        rows.append(
            [
                agent,
                entry.get("source"),
                entry.get("output"),
                f"{100 * share:.1f}%" if share is not None else "–",
                lost,
            ]
        )
    lines += _table(["agent", "source", "kept", "kept %", "lost (stage:reason turns)"], rows)
    repairs = stats.get("repairs") or {}
    lines += [
        "",
        "Repairs in the written rows (kind: count): "
        + (", ".join(f"{k} {v}" for k, v in repairs.items()) if repairs else "none")
        + ".",
    ]
    return lines


def render_card(stats: dict[str, Any]) -> str:
    """The dataset card (Markdown with a Hugging Face style YAML header)."""
    ds, src, settings = stats.get("dataset", {}), stats.get("source", {}), stats.get("settings", {})
    name = ds.get("data_name", "dataset")
    lines = [
        "---",
        f"pretty_name: {json.dumps(name)}",
        "tags: [sft, agent-trajectories, llama-factory, sharegpt]",
        f"size: {ds.get('rows', 0)}",
        "---",
        "",
        f"# {name}",
        "",
        f"{_fmt(ds.get('rows'))} LLaMA-Factory ShareGPT rows from {_fmt(ds.get('instances'))} instances, "
        f"for `training.template: {settings.get('template')}` at `cutoff_len: {_fmt(settings.get('cutoff_len'))}`.",
        "",
        "## Source",
        "",
    ]
    lines += _table(
        ["field", "value"],
        [
            ["type", src.get("type")],
            ["scaffold", src.get("scaffold")],
            ["job dir / dataset", src.get("job_dir") or src.get("hf_hub_url") or src.get("lf_path")],
            ["Harbor version", src.get("harbor_version")],
            [
                "teacher model(s)",
                ", ".join(f"{k} ({v})" for k, v in (src.get("teacher_models") or {}).items()),
            ],
            ["agent types", ", ".join(f"{k} ({v})" for k, v in (src.get("agent_types") or {}).items())],
        ],
    ) + ["", "## Funnel", ""]
    funnel = stats.get("funnel") or {}
    lines += (
        _table(["stage", "count"], [[k, v] for k, v in funnel.items()])
        if funnel
        else ["(no funnel recorded)"]
    )
    by_stage = (stats.get("rejects") or {}).get("by_stage") or {}
    if by_stage:
        lines += ["", "Rejects by stage: " + ", ".join(f"{k} {v}" for k, v in by_stage.items()) + "."]
    lines += _model_turns_section(stats)
    redacted = stats.get("secrets_redacted") or {}
    lines += [
        "",
        "Secrets redacted (per pattern): "
        + (", ".join(f"{k} {v}" for k, v in sorted(redacted.items())) if redacted else "none found")
        + ".",
    ]
    excl = settings.get("exclusion") or {}
    lines += ["", "## Settings", ""]
    lines += _table(
        ["setting", "value"],
        [
            ["seed", settings.get("seed")],
            ["max_instances", settings.get("max_instances")],
            ["instance_status", settings.get("instance_status")],
            ["dedup", settings.get("dedup")],
            ["keep_reasoning", settings.get("keep_reasoning")],
            ["min_score", settings.get("min_score")],
            ["exclusion file", excl.get("file") or "(disabled)"],
            ["exclusion sha256", excl.get("sha256")],
            ["exclusion entries", excl.get("entries")],
            ["overlength", settings.get("overlength")],
            ["max_template_mismatch", settings.get("max_template_mismatch")],
            ["template", settings.get("template")],
            ["cutoff_len", settings.get("cutoff_len")],
            ["model", settings.get("model")],
        ],
    ) + [""]
    lines += _statistics_section(stats) + _overlength_section(stats) + _fidelity_section(stats)
    repos = stats.get("per_repo") or {}
    lines += [f"## Repositories (top {TOP_REPOS} of {_fmt(repos.get('repos'))})", ""]
    lines += _table(["repository", "rows"], [[r["name"], r["rows"]] for r in repos.get("top", [])]) + [""]
    scores = stats.get("scores") or {}
    lines += ["## Rule score", ""]
    if scores.get("count"):
        lines += [
            f"{_fmt(scores['count'])} scored main-agent rows ({scores.get('version')}): composite min "
            f"{_fmt(scores.get('min'))}, mean {_fmt(scores.get('mean'))}, p50 {_fmt(scores.get('p50'))}, max "
            f"{_fmt(scores.get('max'))}.",
            "",
        ]
        dims = scores.get("dimensions") or {}
        lines += _table(
            ["dimension", "mean", "p50", "min", "max"],
            [[k, d.get("mean"), d.get("p50"), d.get("min"), d.get("max")] for k, d in dims.items()],
        ) + [""]
    else:
        lines += ["No rule scores in the rows (ready-made data, or subagent rows only).", ""]
    lines += ["## Versions", ""] + [
        f"- {k}: {v or 'not installed'}" for k, v in (stats.get("versions") or {}).items()
    ]
    lines += [
        "",
        "Generated by `sft` (report pipeline); the machine-readable numbers are in the `.stats.json` beside "
        "this file.",
        "",
    ]
    return "\n".join(lines)


def dryrun_lines(stats: dict[str, Any]) -> list[str]:
    """A few lines for ``scripts/dryrun.sh``: over-length and fidelity at a glance."""
    summary = stats.get("statistics") or {}
    over = stats.get("overlength") or {}
    fid = stats.get("template_fidelity") or {}
    total = (summary.get("distributions") or {}).get("total_tokens") or {}
    lines = [
        f"dataset {stats.get('dataset', {}).get('data_name')}: {stats.get('dataset', {}).get('rows')} rows"
    ]
    if stats.get("model_turns"):
        lines.append(summary_line(stats["model_turns"]))
    if summary.get("tokens_skipped"):
        lines.append(f"WARN tokens: not counted ({summary['tokens_skipped']})")
    else:
        lines.append(
            f"tokens: p50 {_fmt(total.get('p50'))}, p99 {_fmt(total.get('p99'))}, max {_fmt(total.get('max'))}"
            f" (cutoff_len {_fmt(summary.get('cutoff_len'))})"
        )
    lines.append(
        f"over-length ({over.get('policy')}): {_fmt(over.get('over_cutoff'))} over cutoff, "
        f"{_fmt(over.get('dropped'))} dropped, {_fmt(over.get('truncated'))} truncated, "
        f"{_fmt(over.get('tokens_lf_will_cut'))} tokens LLaMA-Factory will cut"
    )
    if fid.get("skipped"):
        lines.append(f"WARN template fidelity: skipped ({fid.get('reason')})")
    else:
        s = fid.get("summary") or {}
        lines.append(
            f"template fidelity: {'ok' if fid.get('passed') else 'FAILED'}, {s.get('failing')} of "
            f"{s.get('checked')} rows differ (limit {fid.get('max_template_mismatch')})"
        )
    return lines
