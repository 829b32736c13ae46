"""Two processes writing the same project at the same time never lose or corrupt each other's work.

Each test starts two children (``tests/robustness/_actors.py``) that wait for a common wall-clock start and
then write in a tight loop, so their read-modify-write cycles really interleave:

* two runs registering different datasets into one ``dataset_info.json`` (``DatasetInfoDataset.save``);
* two ``record_run`` writers on one ``artifacts/index.yaml``;
* two config write-backs, into two variant files and into the same file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from sft.config.loader import load_config
from sft.config.writeback import render_with_output
from sft.train.history import _validate_runs, index_path, read_index
from tests.robustness._actors import output_for
from tests.robustness.helpers import DEMO_CONFIG, ROOT

ACTORS = Path(__file__).with_name("_actors.py")
LOOPS = int(os.environ.get("SFT_RACE_LOOPS", "25"))


def _race(go_file: Path, *argvs: list[str]) -> list[str]:
    """Run the children together (all imported, then released at once); their stdout after "ready"."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ACTORS), *argv, str(go_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for argv in argvs
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go_file.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"child failed:\n{err[-3000:]}"
        outputs.append(out)
    return outputs


def test_two_runs_registering_datasets_never_lose_an_entry(tmp_path: Path) -> None:
    info = tmp_path / "lf_data" / "dataset_info.json"
    info.parent.mkdir()
    info.write_text(json.dumps({"existing": {"file_name": "existing.json"}}))
    _race(
        tmp_path / "go",
        ["register", str(info), "alpha", str(LOOPS)],
        ["register", str(info), "beta", str(LOOPS)],
    )
    entries = json.loads(info.read_text())
    expected = {"existing"} | {f"{tag}_{i}" for tag in ("alpha", "beta") for i in range(LOOPS)}
    assert set(entries) == expected, f"lost: {sorted(expected - set(entries))}"
    assert entries["alpha_0"] == {"file_name": "alpha_0.json", "formatting": "sharegpt"}


def test_two_record_run_writers_never_lose_or_duplicate_a_run_id(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy2(DEMO_CONFIG, root / "config.yaml")
    loops = max(5, LOOPS // 3)  # record_run archives a config copy and asks git: slower per call
    out_a, out_b = _race(
        tmp_path / "go", ["record", str(root), "a", str(loops)], ["record", str(root), "b", str(loops)]
    )
    ids_a, ids_b = out_a.split(), out_b.split()
    assert len(ids_a) == len(ids_b) == loops
    assert not set(ids_a) & set(ids_b), "two writers were handed the same run id"
    runs = read_index(root)
    _validate_runs(runs, index_path(root))  # no duplicate id, every key present
    assert sorted(r["id"] for r in runs) == sorted(ids_a + ids_b), "a run vanished from index.yaml"
    assert [r["id"] for r in runs] == [f"run_{n:03d}" for n in range(1, 2 * loops + 1)]
    notes = {r["notes"] for r in runs}
    assert notes == {f"{tag}-{i}" for tag in "ab" for i in range(loops)}
    for run in runs:
        assert yaml.safe_load((root / run["archive"] / "metadata.yaml").read_text())["id"] == run["id"]


def test_two_write_backs_into_different_variant_files_never_corrupt_each_other(tmp_path: Path) -> None:
    main, variant = tmp_path / "config.yaml", tmp_path / "config.variant.yaml"
    shutil.copy2(DEMO_CONFIG, main)
    shutil.copy2(DEMO_CONFIG, variant)
    original = DEMO_CONFIG.read_text(encoding="utf-8")
    _race(
        tmp_path / "go",
        ["writeback", str(main), "main", str(LOOPS)],
        ["writeback", str(variant), "variant", str(LOOPS)],
    )
    for path, tag in ((main, "main"), (variant, "variant")):
        expected = output_for(tag, LOOPS - 1)
        assert path.read_text(encoding="utf-8") == render_with_output(original, expected), path.name
        load_config(path)


def test_two_write_backs_into_the_same_file_leave_one_whole_output(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    shutil.copy2(DEMO_CONFIG, config)
    original = DEMO_CONFIG.read_text(encoding="utf-8")
    _race(
        tmp_path / "go",
        ["writeback", str(config), "one", str(LOOPS)],
        ["writeback", str(config), "two", str(LOOPS)],
    )
    output = yaml.safe_load(config.read_text(encoding="utf-8"))["runtime_info"]["output"]
    assert output in (output_for("one", LOOPS - 1), output_for("two", LOOPS - 1))  # the last write wins whole
    assert config.read_text(encoding="utf-8") == render_with_output(original, output)
