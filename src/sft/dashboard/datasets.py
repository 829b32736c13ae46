"""The dataset view: which dataset a run trained on, its card and stats, a token-length histogram, and the
rows themselves, one trajectory at a time, split into turns.

Where things are (docs/config-contract.md §8, the report pipeline's catalog):

- rows: ``artifacts/data/lf_data/<data_name>.json`` (sft writes a JSON array with one row per line, so a
  row is found by its line offset without parsing the whole file; a pretty-printed array is parsed whole
  up to ``FULL_PARSE_LIMIT``), registered in ``dataset_info.json`` under a dataset key;
- card: ``<data_name>.README.md`` next to it (or a ``README.md`` in that folder);
- stats: ``<data_name>.stats.json`` next to it;
- exact per-sample token counts: ``data/08_reporting/<data_name>/sample_stats.jsonl`` (report pipeline);
  without it the histogram is an estimate (characters / 4) and says so.

A run finds its dataset through its training YAML: ``dataset`` (a key of ``dataset_info.json``, possibly a
comma-separated list) and ``dataset_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from sft.config.paths import lf_data_dir, report_dir
from sft.core.turns import kept_share, summary_line
from sft.dashboard.safety import ForbiddenPath, ProjectFiles
from sft.report.tokens import row_identity

logger = logging.getLogger(__name__)

DATA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}$")
FULL_PARSE_LIMIT = 512 * 1024 * 1024  # bytes: a pretty-printed array larger than this is not browsed
HISTOGRAM_BINS = 30
ESTIMATE_ROWS_LIMIT = 20000  # rows read for an estimated histogram when no sample_stats.jsonl exists
CHARS_PER_TOKEN = 4.0
THINK_RE = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)
TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
TOOL_RESPONSE_RE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.DOTALL)
# N parallel results inside one observation value (docs/llamafactory-rules.md §3.4).
OBSERVATION_SEPARATOR = "\n</tool_response>\n<tool_response>\n"
SHAREGPT_ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "system": "system",
}


class DatasetNotFound(LookupError):
    """No dataset by that name in ``artifacts/data/lf_data`` (the message lists what exists)."""


# ------------------------------------------------------------------------------------------ row access


@dataclass
class RowIndex:
    """Byte offsets of each row in a LLaMA-Factory JSON file, or the parsed rows for other layouts."""

    key: tuple[int, int]
    offsets: list[tuple[int, int]] | None  # (start, end) of each row's bytes
    rows: list[Any] | None

    @property
    def count(self) -> int:
        return len(self.offsets) if self.offsets is not None else len(self.rows or [])


def build_row_index(path: Path) -> RowIndex:
    """Index a ``[\\n{row},\\n{row}\\n]`` file by lines; fall back to a full parse for other layouts."""
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    offsets: list[tuple[int, int]] = []
    line_layout = True
    with path.open("rb") as fh:
        first = fh.readline().strip()
        position = fh.tell()
        if first == b"[]":
            return RowIndex(key, [], None)
        if first != b"[":
            line_layout = first.startswith(b"{")  # JSON lines
            if line_layout:
                offsets.append((0, position))
        for line in fh if line_layout else ():
            start, position = position, position + len(line)
            stripped = line.strip()
            if stripped.startswith(b"{"):
                offsets.append((start, position))
            elif stripped not in (b"]", b""):
                line_layout = False
                break
    if line_layout and (not offsets or _parse_row_bytes(path, offsets[0]) is not None):
        return RowIndex(key, offsets, None)
    if stat.st_size > FULL_PARSE_LIMIT:
        raise ValueError(
            f"{path}: {stat.st_size} bytes in a layout without one row per line; over the "
            f"{FULL_PARSE_LIMIT} byte limit for browsing (rewrite it with sft's converter)"
        )
    doc = orjson.loads(path.read_bytes())
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a JSON array of rows, found {type(doc).__name__}")
    return RowIndex(key, None, doc)


def _parse_row_bytes(path: Path, span: tuple[int, int]) -> Any:
    with path.open("rb") as fh:
        fh.seek(span[0])
        raw = fh.read(span[1] - span[0]).strip().rstrip(b",")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# --------------------------------------------------------------------------------------- turn splitting


def split_reasoning(text: str) -> tuple[str | None, str]:
    """``<think>…</think>`` blocks of a turn as the reasoning, the rest as the visible text."""
    thoughts = [m.strip() for m in THINK_RE.findall(text)]
    if not thoughts:
        return None, text
    return "\n\n".join(t for t in thoughts if t) or "", THINK_RE.sub("", text, count=len(thoughts)).strip()


def parse_tool_calls(text: str) -> tuple[list[dict[str, Any]], str]:
    """Calls in a ``function_call`` value (bare JSON object / list, or ``<tool_call>`` tagged) and the
    remaining prose; a call that is not JSON is kept as raw text so nothing is hidden."""
    calls: list[Any] = []
    prose = text
    tagged = TOOL_CALL_RE.findall(text)
    if tagged:
        prose = TOOL_CALL_RE.sub("", text).strip()
        for block in tagged:
            calls += _json_calls(block)
    else:
        stripped = text.strip()
        if stripped[:1] in ("{", "["):
            parsed = _json_calls(stripped)
            if not (len(parsed) == 1 and "raw" in parsed[0]):
                calls, prose = parsed, ""
    return calls, prose


def _json_calls(block: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(block)
    except ValueError:
        return [{"name": None, "arguments": None, "raw": block}]
    items = doc if isinstance(doc, list) else [doc]
    calls: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Mapping):
            function = item.get("function") if isinstance(item.get("function"), Mapping) else item
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    pass
            calls.append({"name": function.get("name"), "arguments": arguments})
        else:
            calls.append({"name": None, "arguments": None, "raw": json.dumps(item)})
    return calls


def row_turns(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ShareGPT row (``conversations``/``system``/``tools``) or a messages row (``messages``) as turns.

    Each turn: ``index``, ``role`` (system/user/assistant/tool), ``kind`` (the source's role name),
    ``text``, ``reasoning`` (None when the turn has no think block), ``tool_calls``, ``results`` (a tool
    turn's outputs, one per parallel call) and ``chars``.
    """
    turns: list[dict[str, Any]] = []
    system = row.get("system")
    tools = _parse_tools(row.get("tools"))
    if isinstance(row.get("conversations"), list):
        source = [
            (str(t.get("from", "")), t.get("value")) for t in row["conversations"] if isinstance(t, Mapping)
        ]
    elif isinstance(row.get("messages"), list):
        source = [
            (str(t.get("role", "")), t.get("content")) for t in row["messages"] if isinstance(t, Mapping)
        ]
    else:
        source = []
    for kind, value in source:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if kind == "system" and not turns:
            system = text if not system else f"{system}\n\n{text}"
            continue
        turns.append(_turn(len(turns), kind, text))
    meta = {k: v for k, v in row.items() if k.startswith("_")}
    return {
        "system": system if isinstance(system, str) else None,
        "tools": tools,
        "turns": turns,
        "meta": meta,
    }


def _turn(index: int, kind: str, text: str) -> dict[str, Any]:
    role = SHAREGPT_ROLES.get(kind, kind or "unknown")
    reasoning, visible = (None, text)
    calls: list[dict[str, Any]] = []
    if role == "assistant":
        reasoning, visible = split_reasoning(text)
        if kind == "function_call" or "<tool_call>" in visible:
            calls, visible = parse_tool_calls(visible)
    elif role == "user" and visible.lstrip().startswith("<tool_response>"):
        role, kind = "tool", kind or "tool_response"
    results: list[str] = []
    if role == "tool":
        wrapped = TOOL_RESPONSE_RE.findall(visible)
        results = wrapped if wrapped else visible.split(OBSERVATION_SEPARATOR)
    return {
        "index": index,
        "role": role,
        "kind": kind,
        "text": visible,
        "reasoning": reasoning,
        "tool_calls": calls,
        "results": results,
        "chars": len(text),
    }


def _parse_tools(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except ValueError:
            return [{"name": "(unparsable tools column)", "description": value[:200]}]
    if not isinstance(value, list):
        return []
    tools: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, Mapping):
            function = item.get("function") if isinstance(item.get("function"), Mapping) else item
            tools.append(
                {
                    "name": function.get("name"),
                    "description": function.get("description"),
                    "parameters": function.get("parameters"),
                }
            )
    return tools


def row_chars(row: Mapping[str, Any]) -> int:
    """Characters of every text the row renders (system, tools, turns), for the estimated histogram."""
    total = sum(len(str(row.get(k) or "")) for k in ("system", "tools"))
    for key, field_name in (("conversations", "value"), ("messages", "content")):
        for turn in row.get(key) or []:
            if isinstance(turn, Mapping):
                total += len(str(turn.get(field_name) or ""))
    return total


def histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Equal-width bins over [min, max]: ``edges`` (bins + 1) and ``counts``."""
    if not values:
        return {"edges": [], "counts": []}
    low, high = min(values), max(values)
    if high <= low:
        return {"edges": [low, low + 1], "counts": [len(values)]}
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    return {"edges": [round(low + i * width, 2) for i in range(bins + 1)], "counts": counts}


# ---------------------------------------------------------------------------------------- the catalog


class DatasetStore:
    """Datasets in ``artifacts/data/lf_data`` and the row indexes that make browsing cheap."""

    def __init__(self, files: ProjectFiles) -> None:
        self.files = files
        self._indexes: dict[Path, RowIndex] = {}
        self._lock = threading.Lock()

    @property
    def lf_dir(self) -> Path:
        return lf_data_dir(self.files.root)

    def dataset_info(self, directory: Path | None = None) -> dict[str, Any]:
        path = (directory or self.lf_dir) / "dataset_info.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def names(self) -> list[str]:
        """Data names: files registered in ``dataset_info.json`` plus any row file in the folder."""
        names: set[str] = set()
        for entry in self.dataset_info().values():
            if isinstance(entry, Mapping) and isinstance(entry.get("file_name"), str):
                stem = Path(entry["file_name"]).name
                for suffix in (".json", ".jsonl"):
                    stem = stem.removesuffix(suffix)
                names.add(stem)
        if self.lf_dir.is_dir():
            for path in self.lf_dir.glob("*.json"):
                if path.name != "dataset_info.json" and not path.name.endswith(".stats.json"):
                    names.add(path.stem)
        return sorted(n for n in names if DATA_NAME_RE.match(n) and self._rows_path(n) is not None)

    def _rows_path(self, name: str) -> Path | None:
        for suffix in (".json", ".jsonl"):
            path = self.lf_dir / f"{name}{suffix}"
            if path.is_file() and self.files.contained(path):
                return path
        return None

    def require(self, name: str) -> Path:
        """The rows file of ``name``; the name is matched, never joined unchecked."""
        path = self._rows_path(name) if DATA_NAME_RE.match(name) else None
        if path is None:
            raise DatasetNotFound(
                f"no dataset {name!r} in {self.files.relative(self.lf_dir)}/; "
                f"known: {', '.join(self.names()) or 'none'}"
            )
        return path

    def keys_for(self, name: str) -> list[str]:
        """The ``dataset_info.json`` keys whose file is ``<name>.json``."""
        return sorted(
            k
            for k, v in self.dataset_info().items()
            if isinstance(v, Mapping) and Path(str(v.get("file_name", ""))).stem == name
        )

    # per dataset -------------------------------------------------------------------------------------

    def index(self, name: str) -> RowIndex:
        path = self.require(name)
        stat = path.stat()
        with self._lock:
            cached = self._indexes.get(path)
            if cached is not None and cached.key == (stat.st_mtime_ns, stat.st_size):
                return cached
        built = build_row_index(path)
        with self._lock:
            self._indexes[path] = built
        return built

    def row(self, name: str, position: int) -> Any:
        index = self.index(name)
        if not 0 <= position < index.count:
            raise IndexError(
                f"row {position} out of range: {name} has {index.count} rows (0..{index.count - 1})"
            )
        if index.rows is not None:
            return index.rows[position]
        row = _parse_row_bytes(self.require(name), index.offsets[position])  # type: ignore[index]
        if row is None:
            raise ValueError(f"{name}: row {position} is not valid JSON (the file changed while reading?)")
        return row

    def card(self, name: str) -> tuple[str | None, str | None]:
        for candidate in (self.lf_dir / f"{name}.README.md", self.lf_dir / "README.md"):
            if candidate.is_file() and self.files.contained(candidate):
                return candidate.read_text(encoding="utf-8", errors="replace"), self.files.relative(candidate)
        return None, None

    def stats(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        path = self.lf_dir / f"{name}.stats.json"
        if not path.is_file() or self.files.contained(path) is None:
            return None, None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            logger.warning("%s: not valid JSON (%s)", path, exc)
            return None, self.files.relative(path)
        return (doc if isinstance(doc, dict) else None), self.files.relative(path)

    def token_histogram(self, name: str, stats: Mapping[str, Any] | None) -> dict[str, Any]:
        """Exact token lengths from the report's ``sample_stats.jsonl``, else an estimate from characters."""
        cutoff = ((stats or {}).get("settings") or {}).get("cutoff_len")
        sample_stats = report_dir(self.files.root, name) / "sample_stats.jsonl"
        values: list[float] = []
        if sample_stats.is_file() and self.files.contained(sample_stats):
            for line in sample_stats.read_bytes().splitlines():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("total_tokens"), int | float):
                    values.append(float(doc["total_tokens"]))
            if values:
                return {
                    **histogram(values),
                    "source": self.files.relative(sample_stats),
                    "exact": True,
                    "samples": len(values),
                    "cutoff_len": cutoff,
                }
        index = self.index(name)
        limit = min(index.count, ESTIMATE_ROWS_LIMIT)
        for position in range(limit):
            row = self.row(name, position)
            if isinstance(row, Mapping):
                values.append(math.ceil(row_chars(row) / CHARS_PER_TOKEN))
        note = (
            f"estimated as characters / {CHARS_PER_TOKEN:g} over {limit} of {index.count} rows "
            "(run the report pipeline for exact counts)"
        )
        return {
            **histogram(values),
            "source": note,
            "exact": False,
            "samples": len(values),
            "cutoff_len": cutoff,
        }

    def overview(self, name: str) -> dict[str, Any]:
        path = self.require(name)
        card, card_path = self.card(name)
        stats, stats_path = self.stats(name)
        index = self.index(name)
        return {
            "name": name,
            "rows_file": self.files.relative(path),
            "rows": index.count,
            "dataset_keys": self.keys_for(name),
            "card": card,
            "card_path": card_path,
            "stats": stats,
            "stats_path": stats_path,
            "histogram": self.token_histogram(name, stats),
            "model_turns": model_turns_view(stats),
        }

    def sample_list(self, name: str, offset: int, limit: int) -> dict[str, Any]:
        """One page of row summaries (instance, turns, tool calls) for the sample browser."""
        index = self.index(name)
        items: list[dict[str, Any]] = []
        for position in range(max(0, offset), min(index.count, max(0, offset) + limit)):
            row = self.row(name, position)
            if not isinstance(row, Mapping):
                continue
            conv = row.get("conversations") or row.get("messages") or []
            identity = row_identity(dict(row), position)
            items.append(
                {
                    "index": position,
                    "uid": identity["uid"],
                    "instance_id": identity["instance_id"],
                    "repo": identity["repo"],
                    "turns": len(conv) if isinstance(conv, list) else 0,
                    "tool_calls": sum(
                        1 for t in conv if isinstance(t, Mapping) and t.get("from") == "function_call"
                    ),
                    "chars": row_chars(row),
                }
            )
        return {"name": name, "count": index.count, "offset": offset, "items": items}


# ------------------------------------------------------------------------------------ run -> dataset


def model_turns_view(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stats' model-turn accounting as the page shows it: one line, one row per agent, the repairs.

    None when the stats hold none (a ready-made dataset, or stats written before the accounting existed).
    """
    turns = (stats or {}).get("model_turns")
    if not isinstance(turns, Mapping):
        return None
    agents = []
    for agent, entry in (turns.get("per_agent") or {}).items():
        if not isinstance(entry, Mapping):
            continue
        share = kept_share(entry)
        agents.append(
            {
                "agent": agent,
                "source": entry.get("source"),
                "output": entry.get("output"),
                "kept_pct": None if share is None else round(100 * share, 1),
                "lost": dict(entry.get("lost") or {}),
            }
        )
    share = kept_share(turns)
    return {
        "summary": summary_line(turns),
        "source": turns.get("source"),
        "output": turns.get("output"),
        "kept_pct": None if share is None else round(100 * share, 1),
        "lost": dict(turns.get("lost") or {}),
        "agents": agents,
        "repairs": dict((stats or {}).get("repairs") or {}),
    }


def run_dataset_ref(
    files: ProjectFiles, datasets: DatasetStore, training_yaml: Path | None
) -> dict[str, Any]:
    """The dataset a run trained on, from its training YAML's ``dataset`` / ``dataset_dir``."""
    if training_yaml is None:
        return {"available": False, "reason": "the run has no training YAML (archive or training_config)"}
    try:
        doc = yaml.safe_load(training_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return {"available": False, "reason": f"{files.relative(training_yaml)}: unreadable ({exc})"}
    keys = [k.strip() for k in str(doc.get("dataset") or "").split(",") if k.strip()]
    dataset_dir = doc.get("dataset_dir")
    ref: dict[str, Any] = {
        "dataset_keys": keys,
        "dataset_dir": dataset_dir,
        "training_yaml": files.relative(training_yaml),
        "datasets": [],
    }
    if not keys:
        return {**ref, "available": False, "reason": f"{files.relative(training_yaml)} has no 'dataset'"}
    directory = Path(str(dataset_dir)) if dataset_dir else datasets.lf_dir
    if not directory.is_absolute():
        directory = files.root / directory
    try:
        directory = files.check(directory)
    except ForbiddenPath:
        return {
            **ref,
            "available": False,
            "reason": f"dataset_dir {dataset_dir!r} is outside artifacts/ and "
            "data/; the dashboard does not read it",
        }
    if directory != datasets.lf_dir.resolve():
        return {
            **ref,
            "available": False,
            "reason": f"dataset_dir {dataset_dir!r} is not "
            f"{files.relative(datasets.lf_dir)}; only that folder is browsed",
        }
    info = datasets.dataset_info(directory)
    known = set(datasets.names())
    for key in keys:
        entry = info.get(key)
        file_name = entry.get("file_name") if isinstance(entry, Mapping) else None
        name = Path(str(file_name)).stem if file_name else None
        ref["datasets"].append({"key": key, "file_name": file_name, "name": name, "browsable": name in known})
    ref["available"] = any(d["browsable"] for d in ref["datasets"])
    if not ref["available"]:
        ref["reason"] = "none of the run's dataset keys resolves to a file in dataset_info.json"
    return ref
