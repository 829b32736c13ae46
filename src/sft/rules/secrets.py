"""Remove credentials from trajectories before they become training data.

Agent transcripts routinely contain keys: ``env`` dumps, ``cat ~/.netrc``, curl commands with
``Authorization`` headers, config files the agent opened. A model fine-tuned on them can regurgitate
them. ``SecretScrubber`` replaces every match with ``[REDACTED:<name>]`` and counts hits per rule name so
the run report can say what was removed.

The rules (``rules()``, in priority order):

1. the run's own credentials (``WANDB_API_KEY``, ``HF_TOKEN``), matched literally; values shorter than
   ``MIN_EXTRA_VALUE_LENGTH`` are ignored because redacting short strings would shred ordinary text;
2. ``LOCAL_RULES``: sft's own rules for shapes the maintained set lacks (Anthropic, Hugging Face, Google,
   GitHub fine-grained, npm tokens, ``Authorization:`` headers) or where a whole block must go
   (PEM/OpenSSH/PGP private keys, cut-off ones included);
3. the regex plugins of Yelp's ``detect-secrets`` (Apache-2.0, a dependency: their patterns are imported
   from the installed package at run time, see ``UPSTREAM_PLUGINS``): AWS, Azure storage, credentials in
   URLs (``postgres://user:password@host``), GitHub, GitLab, JWT, OpenAI, PyPI,
   SendGrid, Slack tokens and webhooks, Stripe, Square. ``tests/convert/test_convert_secrets_rules.py``
   uses detect-secrets' own detectors as the oracle.

Only the credential is replaced: a rule may name the group that holds it (``Authorization: Bearer
<token>``, ``aws_secret_access_key = <key>``, the password of a URL), and the label stays readable. A
whole-match rule also takes the rest of the token it matched in (``tail``): detectors match a key's
known minimum length, and the remainder of a longer key must not survive.

Speed: every rule has literal anchors (``sk-``, ``hf_``, ``AKIA``, ``://``, ...), and a string is only
searched when one occurs in it: one Aho-Corasick scan for all anchors (``ahocorasick_rs``, Rust's
``aho-corasick`` with SIMD prefilters) rules out most tool output at memory speed; then only the rules
whose anchors occurred run, as one precompiled alternation (cached per rule subset).
``scrub_trajectory`` runs the anchor tests once over all the strings of a trajectory joined together, and
returns the trajectory itself when none matches (almost always): rebuilding every message for nothing was
a tenth of the conversion time. detect-secrets is imported with this module (it pulls in ``requests``,
0.15 s or more), so the engine's forked workers inherit it instead of each importing it again.
``benchmarks/bench_secrets.py`` measures the throughput.

The rules aim at the providers' documented key shapes, with enough length that ordinary identifiers
(``sk-learn``, ``hf_hub_download``) never match. Left out of detect-secrets on purpose: the keyword and
high-entropy detectors and the public-IP detector (they would redact ordinary code, hashes and addresses
in transcripts whose point is code), the private-key detector (it matches the ``BEGIN ... PRIVATE KEY``
header alone, which would leave the key, and every library that mentions the header; sft's
``private_key`` rule removes the whole block), and the Artifactory, Cloudant, Discord, IBM, Mailchimp,
Softlayer, Telegram and Twilio patterns (no literal anchor, or one as common as ``AP``/``AC``: every
string would be searched, and their loose shapes hit ordinary words).
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import ahocorasick_rs
from detect_secrets import plugins  # imported here, so the engine's forked workers share the import

from sft.core.canonical import Message, Trajectory

MIN_EXTRA_VALUE_LENGTH = 8
_B = r"(?<![A-Za-z0-9_\-])"  # left boundary: not inside a longer token
_E = r"(?![A-Za-z0-9_\-])"  # right boundary
_TOKEN_TAIL = r"[A-Za-z0-9_\-]*"  # the rest of a token a whole-match rule matched the start of


@dataclass(frozen=True)
class Rule:
    """One secret shape: ``regex`` finds it when one of ``anchors`` occurs in the text.

    ``secret_group`` (0: the whole match) is the group of ``regex`` that holds the credential; the text
    around it in the match stays. ``origin`` says where the regex comes from (``sft`` or the upstream
    plugin).
    """

    name: str
    regex: str
    anchors: tuple[str, ...]
    secret_group: int = 0
    origin: str = "sft"


LOCAL_RULES: tuple[Rule, ...] = (
    Rule(
        "private_key",
        # PEM / OpenSSH / PGP blocks; a block cut off before its END line is removed to the end of the
        # base64 (backslashes included: a key inside a JSON string shows its newlines as ``\n``).
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,\-\\]*)",
        ("PRIVATE KEY-----", "PRIVATE KEY BLOCK-----"),
    ),
    Rule("anthropic", _B + r"sk-ant-[A-Za-z0-9_\-]{20,}", ("sk-ant-",)),
    Rule("openai", _B + r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}|[A-Za-z0-9]{32,})" + _E, ("sk-",)),
    Rule("huggingface", _B + r"hf_[A-Za-z0-9]{30,}" + _E, ("hf_",)),
    Rule(
        "github",
        _B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})" + _E,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule("aws_access_key_id", r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", ("AKIA", "ASIA")),
    Rule(
        "aws_secret_access_key",
        # Labelled, so any base64-ish value is the secret (real ones are 40 characters; a pasted one may
        # carry a stray character, and it must not survive because of it).
        r"((?i:aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?)([A-Za-z0-9/+=]{16,})",
        ("ecret_access_key", "ECRET_ACCESS_KEY"),
        secret_group=2,
    ),
    Rule("slack", _B + r"xox[abprs]-[A-Za-z0-9\-]{10,}", ("xox",)),
    Rule(
        "authorization",
        r"((?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token)\s+)([A-Za-z0-9._~+/=\-]{8,})",
        ("uthorization", "UTHORIZATION"),
        secret_group=2,
    ),
    # Google API keys (Maps, Gemini, Firebase, ...): "AIza" and 35 URL-safe characters.
    Rule("google_api_key", _B + r"AIza[0-9A-Za-z_\-]{35}" + _E, ("AIza",)),
    # npm access tokens (``NPM_TOKEN=npm_...``): "npm_" and 36 alphanumerics; and the value of an .npmrc
    # ``_authToken=`` whatever its shape (detect-secrets' NpmDetector takes the rest of the line, which in a
    # one-line JSON dump swallows the context of other secrets, so it is the tests' oracle only).
    Rule("npm", _B + r"npm_[A-Za-z0-9]{36}" + _E, ("npm_",)),
    Rule("npm", r"(_authToken\s*=\s*[\"']?)([^\s\"']+)", ("_authToken",), secret_group=2),
)


@dataclass(frozen=True)
class UpstreamPlugin:
    """How sft uses one detect-secrets ``RegexBasedDetector``: its ``denylist`` patterns, in order, get
    ``names`` (one per pattern, or one for all), ``anchors`` (per pattern, or one tuple for all) and the
    group holding the secret (``secret_groups``, per pattern; default the whole match)."""

    module: str
    cls: str
    names: tuple[str, ...]
    anchors: tuple[tuple[str, ...], ...]
    secret_groups: tuple[int, ...] = ()
    tails: tuple[str, ...] = ()  # per pattern; default _TOKEN_TAIL for whole-match patterns


UPSTREAM_PLUGINS: tuple[UpstreamPlugin, ...] = (
    UpstreamPlugin(
        "aws",
        "AWSKeyDetector",
        ("aws_access_key_id", "aws_secret_access_key"),
        (("A3T", "ABIA", "ACCA", "AKIA", "ASIA"), ("aws", "AWS", "Aws")),
        (0, 1),
    ),
    UpstreamPlugin(
        "azure_storage_key", "AzureStorageKeyDetector", ("azure_storage_key",), (("AccountKey=",),)
    ),
    UpstreamPlugin("basic_auth", "BasicAuthDetector", ("url_password",), (("://",),), (1,)),
    UpstreamPlugin(
        "github_token", "GitHubTokenDetector", ("github",), (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),)
    ),
    UpstreamPlugin(
        "gitlab_token",
        "GitLabTokenDetector",
        ("gitlab",),
        (
            ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-"),
            ("GR1348941",),
            ("glcbt-",),
            ("glimt-",),
            ("glptt-",),
            ("glagent-",),
            ("gloas-",),
        ),
    ),
    # The upstream JWT pattern ends lazily (header.payload.); the tail takes the signature too.
    UpstreamPlugin("jwt", "JwtTokenDetector", ("jwt",), (("eyJ",),), tails=(r"[A-Za-z0-9_\-+/=]*",)),
    UpstreamPlugin("openai", "OpenAIDetector", ("openai",), (("T3BlbkFJ",),)),
    UpstreamPlugin("pypi_token", "PypiTokenDetector", ("pypi",), (("pypi-AgE",),)),
    UpstreamPlugin("sendgrid", "SendGridDetector", ("sendgrid",), (("SG.",),)),
    UpstreamPlugin(
        "slack",
        "SlackDetector",
        ("slack", "slack_webhook"),
        (("xox", "XOX", "Xox"), ("hooks.slack.com", "HOOKS.SLACK.COM")),
    ),
    UpstreamPlugin("stripe", "StripeDetector", ("stripe",), (("k_live_",),)),
    UpstreamPlugin("square_oauth", "SquareOAuthDetector", ("square",), (("sq0csp-",),)),
)
_SCAN_WINDOW = 1 << 20  # characters the anchor automaton reads at once (see _Index._anchors_in)
_FLAG_LETTERS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def _per_pattern(values: tuple[Any, ...], i: int, default: Any) -> Any:
    return values[i] if len(values) > 1 else (values[0] if values else default)


def _scoped(pattern: re.Pattern[str]) -> str:
    """The pattern with its compile flags as a scoped group, so it can sit inside one alternation."""
    letters = "".join(letter for flag, letter in _FLAG_LETTERS if pattern.flags & flag)
    return f"(?{letters}:{pattern.pattern})" if letters else f"(?:{pattern.pattern})"


@functools.cache
def upstream_rules() -> tuple[Rule, ...]:
    """The selected detect-secrets patterns as rules."""
    out = []
    for plugin in UPSTREAM_PLUGINS:
        detector = getattr(importlib.import_module(f"{plugins.__name__}.{plugin.module}"), plugin.cls)
        patterns = list(detector.denylist)
        if len(plugin.anchors) not in (1, len(patterns)) or len(plugin.names) not in (1, len(patterns)):
            raise RuntimeError(
                f"detect-secrets {version('detect-secrets')}: {plugin.cls} has {len(patterns)} patterns, "
                f"sft.rules.secrets.UPSTREAM_PLUGINS describes {len(plugin.anchors)}: update the entry"
            )
        for i, pattern in enumerate(patterns):
            group = _per_pattern(plugin.secret_groups, i, 0)
            tail = "" if group else _per_pattern(plugin.tails, i, _TOKEN_TAIL)
            out.append(
                Rule(
                    _per_pattern(plugin.names, i, ""),
                    _scoped(pattern) + tail,
                    _per_pattern(plugin.anchors, i, ()),
                    group,
                    f"detect-secrets {plugin.cls}[{i}]",
                )
            )
    return tuple(out)


def rules() -> tuple[Rule, ...]:
    """Every built-in rule, in priority order (at one position, the first rule that matches wins)."""
    return LOCAL_RULES + upstream_rules()


def ruleset_id() -> str:
    """Names the rule set (for cache keys: a new detect-secrets release may change what is redacted)."""
    return f"sft-local-{len(LOCAL_RULES)}+detect-secrets-{version('detect-secrets')}"


# Dict keys whose value is a secret by label (the context rules above), e.g. headers and env dumps.
_LABEL_KEY = re.compile(r"(?i)authorization|aws_secret_access_key")


class _Pass:
    """One compiled alternation of some rules, and which outer group stands for which rule."""

    def __init__(self, selected: tuple[Rule, ...]) -> None:
        parts, self.outer = [], {}
        group = 1
        for rule in selected:
            compiled = re.compile(rule.regex)
            parts.append(f"({rule.regex})")
            self.outer[group] = rule
            group += 1 + compiled.groups
        self.regex = re.compile("|".join(parts))

    def rule_of(self, match: re.Match[str]) -> tuple[int, Rule]:
        # The outer group of the alternative that matched closes last, so it is ``lastindex``.
        index = match.lastindex
        if index in self.outer and match.start(index) == match.start() and match.end(index) == match.end():
            return index, self.outer[index]
        return next((i, r) for i, r in self.outer.items() if match.group(i) is not None)


class _Index:
    """The rules of one scrubber, their anchors in one Aho-Corasick automaton, and the compiled passes.

    Built once per set of run credentials (``_index``), not once per trial: the engine makes a scrubber
    for every trial.
    """

    def __init__(self, values: tuple[str, ...]) -> None:
        all_rules = list(rules())
        if values:
            # The run's own credentials go first so that a literal match wins over a generic shape.
            all_rules.insert(0, Rule("credential", "|".join(re.escape(v) for v in values), values))
        self.rules = tuple(all_rules)
        # anchor -> indexes of the rules it selects. An anchor that contains a shorter one is folded into
        # it (its presence implies the shorter one's).
        by_anchor: dict[str, set[int]] = {}
        for i, rule in enumerate(self.rules):
            for anchor in rule.anchors:
                by_anchor.setdefault(anchor, set()).add(i)
        for anchor in sorted(by_anchor, key=len, reverse=True):
            shorter = next((a for a in by_anchor if a != anchor and a in anchor), None)
            if shorter is not None:
                by_anchor[shorter] |= by_anchor.pop(anchor)
        self.anchors = tuple(by_anchor)
        # One scan finds every anchor (dozens of ``in`` tests would read the text dozens of times).
        # Rust's aho-corasick (with SIMD prefilters) scans clean text several times faster than a
        # character-at-a-time automaton; no anchor contains another (folded above), so the standard
        # overlapping search reports every anchor that occurs.
        self.automaton = ahocorasick_rs.AhoCorasick(list(by_anchor))
        self.rules_of_anchor = tuple(frozenset(selected) for selected in by_anchor.values())
        # Joins the strings of a trajectory for one pre-check; a character no anchor contains, so that no
        # anchor can match across two strings (None: check string by string).
        self.separator = next((c for c in "\0\x01\x02\x03" if not any(c in a for a in self.anchors)), None)
        self.passes: dict[frozenset[int], _Pass] = {}  # one per rule subset seen (a handful per run)

    def selected(self, text: str) -> frozenset[int]:
        """Indexes of the rules whose anchors occur in ``text``."""
        found = self._anchors_in(text, overlapping=True, first_only=False)
        return frozenset().union(*(self.rules_of_anchor[anchor] for anchor in found))

    def occurs(self, text: str) -> bool:
        """Does any anchor occur in ``text``?"""
        return bool(self._anchors_in(text, overlapping=False, first_only=True))

    def _anchors_in(self, text: str, *, overlapping: bool, first_only: bool) -> set[int]:
        """Indexes of the anchors found in ``text``, scanned in overlapping windows when it is long.

        The automaton maps its byte offsets back to character offsets with one machine word per byte of
        the text: a 200 MB tool output would cost 1.6 GB at once. Windows bound that map; each overlaps
        the next by the longest anchor less one character, so every occurrence lies whole in a window.
        """
        if len(text) <= _SCAN_WINDOW:
            return {anchor for anchor, _start, _end in self._matches(text, overlapping=overlapping)}
        found: set[int] = set()
        overlap = max(map(len, self.anchors)) - 1
        for start in range(0, len(text) - overlap, _SCAN_WINDOW - overlap):
            window = text[start : start + _SCAN_WINDOW]
            found.update(anchor for anchor, _start, _end in self._matches(window, overlapping=overlapping))
            if found and first_only:
                break
        return found

    def _matches(self, text: str, *, overlapping: bool) -> list[tuple[int, int, int]]:
        try:
            return self.automaton.find_matches_as_indexes(text, overlapping=overlapping)
        except UnicodeEncodeError:
            # A lone surrogate (a broken transcript) cannot cross into Rust as UTF-8. No anchor contains
            # one; "?" in its place can only add a candidate rule, which then runs on the real text.
            fixed = text.encode("utf-8", "replace").decode("utf-8")
            return self.automaton.find_matches_as_indexes(fixed, overlapping=overlapping)

    def compiled(self, selected: frozenset[int]) -> _Pass:
        found = self.passes.get(selected)
        if found is None:
            found = self.passes[selected] = _Pass(tuple(self.rules[i] for i in sorted(selected)))
        return found


@functools.lru_cache(maxsize=16)
def _index(values: tuple[str, ...]) -> _Index:
    return _Index(values)


class SecretScrubber:
    """Replace secrets with ``[REDACTED:<name>]``; ``counts`` accumulates hits per rule name."""

    def __init__(self, extra_values: list[str] | None = None) -> None:
        values = sorted(
            {v for v in (extra_values or []) if v and len(v) >= MIN_EXTRA_VALUE_LENGTH}, key=len, reverse=True
        )
        self._index = _index(tuple(values))
        self.counts: dict[str, int] = {}

    def might_contain(self, text: str) -> bool:
        """Cheap pre-check: does any literal anchor of any rule occur in ``text``?"""
        return bool(text) and self._index.occurs(text)

    def might_contain_any(self, texts: list[str]) -> bool:
        """``might_contain`` over many strings, in one pass over their concatenation when possible."""
        if self._index.separator is None:
            return any(self.might_contain(text) for text in texts)
        return self.might_contain(self._index.separator.join(texts))

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced (the same object when nothing matched)."""
        selected = self._index.selected(text) if text else frozenset()
        if not selected:
            return text
        compiled = self._index.compiled(selected)

        def replace(match: re.Match[str]) -> str:
            outer, rule = compiled.rule_of(match)
            self.counts[rule.name] = self.counts.get(rule.name, 0) + 1
            secret = outer + rule.secret_group
            return (
                match.string[match.start() : match.start(secret)]
                + f"[REDACTED:{rule.name}]"
                + match.string[match.end(secret) : match.end()]
            )

        return compiled.regex.sub(replace, text)

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
            return scrubbed[len(prefix) :]
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
    calls = [
        call.model_copy(update={"arguments": scrubber.scrub_value(call.arguments)})
        for call in message.tool_calls
    ]
    return message.model_copy(
        update={
            "content": scrubber.scrub(message.content),
            "reasoning_content": scrubber.scrub(message.reasoning_content),
            "tool_calls": calls,
        }
    )


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
    return traj.model_copy(
        update={"messages": messages, "tools": scrubber.scrub_value(traj.tools), "meta": meta}
    )
