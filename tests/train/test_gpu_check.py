"""benchmarks.gpu_check's arithmetic and its BENCHMARKS.md block (the GPU run itself needs a GPU machine).

The trainer log is the shape LLaMA-Factory's LogCallback writes (``total_tokens`` and the cumulative
``throughput`` = tokens / seconds since start), as seen in the H200 run recorded in
benchmarks/results/gpu_check_h200.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.gpu_check import (
    BENCH_BEGIN,
    BENCH_END,
    GpuCheckError,
    benchmark_section,
    flops_per_token,
    throughput_metrics,
    write_benchmarks,
)

ROOT = Path(__file__).resolve().parents[2]


def _log(step_s: list[float], tokens: int = 32768) -> list[dict]:
    records, t = [], 0.0
    for i, dt in enumerate(step_s, start=1):
        t += dt
        records.append(
            {
                "current_steps": i,
                "total_steps": len(step_s),
                "loss": 9.0 - i * 0.5,
                "total_tokens": i * tokens,
                "throughput": i * tokens / t,
            }
        )
    return records


def test_steady_throughput_leaves_out_the_warm_up_steps() -> None:
    # 3 slow warm-up steps (5 s) then 1 s steps: steady rate is exactly one step's tokens per second.
    m = throughput_metrics(_log([5.0, 5.0, 5.0] + [1.0] * 7))
    assert m["tokens_per_s_steady"] == pytest.approx(32768.0)
    assert m["seconds_per_step_steady"] == pytest.approx(1.0)
    assert m["tokens_per_s_overall"] == pytest.approx(10 * 32768 / 22.0)
    assert m["loss_first_mean"] == pytest.approx(sum(9.0 - i * 0.5 for i in range(1, 6)) / 5)
    with pytest.raises(GpuCheckError, match="needs >= 4"):
        throughput_metrics(_log([1.0, 1.0]))


def test_model_flops_per_token_counts_dense_and_causal_attention() -> None:
    model = {"flop_params": 100, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 8}
    assert flops_per_token(model, 1000) == 6 * 100 + 6 * 2 * 4 * 8 * 1000


def test_the_recorded_h200_run_renders_and_replaces_its_benchmarks_block(tmp_path: Path) -> None:
    result = json.loads((ROOT / "benchmarks/results/gpu_check_h200.json").read_text(encoding="utf-8"))
    section = benchmark_section(result)
    mfu = f"{result['mfu_pct']} %"
    assert f"| MFU vs dense bf16 peak 989.4 TFLOP/s | {mfu} |" in section and "NVIDIA H200" in section
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nintro\n", encoding="utf-8")
    write_benchmarks(bench, section)
    write_benchmarks(bench, section.replace(mfu, "31.0 %"))  # a rerun replaces, never appends
    text = bench.read_text(encoding="utf-8")
    assert (
        text.count(BENCH_BEGIN) == 1 and text.count(BENCH_END) == 1 and "31.0 %" in text and "intro" in text
    )
