"""Outcome filter, eval-leak exclusion, seeded selection, per-instance cap, exact dedup."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from sft.rules.filters import (
    ExclusionList,
    cap_per_instance,
    content_hash,
    dedup_exact,
    outcome_keep,
    select_instances,
)
from tests.convert.builders import assistant, simple, traj, user

# --------------------------------------------------------------------------------------------------
# outcome
# --------------------------------------------------------------------------------------------------


def keep(
    reward: float | None,
    exc: str | None = None,
    status: str = "resolved",
    keep_exc: bool = True,
    threshold: float = 1.0,
) -> tuple[bool, str]:
    return outcome_keep(
        reward, exc, instance_status=status, resolved_threshold=threshold, keep_exception_trials=keep_exc
    )


def test_outcome_resolved_unresolved_all() -> None:
    assert keep(1.0) == (True, "kept")
    assert keep(0.0) == (False, "not_resolved")
    assert keep(0.99) == (False, "not_resolved")
    assert keep(0.5, threshold=0.5) == (True, "kept")
    assert keep(1.0, status="unresolved") == (False, "resolved")
    assert keep(0.0, status="unresolved") == (True, "kept")
    assert keep(0.0, status="all") == (True, "kept")


def test_outcome_exceptions_and_missing_reward() -> None:
    assert keep(1.0, exc="AgentTimeoutError") == (True, "kept")
    assert keep(1.0, exc="AgentTimeoutError", keep_exc=False) == (False, "exception")
    assert keep(None) == (False, "no_reward")
    assert keep(float("nan")) == (False, "no_reward")
    assert keep(None, status="all") == (True, "kept")
    with pytest.raises(ValueError, match="instance_status"):
        keep(1.0, status="passed")


# --------------------------------------------------------------------------------------------------
# exclusion list
# --------------------------------------------------------------------------------------------------

LIST_TEXT = """# SWE-bench Verified, Pro, Multilingual
django/django

Pylint-dev/pylint
pydata/xarray
owner/repo.name
scikit-learn/scikit-learn
"""


@pytest.fixture
def exclusion(tmp_path: Path) -> ExclusionList:
    path = tmp_path / "excluded_repos.txt"
    path.write_text(LIST_TEXT)
    return ExclusionList.load(path)


def test_exclusion_list_load_counts_and_hash(exclusion: ExclusionList, tmp_path: Path) -> None:
    assert exclusion.entries == 5
    assert exclusion.sha256 == hashlib.sha256(LIST_TEXT.encode()).hexdigest()
    assert exclusion.repos[0] == "django/django"


def test_exclusion_matching_rules(exclusion: ExclusionList) -> None:
    assert exclusion.match("django__django-12345") == "django/django"
    assert exclusion.match("DJANGO__Django-1") == "django/django"  # case-insensitive
    assert exclusion.match("django__django-12345__a1b2") == "django/django"  # hash suffix
    assert exclusion.match("pylint-dev__pylint-7080") == "Pylint-dev/pylint"
    assert exclusion.match("owner__repo.name-3") == "owner/repo.name"
    assert exclusion.match("scikit-learn__scikit-learn-25747") == "scikit-learn/scikit-learn"


def test_exclusion_punctuation_normalisation(exclusion: ExclusionList) -> None:
    assert exclusion.match("owner__repo_name-3") == "owner/repo.name"
    assert exclusion.match("owner__repo-name-3") == "owner/repo.name"
    assert exclusion.match("scikit_learn__scikit_learn-1") == "scikit-learn/scikit-learn"
    assert exclusion.match("pylint_dev__pylint-1") == "Pylint-dev/pylint"


def test_exclusion_non_matches(exclusion: ExclusionList) -> None:
    assert exclusion.match("owner__repoXname-3") is None  # the dot is escaped, not "any character"
    assert exclusion.match("owner__reponame-3") is None  # punctuation is not dropped
    assert exclusion.match("django__django") is None  # no number
    assert exclusion.match("django__django-12x") is None
    assert exclusion.match("mydjango__django-1") is None
    assert exclusion.match("django__django-rest-1") is None
    assert exclusion.match("pydata__xarray2-1") is None


def test_exclusion_bad_line_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("django/django\nnot a repo line\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'not a repo line'"):
        ExclusionList.load(bad)
    with pytest.raises(FileNotFoundError, match="exclude_repos_file"):
        ExclusionList.load(tmp_path / "missing.txt")
    assert ExclusionList.empty().match("django__django-1") is None


def test_shipped_exclusion_list_if_present(project_root: Path) -> None:
    shipped = project_root / "artifacts" / "data" / "excluded_repos.txt"
    if not shipped.exists():
        pytest.skip("artifacts/data/excluded_repos.txt not written yet")
    loaded = ExclusionList.load(shipped)
    assert loaded.entries > 0
    assert loaded.match("django__django-11099") == "django/django"


# --------------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------------

IDS = [f"{repo}__{repo}-{i}" for repo, count in (("a", 60), ("b", 30), ("c", 10)) for i in range(count)]


def repo_of(instance_id: str) -> str:
    return instance_id.split("__")[0]


@pytest.mark.parametrize("stratify", [False, True])
def test_selection_seeded_and_order_independent(stratify: bool) -> None:
    first = select_instances(IDS, 10, 7, stratify, repo_of)
    assert len(first) == 10 == len(set(first))
    assert set(first) <= set(IDS)
    assert select_instances(IDS, 10, 7, stratify, repo_of) == first
    shuffled = IDS[:]
    random.Random(1).shuffle(shuffled)
    assert select_instances(shuffled + IDS[:5], 10, 7, stratify, repo_of) == first
    assert select_instances(IDS, 10, 8, stratify, repo_of) != first


def test_selection_all_when_n_nonpositive_or_too_large() -> None:
    assert select_instances(IDS, 0, 1, False, repo_of) == sorted(IDS)
    assert select_instances(IDS, -3, 1, True, repo_of) == sorted(IDS)
    assert select_instances(IDS, 1000, 1, False, repo_of) == sorted(IDS)


def test_stratified_selection_is_proportional() -> None:
    chosen = select_instances(IDS, 10, 3, True, repo_of)
    per_repo = {r: sum(1 for i in chosen if repo_of(i) == r) for r in "abc"}
    assert per_repo == {"a": 6, "b": 3, "c": 1}
    chosen = select_instances(IDS, 7, 3, True, repo_of)  # 4.2 / 2.1 / 0.7 -> 4 / 2 / 1
    assert {r: sum(1 for i in chosen if repo_of(i) == r) for r in "abc"} == {"a": 4, "b": 2, "c": 1}


# --------------------------------------------------------------------------------------------------
# cap and dedup
# --------------------------------------------------------------------------------------------------


def test_cap_per_instance_prefers_main_rows_and_keeps_order() -> None:
    rows = [
        traj(user(), assistant("1"), instance_id="x__y-1", trial_name="t2", agent_type="subagent"),
        traj(user(), assistant("2"), instance_id="x__y-1", trial_name="t2"),
        traj(user(), assistant("3"), instance_id="x__y-1", trial_name="t1"),
        traj(user(), assistant("4"), instance_id="x__y-2", trial_name="t3"),
    ]
    kept, dropped = cap_per_instance(rows, 2)
    assert [t.messages[1].content for t in kept] == ["2", "3", "4"]
    assert [t.messages[1].content for t in dropped] == ["1"]
    assert cap_per_instance(rows, 0) == (rows, [])


def test_dedup_exact_ignores_provenance_only() -> None:
    a = simple()
    b = simple().model_copy(update={"meta": a.meta.model_copy(update={"trial_name": "other"})})
    c = simple(final="Different.")
    assert content_hash(a) == content_hash(b) != content_hash(c)
    kept, dropped = dedup_exact([a, b, c])
    assert kept == [a, c] and dropped == [b]


def test_swe_bench_pro_instance_ids_are_excluded() -> None:
    excl = ExclusionList.from_text("ansible/ansible\nNodeBB/NodeBB\n")
    pro = "instance_ansible__ansible-1a4644ff15355fd696ac5b9d074a566a80fe7ca3-v30a923fb5c164d6cd18280c02422f75e611e8fb2"
    assert excl.match(pro) == "ansible/ansible"
    assert (
        excl.match("instance_NodeBB__NodeBB-04998908ba6721d64eba79ae3b65a351dcfbc5b5-vnan") == "NodeBB/NodeBB"
    )
    assert excl.match("ansible__ansible-12345") == "ansible/ansible"
    assert excl.match("ansible__ansible-lint-12") is None
    assert excl.match("instance_other__ansible-1a4644ff") is None
