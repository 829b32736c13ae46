"""The invariant ``funnel.prefix_fragments == 0``: no written row is a strict prefix of another row of its trial."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sft.engine import harbor
from sft.engine.harbor import convert_job, strict_prefix_of
from sft.sources.harbor import litellm
from tests.conftest import PROJECT_ROOT
from tests.convert.builders import assistant, call, system, tool, traj, user
from tests.engine.conftest import engine_config, make_root

BILLING = "x-anthropic-billing-header: cc_version=2.1.118.{}; cc_entrypoint=sdk-cli; cch={};"


def _indexed(*trajectories):
    for index, trajectory in enumerate(trajectories):
        trajectory.meta.trajectory_index = index
    return list(trajectories)


def test_strict_prefix_compares_what_the_model_saw() -> None:
    head = [user(), assistant("look", reasoning="r1", calls=[call(id="c1")]), tool("a.py", id="c1")]
    short = traj(
        system(BILLING.format("a1", "0001") + "\nYou are Claude Code."),
        *head,
        assistant("done", reasoning="only in the response"),
    )
    long = traj(
        system(BILLING.format("b2", "0002") + "\nYou are Claude Code."),
        *head,
        assistant("done"),
        user("and the tests?"),
        assistant("they pass"),
    )
    other = traj(system("You are Claude Code."), user("another task"), assistant("ok"))
    same = traj(*long.messages)
    # billing values and reasoning differ, the rest is equal: a fragment; an equal row is not a strict prefix
    assert strict_prefix_of(_indexed(short, long, other, same)) == [[1, 3], [], [], []]


def _convert(job: Path, root: Path):
    cfg = engine_config(use_cache=False, instance_status="all", keep_exception_trials=True)
    return convert_job(cfg, job, make_root(root), num_workers=1, progress=False)


def test_bundled_demo_job_has_no_prefix_fragments(tmp_path: Path) -> None:
    result = _convert(PROJECT_ROOT / "data" / "01_raw" / "demo_job", tmp_path / "root")
    assert result.funnel["funnel"]["rows_written"] > 5
    assert result.funnel["funnel"]["prefix_fragments"] == 0


def test_generated_job_has_no_prefix_fragments(small_job: Path, tmp_path: Path) -> None:
    result = _convert(small_job, tmp_path / "root")
    assert result.funnel["funnel"]["rows_written"] > 5
    assert result.funnel["funnel"]["prefix_fragments"] == 0


def test_the_check_fires_when_dedup_keeps_every_request(
    small_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Proves the invariant can fail: without prefix de-duplication every request is a row."""
    real = litellm.dedup_conversations

    def keep_all(conversations, **kwargs):
        result = real(conversations, **kwargs)
        result.kept = list(range(len(conversations)))
        return result

    monkeypatch.setattr(litellm, "dedup_conversations", keep_all)
    with caplog.at_level(logging.WARNING, logger=harbor.__name__):
        result = _convert(small_job, tmp_path / "root")
    fragments = result.funnel["funnel"]["prefix_fragments"]
    assert fragments > 10
    assert any("prefix_fragments" in r.getMessage() and "__" in r.getMessage() for r in caplog.records)
