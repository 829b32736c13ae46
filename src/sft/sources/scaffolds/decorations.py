"""Harbor's decorations of claude-code tool results in ATIF, taken back off to the text the model saw.

Evidence: Harbor's claude-code converter, ``ClaudeCode._format_tool_result`` in
``src/harbor/agents/installed/claude_code.py`` (read in PyPI ``harbor==0.25.0``; GitHub
https://github.com/harbor-framework/harbor/blob/main/src/harbor/agents/installed/claude_code.py), builds an
observation's ``content`` from the session's ``tool_result`` block as::

    parts = [each content part .strip(); a non-string part as json.dumps(part)]      # what the model saw
    parts += ["\n".join(["[stdout]\n" + stdout, "[stderr]\n" + stderr, "[exit_code] N",
                         "[interrupted] X", "[is_image] X", "[metadata] " + json.dumps(rest)])]  # from toolUseResult
    parts += ["[error] tool reported failure"]                                          # when is_error
    content = "\n\n".join(parts)

Only the first group went to the model (Claude Code sends the ``tool_result`` block); ``toolUseResult``
is the session's own record (stdout duplicates the Bash output, ``[metadata]`` holds file paths, sizes,
patches). When the file keeps ``extra.tool_result_metadata.raw_tool_result`` (Harbor >= 0.2x) that raw
block is used instead and nothing here runs; this is the fallback for files without it.

The rule is strict so that real output is never cut: the decoration block must start after a blank line
(or at the start), consist only of Harbor's chunk markers in Harbor's order, end with a ``[metadata]``
line that parses as a JSON object or with ``[stdout]``/``[stderr]`` chunks whose text appears in the part
before it (a duplicate), and an ``[error] tool reported failure`` tail is recognised only behind it or alone.
A part that is exactly ``json.dumps({"type": "text", "text": X})`` is unwrapped back to ``X``.
"""

from __future__ import annotations

import json
import re

from sft.sources.harbor.atif import StrippedText

ERROR_TAIL = "[error] tool reported failure"
# The chunk markers of _format_tool_result, in the order it appends them.
_MARKERS = ("[stdout]\n", "[stderr]\n", "[exit_code] ", "[interrupted] ", "[is_image] ", "[metadata] ")
_BLOCK_START = re.compile(
    r"\n\n(?=\[(?:stdout\]\n|stderr\]\n|exit_code\] |interrupted\] |is_image\] |metadata\] \{))"
)
_LINE_MARKER = re.compile(
    r"^\[(?:stdout\]$|stderr\]$|exit_code\] |interrupted\] |is_image\] |metadata\] )", re.M
)


def _chunks(block: str) -> list[tuple[str, str]] | None:
    """``[(marker, body)]`` if ``block`` is a sequence of Harbor chunks in Harbor's order, else None."""
    starts = [m.start() for m in _LINE_MARKER.finditer(block)]
    if not starts or starts[0] != 0:
        return None
    chunks: list[tuple[str, str]] = []
    last_rank = -1
    for index, start in enumerate(starts):
        end = starts[index + 1] - 1 if index + 1 < len(starts) else len(block)  # -1: the joining newline
        piece = block[start:end]
        marker = next((m for m in _MARKERS if piece.startswith(m) or piece == m.rstrip("\n")), None)
        if marker is None:
            return None
        rank = _MARKERS.index(marker)
        if marker in ("[stdout]\n", "[stderr]\n"):
            if rank <= last_rank:  # stdout text may itself contain a marker line: only one of each
                # a repeated marker inside stdout text: glue it back onto the previous chunk
                previous_marker, previous_body = chunks[-1]
                chunks[-1] = (previous_marker, previous_body + "\n" + piece)
                continue
        elif rank <= last_rank:
            return None
        last_rank = rank
        chunks.append((marker, piece[len(marker) :]))
    return chunks


def _is_duplicate_block(head: str, block: str) -> bool:
    chunks = _chunks(block)
    if not chunks:
        return False
    marker, body = chunks[-1]
    if marker == "[metadata] ":
        try:
            if not isinstance(json.loads(body), dict):
                return False
        except ValueError:
            return False
    for marker, body in chunks:
        if marker in ("[stdout]\n", "[stderr]\n") and body.strip() and body.strip() not in head:
            return False
    return marker == "[metadata] " or any(m in ("[stdout]\n", "[stderr]\n") for m, _ in chunks)


def _unwrap_json_text_part(part: str) -> str:
    """``{"type": "text", "text": X}`` (Harbor's json.dumps of a list content part) -> ``X``."""
    if not (part.startswith("{") and part.endswith("}")):
        return part
    try:
        value = json.loads(part)
    except ValueError:
        return part
    if isinstance(value, dict) and value.get("type") == "text" and isinstance(value.get("text"), str):
        if set(value) <= {"type", "text", "cache_control"}:
            return value["text"]
    return part


def strip_harbor_decorations(text: str) -> StrippedText | None:
    """The model-visible text of a Harbor-decorated claude-code tool result, or None when undecorated."""
    body, is_error = text, False
    if body == ERROR_TAIL or body.endswith("\n\n" + ERROR_TAIL):
        body, is_error = body[: -len(ERROR_TAIL)].removesuffix("\n\n"), True
    changed = is_error
    cut = None
    if _LINE_MARKER.match(body) and _is_duplicate_block("", body) and body.startswith("[metadata] "):
        cut = 0  # no content at all, only Harbor's metadata line
    else:
        for match in _BLOCK_START.finditer(body):
            if _is_duplicate_block(body[: match.start()], body[match.end() :]):
                cut = match.start()
                break
    if cut is not None:
        body, changed = body[:cut], True
    parts = body.split("\n\n")
    unwrapped = [_unwrap_json_text_part(p) for p in parts]
    if unwrapped != parts:
        body, changed = "\n\n".join(unwrapped), True
    return StrippedText(body, is_error) if changed else None
