"""One damaged trial at a time: conversion never raises, and the trial is converted (when the damage allows
it) or rejected with a precise reason that names the damaged file.

Every case damages a copy of a demo trial and converts a job holding it plus an undamaged control trial
(which must come through untouched). Every trial's logs are read (``instance_status: all``, no exclusion
list), so the damage is always exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from sft.core.results import ConversionResult
from tests.robustness.helpers import (
    ANTHROPIC_TRIAL,
    ATIF,
    ATIF_ONLY_TRIAL,
    DEMO_JOB,
    LOG,
    OPENAI_TRIAL,
    ROOT,
    assert_accounted,
    convert,
    copy_job,
    log_lines,
    trial_dirs,
    trial_rejects,
    written_trials,
)

CONTROL = OPENAI_TRIAL
OPENAI_SHAPED_TRIAL = "nimbus__cloud-kit-205__VhjT2u5"  # OpenHands SDK: OpenAI chat-completions records


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path], None]  # gets the damaged trial's dir
    trial: str = ANTHROPIC_TRIAL
    # None: the trial must be converted. Else (stage, reason, the file the detail must name, relative
    # to the trial dir; "" = the trial dir itself). A file of None: the damage leaves a conversation that
    # fails validation, so each trajectory is rejected (its uid names the trial; the detail names the
    # message and the problem).
    reject: tuple[str, str, str | None] | None = None


# ------------------------------------------------------------------------------------------------ damage


def _truncate_last_line(trial: Path) -> None:
    log = trial / "agent" / LOG
    data = log.read_bytes().rstrip(b"\n")
    log.write_bytes(data[: len(data) - 200])  # the proxy was still writing the last call


def _invalid_json_line(trial: Path) -> None:
    lines = log_lines(trial / "agent" / LOG)
    lines.insert(len(lines) // 2, b'{"request_body": {"messages": [}, oops')
    (trial / "agent" / LOG).write_bytes(b"\n".join(lines) + b"\n")


def _non_utf8_bytes(trial: Path) -> None:
    log = trial / "agent" / LOG
    log.write_bytes(log.read_bytes().replace(b"Resolve the issue", b"\xff\xfe\xc3( Resolve the issue"))


def _lone_surrogates(trial: Path) -> None:
    """A lone surrogate as a JSON escape and as raw (CESU-8) bytes, in every call of the log."""
    log = trial / "agent" / LOG
    log.write_bytes(
        log.read_bytes().replace(b"Resolve the issue", b"\\ud800 x \\udfff \xed\xa0\x80 Resolve the issue")
    )


def _zero_byte_log(trial: Path) -> None:
    (trial / "agent" / LOG).write_bytes(b"")


def _zero_byte_log_no_atif(trial: Path) -> None:
    _zero_byte_log(trial)
    (trial / "agent" / ATIF).unlink()


def _missing_log(trial: Path) -> None:
    (trial / "agent" / LOG).unlink()


def _log_is_a_directory(trial: Path) -> None:
    (trial / "agent" / LOG).unlink()
    (trial / "agent" / LOG).mkdir()


def _no_log_no_atif(trial: Path) -> None:
    (trial / "agent" / LOG).unlink()
    (trial / "agent" / ATIF).unlink()


def _only_failed_calls(trial: Path) -> None:
    records = [json.loads(line) for line in log_lines(trial / "agent" / LOG)]
    (trial / "agent" / LOG).write_text("".join(json.dumps({**r, "success": False}) + "\n" for r in records))
    (trial / "agent" / ATIF).unlink()


def _missing_result(trial: Path) -> None:
    (trial / "result.json").unlink()


def _invalid_result(trial: Path) -> None:
    raw = (trial / "result.json").read_bytes()
    (trial / "result.json").write_bytes(raw[: len(raw) // 2])


def _result_not_an_object(trial: Path) -> None:
    (trial / "result.json").write_text("[1, 2, 3]")


def _result_non_utf8(trial: Path) -> None:
    raw = (trial / "result.json").read_bytes()
    (trial / "result.json").write_bytes(raw.replace(b'"task_name": "', b'"task_name": "\xff\xfe', 1))


def _missing_config(trial: Path) -> None:
    (trial / "config.json").unlink()


def _invalid_config(trial: Path) -> None:
    (trial / "config.json").write_bytes(b'{"task": {"path": ')


def _empty_agent_dir(trial: Path) -> None:
    shutil.rmtree(trial / "agent")
    (trial / "agent").mkdir()


def _still_running(trial: Path) -> None:
    """Harbor writes result.json last: a running trial has a growing log and no result.json."""
    _missing_result(trial)
    _truncate_last_line(trial)
    (trial / "agent" / ATIF).unlink()


def _multi_step(trial: Path) -> None:
    """steps/one/agent and steps/two/agent (step two did different work), step_results in result.json."""
    (trial / "steps" / "one").mkdir(parents=True)
    shutil.move(trial / "agent", trial / "steps" / "one" / "agent")
    shutil.copytree(trial / "steps" / "one" / "agent", trial / "steps" / "two" / "agent")
    for name in (LOG, ATIF):
        path = trial / "steps" / "two" / "agent" / name
        path.write_bytes(path.read_bytes().replace(b"normalize_path", b"normalise_path"))
    result = json.loads((trial / "result.json").read_text())
    verifier = result.get("verifier_result")
    result["step_results"] = [
        {"step_name": "one", "verifier_result": verifier},
        {"step_name": "two", "verifier_result": verifier},
    ]
    (trial / "result.json").write_text(json.dumps(result))


def _multi_step_still_running(trial: Path) -> None:
    """Only steps/ so far (copied mid-run, before config.json): still a trial, reported, not skipped."""
    _multi_step(trial)
    (trial / "result.json").unlink()
    (trial / "config.json").unlink()


def _symlink_loops_in_trial(trial: Path) -> None:
    os.symlink(".", trial / "agent" / "loop")  # agent/loop/loop/... forever
    os.symlink(trial, trial / "self")  # the trial inside itself
    os.symlink("ping", trial / "agent" / "pong")  # ping -> pong -> ping: ELOOP on every access
    os.symlink("pong", trial / "agent" / "ping")
    os.symlink("trajectory.missing.json", trial / "agent" / "trajectory.sub.json")  # dangling subagent file


def _unknown_atif_version(trial: Path) -> None:
    path = trial / "agent" / ATIF
    doc = json.loads(path.read_text())
    doc["schema_version"] = "ATIF-v9.9"
    path.write_text(json.dumps(doc))


def _atif_version_not_a_string(trial: Path) -> None:
    path = trial / "agent" / ATIF
    doc = json.loads(path.read_text())
    doc["schema_version"] = ["ATIF-v1.7"]
    path.write_text(json.dumps(doc))


def _truncated_atif(trial: Path) -> None:
    path = trial / "agent" / ATIF
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _shape_mix(trial: Path) -> None:
    """OpenAI chat-completions calls (from another trial) interleaved with this trial's Anthropic calls."""
    anthropic = log_lines(trial / "agent" / LOG)
    openai = log_lines(DEMO_JOB / OPENAI_SHAPED_TRIAL / "agent" / LOG)
    mixed = [anthropic[0], openai[0], anthropic[1], openai[-1], *anthropic[2:]]
    (trial / "agent" / LOG).write_bytes(b"\n".join(mixed) + b"\n")


def _block_type_not_a_string(trial: Path) -> None:
    """A content block whose "type" is a list (unhashable): crashed the set lookups before the fix."""
    records = [json.loads(line) for line in log_lines(trial / "agent" / LOG)]
    for record in records:
        for message in record["request_body"]["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block.get("type") == "text":
                    block["type"] = ["text"]
    (trial / "agent" / LOG).write_text("".join(json.dumps(r) + "\n" for r in records))


def _tool_calls_not_a_list(trial: Path) -> None:
    """ "tool_calls": 1.5 on every assistant message of an OpenAI-shaped log (iterated as a list before)."""
    records = [json.loads(line) for line in log_lines(trial / "agent" / LOG)]
    for record in records:
        for message in record["request_body"]["messages"]:
            if message.get("tool_calls"):
                message["tool_calls"] = 1.5
    (trial / "agent" / LOG).write_text("".join(json.dumps(r) + "\n" for r in records))


def _atif_lists_not_lists(trial: Path) -> None:
    """ATIF tool_calls / observation.results holding a number and a string instead of lists."""
    path = trial / "agent" / ATIF
    doc = json.loads(path.read_text())
    for step in doc["steps"]:
        if "tool_calls" in step:
            step["tool_calls"] = 7
        if "observation" in step:
            step["observation"]["results"] = "not a list"
    path.write_text(json.dumps(doc))


CASES: dict[str, Case] = {
    "truncated_last_line": Case(_truncate_last_line),
    "invalid_json_line": Case(_invalid_json_line),
    "non_utf8_bytes": Case(_non_utf8_bytes),
    "lone_surrogates": Case(_lone_surrogates),
    "zero_byte_log_falls_back_to_atif": Case(_zero_byte_log),
    "zero_byte_log_without_atif": Case(
        _zero_byte_log_no_atif, reject=("parse", "empty_litellm_log", f"agent/{LOG}")
    ),
    "missing_log_falls_back_to_atif": Case(_missing_log),
    "log_is_a_directory": Case(_log_is_a_directory),
    "missing_log_and_atif": Case(_no_log_no_atif, reject=("parse", "no_trajectory_source", "agent")),
    "only_failed_calls": Case(_only_failed_calls, reject=("parse", "empty_litellm_log", f"agent/{LOG}")),
    "missing_result_json": Case(_missing_result, reject=("discover", "no_result_json", "result.json")),
    "invalid_result_json": Case(_invalid_result, reject=("parse", "invalid_result_json", "result.json")),
    "result_json_not_an_object": Case(
        _result_not_an_object, reject=("parse", "invalid_result_json", "result.json")
    ),
    "result_json_non_utf8": Case(_result_non_utf8),
    "missing_config_json": Case(_missing_config),
    "invalid_config_json": Case(_invalid_config, reject=("parse", "invalid_config_json", "config.json")),
    "empty_agent_dir": Case(_empty_agent_dir, reject=("parse", "no_trajectory_source", "agent")),
    "trial_still_running": Case(_still_running, reject=("discover", "no_result_json", "result.json")),
    "multi_step_trial": Case(_multi_step),
    "multi_step_trial_still_running": Case(
        _multi_step_still_running, reject=("discover", "no_result_json", "result.json")
    ),
    "symlink_loops_in_trial": Case(_symlink_loops_in_trial),
    "unknown_atif_schema_version": Case(_unknown_atif_version, trial=ATIF_ONLY_TRIAL),
    "atif_schema_version_not_a_string": Case(_atif_version_not_a_string, trial=ATIF_ONLY_TRIAL),
    "truncated_atif": Case(
        _truncated_atif, trial=ATIF_ONLY_TRIAL, reject=("parse", "invalid_atif", f"agent/{ATIF}")
    ),
    "anthropic_openai_shape_mix": Case(_shape_mix),
    "block_type_not_a_string": Case(_block_type_not_a_string),
    "tool_calls_not_a_list": Case(
        _tool_calls_not_a_list, trial=OPENAI_SHAPED_TRIAL, reject=("validate", "invalid_trajectory", None)
    ),
    "atif_lists_not_lists": Case(
        _atif_lists_not_lists, trial=ATIF_ONLY_TRIAL, reject=("validate", "invalid_trajectory", None)
    ),
}


def _damaged_job(tmp_path: Path, case: Case) -> Path:
    job = copy_job(tmp_path / "job", [case.trial, CONTROL])
    case.damage(job / case.trial)
    return job


def _assert_control_untouched(result: ConversionResult) -> None:
    assert CONTROL in written_trials(result)
    assert not [r for r in result.rejects if r["trial_name"] == CONTROL and r.get("trajectory") is None]


@pytest.mark.parametrize("name", sorted(CASES))
def test_damaged_trial_is_converted_or_rejected_with_a_precise_reason(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    job = _damaged_job(tmp_path, case)
    result = convert(job, tmp_path)  # never raises
    assert_accounted(result, trial_dirs(job))
    _assert_control_untouched(result)
    orjson.dumps(list(result.lf_rows))  # strict UTF-8 encoding: no lone surrogate survived
    if case.reject is None:
        assert case.trial in written_trials(result), trial_rejects(result, case.trial)
        return
    stage, reason, named = case.reject
    assert case.trial not in written_trials(result)
    if named is None:
        rejects = [r for r in result.rejects if r["trial_name"] == case.trial]
        assert rejects and all((r["stage"], r["reason"]) == (stage, reason) for r in rejects), rejects
        assert all(r["trajectory"].startswith(f"{case.trial}#") and "message" in r["detail"] for r in rejects)
        return
    (reject,) = trial_rejects(result, case.trial)
    assert (reject["stage"], reject["reason"]) == (stage, reason), reject
    assert str(job / case.trial / named) in reject["detail"], (
        f"the detail must name the file: {reject['detail']}"
    )


def test_bad_bytes_become_replacement_characters_not_crashes(tmp_path: Path) -> None:
    job = _damaged_job(tmp_path, Case(_lone_surrogates))
    text = orjson.dumps(list(convert(job, tmp_path).lf_rows)).decode()
    assert "\ufffd x \ufffd" in text


def test_truncated_last_line_keeps_every_complete_call(tmp_path: Path) -> None:
    """The cut-off call is lost, the calls before it are not: as many rows as from the intact log's prefix."""
    intact = copy_job(tmp_path / "intact", [ANTHROPIC_TRIAL])
    lines = log_lines(intact / ANTHROPIC_TRIAL / "agent" / LOG)
    (intact / ANTHROPIC_TRIAL / "agent" / LOG).write_bytes(b"\n".join(lines[:-1]) + b"\n")
    damaged = copy_job(tmp_path / "damaged", [ANTHROPIC_TRIAL])
    _truncate_last_line(damaged / ANTHROPIC_TRIAL)
    assert len(convert(damaged, tmp_path).lf_rows) == len(convert(intact, tmp_path).lf_rows) > 0


def test_multi_step_trial_yields_one_trajectory_per_step(tmp_path: Path) -> None:
    job = _damaged_job(tmp_path, Case(_multi_step))
    result = convert(job, tmp_path)
    steps = {
        json.loads(row["_meta"])["extra"].get("step")
        for row in result.lf_rows
        if json.loads(row["_meta"])["trial_name"] == ANTHROPIC_TRIAL
    }
    assert steps == {"one", "two"}


def test_symlink_loops_in_the_job_dir_are_not_trials_and_stop_nothing(tmp_path: Path) -> None:
    job = copy_job(tmp_path / "job", [ANTHROPIC_TRIAL, CONTROL])
    os.symlink(job, job / "job_again")  # the job inside itself
    os.symlink(job / ANTHROPIC_TRIAL, job / "same_trial_twice")  # a second name for a trial
    os.symlink("loop_b", job / "loop_a")  # ELOOP
    os.symlink("loop_a", job / "loop_b")
    result = convert(job, tmp_path)
    assert_accounted(result, {ANTHROPIC_TRIAL, CONTROL})
    assert written_trials(result) == {ANTHROPIC_TRIAL, CONTROL}  # each real trial once, nothing else
    assert {r["trial_name"] for r in result.rejects} <= {ANTHROPIC_TRIAL, CONTROL}


# ------------------------------------------------------------------------------------------------ huge line

BIG_LINE_MB = int(os.environ.get("SFT_BIG_LINE_MB", "200"))


def write_big_line_log(trial: Path, size: int) -> int:
    """Make the trial's last call carry a ``size``-byte tool output (streamed: constant memory here)."""
    log = trial / "agent" / LOG
    lines = log_lines(log)
    last = json.loads(lines[-1])
    for message in reversed(last["request_body"]["messages"]):
        blocks = message["content"] if isinstance(message["content"], list) else []
        results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            results[0]["content"] = "@@BIG@@"
            break
    prefix, suffix = json.dumps(last).encode().split(b'"@@BIG@@"')
    chunk = b"".join(b"line %06d: PASSED tests/test_core.py::test_case_%d\\n" % (i, i) for i in range(8192))
    with log.open("wb") as fh:
        fh.write(b"\n".join(lines[:-1]) + b"\n" + prefix + b'"')
        written = 0
        while written < size:
            fh.write(chunk)
            written += len(chunk)
        fh.write(b'"' + suffix + b"\n")
    return log.stat().st_size


BIG_LINE_PROBE = """
import json, resource, sys, time
from pathlib import Path
from tests.robustness.helpers import convert, read_everything_config
cfg = read_everything_config()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
result = convert(Path(sys.argv[1]), Path(sys.argv[2]), cfg)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
longest = max((sum(len(t["value"]) for t in row["conversations"]) for row in result.lf_rows), default=0)
trials = sorted({json.loads(r["_meta"])["trial_name"] for r in result.lf_rows})
print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "longest": longest, "trials": trials,
                  "rejects": result.rejects}))
"""


def test_a_huge_single_line_converts_in_linear_memory(tmp_path: Path) -> None:
    """A 200 MB tool output on one log line (``SFT_BIG_LINE_MB`` changes the size) converts, whole.

    Run in a child process so that its peak RSS is its own. The line takes the same path whatever its
    size (read whole, parsed by orjson into one str, carried by reference into the message, rendered
    once) and the cost is linear, which the memory bound checks. Measured on the 2-core dev box: 8 s
    and a peak RSS of 1.06 GB (about 5x the line: file bytes, the parsed str, the rendered row and
    transient hashing copies; the secret pre-check scans in windows, see BENCHMARKS.md). Most of the time is ``sft.rules.score.top_keywords`` scanning the whole
    tool output word by word; a cap is proposed in the issue-8 report. ``SFT_BIG_LINE_MB=20`` runs in ~2 s.
    """
    job = copy_job(tmp_path / "job", [ANTHROPIC_TRIAL])
    size = write_big_line_log(job / ANTHROPIC_TRIAL, BIG_LINE_MB * 1_000_000)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", BIG_LINE_PROBE, str(job), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["trials"] == [ANTHROPIC_TRIAL], probe["rejects"]
    assert (
        probe["longest"] >= 0.9 * size
    )  # the huge output is in the row, not dropped (\\n decodes to 1 char)
    growth = probe["peak"] - probe["before"]
    assert growth < 8 * size + 100_000_000, (
        f"peak memory grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB line"
    )
