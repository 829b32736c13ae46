"""The straightforward reference-style converter the benchmark compares against (issue 7).

What the reference converters do (docs/input-formats.md §9), written the plain way: one process, the
standard ``json`` module, whole files in memory, and the prefix rule checked **pairwise** (every call
against every later call, O(n^2) list comparisons per trial). Per trial: result.json reward filter, read
``agent/litellm-trajectory.jsonl`` (else ATIF ``agent/trajectory.json``), drop failed calls, sort by
``request_time``, normalise each input message (cache markers, signatures, thinking blocks removed, first
user message flattened, ``cch=`` blanked, sorted-key JSON), drop calls that are a prefix of a later call
or have <= 2 messages, exact-deduplicate, and write one ShareGPT row per survivor.

It is a yardstick, not a product: no validation, scoring, secret scrubbing or rejects file. The numbers
in BENCHMARKS.md therefore flatter the baseline (it does less work than ``sft.engine.harbor``).

    python -m benchmarks.baseline --job /tmp/sft-bench/job-100 --out /tmp/sft-bench/baseline-100.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

STRIP_KEYS = ("cache_control", "signature", "generation")
THINKING_TYPES = ("thinking", "redacted_thinking")
CCH_RE = re.compile(r"cch=[0-9A-Fa-f]*;")
ROLE_TO_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in STRIP_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("type") in THINKING_TYPES)]
    return value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                if "text" in block:
                    parts.append(str(block["text"]))
                elif block.get("type") == "tool_result":
                    parts.append(_text(block.get("content")))
                elif block.get("type") == "tool_use":
                    parts.append(json.dumps({"name": block.get("name"), "arguments": block.get("input")}))
        return "\n".join(parts)
    return "" if content is None else str(content)


def request_messages(record: dict[str, Any]) -> list[Any]:
    body = record.get("request_body") or {}
    extra = record.get("extra_params") or {}
    messages = body.get("input") or extra.get("input") or body.get("messages") or []
    system = body.get("system")
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def normalise(messages: list[Any]) -> list[str]:
    """Sorted-key JSON per message, markers and thinking stripped, first user message flattened."""
    out = []
    seen_user = False
    for message in messages:
        message = _strip(message)
        if isinstance(message, dict) and message.get("role") == "user" and not seen_user:
            seen_user = True
            message = {**message, "content": _text(message.get("content"))}
        out.append(CCH_RE.sub("cch=;", json.dumps(message, sort_keys=True, ensure_ascii=False)))
    return out


def surviving_calls(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairwise prefix rule, then the <= 2 messages rule, then exact de-duplication."""
    normalised = [normalise(request_messages(r)) for r in records]
    survivors = []
    seen: set[tuple[str, ...]] = set()
    for i, mine in enumerate(normalised):
        is_prefix = False
        for j in range(i + 1, len(normalised)):
            other = normalised[j]
            if len(other) > len(mine) and other[: len(mine)] == mine:
                is_prefix = True
                break
        if is_prefix or len(mine) <= 2 or tuple(mine) in seen:
            continue
        seen.add(tuple(mine))
        survivors.append(records[i])
    return survivors


def _response_message(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("response_body") or {}
    if body.get("choices"):
        return body["choices"][0].get("message") or {}
    if isinstance(body.get("content"), list):
        return {"role": "assistant", "content": body["content"]}
    return {"role": "assistant", "content": ""}


def to_row(messages: list[Any]) -> dict[str, Any]:
    conversations = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = ROLE_TO_FROM.get(str(message.get("role")), "human")
        text = _text(message.get("content"))
        for call in message.get("tool_calls") or []:
            conversations.append({"from": "function_call", "value": json.dumps(call.get("function", call))})
        conversations.append({"from": role, "value": text})
    return {"conversations": conversations}


def convert_trial(trial: Path, instance_status: str) -> list[dict[str, Any]]:
    result = json.loads((trial / "result.json").read_text(encoding="utf-8"))
    reward = ((result.get("verifier_result") or {}).get("rewards") or {}).get("reward")
    if instance_status == "resolved" and reward != 1.0:
        return []
    log = trial / "agent" / "litellm-trajectory.jsonl"
    if log.is_file():
        records = []
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("success") is not False:
                records.append(record)
        records.sort(key=lambda r: r.get("request_time") or 0)
        return [to_row(request_messages(r) + [_response_message(r)]) for r in surviving_calls(records)]
    atif = trial / "agent" / "trajectory.json"
    if atif.is_file():
        steps = json.loads(atif.read_text(encoding="utf-8")).get("steps") or []
        role = {"user": "user", "agent": "assistant", "system": "system"}
        return [
            to_row([{"role": role.get(s.get("source"), "user"), "content": s.get("message")} for s in steps])
        ]
    return []


def convert_job(job_dir: Path, out_path: Path, *, instance_status: str = "all") -> dict[str, Any]:
    """Convert every trial of ``job_dir`` into ``out_path`` (a JSON array); returns counts and timing."""
    started, cpu_started = time.perf_counter(), time.process_time()
    rows: list[dict[str, Any]] = []
    trials = sorted(p for p in job_dir.iterdir() if (p / "result.json").is_file())
    for trial in trials:
        rows.extend(convert_trial(trial, instance_status))
    out_path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return {
        "trials": len(trials),
        "rows": len(rows),
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--instance-status", choices=("all", "resolved"), default="all")
    args = parser.parse_args(argv)
    summary = convert_job(args.job, args.out, instance_status=args.instance_status)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
