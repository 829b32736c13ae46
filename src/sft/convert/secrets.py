"""Remove credentials from trajectories before they become training data.

Agent transcripts routinely contain keys: ``env`` dumps, ``cat ~/.netrc``, curl commands with
``Authorization`` headers, config files the agent opened. A model fine-tuned on them can regurgitate
them. ``SecretScrubber`` replaces every match with ``[REDACTED:<name>]`` and counts hits per pattern so
the run report can say what was removed.

Speed: all patterns are one precompiled alternation, and a string is only searched when it contains one
of the patterns' literal anchors (``sk-``, ``hf_``, ``AKIA``, ...), which rules out most tool output with
a few C-level substring tests.

The patterns aim at the providers' documented key shapes, with enough length that ordinary identifiers
(``sk-learn``, ``hf_hub_download``) never match. Only the credential is replaced in context patterns
(``Authorization: Bearer <token>``, ``aws_secret_access_key = <key>``); the label stays readable.
Extra values (the run's own credentials) are matched literally; values shorter than
``MIN_EXTRA_VALUE_LENGTH`` are ignored because redacting short strings would shred ordinary text.
"""

from __future__ import annotations

import re
from typing import Any

from sft.convert.canonical import Trajectory

MIN_EXTRA_VALUE_LENGTH = 8
_B = r"(?<![A-Za-z0-9_\-])"  # left boundary: not inside a longer token
_E = r"(?![A-Za-z0-9_\-])"  # right boundary

# name -> (regex with an optional (?P<keep_...>) prefix group to keep, literal anchors for the pre-check)
PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "private_key": (
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s:,\-]*)",
        ("PRIVATE KEY-----",),
    ),
    "anthropic": (_B + r"sk-ant-[A-Za-z0-9_\-]{20,}", ("sk-ant-",)),
    "openai": (_B + r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}|[A-Za-z0-9]{32,})" + _E, ("sk-",)),
    "huggingface": (_B + r"hf_[A-Za-z0-9]{30,}" + _E, ("hf_",)),
    "github": (_B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})" + _E,
               ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    "aws_access_key_id": (r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", ("AKIA", "ASIA")),
    "aws_secret_access_key": (
        r"(?P<keep_aws>(?i:aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
        ("ecret_access_key", "ECRET_ACCESS_KEY"),
    ),
    "slack": (_B + r"xox[abprs]-[A-Za-z0-9\-]{10,}", ("xox",)),
    "authorization": (
        r"(?P<keep_auth>(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token)\s+)[A-Za-z0-9._~+/=\-]{8,}",
        ("uthorization", "UTHORIZATION"),
    ),
}


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
        self._names = (["credential"] if values else []) + list(PATTERNS)
        self.counts: dict[str, int] = {}

    def might_contain(self, text: str) -> bool:
        """Cheap pre-check: does any literal anchor of any pattern occur in ``text``?"""
        return any(anchor in text for anchor in self._anchors)

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
        """Scrub every string inside a JSON-like value (dict values, list items)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {key: self.scrub_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub_value(item) for item in value]
        return value


def scrub_trajectory(traj: Trajectory, scrubber: SecretScrubber) -> Trajectory:
    """A copy with contents, reasoning, tool arguments and tool outputs scrubbed (tool schemas untouched)."""
    messages = []
    for message in traj.messages:
        calls = [call.model_copy(update={"arguments": scrubber.scrub_value(call.arguments)})
                 for call in message.tool_calls]
        messages.append(message.model_copy(update={
            "content": scrubber.scrub(message.content),
            "reasoning_content": scrubber.scrub(message.reasoning_content),
            "tool_calls": calls,
        }))
    return traj.model_copy(update={"messages": messages})
