"""The naive one-process converter `bench_pipeline` compares `kedro run --pipeline=convert` against.

One process, the standard ``json`` module, whole files in memory, the prefix rule checked pairwise (every call
against every later call), no validation, scoring, scrubbing, tokenization or report. It is the converter of
``benchmarks/baseline.py`` (the same yardstick ``bench_convert`` uses for the engine), so both tables compare
against one implementation:

    python -m benchmarks.naive_convert --job DIR --out rows.json
"""

from __future__ import annotations

from benchmarks.baseline import convert_job, main

__all__ = ["convert_job", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
