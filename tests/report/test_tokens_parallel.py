"""token_stats gives the same numbers whatever the chunking, the overlap of encoding and rendering, or the
worker processes: on the demo job's real rows (spooled on disk, as the pipeline hands them over)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sft.report import tokens
from sft.report.tokens import blank_thoughts, quiet_llamafactory, token_stats
from tests.report.conftest import agent_row

ROOT = Path(__file__).resolve().parents[2]
TIMING_FIELDS = ("elapsed_s", "tokens_per_s")


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo job converted with every trial kept: a SpooledRows (parsed on access, slices are lists)."""
    from sft.config.loader import load_config
    from sft.engine.harbor import convert_job

    base = load_config(ROOT / "config.demo.yaml").runtime_info.input
    update = {"instance_status": "all", "exclude_repos_file": "", "use_cache": False}
    cfg = base.model_copy(update={"conversion": base.conversion.model_copy(update=update)})
    root = tmp_path_factory.mktemp("demo-convert")
    (root / "artifacts" / "data").mkdir(parents=True)
    result = convert_job(cfg, ROOT / "data" / "01_raw" / "demo_job", root, num_workers=1, progress=False)
    assert len(result.lf_rows) >= 8, "the demo job should give enough rows to split over workers"
    return result.lf_rows


def comparable(
    result: tuple[list[dict[str, Any]], dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    per_sample, summary = result
    return per_sample, {k: v for k, v in summary.items() if k not in TIMING_FIELDS}


def stats(rows: Any, tokenizer: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return comparable(token_stats(rows, tokenizer, cutoff_len=2048, template="qwen3", **kwargs))


def with_broken_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows LLaMA-Factory drops or aborts on, spread between good ones (their order must survive)."""
    bad_tools = dict(rows[0], tools=[{"name": "x"}])
    bad_order = {"conversations": [{"from": "gpt", "value": "an answer without a question"}]}
    bad_call = dict(
        rows[1],
        conversations=[
            *rows[1]["conversations"][:1],
            {"from": "function_call", "value": "{not json"},
            {"from": "observation", "value": "o"},
            {"from": "gpt", "value": "done"},
        ],
    )
    return [bad_tools, *rows[:3], bad_order, *rows[3:6], bad_call, *rows[6:]]


def test_two_workers_equal_one_on_the_demo_rows(demo_rows: Any, tokenizer: Any) -> None:
    serial = stats(demo_rows, tokenizer, num_workers=1)
    parallel = stats(demo_rows, tokenizer, num_workers=2)
    assert serial[1]["samples_counted"] == len(demo_rows) and serial[1]["tokens"]["total"] > 0
    assert parallel == serial
    assert [s["index"] for s in parallel[0]] == list(range(len(demo_rows)))


def test_overlapped_small_chunks_equal_one_chunk(demo_rows: Any, tokenizer: Any) -> None:
    """chunk_rows=2 encodes chunk k on the thread while k+1 renders; one chunk has no overlap at all."""
    assert stats(demo_rows, tokenizer, chunk_rows=2) == stats(demo_rows, tokenizer, chunk_rows=10_000)


@pytest.mark.parametrize(
    "lf_options", [{"enable_thinking": False}, {"mask_history": True}, {"train_on_prompt": True}]
)
def test_workers_equal_serial_with_lf_options_and_broken_rows(
    demo_rows: Any, tokenizer: Any, lf_options: dict[str, Any]
) -> None:
    rows = with_broken_rows(list(demo_rows))
    serial = stats(rows, tokenizer, lf_options=lf_options, chunk_rows=3)
    parallel = stats(rows, tokenizer, lf_options=lf_options, num_workers=2, chunk_rows=3)
    assert parallel == serial
    statuses = [s["lf_status"] for s in parallel[0]]
    assert statuses[0] == "abort:tools_not_a_string" and statuses[4].startswith("drop:")
    assert statuses[8] == "abort:invalid_json" and statuses.count("ok") == len(demo_rows)


def test_a_lazy_sequence_counts_like_a_list(demo_rows: Any, tokenizer: Any) -> None:
    materialised = list(demo_rows)
    assert stats(demo_rows, tokenizer, num_workers=2) == stats(materialised, tokenizer, num_workers=1)


def _die_in_second_chunk(chunk_start: int, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A worker body that kills its process on the second chunk (as the OOM killer would)."""
    if chunk_start > 0:
        os._exit(3)
    return _ORIGINAL_POOL_CHUNK(chunk_start, chunk)


_ORIGINAL_POOL_CHUNK = tokens._pool_chunk


def test_a_dead_worker_falls_back_to_counting_in_process(
    demo_rows: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = stats(demo_rows, tokenizer)
    monkeypatch.setattr(tokens, "_pool_chunk", _die_in_second_chunk)
    with caplog.at_level(logging.WARNING, logger="sft.report.tokens"):
        got = stats(demo_rows, tokenizer, num_workers=2, chunk_rows=2)
    assert got == expected
    assert "a worker died" in caplog.text


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_num_workers_must_be_a_positive_integer(tokenizer: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match="num_workers"):
        token_stats([agent_row("t#0", 1)], tokenizer, cutoff_len=512, template="qwen3", num_workers=bad)


def test_num_workers_none_uses_every_cpu_and_counts_the_same(tokenizer: Any) -> None:
    rows = [agent_row(f"t{n}#0", n % 4 + 1) for n in range(12)]
    assert tokens._worker_count(None) >= 1
    assert stats(rows, tokenizer, num_workers=None) == stats(rows, tokenizer, num_workers=1)


def test_pool_sets_tokenizers_parallelism_only_while_forking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    with tokens._env_default("TOKENIZERS_PARALLELISM", "false"):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    with tokens._env_default("TOKENIZERS_PARALLELISM", "false"):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"  # a user's choice is left alone


_FRAGMENTS = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<think>\n\n</think>",
        "<think> x </think>",
        "<think",
        "think>",
        "\n",
        " ",
        "x",
        "\t",
        "</",
        "<",
    ]
)


@example("<think>\n \t</think><think> a </think>")
@example("<think><think></think>x</think>")
@example("</think><think>\n")
@given(st.lists(_FRAGMENTS, max_size=14).map("".join))
def test_blank_thoughts_finds_the_blocks_the_regex_finds(text: str) -> None:
    regex = [not m.group(1).strip() for m in re.finditer(r"<think>(.*?)</think>", text, re.DOTALL)]
    assert blank_thoughts(text) == regex


def test_quiet_llamafactory_nests_without_touching_levels_and_restores() -> None:
    logger = logging.getLogger("llamafactory.data.template")
    before = logger.level
    with quiet_llamafactory():
        assert logger.level == logging.ERROR
        with quiet_llamafactory():
            assert logger.level == logging.ERROR
        assert logger.level == logging.ERROR
    assert logger.level == before
