"""Text utilities every layer needs."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


_REPLACEMENT = "\ufffd"


def replace_lone_surrogates(text: str) -> tuple[str, int]:
    """Replace unpaired UTF-16 surrogates (which cannot be encoded as UTF-8) with U+FFFD.

    ``json.loads`` turns an escaped lone ``\\ud83d`` into a str that crashes every UTF-8 writer (and
    PyArrow). A valid pair is already one code point in a Python str, so any surrogate left is lone.
    """
    if text.isascii() or not _SURROGATE.search(text):  # isascii is O(1) in CPython: most text ends here
        return text, 0
    return _SURROGATE.subn(_REPLACEMENT, text)
