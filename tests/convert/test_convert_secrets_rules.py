"""The rule set of sft.rules.secrets: every supported format is found, counted under its name, removed
whole; detect-secrets' own detectors (the upstream of the imported rules) are the oracle; ordinary text
that resembles a format survives."""

from __future__ import annotations

import importlib
import itertools
import re

import pytest

import sft.rules.secrets as secrets_module
from sft.rules.secrets import UPSTREAM_PLUGINS, SecretScrubber, rules, ruleset_id, upstream_rules
from tests.convert.secret_samples import SAMPLES, Sample


def test_at_least_twenty_formats_are_covered() -> None:
    assert len({s.format for s in SAMPLES}) >= 20
    # Every rule name the scrubber can report has a planted sample (so the leak test covers it).
    assert {r.name for r in rules()} <= {s.rule for s in SAMPLES}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.format)
def test_each_format_is_redacted_and_counted(sample: Sample) -> None:
    scrubber = SecretScrubber([])
    text = f"before\n{sample.line}\nafter"
    out = scrubber.scrub(text)
    for part in sample.secret.splitlines():
        assert part not in out, (sample.format, out)
    assert f"[REDACTED:{sample.rule}]" in out
    assert scrubber.counts == {sample.rule: 1}
    assert out.startswith("before\n") and out.endswith("\nafter")


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.plugin], ids=lambda s: s.format)
def test_what_detect_secrets_finds_is_gone(sample: Sample) -> None:
    """The oracle: detect-secrets' own detector finds a secret in the sample, and none of what it finds
    is left after scrubbing."""
    module, cls = sample.plugin.split(":")
    detector = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), cls)()
    found = [s for s in detector.analyze_string(sample.line) if len(s) > 3]
    if not found:  # GitHub's detector captures only the prefix ("ghp"): take its whole matches
        found = [m.group(0) for pattern in detector.denylist for m in pattern.finditer(sample.line)]
    assert found, f"detect-secrets {cls} finds nothing in {sample.line!r}: the sample no longer fits upstream"
    out = SecretScrubber([]).scrub(sample.line)
    assert [s for s in found if s in out] == []


# Patterns per used detect-secrets plugin, as UPSTREAM_PLUGINS describes them (anchors, names, groups).
DESCRIBED_PATTERNS = {
    "AWSKeyDetector": 2,
    "GitLabTokenDetector": 7,
    "PypiTokenDetector": 2,
    "SlackDetector": 2,
}


def test_every_pattern_of_each_used_plugin_is_a_rule() -> None:
    """A detect-secrets release that adds or drops a pattern fails here (and in upstream_rules), so the
    anchors and names in UPSTREAM_PLUGINS are reviewed."""
    imported = upstream_rules()
    for plugin in UPSTREAM_PLUGINS:
        detector = getattr(importlib.import_module(f"detect_secrets.plugins.{plugin.module}"), plugin.cls)
        ours = [r for r in imported if r.origin.startswith(f"detect-secrets {plugin.cls}[")]
        assert len(ours) == len(list(detector.denylist)) == DESCRIBED_PATTERNS.get(plugin.cls, 1), plugin.cls
        for rule, pattern in zip(ours, detector.denylist, strict=True):
            assert pattern.pattern in rule.regex
            assert rule.anchors, rule
            # Whatever the pattern matches in the samples holds one of the rule's anchors (else the
            # pre-check would skip a string the pattern matches).
            for sample in SAMPLES:
                for match in pattern.finditer(sample.line):
                    assert any(a in match.group(0) for a in rule.anchors), (rule, sample.format)
    assert "detect-secrets-" in ruleset_id()


@pytest.mark.parametrize(
    "text",
    [
        "git clone https://github.com/org/repo.git && git remote add up git@github.com:org/repo.git",
        "see https://user@example.com/path and ftp://host:21/file",
        "import glob; glob.glob('*.py')  # global settings",
        "AccountKey=short; SG.short.x; eyJ alone; pypi-AgE; sq0csp-x; hooks.slack.com/services",
        "npm_config_cache=/tmp/npm and npm_package_version=1.0.0",
        "AIzaShort and sk_live_short",
        "aws s3 ls s3://bucket --profile dev; AWS_REGION='us-east-1'",
    ],
)
def test_ordinary_text_resembling_a_format_is_untouched(text: str) -> None:
    scrubber = SecretScrubber([])
    assert scrubber.scrub(text) == text
    assert scrubber.counts == {}


def test_one_pass_reports_each_rule_by_name_in_mixed_text() -> None:
    """Several formats in one string: one alternation, and each hit counted under its own rule."""
    scrubber = SecretScrubber(["run-credential-0123456789"])
    text = " | ".join(s.line for s in SAMPLES) + " | run-credential-0123456789"
    out = scrubber.scrub(text)
    assert all(part not in out for s in SAMPLES for part in s.secret.splitlines())
    expected: dict[str, int] = {}
    for s in SAMPLES:
        expected[s.rule] = expected.get(s.rule, 0) + 1
    expected["credential"] = 1
    assert scrubber.counts == expected


def test_upstream_flags_are_kept_in_the_combined_pass() -> None:
    """Slack's upstream pattern is case-insensitive; inside the alternation it must stay so, and the
    others must not become so."""
    slack = next(r for r in upstream_rules() if r.name == "slack")
    assert slack.regex.startswith("(?i:")
    assert re.fullmatch(slack.regex, "XOXB-1234-abc")
    stripe = next(r for r in upstream_rules() if r.name == "stripe")
    assert not re.fullmatch(stripe.regex, "SK_LIVE_" + "A" * 24)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.format)
def test_a_secret_across_a_scan_window_boundary_is_redacted(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long texts are pre-checked window by window (bounded memory); a secret a window boundary cuts
    through must still select its rule, wherever the cut falls, in the first window or a later one.
    A small window makes every cut cheap to try."""
    window = 64
    monkeypatch.setattr(secrets_module, "_SCAN_WINDOW", window)
    credential = "run-credential-0123456789"
    step = window - (max(map(len, secrets_module._index((credential,)).anchors)) - 1)
    for cut, windows_before, tail in itertools.product(
        range(len(sample.line) + 1), (1, 2, 3), ("", "\n" + "y" * window)
    ):
        head = "x" * max(0, windows_before * step - cut - 1)
        text = head + "\n" + sample.line + tail
        scrubber = SecretScrubber([credential])
        out = scrubber.scrub(text)
        assert all(part not in out for part in sample.secret.splitlines()), (sample.format, cut)
        assert scrubber.counts == {sample.rule: 1}, (sample.format, cut, windows_before)


def test_a_long_text_without_secrets_is_left_alone_and_an_anchor_at_its_end_is_seen() -> None:
    window = secrets_module._SCAN_WINDOW
    scrubber = SecretScrubber([])
    clean = "PASSED tests/test_core.py::test_case\n" * (3 * window // 37)
    assert not scrubber.might_contain(clean)
    assert scrubber.scrub(clean) is clean
    assert scrubber.might_contain(clean + "ghp_")
    assert scrubber.might_contain("ghp_" + clean)


def test_an_anchor_is_seen_at_every_offset_of_a_windowed_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets_module, "_SCAN_WINDOW", 64)
    scrubber = SecretScrubber([])
    for offset in range(4 * 64):
        text = "x" * offset + "ghp_" + "x" * (4 * 64 - offset)
        assert scrubber.might_contain(text), offset
        assert scrubber.might_contain(text[: offset + 4]), offset
