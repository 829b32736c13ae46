"""The shipped eval-leak exclusion list and its generator (reference contract §3.4).

Why: a malformed, unsorted or incomplete list silently lets benchmark repositories leak into SFT data, and
the generator must never replace a good list with a partial one when the Hub cannot be reached.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_LIST = PROJECT_ROOT / "artifacts" / "data" / "excluded_repos.txt"
SCRIPT = PROJECT_ROOT / "scripts" / "generate_excluded_repos.py"
REPO_LINE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
DATASET_IDS = ("SWE-bench/SWE-bench_Verified", "ScaleAI/SWE-bench_Pro", "SWE-bench/SWE-bench_Multilingual")
SWE_BENCH_VERIFIED_REPOS = (
    "astropy/astropy",
    "django/django",
    "matplotlib/matplotlib",
    "mwaskom/seaborn",
    "pallets/flask",
    "psf/requests",
    "pydata/xarray",
    "pylint-dev/pylint",
    "pytest-dev/pytest",
    "scikit-learn/scikit-learn",
    "sphinx-doc/sphinx",
    "sympy/sympy",
)


def _entries(text: str) -> list[str]:
    """Independent reader of the file format: '#' lines and blank lines are ignored."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """The generator script, imported from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate_excluded_repos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped_text() -> str:
    assert SHIPPED_LIST.is_file(), (
        f"{SHIPPED_LIST} is missing; it is the default conversion.exclude_repos_file"
    )
    return SHIPPED_LIST.read_text(encoding="utf-8")


# --- the shipped file --------------------------------------------------------------------------------


def test_shipped_list_parses_with_comments_and_blank_lines_ignored(shipped_text: str) -> None:
    entries = _entries(shipped_text)
    assert entries, "the shipped exclusion list has no repositories"
    assert shipped_text.startswith("#"), "the list must open with its '#' header"
    assert all(not e.startswith("#") and e == e.strip() for e in entries)


def test_shipped_header_names_the_three_datasets_split_and_regeneration(shipped_text: str) -> None:
    header = "\n".join(line for line in shipped_text.splitlines() if line.startswith("#"))
    for dataset_id in DATASET_IDS:
        assert f"{dataset_id} (split test)" in header, f"header does not name {dataset_id} and its split"
    assert "eval-leak" in header
    assert "python scripts/generate_excluded_repos.py -o artifacts/data/excluded_repos.txt" in header
    assert re.search(r"\b\d{4}-\d{2}-\d{2}\b", header), "header must say when the list was made"


def test_shipped_list_has_no_duplicates_even_ignoring_case(shipped_text: str) -> None:
    entries = _entries(shipped_text)
    lowered = [e.lower() for e in entries]
    duplicates = sorted({e for e in lowered if lowered.count(e) > 1})
    assert not duplicates, f"duplicate repositories in {SHIPPED_LIST}: {duplicates}"


def test_every_shipped_line_is_owner_slash_repo(shipped_text: str) -> None:
    bad = [e for e in _entries(shipped_text) if not REPO_LINE.match(e)]
    assert not bad, f"lines in {SHIPPED_LIST} that are not owner/repo: {bad}"


def test_shipped_list_contains_the_12_swe_bench_verified_repos(shipped_text: str) -> None:
    present = {e.lower() for e in _entries(shipped_text)}
    missing = [repo for repo in SWE_BENCH_VERIFIED_REPOS if repo not in present]
    assert not missing, f"SWE-bench Verified repositories missing from {SHIPPED_LIST}: {missing}"


def test_shipped_list_is_sorted_case_insensitively(shipped_text: str) -> None:
    entries = _entries(shipped_text)
    assert entries == sorted(entries, key=str.lower)


def test_shipped_header_count_matches_entries(shipped_text: str) -> None:
    match = re.search(r"^# (\d+) repositories\.$", shipped_text, flags=re.MULTILINE)
    assert match, "header must state how many repositories the list holds"
    assert int(match.group(1)) == len(_entries(shipped_text))


# --- the generator -----------------------------------------------------------------------------------


class FakeLoader:
    """Stands in for the Hub: returns (or raises) a fixed answer per dataset id and records the calls."""

    def __init__(self, answers: dict[str, list[str] | BaseException]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, bench: Any) -> list[str]:
        self.calls.append(bench.hf_id)
        answer = self.answers[bench.hf_id]
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)


def test_normalise_repo_strips_github_url_and_git_suffix(gen: ModuleType) -> None:
    assert gen.normalise_repo(" https://github.com/psf/requests.git ", "d") == "psf/requests"
    assert gen.normalise_repo("github.com/NodeBB/NodeBB/", "d") == "NodeBB/NodeBB"
    assert gen.normalise_repo("mrdoob/three.js", "d") == "mrdoob/three.js"


@pytest.mark.parametrize("bad", ["django", "a/b/c", "own er/repo", "", 42])
def test_normalise_repo_rejects_non_owner_repo_values_naming_the_dataset(
    gen: ModuleType, bad: object
) -> None:
    with pytest.raises(gen.GenerationError, match="SWE-bench/SWE-bench_Verified"):
        gen.normalise_repo(bad, "SWE-bench/SWE-bench_Verified")


def test_sort_repos_is_case_insensitive_and_drops_case_only_duplicates(gen: ModuleType) -> None:
    result = gen.sort_repos(
        ["psf/requests", "NodeBB/NodeBB", "BurntSushi/ripgrep", "burntsushi/ripgrep", "ansible/ansible"]
    )
    assert result == ["ansible/ansible", "BurntSushi/ripgrep", "NodeBB/NodeBB", "psf/requests"]


def test_generate_writes_sorted_union_under_a_header(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in gen.OFFLINE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    loader = FakeLoader(
        {
            "SWE-bench/SWE-bench_Verified": ["django/django", "psf/requests", "django/django"],
            "ScaleAI/SWE-bench_Pro": ["NodeBB/NodeBB", "ansible/ansible"],
            "SWE-bench/SWE-bench_Multilingual": ["https://github.com/tokio-rs/tokio", "axios/axios"],
        }
    )
    output = tmp_path / "data" / "excluded_repos.txt"
    repos = gen.generate(output, loader=loader, today="2030-01-02")

    expected = [
        "ansible/ansible",
        "axios/axios",
        "django/django",
        "NodeBB/NodeBB",
        "psf/requests",
        "tokio-rs/tokio",
    ]
    assert repos == expected
    text = output.read_text(encoding="utf-8")
    assert _entries(text) == expected
    assert gen.parse_repo_list(text) == expected
    assert "Generated 2030-01-02" in text
    assert "SWE-bench/SWE-bench_Verified (split test), 2 repositories" in text
    assert "ScaleAI/SWE-bench_Pro (split test), 2 repositories" in text
    assert "SWE-bench/SWE-bench_Multilingual (split test), 2 repositories" in text
    assert "# 6 repositories." in text
    assert loader.calls == list(DATASET_IDS)


def test_offline_flag_fails_naming_the_dataset_and_keeps_the_shipped_list(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = tmp_path / "excluded_repos.txt"
    output.write_text("# old header\ndjango/django\n", encoding="utf-8")
    loader = FakeLoader({dataset_id: ["x/y"] for dataset_id in DATASET_IDS})

    with pytest.raises(gen.GenerationError) as excinfo:
        gen.generate(output, loader=loader)

    message = str(excinfo.value)
    assert "SWE-bench/SWE-bench_Verified" in message
    assert "HF_HUB_OFFLINE" in message
    assert "stays as is" in message
    assert loader.calls == [], "nothing may be downloaded while HF_HUB_OFFLINE is set"
    assert output.read_text(encoding="utf-8") == "# old header\ndjango/django\n"


def test_network_failure_names_the_failing_dataset_and_writes_nothing(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in gen.OFFLINE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "excluded_repos.txt"
    output.write_text("django/django\n", encoding="utf-8")
    loader = FakeLoader(
        {
            "SWE-bench/SWE-bench_Verified": ["django/django"],
            "ScaleAI/SWE-bench_Pro": ConnectionError("Couldn't reach huggingface.co"),
            "SWE-bench/SWE-bench_Multilingual": ["axios/axios"],
        }
    )

    with pytest.raises(gen.GenerationError) as excinfo:
        gen.generate(output, loader=loader)

    message = str(excinfo.value)
    assert "ScaleAI/SWE-bench_Pro" in message
    assert "ConnectionError" in message
    assert "stays as is" in message
    assert output.read_text(encoding="utf-8") == "django/django\n"
    assert sorted(output.parent.iterdir()) == [output], "no temp file may be left behind"


def test_empty_dataset_is_an_error_not_a_shorter_list(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in gen.OFFLINE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "excluded_repos.txt"
    loader = FakeLoader(
        {
            "SWE-bench/SWE-bench_Verified": ["django/django"],
            "ScaleAI/SWE-bench_Pro": [],
            "SWE-bench/SWE-bench_Multilingual": ["axios/axios"],
        }
    )
    with pytest.raises(gen.GenerationError, match="ScaleAI/SWE-bench_Pro"):
        gen.generate(output, loader=loader)
    assert not output.exists()


def test_main_exits_1_with_a_clear_message_when_offline(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = tmp_path / "excluded_repos.txt"
    output.write_text("django/django\n", encoding="utf-8")

    assert gen.main(["-o", str(output)]) == 1

    err = capsys.readouterr().err
    assert err.startswith("ERROR: cannot download SWE-bench/SWE-bench_Verified")
    assert str(output) in err
    assert output.read_text(encoding="utf-8") == "django/django\n"
