"""Write ``runtime_info.output`` into the selected config file, touching nothing else.

Why not a plain YAML dump: config.yaml is hand-written and commented, and a full round-trip dump (even
ruamel's) rewrites details such as ``null`` -> empty. Why not the reference's line pattern
(``^  output:``): it breaks on other indents or a second match. So ruamel.yaml's round-trip parser
locates the ``runtime_info.output`` node (line and column), only those lines are replaced with a freshly
dumped block, and the result is parsed again and compared with what was intended before the file is
atomically replaced under ``file_lock(config_path)``. Every byte outside the output block is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from sft.core.io_utils import atomic_write_text, file_lock

logger = logging.getLogger(__name__)


class WriteBackError(RuntimeError):
    """The config file cannot be updated safely (names the file and the reason)."""


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _block_end(lines: list[str], start: int, key_col: int) -> int:
    """Index one past the last line of the block that starts at ``start`` (key at column ``key_col``).

    The block runs while lines are indented deeper than the key (blank lines included); trailing blank
    and comment lines are left outside, since they introduce whatever follows.
    """
    end = start + 1
    last_content = start
    while end < len(lines):
        line = lines[end]
        if line.strip() and _indent_of(line) <= key_col:
            break
        if not _is_blank_or_comment(line):
            last_content = end
        end += 1
    return last_content + 1


def _dump_output_block(output: Mapping[str, Any], indent: int) -> list[str]:
    text = yaml.safe_dump(
        {"output": _plain(output)}, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )
    pad = " " * indent
    return [pad + line + "\n" for line in text.splitlines()]


def _plain(value: Any) -> Any:
    """JSON-like plain data (Paths to str, tuples to lists) so safe_dump accepts it."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def render_with_output(text: str, output: Mapping[str, Any], source: str = "<config>") -> str:
    """``text`` with ``runtime_info.output`` replaced (or appended to ``runtime_info``) by ``output``."""
    rt = YAML(typ="rt")
    try:
        data = rt.load(text)
    except Exception as exc:  # ruamel raises several unrelated error types
        raise WriteBackError(f"{source}: not valid YAML ({exc})") from exc
    runtime_info = data.get("runtime_info") if isinstance(data, CommentedMap) else None
    if not isinstance(runtime_info, CommentedMap):
        raise WriteBackError(f"{source}: no block-style runtime_info mapping to write the output into")
    if getattr(runtime_info, "fa", None) is not None and runtime_info.fa.flow_style():
        raise WriteBackError(f"{source}: runtime_info is a flow mapping {{...}}; write it in block style")

    lines = text.splitlines(keepends=True)
    if "output" in runtime_info:
        start, col = runtime_info.lc.key("output")
        end = _block_end(lines, start, col)
    else:
        keys = list(runtime_info.keys())
        if not keys:
            raise WriteBackError(f"{source}: runtime_info is empty; expected runtime_info.input")
        last_line, col = runtime_info.lc.key(keys[-1])
        start = end = _block_end(lines, last_line, col)
        if start == len(lines) and lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"  # appending after a last line that has no newline
    new_lines = lines[:start] + _dump_output_block(output, col) + lines[end:]
    return "".join(new_lines)


def _verify(original: str, updated: str, output: Mapping[str, Any], source: str) -> None:
    """The update changed exactly ``runtime_info.output`` and nothing else, as parsed data."""
    before = yaml.safe_load(original)
    after = yaml.safe_load(updated)
    expected = dict(before)
    expected["runtime_info"] = {**before["runtime_info"], "output": _plain(output)}
    if after != expected:
        raise WriteBackError(
            f"{source}: the edited file would not parse back to the intended content; not written. "
            "Report this with the config file attached"
        )


def write_runtime_output(config_path: Path, output: Mapping[str, Any]) -> None:
    """Replace only ``runtime_info.output`` of ``config_path``, under its lock, atomically."""
    config_path = Path(config_path)
    with file_lock(config_path):
        if not config_path.is_file():
            raise WriteBackError(f"{config_path}: config file not found; cannot write runtime_info.output")
        original = config_path.read_text(encoding="utf-8")
        updated = render_with_output(original, output, str(config_path))
        _verify(original, updated, output, str(config_path))
        atomic_write_text(config_path, updated)
    logger.info("wrote runtime_info.output into %s", config_path)
