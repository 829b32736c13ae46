"""Planted credentials never reach any file the convert pipeline writes, and the report counts them.

One key of every supported format (tests/convert/secret_samples.py, >= 20) plus the run's own credentials (``WANDB_API_KEY``, ``HF_TOKEN``) is
planted into a copy of the demo job, in the four places an agent puts them: tool outputs, user messages,
tool-call arguments and reasoning (proxy logs of every shape and the ATIF-only trial). Then
``kedro run --pipeline=convert`` (convert + register + report) runs in a scratch project, and every file
under it except the input job is searched for every planted value: raw bytes, and Parquet files decoded
too (their pages are compressed, so raw bytes alone would prove nothing). The console output and the log
records are searched as well.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sft.config.loader import load_config
from sft.engine.harbor import convert_job
from tests.convert.secret_samples import PEM_LINES, SAMPLES
from tests.pipelines.conftest import run_session
from tests.robustness.helpers import DEMO_JOB, LOG

WANDB_KEY = "4f0c2d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d"  # the run's own credentials, no provider shape
HF_TOKEN = "hf_RunOwnTokenZZ9yX8wV7uT6sR5qP4oN3mL2k"
PEM_BODY = PEM_LINES
# One value of every supported format (tests/convert/secret_samples.py), the key body line by line.
PLANTED: dict[str, str] = {
    **{s.format: s.secret for s in SAMPLES if s.rule != "private_key"},
    "private_key_line_1": PEM_BODY[0],
    "private_key_line_2": PEM_BODY[1],
    "wandb_api_key": WANDB_KEY,
    "hf_token": HF_TOKEN,
}
# The report's rule names the planted values are counted under.
PATTERN_NAMES = {s.rule for s in SAMPLES} | {"credential"}


def secret_blob(place: str) -> str:
    """What an agent might print: an env dump, config lines, a curl call and a key file, every planted
    value once."""
    lines = "\n".join(s.line for s in SAMPLES)
    return f"\n[{place}] {lines}\nWANDB_API_KEY={WANDB_KEY} HF_TOKEN={HF_TOKEN}\n"


# ------------------------------------------------------------------------------------------------ planting


def _append(text: Any, place: str) -> Any:
    return text + secret_blob(place) if isinstance(text, str) else text


def _plant_arguments(arguments: Any) -> Any:
    """Tool-call arguments, as an object or as the JSON string OpenAI sends."""
    if isinstance(arguments, dict):
        return {**arguments, "env": secret_blob("tool arguments")}
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return arguments + secret_blob("tool arguments")
        if isinstance(parsed, dict):
            return json.dumps({**parsed, "env": secret_blob("tool arguments")})
    return arguments


def _plant_block(block: dict[str, Any], role: str | None) -> None:
    kind = block.get("type")
    if kind == "tool_result":
        content = block.get("content")
        block["content"] = _append(content, "tool output") if isinstance(content, str) else content
        for inner in content if isinstance(content, list) else []:
            if isinstance(inner, dict) and inner.get("type") == "text":
                inner["text"] = _append(inner.get("text"), "tool output")
    elif kind == "tool_use":
        block["input"] = _plant_arguments(block.get("input"))
    elif kind == "thinking":
        block["thinking"] = _append(block.get("thinking"), "reasoning")
    elif kind == "text" and role == "user":
        block["text"] = _append(block.get("text"), "user message")


def _plant_chat_message(message: dict[str, Any]) -> None:
    """An OpenAI or Anthropic message (request history or response)."""
    role = message.get("role")
    content = message.get("content")
    if role in ("user", "tool") and isinstance(content, str):
        message["content"] = _append(content, "user message" if role == "user" else "tool output")
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict):
            _plant_block(block, role)
    if "reasoning_content" in message:
        message["reasoning_content"] = _append(message["reasoning_content"], "reasoning")
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            function["arguments"] = _plant_arguments(function.get("arguments"))


def _plant_log_record(record: dict[str, Any]) -> None:
    """Every message of one proxy-log record: request history and response, OpenAI or Anthropic shape.

    The same edit for the same message in every record, so the cumulative log stays prefix-consistent.
    """
    for message in record.get("request_body", {}).get("messages") or []:
        if isinstance(message, dict):
            _plant_chat_message(message)
    response = record.get("response_body") or {}
    for choice in response.get("choices") or []:
        if isinstance(choice.get("message"), dict):
            _plant_chat_message(choice["message"])
    if isinstance(response.get("content"), list):  # Anthropic response
        for block in response["content"]:
            if isinstance(block, dict):
                _plant_block(block, "assistant")


def _plant_atif(doc: dict[str, Any]) -> None:
    for step in doc.get("steps") or []:
        if step.get("source") == "user":
            step["message"] = _append(step.get("message"), "user message")
        step["reasoning_content"] = _append(step.get("reasoning_content"), "reasoning")
        for call in step.get("tool_calls") or []:
            call["arguments"] = _plant_arguments(call.get("arguments"))
        for result in (step.get("observation") or {}).get("results") or []:
            result["content"] = _append(result.get("content"), "tool output")


def _rewrite_jsonl(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for record in records:
        edit(record)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def plant_secrets(job: Path) -> None:
    for log in job.glob(f"*/agent/{LOG}"):
        _rewrite_jsonl(log, _plant_log_record)
    for atif in job.glob("*/agent/trajectory*.json"):
        doc = json.loads(atif.read_text(encoding="utf-8"))
        _plant_atif(doc)
        atif.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ searching


def _files_written(project: Path) -> list[Path]:
    """Every regular file under the project except the input job (symlinks are not followed)."""
    job = project / "data" / "01_raw"
    found = []
    for dirpath, dirnames, filenames in os.walk(project, followlinks=False):
        if Path(dirpath) == job:
            dirnames.clear()
            continue
        found += [Path(dirpath) / name for name in filenames if not (Path(dirpath) / name).is_symlink()]
    return found


def _searchable_text(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".parquet":
        data += json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str).encode()
    return data


def _leaks(blob: bytes) -> list[str]:
    return [label for label, value in PLANTED.items() if value.encode() in blob]


@pytest.fixture
def planted_project(project_copy: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    job = project_copy / "data" / "01_raw" / "demo_job"
    shutil.copytree(DEMO_JOB, job)
    plant_secrets(job)
    # Every planted format in four places makes the demo trials long: lift the cutoff so that the rows
    # are written (an overlength reject would keep the redacted text out of the dataset files).
    config = project_copy / "config.demo.yaml"
    text = config.read_text(encoding="utf-8")
    assert "cutoff_len: 4096" in text
    config.write_text(text.replace("cutoff_len: 4096", "cutoff_len: 65536"), encoding="utf-8")
    (project_copy / "artifacts" / "demo").mkdir(parents=True)
    os.symlink(tiny_model_dir, project_copy / "artifacts" / "demo" / "tiny-qwen3")
    monkeypatch.setenv("SFT_CONFIG", "config.demo.yaml")
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.chdir(project_copy)
    return project_copy


def test_planted_values_reach_the_output_when_scrubbing_is_off(planted_project: Path) -> None:
    """The control: the plants sit where conversion reads them, so the leak test below can fail."""
    cfg = load_config(planted_project / "config.demo.yaml").input
    conv = cfg.conversion.model_copy(update={"scrub_secrets": False, "use_cache": False})
    result = convert_job(
        cfg.model_copy(update={"conversion": conv}),
        planted_project / "data" / "01_raw" / "demo_job",
        planted_project,
        num_workers=1,
        progress=False,
    )
    rows = json.dumps(list(result.lf_rows), ensure_ascii=False).encode()
    assert set(_leaks(rows)) == set(PLANTED)
    for place in ("tool output", "user message", "tool arguments", "reasoning"):
        assert f"[{place}]".encode() in rows, place


def test_no_planted_secret_in_any_file_the_convert_pipeline_writes(
    planted_project: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_session(planted_project, "convert")

    written = _files_written(planted_project)
    names = {p.name for p in written}
    # The outputs the brief names are all there (so the search below covers them).
    for expected in (
        "demo_agent_sft.json",
        "demo_agent_sft.parquet",
        "demo_agent_sft.jsonl",
        "rejects.jsonl",
        "funnel.json",
        "dataset_info.json",
        "demo_agent_sft.stats.json",
        "demo_agent_sft.README.md",
    ):
        assert expected in names, f"{expected} was not written; the leak search would miss it"
    cache = planted_project / "data" / "02_intermediate" / "conversion_cache"
    assert any(cache.rglob("*.trial")), "the conversion cache was not written"

    leaks = {
        str(p.relative_to(planted_project)): found for p in written if (found := _leaks(_searchable_text(p)))
    }
    assert leaks == {}, f"planted secrets found in written files: {leaks}"
    out, err = capfd.readouterr()
    assert _leaks((out + err + caplog.text).encode()) == []

    report = json.loads(next(p for p in written if p.name == "funnel.json").read_text())
    counts = report["secrets_redacted"]
    assert set(counts) == PATTERN_NAMES, counts
    assert all(n > 0 for n in counts.values())
    rows = json.loads(next(p for p in written if p.name == "demo_agent_sft.json").read_text())
    text = json.dumps(rows)
    for name in PATTERN_NAMES:
        assert f"[REDACTED:{name}]" in text, name


def test_dataset_card_shows_the_redaction_counts(planted_project: Path) -> None:
    run_session(planted_project, "convert")
    lf_dir = planted_project / "artifacts" / "data" / "lf_data"
    stats = json.loads((lf_dir / "demo_agent_sft.stats.json").read_text())
    card = (lf_dir / "demo_agent_sft.README.md").read_text()
    assert stats.get("secrets_redacted", {}).get("openai", 0) > 0
    assert "secrets_redacted" in card or "Secrets redacted" in card


# ------------------------------------------------------------------------------------------------ shapes the
# pipeline test does not cover: secrets labelled by a dict key, PGP blocks, keys inside JSON-escaped text


def test_values_labelled_by_their_dict_key_are_redacted() -> None:
    from sft.rules.secrets import SecretScrubber

    scrubber = SecretScrubber([])
    args = {
        "headers": {"Authorization": "Bearer abcDEF123.456-xyz", "Accept": "text/plain"},
        "env": {"AWS_SECRET_ACCESS_KEY": PLANTED["aws_secret_access_key"], "HOME": "/root"},
    }
    out = scrubber.scrub_value(args)
    assert out == {
        "headers": {"Authorization": "Bearer [REDACTED:authorization]", "Accept": "text/plain"},
        "env": {"AWS_SECRET_ACCESS_KEY": "[REDACTED:aws_secret_access_key]", "HOME": "/root"},
    }
    assert scrubber.counts == {"authorization": 1, "aws_secret_access_key": 1}


def test_pgp_blocks_and_keys_inside_json_escaped_text_are_redacted() -> None:
    from sft.rules.secrets import SecretScrubber

    scrubber = SecretScrubber([])
    pgp = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PEM_BODY[0]}\n-----END PGP PRIVATE KEY BLOCK-----"
    escaped_truncated = f'{{"key": "-----BEGIN PRIVATE KEY-----\\n{PEM_BODY[0]}\\n{PEM_BODY[1]}'
    out = scrubber.scrub(f"{pgp}\n{escaped_truncated}")
    assert PEM_BODY[0] not in out and PEM_BODY[1] not in out
    assert scrubber.counts == {"private_key": 2}
