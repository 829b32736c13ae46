"""Token statistics against hand-counted numbers and against LLaMA-Factory's own supervised processor."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sft.report.tokens import distribution, lf_data_args, lf_template, sharegpt_converter, token_stats
from tests.report.conftest import SYSTEM, agent_row, call, role_content_entry, role_content_row, think


def enc(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def plain_row(answer: str, *, reasoning: str | None) -> dict[str, Any]:
    value = (think(reasoning) if reasoning is not None else "") + answer
    return {
        "conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": value}],
        "system": SYSTEM,
        "tools": "",
    }


@pytest.mark.parametrize("template", ["qwen3", "qwen3_nothink"])
def test_single_turn_counts_match_hand_tokenized_pieces(tokenizer: Any, template: str) -> None:
    row = plain_row("Four.", reasoning="2+2 is 4")
    (sample,), summary = token_stats([row], tokenizer, cutoff_len=4096, template=template)
    # LLaMA-Factory encodes each template slot on its own: system slot, user slot, assistant slot.
    system = enc(tokenizer, f"<|im_start|>system\n{SYSTEM}<|im_end|>\n")
    user = enc(tokenizer, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    answer = enc(tokenizer, "<think>\n2+2 is 4\n</think>\n\nFour.<|im_end|>\n")
    assert sample["lf_status"] == "ok"
    assert sample["total_tokens"] == system + user + answer
    assert sample["supervised_tokens"] == answer
    # between the two think tokens: "\n2+2 is 4\n" (added tokens split the text, so it is tokenized alone)
    assert sample["reasoning_tokens"] == enc(tokenizer, "\n2+2 is 4\n")
    assert sample["tool_output_tokens"] == 0
    assert (sample["turns"], sample["assistant_turns"], sample["tool_calls"]) == (2, 1, 0)
    assert summary["tokens"]["total"] == sample["total_tokens"]


def test_qwen3_trains_an_empty_think_block_where_nothink_does_not(tokenizer: Any) -> None:
    row = plain_row("Four.", reasoning=None)
    (with_think,), _ = token_stats([row], tokenizer, cutoff_len=4096, template="qwen3")
    (verbatim,), _ = token_stats([row], tokenizer, cutoff_len=4096, template="qwen3_nothink")
    empty = enc(tokenizer, "<think>\n\n</think>\n\n")
    assert verbatim["supervised_tokens"] == enc(tokenizer, "Four.<|im_end|>\n")
    assert with_think["supervised_tokens"] == verbatim["supervised_tokens"] + empty
    assert with_think["reasoning_tokens"] == 0  # an empty block is not reasoning


def test_tool_turns_observation_tokens_and_parallel_calls(tokenizer: Any) -> None:
    parallel = json.dumps([call("ls"), call("pwd")])
    row = {
        "conversations": [
            {"from": "human", "value": "list"},
            {"from": "function_call", "value": parallel},
            {"from": "observation", "value": "a.py\n</tool_response>\n<tool_response>\n/work"},
            {"from": "gpt", "value": "Done."},
        ],
        "system": SYSTEM,
        "tools": "",
    }
    (sample,), summary = token_stats([row], tokenizer, cutoff_len=4096, template="qwen3_nothink")
    calls_text = (
        '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "Bash", "arguments": {"command": "pwd"}}\n</tool_call><|im_end|>\n'
    )
    observation = (
        "<|im_start|>user\n<tool_response>\na.py\n</tool_response>\n<tool_response>\n/work\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    expected_total = (
        enc(tokenizer, f"<|im_start|>system\n{SYSTEM}<|im_end|>\n")
        + enc(tokenizer, "<|im_start|>user\nlist<|im_end|>\n<|im_start|>assistant\n")
        + enc(tokenizer, calls_text)
        + enc(tokenizer, observation)
        + enc(tokenizer, "Done.<|im_end|>\n")
    )
    assert sample["total_tokens"] == expected_total
    assert sample["supervised_tokens"] == enc(tokenizer, calls_text) + enc(tokenizer, "Done.<|im_end|>\n")
    # from the first <tool_response> to the last </tool_response>, exclusive
    assert sample["tool_output_tokens"] == enc(
        tokenizer, "\na.py\n</tool_response>\n<tool_response>\n/work\n"
    )
    assert sample["tool_calls"] == 2 and sample["tool_calls_per_turn"] == [2]
    assert summary["tool_calls_per_turn"]["max"] == 2


@pytest.mark.parametrize("template", ["qwen3", "qwen3_nothink"])
def test_counts_equal_llamafactory_supervised_processor(tokenizer: Any, template: str) -> None:
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    rows = [agent_row(f"t{n}#0", n, reasoning=n % 2 == 0, observation="x" * 40 * n) for n in range(1, 6)]
    cutoff = 300
    per_sample, _ = token_stats(rows, tokenizer, cutoff_len=cutoff, template=template)
    for cut in (10**9, cutoff):
        args = lf_data_args(template, cutoff_len=cut)
        processor = SupervisedDatasetProcessor(
            template=lf_template(tokenizer, args), tokenizer=tokenizer, processor=None, data_args=args
        )
        converter = sharegpt_converter(args)
        for row, sample in zip(rows, per_sample, strict=True):
            aligned = converter(row)
            out = processor.preprocess_dataset({k: [v] for k, v in aligned.items()})
            ids, labels = out["input_ids"][0], out["labels"][0]
            trained = sum(1 for label in labels if label != -100)
            if cut == cutoff:
                assert sample["tokens_after_lf_cutoff"] == len(ids)
                assert sample["supervised_tokens"] - sample["supervised_tokens_cut_by_lf"] == trained
                assert sample["over_cutoff"] == (sample["total_tokens"] > cutoff)
            else:
                assert sample["total_tokens"] == len(ids)
                assert sample["supervised_tokens"] == trained


def test_rows_llamafactory_drops_or_aborts_on_are_flagged_not_counted(tokenizer: Any) -> None:
    good = plain_row("ok", reasoning=None)
    bad_order = {"conversations": [{"from": "gpt", "value": "hi"}], "system": "", "tools": ""}
    bad_json = {
        "conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{not json"}],
        "system": "",
        "tools": "",
    }
    per_sample, summary = token_stats(
        [good, bad_order, bad_json], tokenizer, cutoff_len=100, template="qwen3"
    )
    assert [s["lf_status"] for s in per_sample] == [
        "ok",
        "drop:invalid_role_order_or_count",
        "abort:invalid_json",
    ]
    assert "total_tokens" not in per_sample[1] and "total_tokens" not in per_sample[2]
    assert summary["samples"] == 3 and summary["samples_counted"] == 1
    assert summary["lf_status"] == {"ok": 1, "drop:invalid_role_order_or_count": 1, "abort:invalid_json": 1}


def test_summary_distribution_and_cutoff_counts(tokenizer: Any) -> None:
    rows = [agent_row(f"t{n}#0", n) for n in (1, 2, 3, 4, 10)]
    per_sample, summary = token_stats(rows, tokenizer, cutoff_len=400, template="qwen3")
    totals = sorted(s["total_tokens"] for s in per_sample)
    dist = summary["distributions"]["total_tokens"]
    assert (dist["min"], dist["p50"], dist["max"], dist["sum"]) == (
        totals[0],
        totals[2],
        totals[-1],
        sum(totals),
    )
    over = [t for t in totals if t > 400]
    assert over, "the 10-step row must exceed the cutoff in this test"
    assert summary["over_cutoff"]["samples"] == len(over)
    assert summary["over_cutoff"]["tokens_cut_by_lf"] == sum(t - 400 for t in over)
    assert summary["distributions"]["assistant_turns"]["max"] == 11
    assert summary["shares"]["supervised_of_total"] == round(summary["tokens"]["supervised"] / sum(totals), 4)


def test_distribution_percentiles() -> None:
    dist = distribution(list(range(1, 101)))
    assert (dist["min"], dist["max"], dist["sum"], dist["count"]) == (1, 100, 5050, 100)
    assert dist["p50"] == 50.5 and dist["p90"] == 90.1 and dist["mean"] == 50.5
    assert distribution([])["count"] == 0


def test_ready_made_rows_are_counted_through_their_dataset_entry(tokenizer: Any) -> None:
    rows = [agent_row("a#0", 2), agent_row("b#0", 3, reasoning=False)]
    ours, _ = token_stats(rows, tokenizer, cutoff_len=4096, template="qwen3")
    theirs, _ = token_stats(
        [role_content_row(r) for r in rows],
        tokenizer,
        cutoff_len=4096,
        template="qwen3",
        dataset_entry=role_content_entry(),
    )
    keys = (
        "total_tokens",
        "supervised_tokens",
        "reasoning_tokens",
        "tool_output_tokens",
        "assistant_turns",
        "tool_calls",
    )
    assert [[s[k] for k in keys] for s in theirs] == [[s[k] for k in keys] for s in ours]
