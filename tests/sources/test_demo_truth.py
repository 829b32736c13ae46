"""End to end on the generated demo job: every scaffold's recovered conversations equal the ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.convert.validate import repair_and_validate
from sft.demo.jobgen import generate_demo_job
from sft.sources.harbor.trial import extract_trial


def _key(messages: list) -> list[tuple]:
    return [
        (m.role, m.content, m.reasoning_content, [(c.name, c.arguments) for c in m.tool_calls], m.is_error)
        for m in messages
    ]


@pytest.fixture(scope="module")
def demo_job(tmp_path_factory: pytest.TempPathFactory):
    return generate_demo_job(tmp_path_factory.mktemp("job") / "demo_job")


def test_every_trial_recovers_exactly_the_true_conversations(demo_job) -> None:
    checked = 0
    for trial_name, expected in demo_job.truth.items():
        trial = demo_job.job_dir / trial_name
        info_agent = next(t for t in [*demo_job.trials, *demo_job.atif_shape_trials] if t.trial_name == trial_name)
        kinds = {c.source_kind for c in expected}
        source = "auto" if len(kinds) != 1 else next(iter(kinds))
        ex = extract_trial(trial, demo_job.job_dir, info_agent.scaffold, trajectory_source=source)
        assert [r.reason for r in ex.rejects] == list(demo_job.expected_rejects.get(trial_name, {})), trial_name
        # the pipeline's repair step (trailing observations trimmed) runs before anything is kept
        repaired = [repair_and_validate(t, drop_tool_errors=False)[0] for t in ex.trajectories]
        assert all(r is not None for r in repaired), trial_name
        got = sorted((t.meta.agent_type, _key(t.messages)) for t in repaired)
        want = sorted((c.agent_type, _key(c.messages)) for c in expected if c.source_kind == ex.source_used)
        assert got == want, trial_name
        checked += 1
    assert checked >= 10


def test_atif_shape_trials_keep_or_count_every_model_turn(demo_job) -> None:
    """The ATIF-only shapes (codex, openhands, gemini-cli, decorated claude-code, terminus-2 rebuilt and
    summarised): with ``auto`` and the default options, every model turn is kept or counted by reason."""
    shapes = demo_job.atif_shape_trials
    assert {t.scaffold for t in shapes} == {"codex", "openhands", "gemini-cli", "claude-code", "terminus-2"}
    for info in shapes:
        ex = extract_trial(demo_job.job_dir / info.trial_name, demo_job.job_dir, "auto")
        kept = sum(m.role == "assistant" for t in ex.trajectories for m in t.messages)
        refused = sum(demo_job.expected_rejects[info.trial_name].values())
        assert [r.reason for r in ex.rejects] == list(demo_job.expected_rejects[info.trial_name]), info.trial_name
        assert kept + refused == demo_job.source_model_turns[info.trial_name], info.trial_name
        assert ex.counters.get("rebuilt_atif_dropped_turns", 0) == demo_job.expected_rejects[info.trial_name].get(
            "rebuilt_atif", 0)


def test_bundled_demo_job_matches_the_generator(demo_job, project_root: Path) -> None:
    bundled = project_root / "data" / "01_raw" / "demo_job"
    for path in sorted(p for p in demo_job.job_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(demo_job.job_dir)
        assert (bundled / rel).read_bytes() == path.read_bytes(), rel
