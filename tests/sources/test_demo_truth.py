"""End to end on generated jobs: every scaffold's recovered conversations equal the ground truth.

Two jobs: the bundled demo (hand-picked trials) and a larger generated one in which every real-world
proxy-log shape of issue 13 occurs several times (claude-code in the OpenAI shape with per-request churn,
OpenCode's two system prompts in both shapes, aborted final requests). On both: the rows are exactly the
truth, one row per true conversation, and no row is a prefix fragment of another.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from sft.engine.harbor import convert_job
from sft.rules.validate import repair_and_validate
from sft.sources.harbor.trial import extract_trial
from tests.engine.conftest import engine_config, make_root
from tests.support.jobgen import GeneratedJob, generate_demo_job, generate_job


def _key(messages: list) -> list[tuple]:
    return [
        (m.role, m.content, m.reasoning_content, [(c.name, c.arguments) for c in m.tool_calls], m.is_error)
        for m in messages
    ]


@pytest.fixture(scope="module")
def demo_job(tmp_path_factory: pytest.TempPathFactory) -> GeneratedJob:
    return generate_demo_job(tmp_path_factory.mktemp("job") / "demo_job")


@pytest.fixture(scope="module")
def churn_job(tmp_path_factory: pytest.TempPathFactory) -> GeneratedJob:
    return generate_job(tmp_path_factory.mktemp("churn") / "job", n_trials=48, seed=11, max_turns=9)


def _shape_counts(job: GeneratedJob) -> Counter[str]:
    counts: Counter[str] = Counter()
    for info in job.trials:
        plan = info.plan
        if not info.has_litellm:
            continue
        counts["claude-code openai"] += plan.scaffold == "claude-code" and plan.proxy_shape == "openai"
        counts["open-code two system openai"] += plan.two_system and not plan.proxy_shape
        counts["open-code two system anthropic"] += plan.two_system and plan.proxy_shape == "anthropic"
        counts["aborted final"] += plan.aborted_final
    return counts


def _check_truth(job: GeneratedJob) -> int:
    checked = 0
    for trial_name, expected in job.truth.items():
        trial = job.job_dir / trial_name
        info_agent = next(t for t in [*job.trials, *job.atif_shape_trials] if t.trial_name == trial_name)
        kinds = {c.source_kind for c in expected}
        source = "auto" if len(kinds) != 1 else next(iter(kinds))
        ex = extract_trial(trial, job.job_dir, info_agent.scaffold, trajectory_source=source)
        assert [r.reason for r in ex.rejects] == list(job.expected_rejects.get(trial_name, {})), trial_name
        # the pipeline's repair step (trailing observations trimmed) runs before anything is kept
        repaired = [repair_and_validate(t, drop_tool_errors=False)[0] for t in ex.trajectories]
        assert all(r is not None for r in repaired), trial_name
        got = sorted((t.meta.agent_type, _key(t.messages)) for t in repaired)
        want = sorted((c.agent_type, _key(c.messages)) for c in expected if c.source_kind == ex.source_used)
        assert got == want, trial_name
        checked += 1
    return checked


def test_atif_shape_trials_keep_or_count_every_model_turn(demo_job) -> None:
    """The ATIF-only shapes (codex, openhands, gemini-cli, decorated claude-code, terminus-2 rebuilt and
    summarised): with ``auto`` and the default options, every model turn is kept or counted by reason."""
    shapes = demo_job.atif_shape_trials
    assert {t.scaffold for t in shapes} == {"codex", "openhands", "gemini-cli", "claude-code", "terminus-2"}
    for info in shapes:
        ex = extract_trial(demo_job.job_dir / info.trial_name, demo_job.job_dir, "auto")
        kept = sum(m.role == "assistant" for t in ex.trajectories for m in t.messages)
        refused = sum(demo_job.expected_rejects[info.trial_name].values())
        assert [r.reason for r in ex.rejects] == list(demo_job.expected_rejects[info.trial_name]), (
            info.trial_name
        )
        assert kept + refused == demo_job.source_model_turns[info.trial_name], info.trial_name
        assert ex.counters.get("rebuilt_atif_dropped_turns", 0) == demo_job.expected_rejects[
            info.trial_name
        ].get("rebuilt_atif", 0)


def test_every_trial_recovers_exactly_the_true_conversations(demo_job: GeneratedJob) -> None:
    assert _check_truth(demo_job) >= 10
    assert all(_shape_counts(demo_job).values()) and len(_shape_counts(demo_job)) == 4


def test_churned_shapes_recover_exactly_the_true_conversations(churn_job: GeneratedJob) -> None:
    counts = _shape_counts(churn_job)
    assert min(counts.values()) >= 2 and len(counts) == 4, counts
    assert _check_truth(churn_job) == 48


@pytest.mark.parametrize("which", ["demo_job", "churn_job"])
def test_rows_are_the_truth_one_per_conversation_without_prefix_fragments(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Through the engine: each written trial has one row per true conversation, each row exactly the truth
    (content, reasoning, calls), the repairs are counted on the rows, and ``prefix_fragments`` is 0."""
    job: GeneratedJob = request.getfixturevalue(which)
    cfg = engine_config(
        use_cache=False,
        instance_status="all",
        keep_exception_trials=True,
        drop_tool_errors=False,
        exclude_repos_file="",
    )
    result = convert_job(cfg, job.job_dir, make_root(tmp_path / "root"), num_workers=1, progress=False)
    assert result.funnel["funnel"]["prefix_fragments"] == 0
    rows: dict[str, list] = {}
    for trajectory in result.kept:
        rows.setdefault(trajectory.meta.trial_name, []).append(trajectory)
    # the ATIF-only shape trials' refusals are their own test's subject (above); nothing else is refused
    unexpected = [
        r for r in result.rejects if r["reason"] not in job.expected_rejects.get(r["trial_name"], {})
    ]
    assert not unexpected, unexpected[:3]
    planned = {t.trial_name for t in job.trials}
    assert planned <= set(rows)
    repairs: Counter[str] = Counter()
    for trial_name, expected in job.truth.items():
        if trial_name not in planned:
            continue
        got = rows[trial_name]
        source = got[0].meta.source_kind
        want = expected  # terminus2's truth is its ATIF; the engine reads its proxy log: the same turns
        assert len(got) == len(want), trial_name  # one row per distinct conversation
        assert sorted((t.meta.agent_type, _key(t.messages)) for t in got) == sorted(
            (c.agent_type, _key(c.messages)) for c in want
        ), trial_name
        for trajectory in got:
            repairs.update(trajectory.meta.extra.get("repairs") or {})
            dropped = trajectory.meta.extra.get("dropped_model_turns") or {}
            plan = next(t.plan for t in job.trials if t.trial_name == trial_name)
            aborted = plan.aborted_final and trajectory.meta.agent_type == "main" and source == "litellm"
            assert dropped == ({"aborted_empty_response": 1} if aborted else {}), trial_name
    counts = _shape_counts(job)
    assert repairs["merged_system_messages"] == counts["open-code two system openai"]
    assert repairs["trimmed_aborted_final_turn"] == counts["aborted final"]


def test_bundled_demo_job_matches_the_generator(demo_job: GeneratedJob, project_root: Path) -> None:
    bundled = project_root / "data" / "01_raw" / "demo_job"
    for path in sorted(p for p in demo_job.job_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(demo_job.job_dir)
        assert (bundled / rel).read_bytes() == path.read_bytes(), rel
    generated = {p.relative_to(demo_job.job_dir) for p in demo_job.job_dir.rglob("*") if p.is_file()}
    assert generated == {p.relative_to(bundled) for p in bundled.rglob("*") if p.is_file()}
