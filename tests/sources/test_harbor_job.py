"""Trial discovery and metadata: instance id, repo, rewards, exceptions, usage, agent dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sft.sources.harbor.job import (
    TrialError,
    discover_trials,
    job_exception_lists,
    job_reward_lists,
    parse_repo,
    read_job_result,
    read_trial_info,
)


def test_real_trial_result_example(harbor, fixtures_dir: Path) -> None:
    trial_dir = harbor.job_dir / "hello-world__AbCdEfG"
    harbor.copy_fixture("trial_result.example.json", trial_dir / "result.json")
    (trial_dir / "agent").mkdir()
    info = read_trial_info(trial_dir)
    assert info.instance_id == "hello-world"  # result.json config.task.path (no config.json)
    assert info.repo is None
    assert info.rewards == {"reward": 1.0} and info.reward == 1.0
    assert info.exception_type is None
    assert (info.agent_name, info.agent_version) == ("claude-code", "2.1.222")
    assert (info.teacher_model, info.teacher_provider) == ("claude-sonnet-4-5", "anthropic")
    assert info.usage.n_input_tokens == 37933 and info.usage.n_cache_tokens == 32693
    assert info.usage.n_output_tokens == 107 and info.usage.cost_usd == pytest.approx(0.0312)
    assert info.agent_dirs == [trial_dir / "agent"] and not info.is_multistep
    assert any("config.json is missing" in p for p in info.problems)


def test_real_exception_example(harbor) -> None:
    trial_dir = harbor.job_dir / "hello-world__HiJkLmN"
    harbor.copy_fixture("trial_result.exception.example.json", trial_dir / "result.json")
    info = read_trial_info(trial_dir)
    assert info.exception_type == "AgentTimeoutError"
    assert info.exception_message and "timed out" in info.exception_message
    assert info.rewards is None and info.reward is None


def test_instance_id_comes_from_config_not_truncated_dir_name(harbor) -> None:
    long_id = "scikit-learn__scikit-learn-10297"
    trial_dir = harbor.trial("scikit-learn__scikit-learn-1029__Xy12Abc", instance_id=long_id)
    info = read_trial_info(trial_dir)
    assert info.instance_id == long_id
    assert info.repo == "scikit-learn/scikit-learn"
    assert info.trial_name == "scikit-learn__scikit-learn-1029__Xy12Abc"


def test_instance_id_fallbacks(harbor) -> None:
    trial_dir = harbor.trial("t1", instance_id="astropy__astropy-12907", write_config=False)
    assert read_trial_info(trial_dir).instance_id == "astropy__astropy-12907"  # task_id.path
    result = json.loads((trial_dir / "result.json").read_text())
    result["task_id"] = {"org": "x", "name": "y"}
    result["task_name"] = "harbor/hello-world"
    (trial_dir / "result.json").write_text(json.dumps(result))
    assert read_trial_info(trial_dir).instance_id == "y"  # task_id.name before task_name
    result["task_id"] = {}
    (trial_dir / "result.json").write_text(json.dumps(result))
    assert read_trial_info(trial_dir).instance_id == "hello-world"  # task_name basename
    result["task_name"] = None
    (trial_dir / "result.json").write_text(json.dumps(result))
    with pytest.raises(TrialError) as err:
        read_trial_info(trial_dir)
    assert err.value.reason_code == "no_instance_id"


@pytest.mark.parametrize(
    ("instance_id", "repo"),
    [
        ("django__django-12345", "django/django"),
        ("pytest-dev__pytest-5103", "pytest-dev/pytest"),
        ("owner.name__repo_name.js-7", "owner.name/repo_name.js"),
        ("hello-world", None),
        ("django__django", None),
    ],
)
def test_parse_repo(instance_id: str, repo: str | None) -> None:
    assert parse_repo(instance_id) == repo


def test_rewards_any_key_and_single_value(harbor) -> None:
    info = read_trial_info(harbor.trial("a", rewards={"pass_rate": 0.5}))
    assert info.rewards == {"pass_rate": 0.5} and info.reward == 0.5
    info = read_trial_info(harbor.trial("b", rewards={"a": 1, "b": 0}))
    assert info.reward is None and info.rewards == {"a": 1, "b": 0}


def test_rewards_fall_back_to_verifier_files(harbor) -> None:
    trial_dir = harbor.trial("c", rewards={})
    (trial_dir / "verifier").mkdir()
    (trial_dir / "verifier" / "reward.txt").write_text("0.0\n")
    assert read_trial_info(trial_dir).reward == 0.0
    (trial_dir / "verifier" / "reward.json").write_text('{"reward": 1}')
    info = read_trial_info(trial_dir)
    assert info.rewards == {"reward": 1} and info.reward == 1.0  # reward.json wins


def test_exception_and_reward_together(harbor) -> None:
    info = read_trial_info(harbor.trial("d", exception_type="AgentTimeoutError", rewards={"reward": 1.0}))
    assert info.exception_type == "AgentTimeoutError" and info.reward == 1.0


def test_multistep_trial(harbor) -> None:
    steps = [
        {
            "step_name": "setup",
            "agent_result": {"n_input_tokens": 5},
            "verifier_result": {"rewards": {"reward": 0.0}},
        },
        {
            "step_name": "fix",
            "agent_result": {"n_input_tokens": 7},
            "verifier_result": {"rewards": {"reward": 1.0}},
            "exception_info": {"exception_type": "NonZeroAgentExitCodeError"},
        },
    ]
    trial_dir = harbor.trial("m", rewards={}, step_results=steps)
    result = json.loads((trial_dir / "result.json").read_text())
    result["verifier_result"] = None
    result["agent_result"] = None
    (trial_dir / "result.json").write_text(json.dumps(result))
    for step in ("fix", "setup"):
        (trial_dir / "steps" / step / "agent").mkdir(parents=True)
    info = read_trial_info(trial_dir)
    assert info.is_multistep and info.step_names == ["setup", "fix"]
    assert info.agent_dirs == [trial_dir / "steps" / "setup" / "agent", trial_dir / "steps" / "fix" / "agent"]
    assert info.reward == 1.0  # the last step with rewards
    assert info.exception_type == "NonZeroAgentExitCodeError"
    assert info.usage.n_input_tokens == 12


def test_trial_errors(harbor) -> None:
    trial_dir = harbor.trial("e", write_result=False)
    with pytest.raises(TrialError) as err:
        read_trial_info(trial_dir)
    assert err.value.reason_code == "no_result_json" and "result.json" in err.value.detail
    (trial_dir / "result.json").write_text('{"id": ')
    with pytest.raises(TrialError) as err:
        read_trial_info(trial_dir)
    assert err.value.reason_code == "invalid_result_json"
    (trial_dir / "result.json").write_text("[1, 2]")
    with pytest.raises(TrialError) as err:
        read_trial_info(trial_dir)
    assert err.value.reason_code == "invalid_result_json" and "list" in err.value.detail
    harbor.trial("e")  # valid result again
    (trial_dir / "config.json").write_text("{not json")
    with pytest.raises(TrialError) as err:
        read_trial_info(trial_dir)
    assert err.value.reason_code == "invalid_config_json" and "config.json" in err.value.detail


def test_discover_trials(harbor, tmp_path: Path) -> None:
    harbor.trial("b__2")
    harbor.trial("a__1")
    (harbor.job_dir / "c__running").mkdir()
    (harbor.job_dir / "c__running" / "config.json").write_text("{}")
    (harbor.job_dir / ".sources" / "x" / "agent").mkdir(parents=True)
    (harbor.job_dir / "not-a-trial").mkdir()
    (harbor.job_dir / "result.json").write_text("{}")
    os.symlink(harbor.job_dir, harbor.job_dir / "loop")
    outside = tmp_path / "elsewhere" / "z__9"
    (outside / "agent").mkdir(parents=True)
    os.symlink(outside, harbor.job_dir / "z__9")
    os.symlink(outside, harbor.job_dir / "zz_same_target")
    names = [p.name for p in discover_trials(harbor.job_dir)]
    assert names == ["a__1", "b__2", "c__running", "z__9"]
    assert discover_trials(tmp_path / "missing") == []


def test_read_job_result_shapes(harbor, tmp_path: Path) -> None:
    assert read_job_result(harbor.job_dir) == {}
    harbor.copy_fixture("job_result.example.json", harbor.job_dir / "result.json")
    job = read_job_result(harbor.job_dir)
    assert job_reward_lists(job) == {"1.0": ["hello-world__AbCdEfG"]}
    assert job_exception_lists(job) == {"AgentTimeoutError": ["hello-world__HiJkLmN"]}
    legacy = {"stats": {"n_trials": 3, "n_errors": 1}, "status": {}}
    (harbor.job_dir / "result.json").write_text(json.dumps(legacy))
    job = read_job_result(harbor.job_dir)
    assert job["stats"]["n_completed_trials"] == 3 and job["stats"]["n_errored_trials"] == 1
    assert job["stats"]["evals"] == {} and job_reward_lists(job) == {}
    (harbor.job_dir / "result.json").write_text("garbage")
    assert read_job_result(harbor.job_dir) == {}
