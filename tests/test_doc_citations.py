"""No docstring, comment or doc cites a file the repo lacks, or a section that file lacks.

Code sends readers to ``docs/input-formats.md §9.2`` and the like; a clone must contain what is cited.
Scanned: the Python, shell and TOML files of the repo and its Markdown docs. A ``*.md`` name with a
``/`` must exist relative to the repo root or to the citing file; a bare name must exist somewhere in the
repo. Names of files sft *writes* (``<data_name>.README.md``, the dataset card) are not citations.
For ``docs/*.md`` the cited ``§N`` / ``§N.M`` sections must be headings of that file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

THIS = Path(__file__).resolve()
REPO = THIS.parents[1]
SCANNED_DIRS = ("src", "tests", "scripts", "benchmarks", "docs", "requirements", "conf")
SCANNED_FILES = ("README.md", "BENCHMARKS.md", "pyproject.toml")
SUFFIXES = {".py", ".sh", ".toml", ".md", ".txt", ".yml", ".yaml"}
CITATION = re.compile(r"(?<![\w./{}<>-])((?:[\w-]+/)*[\w-]+\.md)\b")
SECTIONS = re.compile(r"((?:docs/)?[\w-]+\.md)((?:(?:\s*(?:,|and|-|–)?\s*)§\d+(?:\.\d+)*)+)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def _scanned() -> list[Path]:
    paths = [REPO / name for name in SCANNED_FILES if (REPO / name).is_file()]
    for directory in SCANNED_DIRS:
        for path in sorted((REPO / directory).rglob("*")):
            # Not this file: its self-test quotes missing names on purpose.
            if path.suffix in SUFFIXES and path.is_file() and "fixtures" not in path.parts and path != THIS:
                paths.append(path)
    return paths


def _basenames() -> set[str]:
    return {p.name for d in SCANNED_DIRS if (REPO / d).is_dir() for p in (REPO / d).rglob("*.md")} | {
        p.name for p in REPO.glob("*.md")
    }


def _citations() -> list[tuple[Path, int, str]]:
    found = []
    for path in _scanned():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            found += [(path, number, m.group(1)) for m in CITATION.finditer(line)]
    return found


def _exists(cited: str, citing: Path, basenames: set[str]) -> bool:
    if "/" not in cited:
        return cited in basenames
    return (REPO / cited).is_file() or (citing.parent / cited).is_file()


def test_the_docs_exist() -> None:
    for name in ("input-formats.md", "llamafactory-rules.md", "config-contract.md"):
        assert (REPO / "docs" / name).is_file(), name


def test_every_cited_markdown_file_exists() -> None:
    basenames = _basenames()
    citations = _citations()
    assert any(c == "docs/input-formats.md" for _p, _n, c in citations)  # the scan sees the citations
    missing = [f"{p.relative_to(REPO)}:{n}: {c}" for p, n, c in citations if not _exists(c, p, basenames)]
    assert missing == [], "cited files the repo lacks:\n" + "\n".join(missing)


def _sections(doc: Path) -> set[str]:
    return set(HEADING.findall(doc.read_text(encoding="utf-8")))


def _section_problems(text: str, citing: Path) -> tuple[int, list[str]]:
    """(sections checked, citations of a section the cited doc lacks) in ``text``."""
    bad, checked = [], 0
    for match in SECTIONS.finditer(text):
        name = match.group(1)
        doc = REPO / "docs" / Path(name).name
        if not (name.startswith("docs/") or citing.parent == REPO / "docs") or not doc.is_file():
            continue
        for section in re.findall(r"§(\d+(?:\.\d+)*)", match.group(2)):
            checked += 1
            if section not in _sections(doc):
                bad.append(f"line {text.count(chr(10), 0, match.start()) + 1}: {name} §{section}")
    return checked, bad


def test_every_cited_section_of_the_docs_exists() -> None:
    total, bad = 0, []
    for path in _scanned():
        checked, problems = _section_problems(path.read_text(encoding="utf-8", errors="replace"), path)
        total += checked
        bad += [f"{path.relative_to(REPO)} {p}" for p in problems]
    assert total > 20, total
    assert bad == [], "cited sections the docs lack:\n" + "\n".join(bad)


def test_a_missing_section_is_caught() -> None:
    checked, bad = _section_problems("see docs/input-formats.md §9.2 and §99.1", REPO / "src" / "x.py")
    assert checked == 2 and bad == ["line 1: docs/input-formats.md §99.1"]


@pytest.mark.parametrize("text", ["see llamafactory-notes.md §3", "as in docs/no-such-doc.md"])
def test_a_missing_file_is_caught(text: str) -> None:
    cited = [m.group(1) for m in CITATION.finditer(text)]
    assert cited and not any(_exists(c, REPO / "src" / "x.py", _basenames()) for c in cited)
