"""Harbor job and trial metadata: which dirs are trials, and each trial's instance, reward and exception.

Follows docs/input-formats.md §2-§5: the instance id comes from the trial's ``config.json`` ``task.path``
(never from the dir name, which Harbor truncates to 32 characters), rewards from
``verifier_result.rewards`` (any key) with the raw ``verifier/reward.{json,txt}`` files as fallback, and
exceptions from ``exception_info`` and multi-step ``step_results``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sft.sources.harbor.litellm import loads_lenient

logger = logging.getLogger(__name__)

# SWE-style instance ids: owner__repo-123 (owner and repo may contain '-', '.', '_').
_SWE_ID_RE = re.compile(r"^(?P<owner>[A-Za-z0-9_.\-]+?)__(?P<repo>[A-Za-z0-9_.\-]+)-(?P<num>\d+)$")


class TrialError(Exception):
    """A trial that cannot be read; ``reason_code`` is a short machine-friendly code for the rejects file."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


class TrialUsage(BaseModel):
    """Token and cost totals Harbor recorded for the agent run (``agent_result``)."""

    model_config = ConfigDict(extra="forbid")

    n_input_tokens: int | None = None
    n_cache_tokens: int | None = None
    n_output_tokens: int | None = None
    cost_usd: float | None = None


class TrialInfo(BaseModel):
    """Everything about a trial except its conversations."""

    model_config = ConfigDict(extra="forbid")

    trial_name: str
    trial_dir: Path
    instance_id: str
    repo: str | None = None
    rewards: dict[str, Any] | None = None
    reward: float | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    agent_name: str | None = None
    agent_version: str | None = None
    teacher_model: str | None = None
    teacher_provider: str | None = None
    task_name: str | None = None
    dataset: str | None = None
    usage: TrialUsage = Field(default_factory=TrialUsage)
    is_multistep: bool = False
    step_names: list[str] = Field(default_factory=list)
    agent_dirs: list[Path] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# small readers


def _read_json_file(path: Path) -> Any:
    """Parse a JSON file with orjson; bad UTF-8 / lone surrogates are repaired (logged), not fatal.

    Raises ValueError (orjson.JSONDecodeError is one) when the file is not JSON at all.
    """
    problems: list[str] = []
    value = loads_lenient(path.read_bytes(), str(path), problems)
    for problem in problems:
        logger.warning("%s", problem)
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _basename(path_value: Any) -> str | None:
    """Last segment of a POSIX or Windows path string, without a trailing slash."""
    if not isinstance(path_value, str) or not path_value.strip():
        return None
    cleaned = path_value.strip().replace("\\", "/").rstrip("/")
    name = PurePosixPath(cleaned).name
    return name or None


def parse_repo(instance_id: str) -> str | None:
    """``owner/repo`` for SWE-style ids such as ``django__django-12345``; None for other ids."""
    match = _SWE_ID_RE.match(instance_id)
    if not match:
        return None
    return f"{match.group('owner')}/{match.group('repo')}"


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        result = float(value)
        return result if math.isfinite(result) else None
    if isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
        return result if math.isfinite(result) else None
    return None


def reward_from_rewards(rewards: dict[str, Any] | None) -> float | None:
    """The scalar reward: ``rewards['reward']``, else the only value when there is exactly one."""
    if not rewards:
        return None
    if "reward" in rewards:
        return _to_float(rewards["reward"])
    if len(rewards) == 1:
        return _to_float(next(iter(rewards.values())))
    return None


# ----------------------------------------------------------------------------------------------------------
# discovery


def _looks_like_trial(path: Path) -> bool:
    """result.json, config.json, agent/ or (multi-step) steps/: any one of them makes a dir a trial, so a
    trial that is still running or half-copied is reported (rejected), never silently skipped."""
    return (
        (path / "result.json").is_file()
        or (path / "agent").is_dir()
        or (path / "config.json").is_file()
        or (path / "steps").is_dir()
    )


def discover_trials(job_dir: Path) -> list[Path]:
    """Immediate subdirs of ``job_dir`` that look like trials (result.json, config.json, agent/ or steps/).

    Dot-dirs (``.sources``) are skipped. A symlinked trial dir is accepted once, but never one that points
    back at the job dir or above it (a symlink loop would otherwise make the job contain itself).
    """
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        return []
    job_real = job_dir.resolve()
    seen: set[Path] = set()
    trials: list[Path] = []
    for child in sorted(job_dir.iterdir(), key=lambda p: p.name):
        if child.name.startswith("."):
            continue
        try:
            if not child.is_dir():
                continue
            real = child.resolve()
        except OSError:  # broken or looping symlink
            logger.warning("skipping %s: cannot resolve it (broken or looping symlink)", child)
            continue
        if real == job_real or real in job_real.parents or real in seen:
            logger.warning(
                "skipping %s: it points at %s (the job dir, a parent, or a dir already seen)", child, real
            )
            continue
        if _looks_like_trial(child):
            seen.add(real)
            trials.append(child)
    return trials


# ----------------------------------------------------------------------------------------------------------
# trial result


def _load_json_object(path: Path, reason: str, unreadable: str, model: str) -> dict[str, Any]:
    """A JSON object from ``path``, or ``TrialError(reason)`` naming the file and what is wrong."""
    try:
        data = _read_json_file(path)
    except (OSError, ValueError) as exc:
        raise TrialError(reason, f"{path} is not valid JSON ({exc}); {unreadable}") from exc
    if not isinstance(data, dict):
        raise TrialError(reason, f"{path} holds a JSON {type(data).__name__}, expected an object ({model})")
    return data


def _load_result(trial_dir: Path) -> dict[str, Any]:
    path = trial_dir / "result.json"
    if not path.is_file():
        raise TrialError(
            "no_result_json",
            f"{path} does not exist: the trial is still running or was interrupted "
            "(harbor job resume reruns such trials)",
        )
    return _load_json_object(path, "invalid_result_json", "the trial cannot be read", "TrialResult")


def _load_config(trial_dir: Path) -> dict[str, Any] | None:
    path = trial_dir / "config.json"
    if not path.is_file():
        return None
    return _load_json_object(path, "invalid_config_json", "it is needed for task.path", "TrialConfig")


def _instance_id(
    config: dict[str, Any] | None, result: dict[str, Any], trial_dir: Path
) -> tuple[str, list[str]]:
    """config.json task.path basename; fallbacks result.json config.task.path, task_id.path, task_name."""
    problems: list[str] = []
    candidates: list[tuple[str, Any]] = []
    if config is not None:
        task = _as_dict(config.get("task"))
        candidates += [
            ("config.json task.path", task.get("path")),
            ("config.json task.name", task.get("name")),
        ]
    else:
        problems.append(f"{trial_dir / 'config.json'} is missing; instance id taken from result.json")
    result_task = _as_dict(_as_dict(result.get("config")).get("task"))
    candidates += [
        ("result.json config.task.path", result_task.get("path")),
        ("result.json task_id.path", _as_dict(result.get("task_id")).get("path")),
        ("result.json task_id.name", _as_dict(result.get("task_id")).get("name")),
        ("result.json task_name", result.get("task_name")),
    ]
    for label, value in candidates:
        name = _basename(value)
        if name:
            if label != "config.json task.path" and config is not None:
                problems.append(f"instance id {name!r} taken from {label} (config.json task.path is empty)")
            return name, problems
    raise TrialError(
        "no_instance_id",
        f"{trial_dir}: no task path in config.json (task.path) nor in result.json (config.task.path, "
        "task_id.path, task_name); the instance id is never derived from the (truncated) trial dir name",
    )


def _step_results(result: dict[str, Any]) -> list[dict[str, Any]]:
    steps = result.get("step_results")
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _rewards_from_verifier_files(verifier_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """``reward.json`` (flat {name: number}) wins over ``reward.txt`` (one float), as in Harbor."""
    problems: list[str] = []
    json_path = verifier_dir / "reward.json"
    if json_path.is_file():
        try:
            data = _read_json_file(json_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{json_path} is not valid JSON ({exc}); ignored")
        else:
            if isinstance(data, dict):
                return data, problems
            problems.append(f"{json_path} holds a {type(data).__name__}, expected an object; ignored")
    txt_path = verifier_dir / "reward.txt"
    if txt_path.is_file():
        text = txt_path.read_text(encoding="utf-8", errors="replace").strip()
        value = _to_float(text)
        if value is not None:
            return {"reward": value}, problems
        problems.append(f"{txt_path} holds {text[:40]!r}, not a number; ignored")
    return None, problems


def _rewards(result: dict[str, Any], trial_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    rewards = _as_dict(result.get("verifier_result")).get("rewards")
    if isinstance(rewards, dict) and rewards:
        return rewards, []
    for step in reversed(_step_results(result)):
        step_rewards = _as_dict(step.get("verifier_result")).get("rewards")
        if isinstance(step_rewards, dict) and step_rewards:
            return step_rewards, []
    rewards, problems = _rewards_from_verifier_files(trial_dir / "verifier")
    if rewards is not None:
        problems.append(
            f"rewards read from {trial_dir / 'verifier'} (result.json has no verifier_result.rewards)"
        )
    return rewards, problems


def _exception(result: dict[str, Any]) -> tuple[str | None, str | None]:
    info = _as_dict(result.get("exception_info"))
    if info.get("exception_type"):
        return str(info["exception_type"]), info.get("exception_message")
    for step in _step_results(result):
        step_info = _as_dict(step.get("exception_info"))
        if step_info.get("exception_type"):
            return str(step_info["exception_type"]), step_info.get("exception_message")
    return None, None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _usage(result: dict[str, Any]) -> TrialUsage:
    contexts = [_as_dict(result.get("agent_result"))]
    contexts += [_as_dict(step.get("agent_result")) for step in _step_results(result)]
    totals: dict[str, float | None] = {k: None for k in TrialUsage.model_fields}
    for ctx in contexts:
        for key in totals:
            value = ctx.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] = (totals[key] or 0) + value
    return TrialUsage(
        n_input_tokens=_int_or_none(totals["n_input_tokens"]),
        n_cache_tokens=_int_or_none(totals["n_cache_tokens"]),
        n_output_tokens=_int_or_none(totals["n_output_tokens"]),
        cost_usd=totals["cost_usd"],
    )


def _teacher(result: dict[str, Any], config: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """agent_info.model_info.name (provider separately); fallback the configured agent model_name."""
    model_info = _as_dict(_as_dict(result.get("agent_info")).get("model_info"))
    if model_info.get("name"):
        provider = model_info.get("provider")
        return str(model_info["name"]), str(provider) if provider else None
    for source in (config, _as_dict(result.get("config"))):
        model_name = _as_dict(_as_dict(source).get("agent")).get("model_name")
        if isinstance(model_name, str) and model_name:
            provider, _, name = model_name.rpartition("/")
            return name, provider or None
    return None, None


def _agent_dirs(trial_dir: Path, result: dict[str, Any]) -> tuple[list[Path], list[str], bool]:
    """agent/ for single-step trials; steps/<step>/agent/ in step_results order for multi-step ones."""
    step_results = _step_results(result)
    steps_root = trial_dir / "steps"
    step_dirs = (
        sorted(p for p in steps_root.iterdir() if (p / "agent").is_dir()) if steps_root.is_dir() else []
    )
    is_multistep = bool(step_results) or bool(step_dirs)
    if not is_multistep:
        agent = trial_dir / "agent"
        return ([agent] if agent.is_dir() else []), [], False
    order = {str(s.get("step_name")): i for i, s in enumerate(step_results) if s.get("step_name")}
    step_dirs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    dirs = [p / "agent" for p in step_dirs]
    root_agent = trial_dir / "agent"
    if root_agent.is_dir() and not step_dirs:
        dirs = [root_agent]
    return dirs, [p.name for p in step_dirs], True


def read_trial_info(trial_dir: Path) -> TrialInfo:
    """Read a trial's ``result.json`` and ``config.json``; raise TrialError with a reason code if unusable."""
    trial_dir = Path(trial_dir)
    result = _load_result(trial_dir)
    config = _load_config(trial_dir)
    instance_id, problems = _instance_id(config, result, trial_dir)
    rewards, reward_problems = _rewards(result, trial_dir)
    exception_type, exception_message = _exception(result)
    agent_info = _as_dict(result.get("agent_info"))
    agent_name = agent_info.get("name") or _as_dict(_as_dict(config).get("agent")).get("name")
    teacher_model, teacher_provider = _teacher(result, config)
    agent_dirs, step_names, is_multistep = _agent_dirs(trial_dir, result)
    return TrialInfo(
        trial_name=trial_dir.name,
        trial_dir=trial_dir,
        instance_id=instance_id,
        repo=parse_repo(instance_id),
        rewards=rewards,
        reward=reward_from_rewards(rewards),
        exception_type=exception_type,
        exception_message=exception_message if isinstance(exception_message, str) else None,
        agent_name=str(agent_name) if agent_name else None,
        agent_version=str(agent_info["version"]) if agent_info.get("version") else None,
        teacher_model=teacher_model,
        teacher_provider=teacher_provider,
        task_name=result.get("task_name") if isinstance(result.get("task_name"), str) else None,
        dataset=result.get("source") if isinstance(result.get("source"), str) else None,
        usage=_usage(result),
        is_multistep=is_multistep,
        step_names=step_names,
        agent_dirs=agent_dirs,
        problems=problems + reward_problems,
    )


# ----------------------------------------------------------------------------------------------------------
# job result


_LEGACY_STAT_KEYS = {"n_trials": "n_completed_trials", "n_errors": "n_errored_trials"}


def read_job_result(job_dir: Path) -> dict[str, Any]:
    """The job's ``result.json`` with legacy stat names mapped to the current ones; {} when absent or invalid.

    Legacy jobs wrote ``stats.n_trials``/``stats.n_errors``; they are copied to ``n_completed_trials``/
    ``n_errored_trials`` (originals kept). ``stats.evals`` is always a dict. Problems are logged, not raised:
    the per-trial ``result.json`` files are the authoritative source.
    """
    path = Path(job_dir) / "result.json"
    if not path.is_file():
        return {}
    try:
        data = _read_json_file(path)
    except (OSError, ValueError) as exc:
        logger.warning("%s is not valid JSON (%s); job-level stats ignored", path, exc)
        return {}
    if not isinstance(data, dict):
        logger.warning(
            "%s holds a %s, expected an object; job-level stats ignored", path, type(data).__name__
        )
        return {}
    stats = dict(_as_dict(data.get("stats")))
    for legacy, current in _LEGACY_STAT_KEYS.items():
        if current not in stats and legacy in stats:
            stats[current] = stats[legacy]
    evals = stats.get("evals")
    stats["evals"] = evals if isinstance(evals, dict) else {}
    data = dict(data)
    data["stats"] = stats
    return data


def job_reward_lists(job_result: dict[str, Any], reward_key: str = "reward") -> dict[str, list[str]]:
    """``{reward value string: [trial names]}`` merged over every eval (what the reference selects from)."""
    merged: dict[str, list[str]] = {}
    for eval_stats in _as_dict(_as_dict(job_result.get("stats")).get("evals")).values():
        per_value = _as_dict(_as_dict(_as_dict(eval_stats).get("reward_stats")).get(reward_key))
        for value, names in per_value.items():
            if isinstance(names, list):
                merged.setdefault(str(value), []).extend(str(n) for n in names)
    return merged


def job_exception_lists(job_result: dict[str, Any]) -> dict[str, list[str]]:
    """``{exception type: [trial names]}`` merged over every eval."""
    merged: dict[str, list[str]] = {}
    for eval_stats in _as_dict(_as_dict(job_result.get("stats")).get("evals")).values():
        for exc_type, names in _as_dict(_as_dict(eval_stats).get("exception_stats")).items():
            if isinstance(names, list):
                merged.setdefault(str(exc_type), []).extend(str(n) for n in names)
    return merged


def harbor_version(job_dir: str | Path | None) -> str | None:
    """Harbor's version from the job's ``lock.json`` (``harbor.version``), when the job dir has one."""
    if not job_dir:
        return None
    lock = Path(job_dir) / "lock.json"
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    harbor = data.get("harbor") if isinstance(data, dict) else None
    version = harbor.get("version") if isinstance(harbor, dict) else None
    return str(version) if version else None
