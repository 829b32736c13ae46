"""Token-statistics throughput (issue "Conversion at scale": >= 1 M tokens/s on 2 cores, Qwen-sized vocab).

Times ``sft.report.tokens.token_stats`` (LLaMA-Factory-exact counting: LF's converter + template through a
recording tokenizer, then batch encoding) on the LLaMA-Factory rows of a generated job, with two tokenizers:

- ``tiny``: the project's 4,096-token demo tokenizer (``tests.support.tiny_model``);
- ``qwen``: Qwen's real 151,643-token BPE + Qwen3's added tokens and template (``benchmarks.qwen_vocab``).

The job (``tests.support.jobgen``) is converted once with ``instance_status: all`` and no exclusion list; its rows
are cached as JSON lines beside the job (``<work-dir>/job-*.rows.jsonl``; delete it after converter changes),
so a rerun only times the statistics. By default (``--content unique``) every tool output is replaced by
an equally long, distinct slice of the Python stdlib sources: the generated job repeats its texts, which
``token_stats`` encodes once each, so its rows (``--content generated``) overstate the throughput on real
trajectories. Every (tokenizer, workers)
cell is the best of ``--repeat`` runs: wall seconds, tokens/s, and CPU seconds of this process plus its
worker processes (Rust encoder threads included). Results from every ``--workers`` setting are checked to
be identical (per-sample dicts and summary without timing fields) before anything is reported.

    python -m benchmarks.bench_tokens                               # 300 trials, workers 1 and 2
    python -m benchmarks.bench_tokens --trials 100 --repeat 5 --tokenizers qwen --workers 2
    python -m benchmarks.bench_tokens --profile qwen                # cProfile of one serial run (top 25)
    PYTHONPATH=/path/to/other/src python -m benchmarks.bench_tokens --workers 1   # A/B another tree

One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import os
import platform
import pstats
import resource
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_parent import add_job_arguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: tests.support is not packaged


REPO = Path(__file__).resolve().parents[1]
TIMING_FIELDS = ("elapsed_s", "tokens_per_s", "num_workers")
TOKENIZER_NAMES = ("tiny", "qwen")


def machine() -> dict[str, Any]:
    """What the numbers ran on (a shared 2-core box moves them; the load average says how busy it was)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS"),
    }


def load_rows(
    work: Path, trials: int, max_turns: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The job's LF rows (generated + converted once, then read from ``rows.jsonl``)."""
    import orjson

    from benchmarks.bench_convert import make_job

    job = work / f"job-{trials}-{max_turns}-{seed}"
    info = make_job(job, trials, max_turns, 0, seed)
    cached = job.with_name(job.name + ".rows.jsonl")
    if not (cached.is_file() and cached.stat().st_mtime >= (job / ".bench-params.json").stat().st_mtime):
        from sft.config.loader import load_config
        from sft.engine.harbor import convert_job

        base = load_config(REPO / "config.demo.yaml").runtime_info.input
        update = {"instance_status": "all", "exclude_repos_file": "", "use_cache": False}
        cfg = base.model_copy(update={"conversion": base.conversion.model_copy(update=update)})
        root = work / "convert-root"
        (root / "artifacts" / "data").mkdir(parents=True, exist_ok=True)
        result = convert_job(cfg, job, root, progress=False)
        tmp = cached.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for row in result.lf_rows:
                fh.write(orjson.dumps(row) + b"\n")
        tmp.replace(cached)
    with cached.open("rb") as fh:
        rows = [orjson.loads(line) for line in fh]
    return rows, {
        "trials": trials,
        "max_turns": max_turns,
        "seed": seed,
        "log_mb": round(info["log_bytes"] / 1e6, 1),
        "rows": len(rows),
        "rows_mb": round(cached.stat().st_size / 1e6, 1),
    }


def stdlib_text(budget_chars: int) -> str:
    """Python stdlib sources (sorted, deterministic) as one string: code is what coding-agent tools print."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, used = [], 0
    for path in sorted(root.rglob("*.py")):
        if used >= budget_chars or "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        used += len(text)
    return "".join(parts)


def unique_content(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with every tool output replaced by an equally long, distinct slice of real code.

    Why: the generated job repeats its texts (19k messages, 2k distinct at 300 trials), and ``token_stats``
    encodes each distinct string once, so the generated rows overstate the throughput on real trajectories,
    whose tool outputs (file contents, logs) are nearly all distinct. Human / gpt turns get a distinct
    suffix; tool calls stay (their JSON must stay valid). Sizes, turn structure and parallel-output
    separators are kept, so token totals stay comparable with the generated rows.
    """
    from sft.report.tokens import OBSERVATION_SEPARATOR

    need = sum(len(m["value"]) for r in rows for m in r["conversations"] if m["from"] == "observation")
    corpus = stdlib_text(need + 1_000_000)
    pos = 0

    def code(length: int, tag: str) -> str:
        nonlocal pos
        header = f"# {tag}\n"
        body_len = max(0, length - len(header))
        if pos + body_len > len(corpus):
            pos = 0
        body = corpus[pos : pos + body_len]
        pos += body_len
        return header + body

    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        turns = []
        for j, message in enumerate(row["conversations"]):
            value, role = message["value"], message["from"]
            if role == "observation":
                value = OBSERVATION_SEPARATOR.join(
                    code(len(part), f"out {i}.{j}.{k}")
                    for k, part in enumerate(value.split(OBSERVATION_SEPARATOR))
                )
            elif role in ("human", "gpt"):
                value = f"{value} (ref {i}.{j})"
            turns.append({**message, "value": value})
        out.append({**row, "conversations": turns})
    return out


def load_named_tokenizer(name: str) -> Any:
    """``tiny`` or ``qwen``, built on first use, loaded through the project's own loader."""
    from sft.report.tokens import load_tokenizer

    if name == "tiny":
        from tests.support.tiny_model import build_tiny_model

        path = build_tiny_model(REPO / "artifacts" / "demo" / "tiny-qwen3")
    elif name == "qwen":
        from benchmarks.qwen_vocab import build_qwen_vocab_tokenizer

        path = build_qwen_vocab_tokenizer()
    else:
        raise ValueError(f"--tokenizers: unknown tokenizer {name!r}; use one of {TOKENIZER_NAMES}")
    loaded = load_tokenizer(str(path))
    if not loaded.ok:
        raise RuntimeError(loaded.error)
    return loaded.tokenizer


def stats_call(rows: list[dict[str, Any]], tokenizer: Any, workers: int) -> Callable[[], tuple[list, dict]]:
    """A ``token_stats`` call as the report pipeline makes it (qwen3 template, the demo cutoff)."""
    from sft.report.tokens import token_stats

    kwargs: dict[str, Any] = {"cutoff_len": 4096, "template": "qwen3"}
    if "num_workers" in inspect.signature(token_stats).parameters:
        kwargs["num_workers"] = workers
    elif workers != 1:
        raise SystemExit("--workers > 1: this token_stats has no num_workers parameter")
    return lambda: token_stats(rows, tokenizer, **kwargs)


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def comparable(result: tuple[list, dict]) -> tuple[list, dict]:
    per_sample, summary = result
    return per_sample, {k: v for k, v in summary.items() if k not in TIMING_FIELDS}


def best_of(repeat: int, call: Callable[[], tuple[list, dict]]) -> tuple[dict[str, Any], tuple[list, dict]]:
    """The fastest of ``repeat`` runs (and the result of the last run, for the equality check)."""
    best: dict[str, Any] | None = None
    result: tuple[list, dict] = ([], {})
    for _ in range(repeat):
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        result = call()
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        tokens = result[1]["tokens"]["total"]
        if best is None or wall < best["wall_s"]:
            best = {
                "tokens": tokens,
                "wall_s": round(wall, 3),
                "tokens_per_s": round(tokens / wall),
                "cpu_s": round(cpu, 3),
                "cores_busy": round(cpu / wall, 2),
            }
    assert best is not None
    return best, result


def profile_once(call: Callable[[], object], top: int = 25) -> str:
    """cProfile of one warm call (a first call also pays LLaMA-Factory's imports), by cumulative and own time."""
    call()
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_arguments(p)
    p.add_argument("--tokenizers", default=",".join(TOKENIZER_NAMES), help="comma list of tiny,qwen")
    p.add_argument("--workers", default="1,2", help="comma list of token_stats num_workers values")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/tokstats-bench"))
    p.add_argument(
        "--content",
        choices=("unique", "generated"),
        default="unique",
        help="unique: tool outputs replaced by distinct real code (default, see unique_content); "
        "generated: the job's rows as converted (heavily repeated texts)",
    )
    p.add_argument("--profile", choices=TOKENIZER_NAMES, help="print a cProfile of one serial run to stderr")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows, job = load_rows(args.work_dir, args.trials, args.max_turns, args.seed)
    if args.content == "unique":
        rows = unique_content(rows)
    job["content"] = args.content
    job["distinct_messages"] = len({m["value"] for r in rows for m in r["conversations"]})
    job["messages"] = sum(len(r["conversations"]) for r in rows)
    report: dict[str, Any] = {"machine": machine(), "job": job, "repeat": args.repeat, "results": {}}
    for name in [n.strip() for n in args.tokenizers.split(",") if n.strip()]:
        tokenizer = load_named_tokenizer(name)
        if args.profile == name:
            sys.stderr.write(profile_once(stats_call(rows, tokenizer, 1)))
        reference: tuple[list, dict] | None = None
        cells: dict[str, Any] = {"vocab": len(tokenizer)}
        for workers in [int(w) for w in args.workers.split(",")]:
            cell, result = best_of(args.repeat, stats_call(rows, tokenizer, workers))
            if reference is None:
                reference = comparable(result)
            elif comparable(result) != reference:
                raise SystemExit(
                    f"{name}: token_stats with num_workers={workers} differs from the first setting"
                )
            cells[f"workers_{workers}"] = cell
        report["results"][name] = cells
    report["machine"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
