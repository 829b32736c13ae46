"""Token statistics of LLaMA-Factory rows, counted the way LLaMA-Factory 0.9.5 will feed them.

Why not just tokenize the text: LLaMA-Factory builds each sample from template slots (``<|im_start|>``
headers, the tools block in the system turn, the qwen function formatter that re-serialises every call,
the empty ``<think>`` blocks the ``qwen3`` template inserts) and tokenizes every slot element *separately*.
A plain ``tokenizer(text)`` over the chat-template text is off by those pieces and by the merges across
slot boundaries, and cannot tell which tokens are trained.

How it stays exact and fast: each row goes through LLaMA-Factory's own ``SharegptDatasetConverter`` and
``Template.encode_multiturn`` (so reasoning removal, the empty thought words, the tool and function
formatters are LLaMA-Factory's code, not a copy), but with a *recording* tokenizer that only collects the
strings LLaMA-Factory wants encoded. The collected strings (de-duplicated: the tools block is the same in
every row of a job) are then encoded in large batches by the fast tokenizer's Rust backend, which runs on
all cores. Since LLaMA-Factory concatenates the per-element ids, the per-turn lengths are exact; the
truncation LLaMA-Factory will apply at ``cutoff_len`` is then simulated with its own ``infer_seqlen``.
Rows go in chunks: while the Rust encoder works on one chunk (on a thread, without the GIL), the next
chunk is rendered, so the Python and the Rust halves use both cores of a 2-core machine. ``num_workers``
> 1 instead renders and encodes chunks in forked processes (for machines with more cores than the Rust
encoder alone keeps busy). Measured with ``benchmarks/bench_tokens.py``.

Per sample: total tokens, supervised tokens (the labels LLaMA-Factory trains: ``gpt`` and
``function_call`` bodies, their ``<|im_end|>\\n`` and any trained empty think block), reasoning tokens
(tokens strictly between ``<think>`` and ``</think>`` of non-empty thought blocks in trained turns),
tool-output tokens (tokens between the first ``<tool_response>`` and the last ``</tool_response>`` of
observation turns; the whole observation turn for templates without those tags), turns, tool calls.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import multiprocessing as mp
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from sft.rules.render import lf_meta_of_row

logger = logging.getLogger(__name__)

# LLaMA-Factory data arguments that change what a row renders to; taken from training.* when present.
LF_DATA_OPTION_KEYS: tuple[str, ...] = (
    "enable_thinking",
    "preserve_thinking",
    "mask_history",
    "train_on_prompt",
    "default_system",
    "tool_format",
)
THINK_OPEN_TOKEN = "<think>"
THINK_CLOSE_TOKEN = "</think>"
TOOL_RESPONSE_OPEN_TOKEN = "<tool_response>"
TOOL_RESPONSE_CLOSE_TOKEN = "</tool_response>"
OBSERVATION_SEPARATOR = "\n</tool_response>\n<tool_response>\n"
TOOL_ERROR_PREFIXES: tuple[str, ...] = ("<tool_use_error>", "The arguments provided to the tool are invalid")
BATCH_CHARS = 8_000_000  # characters of unique element text per tokenizer batch (bounded memory)
NO_CUTOFF = 2**31 - 1
OVERLAP_CHUNK_ROWS = 64  # one process: rows per chunk, small enough for encoding and rendering to overlap
POOL_CHUNKS_PER_WORKER = 4  # with num_workers > 1: chunks per worker (load balance vs. per-chunk overhead)
POOL_CHUNK_BYTES = 16 << 20  # with num_workers > 1: at most about this much row JSON per chunk
POOL_WINDOW_PER_WORKER = 2  # chunks in flight per worker (finished ones wait in order, memory stays bounded)
_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_FUNCTION_THOUGHT_RE = re.compile(r"<think>\n(.*?)\n</think>\n\n", re.DOTALL)
DISTRIBUTION_METRICS: tuple[str, ...] = (
    "total_tokens",
    "supervised_tokens",
    "reasoning_tokens",
    "tool_output_tokens",
    "turns",
    "assistant_turns",
    "tool_calls",
)
# Full tokenization passes by purpose ("rows": every row of a dataset; "truncated_recount": the rows the
# over-length policy cut). A run should tokenize its rows once: tests read this to prove it.
TOKENIZATION_PASSES: Counter[str] = Counter()
DEFAULT_DATASET_ENTRY: dict[str, Any] = {
    "formatting": "sharegpt",
    "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
}


# --------------------------------------------------------------------------------------------- loading


@dataclass
class TokenizerLoad:
    """A tokenizer, or why there is none (so callers degrade with a clear warning instead of crashing)."""

    tokenizer: Any | None
    source: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.tokenizer is not None


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = True) -> TokenizerLoad:
    """Load the model's tokenizer offline; never raises (the error text says what to fix)."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # missing dir, no network, a broken tokenizer.json: all mean "no counts"
        return TokenizerLoad(
            None,
            name_or_path,
            f"model.model_name_or_path={name_or_path!r}: tokenizer could not be loaded offline "
            f"({type(exc).__name__}: {str(exc)[:300]}). Point model.model_name_or_path at a local model "
            "directory holding tokenizer.json / tokenizer_config.json to get token counts.",
        )
    return TokenizerLoad(tokenizer, name_or_path)


def lf_data_options(training_options: dict[str, Any]) -> dict[str, Any]:
    """The LLaMA-Factory data arguments among the training block's options (unset ones are left out)."""
    return {k: training_options[k] for k in LF_DATA_OPTION_KEYS if training_options.get(k) is not None}


def lf_data_args(template: str, *, cutoff_len: int = NO_CUTOFF, options: dict[str, Any] | None = None) -> Any:
    """LLaMA-Factory ``DataArguments`` for rendering rows with ``template``."""
    from llamafactory.hparams import DataArguments

    return DataArguments(template=template, cutoff_len=cutoff_len, **(options or {}))


def lf_template(tokenizer: Any, data_args: Any) -> Any:
    """LLaMA-Factory's template object, with the tokenizer fixed exactly as training fixes it."""
    from llamafactory.data import get_template_and_fix_tokenizer

    with quiet_llamafactory():
        return get_template_and_fix_tokenizer(tokenizer, data_args)


@contextlib.contextmanager
def quiet_llamafactory(level: int = logging.ERROR) -> Iterator[None]:
    """Silence LLaMA-Factory's per-row warnings (we count the same events and report them once)."""
    names = (
        "llamafactory.data.converter",
        "llamafactory.data.template",
        "llamafactory.data.processor.supervised",
    )
    loggers = [logging.getLogger(name) for name in names]
    previous = [lg.level for lg in loggers]
    if all(old == level for old in previous):
        # Already quiet (token_stats holds this around its whole loop): setLevel clears the cache of every
        # logger in the process, which per row was a fifth of token_stats' Python time.
        yield
        return
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, previous, strict=True):
            lg.setLevel(old)


# --------------------------------------------------------------------------------------------- alignment


@dataclass
class AlignedRow:
    """A row after LLaMA-Factory's converter, or the reason LLaMA-Factory will not train it."""

    prompt: list[dict[str, str]] = field(default_factory=list)
    response: list[dict[str, str]] = field(default_factory=list)
    system: str = ""
    tools: str = ""
    status: str = "ok"  # ok | drop:<code> | abort:<code>
    detail: str = ""

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.prompt + self.response


def dataset_converter(data_args: Any, entry: Mapping[str, Any] | None = None) -> Any:
    """LLaMA-Factory's converter for a ``dataset_info.json`` entry (default: ours, render.dataset_info_entry).

    ``DatasetAttr.join`` is LLaMA-Factory's own parsing of the entry, so ready-made data registered with
    other columns / tags / ``formatting: openai`` is read exactly as training will read it.
    """
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import DatasetAttr

    attr = DatasetAttr("file", "sft_report")
    attr.join(dict(entry or DEFAULT_DATASET_ENTRY))
    return get_dataset_converter(attr.formatting, attr, data_args)


def sharegpt_converter(data_args: Any) -> Any:
    """The converter for rows written by render_lf_row (conversations/from/value, system, tools)."""
    return dataset_converter(data_args, None)


def align_row(row: dict[str, Any], converter: Any) -> AlignedRow:
    """Run LLaMA-Factory's converter on one row; a row it skips comes back with status ``drop:...``."""
    attr = converter.dataset_attr
    example = dict(row)
    for column in (attr.system, attr.tools):
        if column and column not in example:
            example[column] = None  # a column the file does not have reads as null
    tools = example.get(attr.tools) if attr.tools else None
    if tools is not None and not isinstance(tools, str):
        return AlignedRow(
            status="abort:tools_not_a_string",
            detail=f"tools is a {type(tools).__name__}; LLaMA-Factory needs a JSON string",
        )
    try:
        with quiet_llamafactory():
            aligned = converter(example)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        return AlignedRow(status="drop:malformed_row", detail=f"{type(exc).__name__}: {exc}")
    prompt, response = aligned["_prompt"], aligned["_response"]
    if not prompt and not response:
        return AlignedRow(
            status="drop:invalid_role_order_or_count",
            detail="LLaMA-Factory's converter skips it ('Skipping this abnormal example')",
        )
    if len(prompt) % 2 != 1 or len(response) != 1:
        return AlignedRow(status="drop:invalid_example", detail="the supervised processor drops it")
    return AlignedRow(
        prompt=prompt, response=response, system=aligned["_system"] or "", tools=aligned["_tools"] or ""
    )


# --------------------------------------------------------------------------------------------- recording


class RecordingTokenizer:
    """Stands in for the tokenizer inside LLaMA-Factory's template: remembers what it is asked to encode.

    ``encode`` returns one negative marker per string; special-token lookups and BOS/EOS ids are real,
    so the template's id lists come back as markers (strings) and real ids (single tokens).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.texts: list[str] = []

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:  # LF's call shape
        self.texts.append(text)
        return [-len(self.texts)]

    def convert_tokens_to_ids(self, token: str) -> int:
        return self._tokenizer.convert_tokens_to_ids(token)


@dataclass
class RenderedRow:
    """A row as LLaMA-Factory's template pieces: per (prompt, response) pair the element markers."""

    aligned: AlignedRow
    pairs: list[tuple[list[int], list[int]]] = field(default_factory=list)


def render_row(
    aligned: AlignedRow, template: Any, recorder: RecordingTokenizer, data_args: Any
) -> RenderedRow:
    """``Template.encode_multiturn`` with the recording tokenizer (LLaMA-Factory's code, no tokenizing)."""
    if aligned.status != "ok":
        return RenderedRow(aligned)
    discarding_history_cot = bool(data_args.mask_history) and not template.preserve_thinking
    try:
        pairs = template.encode_multiturn(
            recorder, aligned.messages, aligned.system, aligned.tools, discarding_history_cot
        )
    except RuntimeError as exc:  # FunctionFormatter / ToolFormatter: "Invalid JSON format in ..."
        aligned.status, aligned.detail = "abort:invalid_json", str(exc)[:300]
        return RenderedRow(aligned)
    except (KeyError, TypeError, ValueError) as exc:  # e.g. a call object without "name"/"arguments"
        aligned.status, aligned.detail = "abort:bad_function_call", f"{type(exc).__name__}: {str(exc)[:300]}"
        return RenderedRow(aligned)
    return RenderedRow(aligned, [(list(src), list(tgt)) for src, tgt in pairs])


# --------------------------------------------------------------------------------------------- encoding


@dataclass
class EncodedTexts:
    """Token lengths (and ids where needed) of unique element strings."""

    lengths: dict[str, int]
    ids: dict[str, list[int]]


def encode_texts(tokenizer: Any, texts: Sequence[str], need_ids: set[str]) -> EncodedTexts:
    """Batch-encode unique strings with the fast tokenizer (Rust, all cores); ids only where asked."""
    unique = list(dict.fromkeys(texts))
    lengths: dict[str, int] = {}
    ids: dict[str, list[int]] = {}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    start = 0
    while start < len(unique):
        size, end = 0, start
        while end < len(unique) and (size < BATCH_CHARS or end == start):
            size += len(unique[end])
            end += 1
        batch = unique[start:end]
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            encodings = backend.encode_batch_fast(batch, add_special_tokens=False)
            for text, enc in zip(batch, encodings, strict=True):
                lengths[text] = len(enc)
                if text in need_ids:
                    ids[text] = enc.ids
        else:  # a slow tokenizer: correct, only slower
            for text, token_ids in zip(
                batch, tokenizer(batch, add_special_tokens=False)["input_ids"], strict=True
            ):
                lengths[text] = len(token_ids)
                if text in need_ids:
                    ids[text] = list(token_ids)
        start = end
    return EncodedTexts(lengths, ids)


# --------------------------------------------------------------------------------------------- per sample


@dataclass(frozen=True)
class SpecialIds:
    think_open: int | None
    think_close: int | None
    response_open: int | None
    response_close: int | None

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialIds:
        def single(token: str) -> int | None:
            ids = tokenizer.encode(token, add_special_tokens=False)
            return ids[0] if len(ids) == 1 else None

        return cls(
            single(THINK_OPEN_TOKEN),
            single(THINK_CLOSE_TOKEN),
            single(TOOL_RESPONSE_OPEN_TOKEN),
            single(TOOL_RESPONSE_CLOSE_TOKEN),
        )


def reasoning_token_count(text: str, ids: list[int] | None, special: SpecialIds) -> int:
    """Tokens strictly between ``<think>`` and ``</think>`` of the non-empty thought blocks of one element."""
    if ids is None or special.think_open is None or special.think_close is None:
        return 0
    blank = blank_thoughts(text)
    count, pos, block = 0, 0, 0
    while True:
        try:
            open_at = ids.index(special.think_open, pos)
            close_at = ids.index(special.think_close, open_at + 1)
        except ValueError:
            return count
        if not (block < len(blank) and blank[block]):
            count += close_at - open_at - 1
        block += 1
        pos = close_at + 1


def blank_thoughts(text: str) -> list[bool]:
    """For each ``<think>...</think>`` block of ``text`` (leftmost, non-overlapping): is it empty or blank?

    Same blocks as ``re.finditer(r"<think>(.*?)</think>", text, re.DOTALL)``, found with ``str.find``: the
    lazy regex re-tested the closing tag at every character of long thoughts.
    """
    blank: list[bool] = []
    pos = 0
    while (open_at := text.find(THINK_OPEN_TOKEN, pos)) >= 0:
        close_at = text.find(THINK_CLOSE_TOKEN, open_at + len(THINK_OPEN_TOKEN))
        if close_at < 0:
            break
        blank.append(not text[open_at + len(THINK_OPEN_TOKEN) : close_at].strip())
        pos = close_at + len(THINK_CLOSE_TOKEN)
    return blank


def tool_output_token_count(ids: list[int] | None, length: int, special: SpecialIds) -> int:
    """Tokens between the first ``<tool_response>`` and the last ``</tool_response>`` of an observation."""
    if ids is None or special.response_open is None or special.response_close is None:
        return length
    try:
        first = ids.index(special.response_open)
        last = len(ids) - 1 - ids[::-1].index(special.response_close)
    except ValueError:
        return length
    return max(0, last - first - 1)


def parse_function_call(value: str) -> list[dict[str, Any]] | None:
    """The calls of a ``function_call`` value, parsed as LLaMA-Factory's FunctionFormatter does; None if invalid."""
    match = _TOOL_CALL_RE.search(value)
    if match is not None:
        payload = match.group(1)
    else:
        thought = _FUNCTION_THOUGHT_RE.search(value)
        payload = value.replace(thought.group(0), "") if thought else value
    try:
        calls = json.loads(payload)
    except json.JSONDecodeError:
        return None
    calls = calls if isinstance(calls, list) else [calls]
    return [c for c in calls if isinstance(c, dict)]


def conversation_counts(aligned: AlignedRow) -> dict[str, Any]:
    """Turn and tool-call counts of a row as LLaMA-Factory aligned it (no tokenizer needed)."""
    roles = [m["role"] for m in aligned.messages]
    calls_per_turn: list[int] = []
    tool_errors = 0
    for message in aligned.messages:
        content = message["content"] if isinstance(message["content"], str) else ""
        if message["role"] == "function":
            calls = parse_function_call(content)
            calls_per_turn.append(len(calls) if calls is not None else 0)
        elif message["role"] == "observation":
            tool_errors += sum(
                part.lstrip().startswith(TOOL_ERROR_PREFIXES) for part in content.split(OBSERVATION_SEPARATOR)
            )
    return {
        "turns": len(roles),
        "assistant_turns": sum(r in ("assistant", "function") for r in roles),
        "tool_call_turns": len(calls_per_turn),
        "tool_calls": sum(calls_per_turn),
        "tool_calls_per_turn": calls_per_turn,
        "tool_errors": tool_errors,
    }


def row_identity(row: dict[str, Any], index: int) -> dict[str, Any]:
    """uid / instance / repo of a row from its ``_uid``, ``_instance_id`` and ``_meta`` columns."""
    meta = lf_meta_of_row(row)
    return {
        "index": index,
        "uid": row.get("_uid") or f"row#{index}",
        "instance_id": row.get("_instance_id") or meta.get("instance_id"),
        "repo": meta.get("repo"),
        "agent_type": row.get("_agent_type") or meta.get("agent_type"),
        # what the dataset card counts per row, so that the report never reads the rows back
        "scaffold": meta.get("scaffold"),
        "teacher_model": meta.get("teacher_model"),
        "score": meta.get("score") if isinstance(meta.get("score"), dict) else None,
    }


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's own truncation rule (data/processor/processor_utils.py)."""
    from llamafactory.data.processor.processor_utils import infer_seqlen as lf_infer_seqlen

    return lf_infer_seqlen(source_len, target_len, cutoff_len)


def simulate_truncation(
    pairs: list[tuple[int, int]],
    cutoff_len: int,
    *,
    mask_history: bool = False,
    train_on_prompt: bool = False,
) -> tuple[int, int]:
    """(tokens kept, supervised tokens kept) after the supervised processor's cutoff loop."""
    order = pairs[::-1] if mask_history else pairs
    total = supervised = 0
    for turn, (src, tgt) in enumerate(order):
        if total >= cutoff_len:
            break
        src_len, tgt_len = infer_seqlen(src, tgt, cutoff_len - total)
        total += src_len + tgt_len
        if train_on_prompt:
            supervised += src_len + tgt_len
        elif not (mask_history and turn != 0):
            supervised += tgt_len
    return total, supervised


@dataclass
class _Context:
    tokenizer: Any
    template: Any
    data_args: Any
    special: SpecialIds
    cutoff_len: int
    converter: Any = None
    fidelity: Any = None  # sft.report.fidelity.FidelityPlan: which rows to compare with the chat template
    want_ids: bool = (
        False  # hand LLaMA-Factory's (input_ids, labels) of every row to the caller (pretokenize)
    )


def _marker_len(marker: int, texts: list[str], encoded: EncodedTexts) -> int:
    return encoded.lengths[texts[-marker - 1]] if marker < 0 else 1


def _sample_tokens(
    rendered: RenderedRow, texts: list[str], encoded: EncodedTexts, ctx: _Context
) -> dict[str, Any]:
    """Exact per-sample numbers from the encoded element strings."""
    data_args = ctx.data_args
    messages = rendered.aligned.messages
    pair_lengths: list[tuple[int, int]] = []
    reasoning = tool_output = 0
    for turn, (src, tgt) in enumerate(rendered.pairs):
        pair_lengths.append(
            (
                sum(_marker_len(m, texts, encoded) for m in src),
                sum(_marker_len(m, texts, encoded) for m in tgt),
            )
        )
        for marker in tgt:
            if marker < 0:
                text = texts[-marker - 1]
                reasoning += reasoning_token_count(text, encoded.ids.get(text), ctx.special)
        query = messages[2 * turn]
        if query["role"] == "observation":
            for marker in src:
                text = texts[-marker - 1] if marker < 0 else ""
                if text and query["content"] in text:  # the observation slot, not the system / thought pieces
                    tool_output += tool_output_token_count(
                        encoded.ids.get(text), encoded.lengths[text], ctx.special
                    )
    eos_extra = 1 if ctx.template.efficient_eos else 0
    total = sum(s + t for s, t in pair_lengths) + eos_extra
    if data_args.train_on_prompt:
        supervised = total
    elif data_args.mask_history:
        supervised = (pair_lengths[-1][1] if pair_lengths else 0) + eos_extra
    else:
        supervised = sum(t for _, t in pair_lengths) + eos_extra
    kept, supervised_kept = simulate_truncation(
        pair_lengths,
        ctx.cutoff_len,
        mask_history=bool(data_args.mask_history),
        train_on_prompt=bool(data_args.train_on_prompt),
    )
    kept += eos_extra
    supervised_kept += eos_extra
    last_target = pair_lengths[-1][1] if pair_lengths else 0
    return {
        "total_tokens": total,
        "supervised_tokens": supervised,
        "reasoning_tokens": reasoning,
        "tool_output_tokens": tool_output,
        "pair_lengths": pair_lengths,
        "over_cutoff": total > ctx.cutoff_len,
        "tokens_after_lf_cutoff": kept,
        "tokens_cut_by_lf": total - kept,
        "supervised_tokens_cut_by_lf": supervised - supervised_kept,
        # the final response loses its end-of-turn token when anything of it is cut
        "loses_final_eos": total > ctx.cutoff_len and not data_args.mask_history and last_target > 0,
    }


def _needs_ids(rendered: RenderedRow, texts: list[str]) -> set[str]:
    """Element strings whose ids we must look into: thought blocks in responses, observation slots."""
    wanted: set[str] = set()
    messages = rendered.aligned.messages
    for turn, (src, tgt) in enumerate(rendered.pairs):
        for marker in tgt:
            if marker < 0 and THINK_OPEN_TOKEN in texts[-marker - 1]:
                wanted.add(texts[-marker - 1])
        if messages[2 * turn]["role"] == "observation":
            wanted.update(texts[-m - 1] for m in src if m < 0)
    return wanted


# --------------------------------------------------------------------------------------------- public API


def token_stats(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    cutoff_len: int,
    template: str,
    lf_options: dict[str, Any] | None = None,
    dataset_entry: Mapping[str, Any] | None = None,
    chunk_rows: int = 256,
    num_workers: int | None = 1,
    fidelity: Any = None,
    ids_sink: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    purpose: str = "rows",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-sample token numbers and their dataset summary, as LLaMA-Factory will train on the rows.

    ``lf_options`` are LLaMA-Factory data arguments that change the rendering (``enable_thinking``,
    ``mask_history``, ``train_on_prompt``, ``default_system``, ``tool_format``, ``preserve_thinking``).
    ``dataset_entry`` is the rows' ``dataset_info.json`` entry (formatting / columns / tags; default ours).
    Rows LLaMA-Factory would skip or abort on get ``lf_status`` ``drop:...`` / ``abort:...`` and no counts.
    ``rows`` may be any sequence whose slices are lists (a list, or rows spooled on disk).

    ``num_workers`` > 1 renders *and* encodes chunks of rows in that many forked processes (each with a
    single-threaded encoder), so LLaMA-Factory's Python rendering, which otherwise runs on one core, is
    spread over all of them; the results are the same, in the same order, as with ``num_workers=1``.
    ``None`` means one worker per usable CPU.

    The same pass can do the template fidelity check (``fidelity``: a ``sft.report.fidelity.FidelityPlan``;
    each selected row gets a ``fidelity`` record) and hand every counted row's LLaMA-Factory ``(input_ids,
    labels)`` to ``ids_sink(index, input_ids, labels)`` in row order (pretokenize), so nothing is tokenized
    twice. ``purpose`` names the pass in ``TOKENIZATION_PASSES``.
    """
    TOKENIZATION_PASSES[purpose] += 1
    started = time.perf_counter()
    workers = _worker_count(num_workers)
    data_args = lf_data_args(template, options=lf_options)
    tpl = lf_template(tokenizer, data_args)
    converter = dataset_converter(data_args, dataset_entry)
    ctx = _Context(
        tokenizer,
        tpl,
        data_args,
        SpecialIds.of(tokenizer),
        cutoff_len,
        converter,
        fidelity,
        ids_sink is not None,
    )
    per_sample: list[dict[str, Any]] = []
    with quiet_llamafactory():  # once for the whole run, not per row (see quiet_llamafactory)
        for samples in _all_chunks(rows, ctx, chunk_rows, workers):
            for sample in samples:
                ids = sample.pop("_lf_ids", None)
                if ids is not None and ids_sink is not None:
                    ids_sink(sample["index"], *ids)
            per_sample.extend(samples)
    elapsed = time.perf_counter() - started
    summary = summarize(per_sample, cutoff_len=cutoff_len)
    summary.update(
        {
            "template": template,
            "lf_options": dict(lf_options or {}),
            "tokenizer": getattr(tokenizer, "name_or_path", ""),
            "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(summary["tokens"]["total"] / elapsed) if elapsed > 0 else None,
        }
    )
    return per_sample, summary


# --------------------------------------------------------------------------------------------- chunks, workers


@dataclass
class _RenderedChunk:
    """A chunk of rows rendered through LLaMA-Factory's template, its strings not yet encoded."""

    start: int
    rows: Sequence[dict[str, Any]]
    rendered: list[RenderedRow]
    texts: list[str]
    need_ids: set[str]
    # per row: why it is compared with the chat template (None: not selected) -- see FidelityPlan
    checks: list[str | None] = field(default_factory=list)


def _render_chunk(chunk: Sequence[dict[str, Any]], chunk_start: int, ctx: _Context) -> _RenderedChunk:
    recorder = RecordingTokenizer(ctx.tokenizer)
    rendered: list[RenderedRow] = []
    checks: list[str | None] = []
    need: set[str] = set()
    for offset, row in enumerate(chunk):
        aligned = align_row(row, ctx.converter)
        first_text = len(recorder.texts)
        item = render_row(aligned, ctx.template, recorder, ctx.data_args)
        rendered.append(item)
        need |= _needs_ids(item, recorder.texts)
        check = (
            ctx.fidelity.selects(row, item.aligned, chunk_start + offset)
            if ctx.fidelity is not None
            else None
        )
        checks.append(check)
        if item.aligned.status == "ok" and (check is not None or ctx.want_ids):
            need.update(recorder.texts[first_text:])  # every id of this row is needed, not just its length
    return _RenderedChunk(chunk_start, chunk, rendered, recorder.texts, need, checks)


def _chunk_samples(chunk: Sequence[dict[str, Any]], chunk_start: int, ctx: _Context) -> list[dict[str, Any]]:
    """Per-sample numbers of one chunk of rows: render all, batch-encode the distinct strings, count."""
    part = _render_chunk(chunk, chunk_start, ctx)
    return _count_chunk(part, encode_texts(ctx.tokenizer, part.texts, part.need_ids), ctx)


def _count_chunk(part: _RenderedChunk, encoded: EncodedTexts, ctx: _Context) -> list[dict[str, Any]]:
    chunk, chunk_start, rendered = part.rows, part.start, part.rendered
    samples: list[dict[str, Any]] = []
    for offset, (row, item) in enumerate(zip(chunk, rendered, strict=True)):
        sample = row_identity(row, chunk_start + offset)
        sample.update(conversation_counts(item.aligned))
        sample["lf_status"] = item.aligned.status
        check = part.checks[offset] if part.checks else None
        if item.aligned.status == "ok":
            sample.update(_sample_tokens(item, part.texts, encoded, ctx))
            if check is not None or ctx.want_ids:
                pair_ids = _pair_ids(item, part.texts, encoded)
                if check is not None:
                    check_started = time.perf_counter()
                    result = ctx.fidelity.check(item.aligned, _full_ids(pair_ids, ctx), row)
                    sample["fidelity"] = {
                        "why": check,
                        "stratum": ctx.fidelity.stratum(row, item.aligned),
                        **result,
                        "check_s": time.perf_counter() - check_started,
                    }
                if ctx.want_ids:
                    sample["_lf_ids"] = supervised_ids(pair_ids, ctx)
        else:
            sample["lf_detail"] = item.aligned.detail
            if check is not None:  # LLaMA-Factory drops / aborts on it: a failing fidelity row
                sample["fidelity"] = {
                    "why": check,
                    "stratum": ctx.fidelity.stratum(row, item.aligned),
                    "status": item.aligned.status,
                    "detail": item.aligned.detail,
                    **ctx.fidelity.row_facts(row),
                }
        if check is None and ctx.fidelity is not None:
            sample["fidelity"] = ctx.fidelity.unchecked(row, item.aligned, chunk_start + offset)
        samples.append(sample)
    return samples


def _pair_ids(
    item: RenderedRow, texts: list[str], encoded: EncodedTexts
) -> list[tuple[list[int], list[int]]]:
    """The row's (source ids, target ids) pairs, exactly what ``Template.encode_multiturn`` returns for it."""

    def ids_of(markers: list[int]) -> list[int]:
        out: list[int] = []
        for marker in markers:
            if marker < 0:
                out.extend(encoded.ids[texts[-marker - 1]])
            else:
                out.append(marker)
        return out

    return [(ids_of(src), ids_of(tgt)) for src, tgt in item.pairs]


def _full_ids(pair_ids: list[tuple[list[int], list[int]]], ctx: _Context) -> list[int]:
    """The whole row's ids without a cutoff (what the fidelity check compares)."""
    ids = [i for src, tgt in pair_ids for i in (*src, *tgt)]
    if ctx.template.efficient_eos:
        ids.append(ctx.tokenizer.eos_token_id)
    return ids


def supervised_ids(
    pair_ids: list[tuple[list[int], list[int]]], ctx: _Context
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) as LLaMA-Factory 0.9.5's ``SupervisedDatasetProcessor._encode_data_example`` builds
    them from the pairs (cutoff_len with its ``infer_seqlen``, mask_history, train_on_prompt, efficient_eos).

    The same steps as LLaMA-Factory's loop, on ids computed once; tests compare the result with
    LLaMA-Factory's own preprocessing byte for byte.
    """
    from llamafactory.extras.constants import IGNORE_INDEX

    data_args, template, eos = ctx.data_args, ctx.template, ctx.tokenizer.eos_token_id
    input_ids: list[int] = []
    labels: list[int] = []
    total = 1 if template.efficient_eos else 0
    pairs = pair_ids[::-1] if data_args.mask_history else pair_ids
    for turn, (source_ids, target_ids) in enumerate(pairs):
        if total >= ctx.cutoff_len:
            break
        source_len, target_len = infer_seqlen(len(source_ids), len(target_ids), ctx.cutoff_len - total)
        source_ids, target_ids = source_ids[:source_len], target_ids[:target_len]
        total += source_len + target_len
        if data_args.train_on_prompt:
            source_label = source_ids
        elif template.efficient_eos and turn != 0:
            source_label = [eos] + [IGNORE_INDEX] * (source_len - 1)
        else:
            source_label = [IGNORE_INDEX] * source_len
        target_label = [IGNORE_INDEX] * target_len if data_args.mask_history and turn != 0 else target_ids
        if data_args.mask_history:
            input_ids = source_ids + target_ids + input_ids
            labels = source_label + target_label + labels
        else:
            input_ids += source_ids + target_ids
            labels += source_label + target_label
    if template.efficient_eos:
        input_ids.append(eos)
        labels.append(eos)
    return np.asarray(input_ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def _worker_count(num_workers: int | None) -> int:
    if num_workers is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(
            f"token_stats: num_workers={num_workers!r}; use an integer >= 1 (or None for one per CPU)"
        )
    return num_workers


def _all_chunks(
    rows: Sequence[dict[str, Any]], ctx: _Context, chunk_rows: int, workers: int
) -> Iterator[list[dict[str, Any]]]:
    """The chunks' samples in row order: in this process, or in forked workers when that can help."""
    if chunk_rows < 1:
        raise ValueError(f"token_stats: chunk_rows={chunk_rows!r}; use an integer >= 1")
    if workers > 1 and "fork" not in mp.get_all_start_methods():
        logger.info("token_stats: no 'fork' start method on this platform; counting in one process")
        workers = 1
    if workers > 1:
        # Enough chunks for every worker to stay busy, and none much over POOL_CHUNK_BYTES of rows (long
        # agent rows are MBs each: a worker holds its chunk, its pieces and their encodings at once); the
        # counts do not depend on the chunking.
        size = max(1, min(chunk_rows, -(-len(rows) // (workers * POOL_CHUNKS_PER_WORKER))))
        mean_bytes = rows.mean_row_bytes() if hasattr(rows, "mean_row_bytes") else 0
        if mean_bytes:
            size = max(1, min(size, POOL_CHUNK_BYTES // mean_bytes))
        if len(rows) > size:
            yield from _pool_chunks(rows, ctx, size, workers)
            return
    yield from _overlapped_chunks(rows, ctx, chunk_rows)


def _overlapped_chunks(
    rows: Sequence[dict[str, Any]], ctx: _Context, chunk_rows: int
) -> Iterator[list[dict[str, Any]]]:
    """One process: chunk k is encoded on a thread (Rust, GIL released) while chunk k+1 is rendered."""
    size = min(chunk_rows, OVERLAP_CHUNK_ROWS)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-stats-encode") as encoder:
        previous: tuple[_RenderedChunk, Future[EncodedTexts]] | None = None
        for start in range(0, len(rows), size):
            part = _render_chunk(rows[start : start + size], start, ctx)
            encoding = encoder.submit(encode_texts, ctx.tokenizer, part.texts, part.need_ids)
            if previous is not None:
                yield _count_chunk(previous[0], previous[1].result(), ctx)
            previous = (part, encoding)
        if previous is not None:
            yield _count_chunk(previous[0], previous[1].result(), ctx)


# The parent's context, inherited by the forked workers (a tokenizer and LLaMA-Factory's template do not
# need to be pickled that way); set only while a pool is alive.
_POOL_CONTEXT: _Context | None = None


def _pool_chunk(chunk_start: int, chunk: list[dict[str, Any]] | list[bytes]) -> list[dict[str, Any]]:
    """Worker side of ``_pool_chunks`` (spooled rows arrive as their JSON bytes and are parsed here)."""
    if _POOL_CONTEXT is None:
        raise RuntimeError("token_stats worker started without its context (not forked from token_stats?)")
    rows = [orjson.loads(r) if isinstance(r, bytes) else r for r in chunk]
    with quiet_llamafactory():
        return _chunk_samples(rows, chunk_start, _POOL_CONTEXT)


def _chunk_payload(
    rows: Sequence[dict[str, Any]], start: int, size: int
) -> list[dict[str, Any]] | list[bytes]:
    """What a worker gets for a chunk: spooled rows as bytes (the parent neither parses nor pickles dicts:
    with MB-sized agent rows that serial work starved the workers), other rows as they are."""
    if hasattr(rows, "row_bytes"):
        return [rows.row_bytes(i) for i in range(start, min(start + size, len(rows)))]
    return list(rows[start : start + size])


@contextlib.contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment unless already set, restored afterwards."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _pool_chunks(
    rows: Sequence[dict[str, Any]], ctx: _Context, size: int, workers: int
) -> Iterator[list[dict[str, Any]]]:
    """Chunks counted by ``workers`` forked processes, yielded in submission order (bounded window)."""
    global _POOL_CONTEXT
    starts = list(range(0, len(rows), size))
    upcoming = iter(starts)
    pending: deque[Future[list[dict[str, Any]]]] = deque()
    done = 0

    def submit(pool: ProcessPoolExecutor, count: int) -> None:
        for start in itertools.islice(upcoming, count):
            pending.append(pool.submit(_pool_chunk, start, _chunk_payload(rows, start, size)))

    _POOL_CONTEXT = ctx
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            # The first submit forks every worker: they get single-threaded encoders (the workers are the
            # parallelism; without this, tokenizers also warns that it was forked after using threads).
            # gc.freeze: the workers' garbage collector would otherwise walk, and so copy-on-write, the
            # whole inherited heap (LLaMA-Factory, torch): that cost each worker ~0.5 CPU s.
            gc.freeze()
            try:
                with _env_default("TOKENIZERS_PARALLELISM", "false"):
                    submit(pool, workers * POOL_WINDOW_PER_WORKER)
            finally:
                gc.unfreeze()
            while pending:
                samples = pending.popleft().result()
                done += 1
                submit(pool, 1)
                yield samples
    except BrokenProcessPool as exc:
        logger.warning(
            "token_stats: a worker died (%s); counting the remaining %d chunk(s) in this process",
            exc,
            len(starts) - done,
        )
        for start in starts[done:]:
            yield _chunk_samples(rows[start : start + size], start, ctx)
    finally:
        _POOL_CONTEXT = None


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """min / mean / p50 / p90 / p99 / max / sum (numpy linear percentiles); None fields when empty."""
    if not values:
        return {
            "count": 0,
            "min": None,
            "mean": None,
            "p50": None,
            "p90": None,
            "p99": None,
            "max": None,
            "sum": 0,
        }
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])

    def clean(x: float) -> float | int:
        return int(x) if float(x).is_integer() else round(float(x), 3)

    return {
        "count": int(arr.size),
        "min": clean(arr.min()),
        "mean": round(float(arr.mean()), 3),
        "p50": clean(p50),
        "p90": clean(p90),
        "p99": clean(p99),
        "max": clean(arr.max()),
        "sum": clean(arr.sum()),
    }


def summarize(per_sample: list[dict[str, Any]], *, cutoff_len: int) -> dict[str, Any]:
    """Dataset-level distributions, shares and the cutoff picture from the per-sample numbers."""
    counted = [s for s in per_sample if s.get("lf_status") == "ok"]
    total = sum(s["total_tokens"] for s in counted)
    supervised = sum(s["supervised_tokens"] for s in counted)
    reasoning = sum(s["reasoning_tokens"] for s in counted)
    tool_output = sum(s["tool_output_tokens"] for s in counted)
    over = [s for s in counted if s["over_cutoff"]]
    statuses: dict[str, int] = {}
    for sample in per_sample:
        statuses[sample.get("lf_status", "ok")] = statuses.get(sample.get("lf_status", "ok"), 0) + 1
    calls_per_turn = [n for s in per_sample for n in s.get("tool_calls_per_turn", [])]

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "samples": len(per_sample),
        "samples_counted": len(counted),
        "lf_status": statuses,
        "cutoff_len": cutoff_len,
        "distributions": {
            metric: distribution([s[metric] for s in (counted if metric.endswith("_tokens") else per_sample)])
            for metric in DISTRIBUTION_METRICS
        },
        "tool_calls_per_turn": distribution(calls_per_turn),
        "tokens": {
            "total": total,
            "supervised": supervised,
            "reasoning": reasoning,
            "tool_output": tool_output,
        },
        "shares": {
            "supervised_of_total": share(supervised, total),
            "reasoning_of_total": share(reasoning, total),
            "reasoning_of_supervised": share(reasoning, supervised),
            "tool_output_of_total": share(tool_output, total),
        },
        "rows_with_reasoning": sum(1 for s in counted if s["reasoning_tokens"] > 0),
        "tool_errors": sum(s.get("tool_errors", 0) for s in per_sample),
        "over_cutoff": {
            "samples": len(over),
            "tokens_cut_by_lf": sum(s["tokens_cut_by_lf"] for s in over),
            "supervised_tokens_cut_by_lf": sum(s["supervised_tokens_cut_by_lf"] for s in over),
            "samples_losing_final_eos": sum(1 for s in over if s["loses_final_eos"]),
        },
    }


def counts_only_stats(
    rows: list[dict[str, Any]],
    *,
    cutoff_len: int,
    reason: str,
    template: str = "qwen3",
    dataset_entry: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stats without a tokenizer: turns and tool calls only, with the reason the token counts are missing."""
    converter = dataset_converter(lf_data_args(template), dataset_entry)
    per_sample = []
    for index, row in enumerate(rows):
        aligned = align_row(row, converter)
        sample = row_identity(row, index)
        sample.update(conversation_counts(aligned))
        sample["lf_status"] = "not_tokenized" if aligned.status == "ok" else aligned.status
        per_sample.append(sample)
    summary = summarize(per_sample, cutoff_len=cutoff_len)
    summary["tokens_skipped"] = reason
    return per_sample, summary
