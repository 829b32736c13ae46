"""SecretScrubber: one planted value per provider pattern is removed and counted; ordinary text survives."""

from __future__ import annotations

import pytest

from sft.rules.secrets import SecretScrubber, scrub_trajectory
from tests.convert.builders import assistant, call, tool, traj, user

PLANTED = {
    "openai": "sk-" + "A1b2C3d4" * 6,
    "openai_project": "sk-proj-" + "Xy9_Zw8-" * 12,
    "anthropic": "sk-ant-api03-" + "Qr7_St6-" * 11,
    "huggingface": "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ12345678",
    "github_pat_classic": "ghp_" + "0123456789abcdefghijABCDEFGHIJklmnop",
    "github_oauth": "gho_" + "0123456789abcdefghijABCDEFGHIJklmnop",
    "github_fine": "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "aws_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_session_id": "ASIAY34FZKBOKMUTVV7A",
    "slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
}
EXPECTED_NAME = {
    "openai": "openai",
    "openai_project": "openai",
    "anthropic": "anthropic",
    "huggingface": "huggingface",
    "github_pat_classic": "github",
    "github_oauth": "github",
    "github_fine": "github",
    "aws_id": "aws_access_key_id",
    "aws_session_id": "aws_access_key_id",
    "slack": "slack",
}
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234abcd\nQWERTYuiop+/=\n-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize("label", sorted(PLANTED))
def test_each_provider_pattern_is_redacted(label: str) -> None:
    scrubber = SecretScrubber([])
    secret = PLANTED[label]
    text = f"export TOKEN={secret}\nnext line"
    out = scrubber.scrub(text)
    assert secret not in out
    assert out == f"export TOKEN=[REDACTED:{EXPECTED_NAME[label]}]\nnext line"
    assert scrubber.counts == {EXPECTED_NAME[label]: 1}


def test_context_patterns_keep_their_label() -> None:
    scrubber = SecretScrubber([])
    out = scrubber.scrub(
        f"aws_secret_access_key = {AWS_SECRET}\n"
        "curl -H 'Authorization: Bearer abc.DEF-123_xyz' https://x\n"
        "AUTHORIZATION: Basic dXNlcjpwYXNzd29yZA==\n"
    )
    assert AWS_SECRET not in out and "abc.DEF-123_xyz" not in out and "dXNlcjpwYXNzd29yZA" not in out
    assert "aws_secret_access_key = [REDACTED:aws_secret_access_key]" in out
    assert "Authorization: Bearer [REDACTED:authorization]'" in out
    assert "AUTHORIZATION: Basic [REDACTED:authorization]" in out
    assert scrubber.counts == {"aws_secret_access_key": 1, "authorization": 2}


def test_private_key_blocks_including_truncated_ones() -> None:
    scrubber = SecretScrubber([])
    out = scrubber.scrub(f"key:\n{PRIVATE_KEY}\nafter")
    assert out == "key:\n[REDACTED:private_key]\nafter"
    truncated = scrubber.scrub("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA")
    assert truncated == "[REDACTED:private_key]"
    assert scrubber.counts == {"private_key": 2}


def test_run_credentials_are_redacted_literally() -> None:
    scrubber = SecretScrubber(["my-wandb-key-0123456789", "short", ""])
    out = scrubber.scrub("wandb login my-wandb-key-0123456789 and short words")
    assert out == "wandb login [REDACTED:credential] and short words"
    assert scrubber.counts == {"credential": 1}


@pytest.mark.parametrize(
    "text",
    [
        "pip install scikit-learn; import sklearn  # sk-learn is fine",
        "from huggingface_hub import hf_hub_download",
        "task-123 ghp_short AKIA_NOT_A_KEY xoxb- sk-ant-",
        "Authorization: Bearer $TOKEN",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----",
        "git checkout github_pattern_matching",
        "中文 text with emoji 😀 and a path /usr/lib/sk-tools",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    scrubber = SecretScrubber(["credential-value-xyz"])
    assert scrubber.scrub(text) == text
    assert scrubber.counts == {}


def test_scrub_trajectory_covers_every_text_field() -> None:
    key = PLANTED["huggingface"]
    t = traj(
        user(f"use {key}"),
        assistant(
            f"content {key}",
            reasoning=f"reason {key}",
            calls=[
                call(
                    arguments={"command": f"echo {key}", "env": {"nested": [f"token={key}", 7]}, "n": 3},
                    id="a",
                )
            ],
        ),
        tool(f"output {key}", id="a"),
        assistant("done"),
    )
    scrubber = SecretScrubber([])
    out = scrub_trajectory(t, scrubber)
    assert key not in out.model_dump_json()
    assert key in t.model_dump_json()  # the input is untouched
    assert out.messages[1].tool_calls[0].arguments["n"] == 3
    assert out.messages[1].tool_calls[0].arguments["env"]["nested"] == ["token=[REDACTED:huggingface]", 7]
    assert out.tools == t.tools
    assert scrubber.counts == {"huggingface": 6}


def test_large_clean_text_comes_back_as_the_same_object() -> None:
    # Speed is measured by benchmarks/bench_secrets.py, not asserted here; a clean string must not be copied.
    scrubber = SecretScrubber(["credential-value-xyz"])
    text = "def function(argument):\n    return argument * 2  # ordinary code line\n" * 20000
    assert scrubber.scrub(text) is text
    assert scrubber.might_contain(text) is False


def test_text_with_a_lone_surrogate_is_still_scrubbed() -> None:
    # A broken transcript can hold a lone surrogate, which cannot be encoded as UTF-8 for the anchor scan.
    key = PLANTED["huggingface"]
    scrubber = SecretScrubber(["credential-value-xyz"])
    out = scrubber.scrub(f"bad \ud800 byte, then {key} and credential-value-xyz")
    assert out == "bad \ud800 byte, then [REDACTED:huggingface] and [REDACTED:credential]"
    assert scrubber.counts == {"huggingface": 1, "credential": 1}
    assert scrubber.scrub("only \udfff here") == "only \udfff here"
