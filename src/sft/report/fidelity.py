"""Template fidelity: does LLaMA-Factory train on the same token ids the model's chat template shows at inference?

Training side: each row goes through LLaMA-Factory 0.9.5's own code, exactly as ``llamafactory-cli train``
does: ``SharegptDatasetConverter`` (the aligned format) and ``SupervisedDatasetProcessor`` with the template
from ``get_template_and_fix_tokenizer`` (``training.template`` and the LLaMA-Factory data options), without a
cutoff (truncation is the over-length policy's business, not a template difference).

Inference side: the same conversation as OpenAI-style messages (``reasoning_content`` split off the
``<think>`` block the way Qwen3's own parser does, ``tool_calls`` parsed from the ``function_call`` value,
one ``tool`` message per parallel result), rendered by ``tokenizer.apply_chat_template(messages,
tools=..., tokenize=True)`` on an unmodified copy of the model's tokenizer.

Per row the ids are compared; a difference is classified:

- ``equal``;
- ``by_design:empty_think`` — the sequences are equal once empty ``<think>\\n\\n</think>\\n\\n`` blocks are
  removed on both sides. ``qwen3`` (a ReasoningTemplate, ``enable_thinking`` true) inserts a *trained*
  empty think block into every assistant turn that has no reasoning; Qwen3's chat template shows an empty
  block only on the final assistant turn. With ``qwen3_nothink`` it is the other way round: the chat
  template opens the final turn with an empty block, LLaMA-Factory renders the turn verbatim.
- ``by_design:history_reasoning`` — equal once all think blocks are removed, and LLaMA-Factory has more
  non-empty think blocks than the chat template: Qwen3's chat template drops the reasoning of assistant
  turns before the last real user message; LLaMA-Factory trains it (docs/llamafactory-rules.md §5.2).
- ``by_design:repair:<kind>`` — a row carrying a repair whose registry entry (``sft.report.repairs``) is
  ``by_design`` and whose verifier recognises the difference as exactly the documented one;
- ``mismatch`` — anything else; the first differing position and the decoded context of both sides are
  reported.

The report's ``repairs`` section explains every repair kind present (``sft.report.repairs.repairs_section``).

Rows LLaMA-Factory would skip (``drop:...``) or abort the run on (``abort:...``) and rows the chat template
cannot render are listed separately.

**Counting choice.** The mismatch rate that ``conversion.max_template_mismatch`` limits is
``(mismatch + drop + abort + inference render errors) / rows checked``. By-design differences are reported
with their explanation but do not count: they are the documented behaviour of the chosen LLaMA-Factory
template and the same for every row of a dataset, so counting them would make ``qwen3`` fail on any turn
without reasoning, and the remedy is a template choice, not a data fix. Any ``abort`` row fails the check
whatever the threshold, because it would kill the training run anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sft.report.repairs import REPAIRS, repairs_section, row_repairs, verify_by_design
from sft.report.tokens import (
    OBSERVATION_SEPARATOR,
    THINK_CLOSE_TOKEN,
    THINK_OPEN_TOKEN,
    AlignedRow,
    align_row,
    blank_thoughts,
    dataset_converter,
    lf_data_args,
    lf_template,
    load_tokenizer,
    parse_function_call,
    quiet_llamafactory,
    row_identity,
)
from sft.rules.render import lf_meta_of_row

logger = logging.getLogger(__name__)

CONTEXT_TOKENS = 12
MAX_LISTED = 50  # rows listed per category in the report
BY_DESIGN_EXPLANATIONS: dict[str, str] = {
    "empty_think": (
        "Equal once empty <think>\\n\\n</think>\\n\\n blocks are ignored. qwen3 (ReasoningTemplate, "
        "enable_thinking true) inserts a TRAINED empty think block into every assistant turn without "
        "reasoning, while Qwen3's chat template shows an empty block only on the final assistant turn (the "
        "model learns to open each intermediate turn with an empty thought, which inference then strips from "
        "history). With qwen3_nothink the chat template opens the final turn with an empty block that "
        "LLaMA-Factory does not render (the model never sees the empty block the enable_thinking=false "
        "generation prompt adds; harmless for *-Instruct-2507 models, whose template has no think block)."
    ),
    "history_reasoning": (
        "Equal once think blocks are ignored, and LLaMA-Factory keeps more reasoning: Qwen3's chat template "
        "drops reasoning_content from assistant turns before the last real user message, LLaMA-Factory "
        "trains every turn's reasoning (no mask_history). The model learns reasoning it will not see in its "
        "own history at inference; usual for multi-query agent SFT."
    ),
}
_FUNCTION_TOOL = "function"
# Row shapes whose mismatch has one known cause, named in the failure message with its fix (seen on
# LLaMA-Factory's own glaive_toolcall demo data registered as local_lf; never produced by the converter).
KNOWN_CAUSES: dict[str, str] = {
    "tools_without_system": (
        "{n} row(s) offer tools but have no system prompt: LLaMA-Factory renders '<|im_start|>system\\n\\n\\n"
        "# Tools' (the empty system text + its '\\n\\n# Tools' block), Qwen3's chat template "
        "'<|im_start|>system\\n# Tools'. Fix: give the rows a system prompt, or for a ready-made dataset set "
        "conversion.normalize_ready_data: true (it adds the default system prompt)"
    ),
    "empty_tools_array": (
        "{n} row(s) have tools '[]': LLaMA-Factory renders an empty '# Tools' system block that the chat "
        "template omits. Fix: write '' for no tools (sft does this itself for local_lf / hf_lf data)"
    ),
}


# --------------------------------------------------------------------------------------------- messages


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(content, reasoning) the way Qwen3's chat template / reasoning parser splits a ``</think>`` block."""
    if THINK_CLOSE_TOKEN not in text:
        return text, None
    reasoning = text.split(THINK_CLOSE_TOKEN)[0].rstrip("\n").split(THINK_OPEN_TOKEN)[-1].lstrip("\n")
    content = text.split(THINK_CLOSE_TOKEN)[-1].lstrip("\n")
    return content, reasoning


def _function_call_message(value: str) -> dict[str, Any]:
    calls = parse_function_call(value) or []
    match = re.search(r"<tool_call>(.*?)</tool_call>", value, re.DOTALL)
    if match is not None:
        prose = value.replace(match.group(0), "")
    else:
        thought = re.search(r"<think>\n(.*?)\n</think>\n\n", value, re.DOTALL)
        prose = thought.group(0) if thought else ""
    content, reasoning = split_reasoning(prose)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content.rstrip("\n"),  # the template puts "\n" between content and the first <tool_call>
        "tool_calls": [
            {"type": _FUNCTION_TOOL, "function": {"name": c.get("name"), "arguments": c.get("arguments", {})}}
            for c in calls
        ],
    }
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return message


def to_openai_messages(aligned: AlignedRow) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The row (as LLaMA-Factory aligned it) as the OpenAI-style messages and tools an inference server passes."""
    messages: list[dict[str, Any]] = []
    if aligned.system:
        messages.append({"role": "system", "content": aligned.system})
    for turn in aligned.messages:
        role, value = turn["role"], turn["content"] or ""
        if role == "user":
            messages.append({"role": "user", "content": value})
        elif role == "observation":
            messages.extend({"role": "tool", "content": part} for part in value.split(OBSERVATION_SEPARATOR))
        elif role == "function":
            messages.append(_function_call_message(value))
        elif role == "assistant":
            content, reasoning = split_reasoning(value)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            messages.append(message)
    tools = json.loads(aligned.tools) if aligned.tools else None
    if isinstance(tools, list):  # OpenAI-compatible servers always pass the wrapped form
        tools = [
            t if t.get("type") == _FUNCTION_TOOL else {"type": _FUNCTION_TOOL, "function": t} for t in tools
        ]
    return messages, tools


# --------------------------------------------------------------------------------------------- comparison


def _newline_ids(tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for count in range(1, 5):
        encoded = tokenizer.encode("\n" * count, add_special_tokens=False)
        if len(encoded) == 1:
            ids.add(encoded[0])
    return ids


def strip_think_blocks(
    ids: list[int], open_id: int, close_id: int, newline_ids: set[int], *, only_empty: bool
) -> tuple[list[int], int]:
    """Remove ``<think>...</think>`` spans (and the newlines after them); returns (ids, non-empty blocks seen)."""
    out: list[int] = []
    pos = non_empty = 0
    while True:
        try:
            start = ids.index(open_id, pos)
            end = ids.index(close_id, start + 1)
        except ValueError:
            out.extend(ids[pos:])
            return out, non_empty
        inner_blank = all(i in newline_ids for i in ids[start + 1 : end])
        non_empty += not inner_blank
        if only_empty and not inner_blank:
            out.extend(ids[pos : end + 1])
            pos = end + 1
            continue
        out.extend(ids[pos:start])
        pos = end + 1
        while pos < len(ids) and ids[pos] in newline_ids:
            pos += 1


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing id (or the shorter length), None if equal."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def classify(lf_ids: list[int], hf_ids: list[int], tokenizer: Any) -> str:
    """``equal`` | ``by_design:empty_think`` | ``by_design:history_reasoning`` | ``mismatch``."""
    if lf_ids == hf_ids:
        return "equal"
    open_id = tokenizer.convert_tokens_to_ids(THINK_OPEN_TOKEN)
    close_id = tokenizer.convert_tokens_to_ids(THINK_CLOSE_TOKEN)
    if not isinstance(open_id, int) or not isinstance(close_id, int) or open_id == tokenizer.unk_token_id:
        return "mismatch"
    newlines = _newline_ids(tokenizer)
    lf_a, _ = strip_think_blocks(lf_ids, open_id, close_id, newlines, only_empty=True)
    hf_a, _ = strip_think_blocks(hf_ids, open_id, close_id, newlines, only_empty=True)
    if lf_a == hf_a:
        return "by_design:empty_think"
    lf_b, lf_blocks = strip_think_blocks(lf_ids, open_id, close_id, newlines, only_empty=False)
    hf_b, hf_blocks = strip_think_blocks(hf_ids, open_id, close_id, newlines, only_empty=False)
    if lf_b == hf_b and lf_blocks > hf_blocks:
        return "by_design:history_reasoning"
    return "mismatch"


def _context(tokenizer: Any, ids: list[int], position: int) -> str:
    start = max(0, position - CONTEXT_TOKENS)
    before = tokenizer.decode(ids[start:position], skip_special_tokens=False)
    after = tokenizer.decode(ids[position : position + CONTEXT_TOKENS], skip_special_tokens=False)
    return f"{before}⟦{after}"


# --------------------------------------------------------------------------------------------- public API


def _load(tokenizer_dir_or_tokenizer: Any, trust_remote_code: bool) -> tuple[Any, Any, str]:
    """Two tokenizers: one LLaMA-Factory may fix, and an untouched one for the chat template."""
    if isinstance(tokenizer_dir_or_tokenizer, str | bytes) or hasattr(
        tokenizer_dir_or_tokenizer, "__fspath__"
    ):
        source = str(tokenizer_dir_or_tokenizer)
        lf_load = load_tokenizer(source, trust_remote_code=trust_remote_code)
        hf_load = load_tokenizer(source, trust_remote_code=trust_remote_code)
        if not lf_load.ok:
            return None, None, lf_load.error
        return lf_load.tokenizer, hf_load.tokenizer, ""
    import copy

    return copy.deepcopy(tokenizer_dir_or_tokenizer), tokenizer_dir_or_tokenizer, ""


def skipped_report(reason: str, *, template: str, max_mismatch: float | None = None) -> dict[str, Any]:
    """The report when the check cannot run (no tokenizer, no chat template): it says so, loudly."""
    return {
        "skipped": True,
        "reason": reason,
        "template": template,
        "max_template_mismatch": max_mismatch,
        "summary": {"checked": 0},
        "passed": None,
    }


def check_template_fidelity(
    rows: list[dict[str, Any]],
    tokenizer_dir_or_tokenizer: Any,
    *,
    template: str,
    max_rows: int | None = None,
    lf_options: dict[str, Any] | None = None,
    dataset_entry: Mapping[str, Any] | None = None,
    max_mismatch: float = 0.0,
    trust_remote_code: bool = True,
    dataset_repairs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Compare LLaMA-Factory's training ids with the chat template's inference ids, row by row.

    ``max_rows`` checks the first N rows (None = all); ``dataset_entry`` is the rows' dataset_info.json entry. The report's ``passed`` applies ``max_mismatch``
    with the counting rule in the module docstring; ``enforce_fidelity`` raises on it. ``dataset_repairs``: the
    conversion report's ``repairs`` (kinds counted for the dataset, not per row).
    """
    started = time.perf_counter()
    lf_tok, hf_tok, error = _load(tokenizer_dir_or_tokenizer, trust_remote_code)
    if lf_tok is None:
        return skipped_report(error, template=template, max_mismatch=max_mismatch)
    if not getattr(hf_tok, "chat_template", None):
        return skipped_report(
            f"{getattr(hf_tok, 'name_or_path', '?')}: the tokenizer has no chat_template to compare "
            "with (a base model?); nothing to check",
            template=template,
            max_mismatch=max_mismatch,
        )
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    data_args = lf_data_args(template, options=lf_options)
    tpl = lf_template(lf_tok, data_args)
    converter = dataset_converter(data_args, dataset_entry)
    processor = SupervisedDatasetProcessor(
        template=tpl, tokenizer=lf_tok, processor=None, data_args=data_args
    )
    selected = rows if max_rows is None else rows[:max_rows]
    samples = [_check_row(row, index, converter, processor, hf_tok) for index, row in enumerate(selected)]
    report = _summarize(
        samples,
        template=template,
        max_mismatch=max_mismatch,
        total_rows=len(rows),
        dataset_repairs=dataset_repairs,
    )
    report["lf_options"] = dict(lf_options or {})
    report["tokenizer"] = getattr(hf_tok, "name_or_path", "")
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report


def _check_row(
    row: dict[str, Any], index: int, converter: Any, processor: Any, hf_tok: Any
) -> dict[str, Any]:
    sample = {k: v for k, v in row_identity(row, index).items() if k in ("index", "uid")}
    repairs = row_repairs(row)
    if repairs:
        sample["repairs"] = repairs
    aligned = align_row(row, converter)
    if aligned.status != "ok":
        sample.update(status=aligned.status, detail=aligned.detail)
        return sample
    try:
        with quiet_llamafactory():
            encoded = processor.preprocess_dataset(
                {
                    "_prompt": [aligned.prompt],
                    "_response": [aligned.response],
                    "_system": [aligned.system],
                    "_tools": [aligned.tools],
                    "_images": [None],
                    "_videos": [None],
                    "_audios": [None],
                }
            )
    except RuntimeError as exc:  # "Invalid JSON format in function message / tool description"
        sample.update(status="abort:invalid_json", detail=str(exc)[:300])
        return sample
    except (KeyError, TypeError, ValueError) as exc:
        sample.update(status="abort:bad_function_call", detail=f"{type(exc).__name__}: {str(exc)[:300]}")
        return sample
    sample.update(compare_with_chat_template(aligned, list(encoded["input_ids"][0]), hf_tok, repairs))
    return sample


def compare_with_chat_template(
    aligned: AlignedRow, lf_ids: list[int], hf_tok: Any, repairs: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Status (and first difference) of LLaMA-Factory's ids of a row against the chat template's; ``repairs``
    (the row's kind -> count) lets a ``by_design`` repair's verifier explain a mismatch."""
    try:
        messages, tools = to_openai_messages(aligned)
        hf_ids = list(hf_tok.apply_chat_template(messages, tools=tools, tokenize=True))
    except Exception as exc:  # a jinja error, bad tools JSON: the row cannot be served as-is
        return {"status": "inference_render_error", "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}
    status = classify(lf_ids, hf_ids, hf_tok)
    if status == "mismatch" and repairs:
        kind = verify_by_design(repairs, lf_ids, hf_ids, hf_tok)
        status = f"by_design:repair:{kind}" if kind else status
    result: dict[str, Any] = {"status": status, "lf_tokens": len(lf_ids), "chat_template_tokens": len(hf_ids)}
    cause = known_cause(aligned) if status == "mismatch" else None
    if cause:
        result["cause"] = cause
    if status != "equal":
        position = first_difference(lf_ids, hf_ids)
        assert position is not None
        result.update(
            first_diff=position,
            lf_context=_context(hf_tok, lf_ids, position),
            chat_template_context=_context(hf_tok, hf_ids, position),
        )
    return result


def known_cause(aligned: AlignedRow) -> str | None:
    """The ``KNOWN_CAUSES`` key a mismatching row's shape explains, or None."""
    try:
        tools = json.loads(aligned.tools) if aligned.tools else None
    except json.JSONDecodeError:
        return None
    if tools == []:
        return "empty_tools_array"
    if tools and not aligned.system:
        return "tools_without_system"
    return None


def _by_design_explanation(name: str) -> str:
    kind = name.removeprefix("repair:")
    return (
        REPAIRS[kind].why if name.startswith("repair:") and kind in REPAIRS else BY_DESIGN_EXPLANATIONS[name]
    )


def _summarize(
    samples: list[dict[str, Any]],
    *,
    template: str,
    max_mismatch: float,
    total_rows: int,
    repair_rows: list[dict[str, Any]] | None = None,
    dataset_repairs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The report; ``repair_rows`` (every row's ``repairs`` and, when checked, ``status``) defaults to ``samples``."""
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample["status"]] = counts.get(sample["status"], 0) + 1
    failing = [s for s in samples if _counts_as_failure(s["status"])]
    aborts = [s for s in samples if s["status"].startswith("abort:")]
    by_design = sorted(
        {s["status"].split(":", 1)[1] for s in samples if s["status"].startswith("by_design:")}
    )
    rate = len(failing) / len(samples) if samples else 0.0
    passed = rate <= max_mismatch and not aborts
    return {
        "skipped": False,
        "template": template,
        "max_template_mismatch": max_mismatch,
        "counting_rule": (
            "mismatch rate = (mismatch + LLaMA-Factory drop/abort + chat-template render errors) / "
            "rows checked; by-design differences are explained, not counted; any abort fails"
        ),
        "summary": {
            "rows": total_rows,
            "checked": len(samples),
            "statuses": dict(sorted(counts.items())),
            "failing": len(failing),
            "mismatch_rate": round(rate, 6),
            "causes": dict(sorted(Counter(s["cause"] for s in samples if s.get("cause")).items())),
        },
        "passed": passed,
        "by_design": {name: _by_design_explanation(name) for name in by_design},
        "repairs": repairs_section(
            samples if repair_rows is None else repair_rows, dataset_counts=dataset_repairs
        ),
        "mismatches": [s for s in samples if s["status"] in ("mismatch", "inference_render_error")][
            :MAX_LISTED
        ],
        "lf_drops": [s for s in samples if s["status"].startswith("drop:")][:MAX_LISTED],
        "lf_aborts": aborts[:MAX_LISTED],
        "by_design_examples": [s for s in samples if s["status"].startswith("by_design:")][:5],
        "samples": [{k: s[k] for k in ("index", "uid", "status", "repairs") if k in s} for s in samples],
    }


def _counts_as_failure(status: str) -> bool:
    return (
        status == "mismatch" or status == "inference_render_error" or status.startswith(("drop:", "abort:"))
    )


def _causes_text(summary: Mapping[str, Any]) -> str:
    causes = summary.get("causes") or {}
    known = [KNOWN_CAUSES[c].format(n=n) for c, n in causes.items() if c in KNOWN_CAUSES]
    return (" Known causes: " + "; ".join(known) + ".") if known else ""


class TemplateFidelityError(RuntimeError):
    """The template fidelity check failed; the message names the report file."""


def enforce_fidelity(report: dict[str, Any], *, report_path: str, max_mismatch: float) -> None:
    """Raise before training when the report fails; log loudly when the check was skipped."""
    if report.get("skipped"):
        logger.warning(
            "template fidelity check SKIPPED (conversion.max_template_mismatch=%s not enforced): %s; "
            "report: %s",
            max_mismatch,
            report.get("reason"),
            report_path,
        )
        return
    summary = report.get("summary", {})
    aborts = summary.get("statuses", {})
    n_abort = sum(v for k, v in aborts.items() if k.startswith("abort:"))
    rate = float(summary.get("mismatch_rate", 0.0))
    if n_abort or rate > max_mismatch:
        raise TemplateFidelityError(
            f"template fidelity check failed for training.template={report.get('template')!r}: "
            f"{summary.get('failing')} of {summary.get('checked')} rows differ or fail in LLaMA-Factory "
            f"(rate {rate:.4f} > conversion.max_template_mismatch {max_mismatch}; {n_abort} row(s) would abort "
            f"the run). See {report_path} for the first differing token of each row.{_causes_text(summary)} "
            "Fix the rows or the template, or raise conversion.max_template_mismatch if the difference is intended."
        )
    logger.info(
        "template fidelity: %s of %s rows equal or by-design (rate %.4f <= %s); report: %s",
        summary.get("checked", 0) - summary.get("failing", 0),
        summary.get("checked"),
        rate,
        max_mismatch,
        report_path,
    )


# --------------------------------------------------------------------------------------------- from the token pass

FIDELITY_MIN_ROWS = 50  # up to this many rows every row is checked; above, at least this many are sampled
RARE_SHARE = 0.05  # a structure in fewer than this share of the rows is rare: its rows are checked ...
RARE_CAP = 50  # ... up to this many per structure (the lowest-ranked, i.e. a seeded choice): a structure's
# rendering is a property of the template, so 50 rows of it show a mismatch as well as 500 would, and a job
# where many rows carry some rare structure (sub-agents, repair kinds) does not make the check scale with it
_TURN_BUCKETS = (8, 32, 128)  # strata: agent type x scaffold x conversation length x structures
SELECTION_RULE = (
    "Every row is compared when the dataset has at most {min_rows} rows or conversion.fidelity_sample_rate is 1. "
    "Otherwise, in the single token pass: a seeded sample (sha256 of conversion.seed and the row uid < rate, "
    "rate = max(fidelity_sample_rate, {min_rows} / rows)) and every row LLaMA-Factory drops or aborts on; after "
    "it, the rows with a rare structure (a repair kind, parallel tool calls, sub-agent, reasoning: any of them in less "
    "than {rare:.0%} of the rows; up to {cap} rows of each, the lowest-ranked) and the lowest-ranked row of every stratum (agent type x scaffold x turn bucket "
    "x structures) the sample missed. Why a sample is enough: the check tests a structural property of the "
    "template (how LLaMA-Factory and the chat template render a kind of turn), shared by every row of the same "
    "structure, so rare structures are checked in full and every combination of structures at least once."
)


@dataclass
class FidelityPlan:
    """Which rows the token pass compares with the chat template, and the comparison itself (in the workers).

    ``hf_tok`` is an unmodified copy of the model tokenizer (LLaMA-Factory fixes the one it renders with).
    """

    hf_tok: Any
    rows: int
    seed: int
    sample_rate: float
    min_rows: int = FIDELITY_MIN_ROWS
    force: str | None = (
        None  # check every row handed to the pass, for this reason (the top-up after the pass)
    )

    @property
    def rate(self) -> float:
        if self.force or self.rows <= self.min_rows:
            return 1.0
        return min(1.0, max(self.sample_rate, self.min_rows / self.rows))

    def rank(self, row: dict[str, Any], index: int) -> float:
        """A seeded pseudo-random number in [0, 1) per row uid (independent of order and workers)."""
        uid = row.get("_uid") or f"row#{index}"
        digest = hashlib.sha256(f"{self.seed}:{uid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    @staticmethod
    def structures(row: dict[str, Any], aligned: AlignedRow) -> list[str]:
        """The structures of a row that templates render specially."""
        found: list[str] = []
        meta = lf_meta_of_row(row)
        # one structure per repair kind: a rare kind is checked in full even where another kind is common
        found.extend(f"repair:{kind}" for kind in row_repairs(row))
        if (row.get("_agent_type") or meta.get("agent_type") or "main") != "main":
            found.append("subagent")
        for message in aligned.messages:
            content = message["content"] if isinstance(message["content"], str) else ""
            if message["role"] == "function" and len(parse_function_call(content) or []) > 1:
                found.append("parallel_calls")
                break
        for message in aligned.messages:
            content = message["content"] if isinstance(message["content"], str) else ""
            if (
                message["role"] in ("assistant", "function")
                and THINK_OPEN_TOKEN in content
                and not all(blank_thoughts(content))
            ):
                found.append("reasoning")
                break
        return found

    def stratum(self, row: dict[str, Any], aligned: AlignedRow) -> str:
        meta = lf_meta_of_row(row)
        turns = len(aligned.messages)
        bucket = next((f"<={b}" for b in _TURN_BUCKETS if turns <= b), f">{_TURN_BUCKETS[-1]}")
        agent = row.get("_agent_type") or meta.get("agent_type") or "main"
        return f"{agent}|{meta.get('scaffold') or '?'}|turns{bucket}|{'+'.join(self.structures(row, aligned)) or '-'}"

    def selects(self, row: dict[str, Any], aligned: AlignedRow, index: int) -> str | None:
        """Why the pass checks the row (``all`` / ``sample`` / ``lf_reject`` / the top-up's reason), or None."""
        if self.force:
            return self.force
        if self.rate >= 1.0:
            return "all"
        if aligned.status != "ok":
            return "lf_reject"
        return "sample" if self.rank(row, index) < self.rate else None

    def unchecked(self, row: dict[str, Any], aligned: AlignedRow, index: int) -> dict[str, Any]:
        """What the top-up after the pass (and the report's ``repairs`` section) needs of an unchecked row."""
        return {
            "why": None,
            "stratum": self.stratum(row, aligned),
            "rank": self.rank(row, index),
            **self.row_facts(row),
        }

    @staticmethod
    def row_facts(row: dict[str, Any]) -> dict[str, Any]:
        """What every row's record carries to the report: its repairs (kind -> count), when it has any."""
        repairs = row_repairs(row)
        return {"repairs": repairs} if repairs else {}

    def check(
        self, aligned: AlignedRow, lf_ids: list[int], row: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        facts = self.row_facts(row) if row is not None else {}
        return {**compare_with_chat_template(aligned, lf_ids, self.hf_tok, facts.get("repairs")), **facts}

    def describe(self) -> dict[str, Any]:
        mode = "all" if self.rate >= 1.0 else "sample"
        return {
            "mode": mode,
            "rows": self.rows,
            "rate": round(self.rate, 6),
            "sample_rate": self.sample_rate,
            "seed": self.seed,
            "min_rows": self.min_rows,
            "rare_share": RARE_SHARE,
            "rare_cap": RARE_CAP,
            "rule": SELECTION_RULE.format(min_rows=self.min_rows, rare=RARE_SHARE, cap=RARE_CAP),
        }


def fidelity_plan(
    tokenizer: Any, rows: int, *, seed: int, sample_rate: float, min_rows: int | None = None
) -> FidelityPlan | None:
    """The plan for ``rows`` rows, with an untouched copy of ``tokenizer``; None without a chat template."""
    import copy

    if not getattr(tokenizer, "chat_template", None):
        return None
    return FidelityPlan(
        copy.deepcopy(tokenizer), rows, seed, sample_rate, FIDELITY_MIN_ROWS if min_rows is None else min_rows
    )


def _structures_of(stratum: str) -> list[str]:
    tail = stratum.rsplit("|", 1)[-1]
    return [] if tail == "-" else tail.split("+")


def _rare_structure_counts(records: list[tuple[int, dict[str, Any]]], rows: int) -> dict[str, int]:
    """The rare structures (under ``RARE_SHARE`` of ``rows``), each with the rows the pass already checked."""
    counts: dict[str, int] = {}
    for _, record in records:
        for structure in _structures_of(record["stratum"]):
            counts[structure] = counts.get(structure, 0) + 1
    taken = {k: 0 for k, n in counts.items() if n < RARE_SHARE * rows}
    for _, record in records:
        for structure in _structures_of(record["stratum"]) if record.get("why") else ():
            if structure in taken:
                taken[structure] += 1
    return taken


def topup_indices(per_sample: list[dict[str, Any]]) -> dict[int, str]:
    """Rows to check after the pass, with the reason: the unchecked rows with a rare structure, up to
    ``RARE_CAP`` per structure counting the rows already checked, lowest rank first (``rare:<structure>``), then
    the lowest-ranked row of every stratum still without a checked row (``stratum_cover``)."""
    records = [(position, s["fidelity"]) for position, s in enumerate(per_sample) if s.get("fidelity")]
    taken = _rare_structure_counts(records, len(per_sample))
    chosen: dict[int, str] = {}
    covered = {record["stratum"] for _, record in records if record.get("why")}
    best: dict[str, tuple[float, int]] = {}
    for position, record in sorted(records, key=lambda item: item[1].get("rank", 0.0)):
        if record.get("why"):
            continue
        structures = _structures_of(record["stratum"])
        hit = [s for s in structures if s in taken and taken[s] < RARE_CAP]
        if hit:
            chosen[position] = "rare:" + ",".join(hit)
            covered.add(record["stratum"])
            for structure in (s for s in structures if s in taken):
                taken[structure] += 1
        elif record["stratum"] not in best:  # sorted by rank: the first one seen is the lowest-ranked
            best[record["stratum"]] = (record.get("rank", 0.0), position)
    for stratum, (_, position) in best.items():
        if stratum not in covered:
            chosen[position] = "stratum_cover"
    return dict(sorted(chosen.items()))


def report_from_samples(
    per_sample: list[dict[str, Any]],
    plan: dict[str, Any],
    *,
    template: str,
    max_mismatch: float,
    lf_options: dict[str, Any] | None,
    tokenizer: str,
    elapsed_s: float | None,
    dataset_repairs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The fidelity report from the token pass's per-sample ``fidelity`` records (no second tokenization)."""
    checked: list[dict[str, Any]] = []
    repair_rows: list[dict[str, Any]] = []  # every row with repairs, checked or not (the repairs section)
    check_s = 0.0
    why: dict[str, int] = {}
    strata: dict[str, dict[str, int]] = {}
    for sample in per_sample:
        record = sample.get("fidelity") or {}
        stratum = record.get("stratum")
        if record.get("repairs"):
            repair_rows.append(
                {"repairs": record["repairs"], "status": record.get("status") if record.get("why") else None}
            )
        if stratum is not None:
            strata.setdefault(stratum, {"rows": 0, "checked": 0})["rows"] += 1
        if not record.get("why"):
            continue
        if stratum is not None:
            strata[stratum]["checked"] += 1
        check_s += record.get("check_s") or 0.0
        kind = record["why"].split(":", 1)[0]
        why[kind] = why.get(kind, 0) + 1
        checked.append(
            {
                "index": sample["index"],
                "uid": sample["uid"],
                **{k: v for k, v in record.items() if k not in ("rank", "check_s")},
            }
        )
    report = _summarize(
        checked,
        template=template,
        max_mismatch=max_mismatch,
        total_rows=len(per_sample),
        repair_rows=repair_rows,
        dataset_repairs=dataset_repairs,
    )
    report["selection"] = {
        **plan,
        "checked_by_reason": dict(sorted(why.items())),
        "strata": dict(sorted(strata.items())),
    }
    report["lf_options"] = dict(lf_options or {})
    report["tokenizer"] = tokenizer
    report["elapsed_s"] = elapsed_s  # the top-up after the pass
    report["check_s"] = round(check_s, 3)  # comparisons inside the pass, summed over its workers
    report["computed_by"] = "apply_length_policy_node (the single token pass)"
    return report
