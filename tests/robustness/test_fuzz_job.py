"""Fuzz: random damage to a copy of the demo job never crashes conversion and never loses a trial.

Each example copies the demo job, applies 1-4 mutations (byte flips, truncations, inserted garbage, file
or dir deletions, JSON value swaps inside result.json / config.json / trajectory.json / one log line)
and converts it with one worker and no cache. Asserted: ``convert_job`` returns; every trial dir is in
the output or in the rejects; no reject comes from the last-resort handlers (``internal_error``,
``unexpected_error``: those mean a bug, not a precise reason); the output rows are valid JSON.

Bounded for CI: ``SFT_FUZZ_EXAMPLES`` (default 250) examples, derandomized so a failure reproduces;
set ``SFT_FUZZ_RANDOM=1`` to explore new examples locally.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.robustness.helpers import (
    assert_accounted,
    convert,
    copy_job,
    read_everything_config,
    trial_dirs,
)

EXAMPLES = int(os.environ.get("SFT_FUZZ_EXAMPLES", "250"))
DERANDOMIZE = os.environ.get("SFT_FUZZ_RANDOM", "") != "1"
MUTATIONS = ("flip", "truncate", "insert", "delete_file", "delete_dir", "json_swap", "json_swap", "json_swap")

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "user",
            "assistant",
            "tool",
            "system",
            "text",
            "tool_use",
            "tool_result",
            "function",
            "ATIF-v9.9",
            "claude-code",
            "terminus-2",
            "success",
            "false",
            "/abs/x",
        ]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _files(job: Path) -> list[Path]:
    return sorted(p for p in job.rglob("*") if p.is_file() and not p.is_symlink())


def _json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a parsed JSON document (the root included)."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += _json_paths(value, (*prefix, index))
    return paths


def _set_at(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _swap_json(data: st.DataObject, raw: bytes) -> bytes | None:
    """``raw`` (one JSON document) with one value replaced, or None when it does not parse."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    paths = _json_paths(doc)
    # Prefer deep paths: swapping the root only tests "not an object", which one example is enough for.
    path = paths[data.draw(st.integers(0, len(paths) - 1), label="json path")]
    return json.dumps(_set_at(doc, path, data.draw(json_value, label="json value"))).encode()


def _mutate_json_file(data: st.DataObject, path: Path) -> None:
    raw = path.read_bytes()
    if path.suffix == ".jsonl":
        lines = raw.split(b"\n")
        index = data.draw(st.integers(0, max(0, len(lines) - 1)), label="line")
        swapped = _swap_json(data, lines[index])
        if swapped is not None:
            lines[index] = swapped
            path.write_bytes(b"\n".join(lines))
        return
    swapped = _swap_json(data, raw)
    if swapped is not None:
        path.write_bytes(swapped)


def _mutate(data: st.DataObject, job: Path) -> str:
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    if kind == "delete_dir":
        dirs = sorted(p for p in job.rglob("*") if p.is_dir() and p.parent != job)
        if dirs:
            target = dirs[data.draw(st.integers(0, len(dirs) - 1), label="dir")]
            shutil.rmtree(target)
            return f"{kind} {target.relative_to(job)}"
        return "noop"
    files = _files(job)
    if kind == "json_swap":
        files = [p for p in files if p.suffix in {".json", ".jsonl"}]
    target = files[data.draw(st.integers(0, len(files) - 1), label="file")]
    raw = target.read_bytes()
    at = data.draw(st.integers(0, max(0, len(raw))), label="offset")
    if kind == "flip" and raw:
        at = min(at, len(raw) - 1)
        flipped = raw[at] ^ data.draw(st.integers(1, 255), label="xor")
        target.write_bytes(raw[:at] + bytes([flipped]) + raw[at + 1 :])
    elif kind == "truncate":
        target.write_bytes(raw[:at])
    elif kind == "insert":
        target.write_bytes(
            raw[:at] + data.draw(st.binary(min_size=1, max_size=16), label="garbage") + raw[at:]
        )
    elif kind == "delete_file":
        target.unlink()
    elif kind == "json_swap":
        _mutate_json_file(data, target)
    return f"{kind} {target.relative_to(job)}@{at}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_mutated_demo_job_converts_and_accounts_for_every_trial(data: st.DataObject, tmp_path: Path) -> None:
    work = tmp_path / f"ex{os.urandom(4).hex()}"
    job = copy_job(work / "job")
    try:
        expected = trial_dirs(job)
        count = data.draw(st.integers(1, 4), label="mutations")
        applied = [_mutate(data, job) for _ in range(count)]
        note(f"applied: {applied}")
        result = convert(job, work, read_everything_config())
        assert_accounted(result, expected & trial_dirs(job))
        for row in result.lf_rows:
            orjson.loads(orjson.dumps(row))  # every row serialises (no lone surrogates, no NaN)
            assert row["conversations"], row
    finally:
        shutil.rmtree(work, ignore_errors=True)
