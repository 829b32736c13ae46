"""Model-turn accounting (sft.core.turns) on generated jobs, against the generator's ground truth.

The expected numbers come from ``tests.support.jobgen`` alone: the model turns in each trial's files
(``GeneratedJob.source_model_turns``), the turns a faithful conversion loses and why
(``GeneratedJob.lost_model_turns``: side calls, aborted final responses, refused ATIF conversations) and the true
conversations (``GeneratedJob.truth``: one assistant message per kept model turn), for the planned trials and the
ATIF-only shape trials alike. Only the fate of a trajectory (which reject line, if any) is read from the
conversion's own rejects file, by uid.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from sft.config.kedro_bridge import run_paths
from sft.core.results import ConversionResult
from sft.core.turns import agent_lines, check_invariant, summary_line
from sft.engine.harbor import convert_job
from sft.rules.validate import TOOL_ERROR_PREFIXES
from sft.sources.scaffolds import adapter_for_agent
from tests.engine.conftest import engine_config, make_root
from tests.support.jobgen import SCAFFOLDS, GeneratedJob, TrialInfo, generate_demo_job, generate_job

NOT_PARSED = ("outcome", "repo_exclusion")


def _failed_turns(messages: list[Any]) -> int:
    """Assistant turns whose every call failed: ``drop_tool_errors`` removes them whole."""
    count = 0
    for index, message in enumerate(messages):
        if message.role != "assistant" or not message.tool_calls:
            continue
        results = []
        for follower in messages[index + 1 :]:
            if follower.role != "tool":
                break
            results.append(follower)
        failed = [r for r in results if r.is_error or r.content.lstrip().startswith(TOOL_ERROR_PREFIXES)]
        if results and len(failed) == len(message.tool_calls):
            count += 1
    return count


def _scaffold(info: TrialInfo) -> str:
    """The ledger's label of a trial's agent: a planned trial's scaffold, a shape trial's adapter."""
    return info.scaffold if info.scaffold in SCAFFOLDS else adapter_for_agent(info.scaffold).name


def expected_model_turns(
    job: GeneratedJob,
    result: ConversionResult,
    *,
    include_subagents: bool = True,
    drop_tool_errors: bool = False,
) -> dict[str, Any]:
    """source / output / lost per agent from the generator's truth (the fates from the reject lines)."""
    fate = {r["trajectory"]: f"{r['stage']}:{r['reason']}" for r in result.rejects if r["trajectory"]}
    trial_reject = {r["trial_name"]: (r["stage"], r["reason"]) for r in result.rejects if not r["trajectory"]}
    agents: defaultdict[str, dict[str, Any]] = defaultdict(
        lambda: {"source": 0, "output": 0, "lost": Counter()}
    )
    not_counted: Counter[str] = Counter()
    for info in [*job.trials, *job.atif_shape_trials]:
        rejected = trial_reject.get(info.trial_name)
        if rejected and rejected[0] in NOT_PARSED:
            not_counted[":".join(rejected)] += 1
            continue
        assert rejected is None, (info.trial_name, rejected)  # generated trials always parse
        convs = job.truth[info.trial_name]
        turns = [sum(m.role == "assistant" for m in c.messages) for c in convs]
        sub_turns = sum(n for c, n in zip(convs, turns, strict=True) if c.agent_type == "subagent")
        lost = job.lost_model_turns[info.trial_name]
        source_main = job.source_model_turns[info.trial_name] - sub_turns
        assert source_main == sum(turns) - sub_turns + sum(lost.values()), (
            info.trial_name
        )  # the truth adds up
        assert ("extract:side_call" in lost) == (info.plan.title_call and info.has_litellm), info.trial_name
        main = agents[f"{_scaffold(info)}/main"]
        main["source"] += source_main
        main["lost"].update(lost)
        index = 0
        for conv, n in zip(convs, turns, strict=True):
            entry = agents[f"{_scaffold(info)}/{conv.agent_type}"]
            if conv.agent_type == "subagent":
                entry["source"] += n
                if not include_subagents:
                    entry["lost"]["extract:subagents_skipped"] += n
                    continue
            uid = f"{info.trial_name}#{index}"
            index += 1
            if uid in fate:
                entry["lost"][fate[uid]] += n
                continue
            dropped = _failed_turns(conv.messages) if drop_tool_errors else 0
            entry["output"] += n - dropped
            if dropped:
                entry["lost"]["repair:dropped_tool_errors"] += dropped
    per_agent = {
        a: {"source": e["source"], "output": e["output"], "lost": dict(sorted((+e["lost"]).items()))}
        for a, e in sorted(agents.items())
    }
    lost_total: Counter[str] = Counter()
    for entry in per_agent.values():
        lost_total.update(entry["lost"])
    return {
        "source": sum(e["source"] for e in per_agent.values()),
        "output": sum(e["output"] for e in per_agent.values()),
        "lost": dict(sorted(lost_total.items())),
        "per_agent": per_agent,
        "trials_not_counted": dict(sorted(not_counted.items())),
    }


def _got(model_turns: dict[str, Any]) -> dict[str, Any]:
    assert model_turns["unsourced"] == 0
    assert all(e["unsourced"] == 0 for e in model_turns["per_agent"].values())
    check_invariant(model_turns)
    return {
        "source": model_turns["source"],
        "output": model_turns["output"],
        "lost": model_turns["lost"],
        "per_agent": {
            a: {k: e[k] for k in ("source", "output", "lost")} for a, e in model_turns["per_agent"].items()
        },
        "trials_not_counted": model_turns["trials_not_counted"],
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedJob:
    return generate_job(tmp_path_factory.mktemp("turns") / "job", n_trials=40, max_turns=6, seed=11)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedJob:
    return generate_demo_job(tmp_path_factory.mktemp("turns_demo") / "demo_job")


def _convert(job: GeneratedJob, root: Path, **conversion: Any) -> ConversionResult:
    cfg = engine_config(use_cache=False, **conversion)
    return convert_job(cfg, job.job_dir, make_root(root), num_workers=1, progress=False)


def test_demo_job_turns_per_agent_equal_the_truth(demo: GeneratedJob, tmp_path: Path) -> None:
    """All 22 trials of the demo job (16 planned + 6 ATIF-only shapes): every model turn is kept or lost with
    the reason the generator knows: the title generator's side calls, the aborted final responses (repaired,
    not rejected) and terminus-2's rebuilt default-mode ATIF (refused while reading, ``parse:rebuilt_atif``)."""
    assert len(demo.trials) + len(demo.atif_shape_trials) == 22
    result = _convert(demo, tmp_path)
    got = _got(result.funnel["model_turns"])
    assert got == expected_model_turns(demo, result)
    # the numbers themselves, so that a change in the generator or the converter is seen here
    assert (got["source"], got["output"], got["lost"]) == (
        67,
        61,
        {"extract:side_call": 2, "parse:rebuilt_atif": 2, "repair:aborted_empty_response": 2},
    )
    assert got["per_agent"]["terminus2/main"]["lost"] == {"parse:rebuilt_atif": 2}
    assert got["per_agent"]["codex/main"] == {
        "source": 3,
        "output": 3,
        "lost": {},
    }  # a split response is 1 turn
    assert got["per_agent"]["terminus2/subagent"] == {
        "source": 3,
        "output": 3,
        "lost": {},
    }  # copies: no turns
    assert got["trials_not_counted"] == {"outcome:not_resolved": 3, "repo_exclusion:excluded_repo": 3}
    assert summary_line(result.funnel["model_turns"]).startswith(
        "model turns: kept 61 of 67 (91.0%), lost: extract:side_call 2, parse:rebuilt_atif 2, "
        "repair:aborted_empty_response 2"
    )
    assert "  terminus2/main: kept 8 of 10, lost: parse:rebuilt_atif 2" in agent_lines(
        result.funnel["model_turns"]
    )
    # every trial read (no outcome or repo filter): the ledger counts each of the 22 trials' model turns
    every = _convert(demo, tmp_path / "every", instance_status="all", exclude_repos_file="")
    got = _got(every.funnel["model_turns"])
    assert got == expected_model_turns(demo, every)
    assert got["trials_not_counted"] == {} and every.funnel["model_turns"]["trials_counted"] == 22
    assert got["source"] == sum(demo.source_model_turns.values()) == 97
    assert (got["output"], got["lost"]) == (
        90,
        {"extract:side_call": 3, "parse:rebuilt_atif": 2, "repair:aborted_empty_response": 2},
    )


@pytest.mark.parametrize(
    "conversion",
    [
        pytest.param({"instance_status": "all", "exclude_repos_file": ""}, id="every-trial"),
        pytest.param(
            {"instance_status": "all", "max_instances": 9, "max_trajectories_per_instance": 1},
            id="selection-and-cap",
        ),
        pytest.param(
            {"instance_status": "all", "include_subagents": False, "drop_tool_errors": True},
            id="no-subagents-drop-tool-errors",
        ),
    ],
)
def test_generated_job_turns_per_agent_equal_the_truth(
    generated: GeneratedJob, tmp_path: Path, conversion: dict[str, Any]
) -> None:
    result = _convert(generated, tmp_path, **conversion)
    got = _got(result.funnel["model_turns"])
    want = expected_model_turns(
        generated,
        result,
        include_subagents=conversion.get("include_subagents", True),
        drop_tool_errors=conversion.get("drop_tool_errors", False),
    )
    assert got == want
    assert got["output"] > 0 and got["source"] > got["output"]
    if "max_instances" in conversion:
        assert got["lost"].get("max_instances:not_selected", 0) > 0
    if conversion.get("drop_tool_errors"):
        assert got["lost"].get("repair:dropped_tool_errors", 0) > 0
        assert got["lost"].get("extract:subagents_skipped", 0) > 0


def test_output_turns_are_the_trainable_turns_of_the_written_rows(
    generated: GeneratedJob, tmp_path: Path
) -> None:
    """Every written row's assistant turns are counted once: here no two rows share a turn."""
    result = _convert(generated, tmp_path, instance_status="all")
    rows_turns = sum(
        1
        for row in result.lf_rows
        for turn in row["conversations"]
        if turn["from"] in ("gpt", "function_call")
    )
    assert result.funnel["model_turns"]["output"] == rows_turns


def test_repairs_are_summed_over_written_trajectories(generated: GeneratedJob, tmp_path: Path) -> None:
    result = _convert(generated, tmp_path, instance_status="all", drop_tool_errors=True)
    repairs = result.funnel["repairs"]
    removed_calls = 0
    for traj in result.kept:
        assert traj.uid in result.turn_ledger.by_uid
    for record in result.turn_ledger.by_uid.values():
        if record.fate is None:
            removed_calls += record.repairs.get("dropped_tool_errors", 0)
    assert repairs.get("dropped_tool_errors") == removed_calls > 0


@pytest.mark.parametrize("policy", ["truncate_turns", "drop"])
def test_overlength_policy_turns_are_accounted(
    generated: GeneratedJob, tmp_path: Path, tiny_model_dir: Path, policy: str
) -> None:
    """The length node drops or cuts rows after conversion: the turns it removes are lost with its reason and
    the output is still exactly the assistant turns of the rows written."""
    from sft.pipelines.convert.nodes import apply_length_policy

    result = _convert(generated, tmp_path, instance_status="all")
    before = result.funnel["model_turns"]
    settings = engine_config(instance_status="all").model_copy(deep=True)
    settings.model.model_name_or_path = str(tiny_model_dir)
    settings.conversion.overlength = policy
    settings.training.cutoff_len = 1500
    out = apply_length_policy(result, settings, str(tmp_path), run_paths(settings, Path(tmp_path)))
    after = out.funnel["model_turns"]
    check_invariant(after)
    over = out.funnel["overlength"]
    assert over["dropped"] + over["truncated"] > 0
    rows_turns = sum(
        1 for row in out.lf_rows for turn in row["conversations"] if turn["from"] in ("gpt", "function_call")
    )
    assert after["output"] == rows_turns < before["output"]
    assert after["source"] == before["source"]
    lost_here = {
        k: v - before["lost"].get(k, 0) for k, v in after["lost"].items() if v != before["lost"].get(k, 0)
    }
    assert set(lost_here) <= {
        "overlength:truncated",
        "overlength:over_cutoff_len",
        "overlength:first_turn_over_cutoff_len",
    }
    assert lost_here.get("overlength:truncated", 0) == over["assistant_turns_removed"]
    assert sum(lost_here.values()) == before["output"] - after["output"]


def test_cached_and_parallel_runs_count_the_same_turns(generated: GeneratedJob, tmp_path: Path) -> None:
    cfg = engine_config(use_cache=True, instance_status="all")
    root = make_root(tmp_path / "root")
    first = convert_job(cfg, generated.job_dir, root, num_workers=1, progress=False)
    second = convert_job(cfg, generated.job_dir, root, num_workers=2, progress=False)
    assert second.funnel["cache"]["hits"] == len(generated.trials)
    assert second.funnel["model_turns"] == first.funnel["model_turns"]
    assert second.funnel["repairs"] == first.funnel["repairs"]
    assert _got(first.funnel["model_turns"]) == expected_model_turns(generated, first)
