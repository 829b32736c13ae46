"""Remove credentials from trajectories before they become training data.

Agent transcripts routinely contain keys: ``env`` dumps, ``cat ~/.netrc``, curl commands with
``Authorization`` headers, config files the agent opened. A model fine-tuned on them can regurgitate
them. ``SecretScrubber`` replaces every match with ``[REDACTED:<name>]`` and counts hits per pattern so
the run report can say what was removed.

Speed: all patterns are one precompiled alternation, and a string is only searched when it contains one
of the patterns' literal anchors (``sk-``, ``hf_``, ``AKIA``, ...), which rules out most tool output with
a few C-level substring tests. ``scrub_trajectory`` runs those tests once over all the strings of a
trajectory joined together, and returns the trajectory itself when none matches (almost always): rebuilding
every message for nothing was a tenth of the conversion time.

The patterns aim at the providers' documented key shapes, with enough length that ordinary identifiers
(``sk-learn``, ``hf_hub_download``) never match. Only the credential is replaced in context patterns
(``Authorization: Bearer <token>``, ``aws_secret_access_key = <key>``); the label stays readable.
Extra values (the run's own credentials) are matched literally; values shorter than
``MIN_EXTRA_VALUE_LENGTH`` are ignored because redacting short strings would shred ordinary text.
"""

from __future__ import annotations

import re
from typing import Any

from sft.convert.canonical import Message, Trajectory

MIN_EXTRA_VALUE_LENGTH = 8
_B = r"(?<![A-Za-z0-9_\-])"  # left boundary: not inside a longer token
_E = r"(?![A-Za-z0-9_\-])"  # right boundary

# name -> (regex with an optional (?P<keep_...>) prefix group to keep, literal anchors for the pre-check)
PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "private_key": (
        # PEM / OpenSSH / PGP blocks; a block cut off before its END line is removed to the end of the
        # base64 (backslashes included: a key inside a JSON string shows its newlines as ``\n``).
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,\-\\]*)",
        ("PRIVATE KEY-----", "PRIVATE KEY BLOCK-----"),
    ),
    "anthropic": (_B + r"sk-ant-[A-Za-z0-9_\-]{20,}", ("sk-ant-",)),
    "openai": (_B + r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}|[A-Za-z0-9]{32,})" + _E, ("sk-",)),
    "huggingface": (_B + r"hf_[A-Za-z0-9]{30,}" + _E, ("hf_",)),
    "github": (_B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})" + _E,
               ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    "aws_access_key_id": (r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", ("AKIA", "ASIA")),
    "aws_secret_access_key": (
        # Labelled, so any base64-ish value is the secret (real ones are 40 characters; a pasted one may
        # carry a stray character, and it must not survive because of it).
        r"(?P<keep_aws>(?i:aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{16,}",
        ("ecret_access_key", "ECRET_ACCESS_KEY"),
    ),
    "slack": (_B + r"xox[abprs]-[A-Za-z0-9\-]{10,}", ("xox",)),
    "authorization": (
        r"(?P<keep_auth>(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token)\s+)[A-Za-z0-9._~+/=\-]{8,}",
        ("uthorization", "UTHORIZATION"),
    ),
}


# Dict keys whose value is a secret by label (the context patterns above), e.g. headers and env dumps.
_LABEL_KEY = re.compile(r"(?i)authorization|aws_secret_access_key")


class SecretScrubber:
    """Replace secrets with ``[REDACTED:<name>]``; ``counts`` accumulates hits per pattern name."""

    def __init__(self, extra_values: list[str] | None = None) -> None:
        values = sorted({v for v in (extra_values or []) if v and len(v) >= MIN_EXTRA_VALUE_LENGTH},
                        key=len, reverse=True)
        parts = [f"(?P<{name}>{regex})" for name, (regex, _anchors) in PATTERNS.items()]
        anchors = [a for _regex, names in PATTERNS.values() for a in names]
        if values:
            # The run's own credentials go first so that a literal match wins over a generic shape.
            parts.insert(0, "(?P<credential>" + "|".join(re.escape(v) for v in values) + ")")
            anchors.extend(values)
        self._regex = re.compile("|".join(parts))
        self._anchors = tuple(anchors)
        # Joins the strings of a trajectory for one pre-check; a character no anchor contains, so that no
        # anchor can match across two strings (None: check string by string).
        self._separator = next((c for c in "\0\x01\x02\x03" if not any(c in a for a in anchors)), None)
        self._names = (["credential"] if values else []) + list(PATTERNS)
        self.counts: dict[str, int] = {}

    def might_contain(self, text: str) -> bool:
        """Cheap pre-check: does any literal anchor of any pattern occur in ``text``?"""
        return any(anchor in text for anchor in self._anchors)

    def might_contain_any(self, texts: list[str]) -> bool:
        """``might_contain`` over many strings, in one pass over their concatenation when possible."""
        if self._separator is None:
            return any(self.might_contain(text) for text in texts)
        return self.might_contain(self._separator.join(texts))

    def _replace(self, match: re.Match[str]) -> str:
        name = next(n for n in self._names if match.group(n) is not None)
        self.counts[name] = self.counts.get(name, 0) + 1
        keep = next((match.group(g) for g in ("keep_aws", "keep_auth") if match.group(g) is not None), "")
        return f"{keep}[REDACTED:{name}]"

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced (the same object when nothing matched)."""
        if not text or not self.might_contain(text):
            return text
        return self._regex.sub(self._replace, text)

    def scrub_value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value (dict keys and values, list items).

        A dict value is scrubbed together with its key when the key is a label that marks it as secret
        (``{"Authorization": "Bearer ..."}``, ``{"AWS_SECRET_ACCESS_KEY": "..."}``): alone, the value has
        none of the shapes the patterns look for.
        """
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                self.scrub(key) if isinstance(key, str) else key: self._scrub_item(key, item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.scrub_value(item) for item in value]
        return value

    def _scrub_item(self, key: Any, item: Any) -> Any:
        if not (isinstance(key, str) and isinstance(item, str) and _LABEL_KEY.search(key)):
            return self.scrub_value(item)
        prefix = f"{key}: "
        scrubbed = self.scrub(prefix + item)
        if scrubbed.startswith(prefix):
            return scrubbed[len(prefix):]
        return self.scrub(item)  # the key itself held a secret; it is scrubbed on its own above


def _value_strings(value: Any, out: list[str]) -> None:
    """Append every string ``SecretScrubber.scrub_value`` would pass to ``scrub`` for ``value``.

    That is each string, each dict key, and for a labelled key with a string value (``_scrub_item``) the
    combined ``"<key>: <value>"`` too: an anchor can span the two (a credential value with ``": "`` in it).
    """
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                out.append(key)
                if isinstance(item, str) and _LABEL_KEY.search(key):
                    out.append(f"{key}: {item}")
            _value_strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _value_strings(item, out)


def _message_strings(message: Message) -> list[str]:
    """The strings of one message that ``scrub_trajectory`` scrubs."""
    out = [message.content, message.reasoning_content]
    for call in message.tool_calls:
        _value_strings(call.arguments, out)
    return out


def _scrub_message(message: Message, scrubber: SecretScrubber) -> Message:
    """The message itself when none of its strings has an anchor, else a scrubbed copy."""
    if not scrubber.might_contain_any(_message_strings(message)):
        return message
    calls = [call.model_copy(update={"arguments": scrubber.scrub_value(call.arguments)})
             for call in message.tool_calls]
    return message.model_copy(update={
        "content": scrubber.scrub(message.content),
        "reasoning_content": scrubber.scrub(message.reasoning_content),
        "tool_calls": calls,
    })


def scrub_trajectory(traj: Trajectory, scrubber: SecretScrubber) -> Trajectory:
    """Contents, reasoning, tool arguments and tool outputs scrubbed, and the strings of the tool schemas and
    ``meta.extra`` too (both are written to the dataset; a scaffold can put anything there). Numbers, ids
    and the rest of the metadata are untouched. The input is never mutated.

    Returns ``traj`` itself when no string of it contains any pattern's anchor (then no pattern and no
    credential value can match, and ``scrubber.counts`` would not change); otherwise a copy in which only
    the messages with an anchor are rebuilt (the others are shared with the input).
    """
    strings: list[str] = []
    for message in traj.messages:
        strings.extend(_message_strings(message))
    _value_strings(traj.tools, strings)
    _value_strings(traj.meta.extra, strings)
    if not scrubber.might_contain_any(strings):
        return traj
    messages = [_scrub_message(message, scrubber) for message in traj.messages]
    meta = traj.meta.model_copy(update={"extra": scrubber.scrub_value(traj.meta.extra)})
    return traj.model_copy(update={"messages": messages, "tools": scrubber.scrub_value(traj.tools), "meta": meta})
