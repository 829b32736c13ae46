"""Child processes for the crash-safety and concurrency tests (run as a script, killed or raced).

Modes (argv[1]):

* ``convert <root> <job> <loops>``: convert the job twice (``max_instances`` 0 and 2, cache on) and save
  both results alternately through the catalog datasets, ``loops`` times (-1: forever, until killed).
* ``writeback <config> <tag> <loops> [go_file]``: write ``runtime_info.output`` = ``output_for(tag, i)``.
* ``record <root> <tag> <loops> [go_file]``: ``record_run`` ``loops`` times; prints each new run id.
* ``register <dataset_info.json> <tag> <loops> [go_file]``: ``DatasetInfoDataset.save`` one entry per loop.

Each mode prints ``ready`` once its imports are done, so a parent can time a kill after start-up, and
then waits for ``go_file`` (if given) to exist, so that two racing children start writing together.
"""

from __future__ import annotations

import sys
import time
from itertools import count
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LF_NAME = "crash_sft"


def output_paths(root: Path) -> dict[str, Path]:
    """Where ``convert`` writes (the layout of the demo catalog, under ``root``)."""
    lf_dir = root / "artifacts" / "data" / "lf_data"
    report = root / "data" / "08_reporting" / LF_NAME
    return {
        "lf": lf_dir / f"{LF_NAME}.json",
        "parquet": lf_dir / f"{LF_NAME}.parquet",
        "info": lf_dir / "dataset_info.json",
        "im": root / "artifacts" / "data" / "im_data" / f"{LF_NAME}.jsonl",
        "rejects": report / "rejects.jsonl",
        "funnel": report / "funnel.json",
    }


def output_for(tag: str, index: int) -> dict[str, Any]:
    """A write-back payload big enough that a torn write would show (several KB)."""
    return {
        "writer": tag,
        "index": index,
        "lf_dir": f"/data/{tag}/{index}",
        "notes": [f"{tag}-{index}-{n}" for n in range(200)],
    }


def _ready(go_file: Path | None = None) -> None:
    """Say the imports are done; with ``go_file``, wait until the parent creates it (a common start)."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while go_file is not None and not go_file.exists():
        time.sleep(0.001)


def _loops(value: str) -> range | count:
    return count() if int(value) < 0 else range(int(value))


def run_convert(root: Path, job: Path, loops: str) -> None:
    from sft.config.loader import load_config
    from sft.datasets.files import AtomicJSONDataset, AtomicJSONLinesDataset
    from sft.datasets.llamafactory import DatasetInfoDataset, LlamaFactoryDataset
    from sft.engine.harbor import convert_job
    from tests.robustness.helpers import DEMO_CONFIG

    paths = output_paths(root)
    datasets = {
        "lf": LlamaFactoryDataset(str(paths["lf"]), parquet=True),
        "im": AtomicJSONLinesDataset(str(paths["im"])),
        "rejects": AtomicJSONLinesDataset(str(paths["rejects"])),
        "funnel": AtomicJSONDataset(str(paths["funnel"])),
        "info": DatasetInfoDataset(str(paths["info"])),
    }
    _ready()
    base = load_config(DEMO_CONFIG).input
    results = []
    for max_instances in (0, 2):
        conv = base.conversion.model_copy(update={"max_instances": max_instances, "use_cache": True})
        results.append(
            convert_job(
                base.model_copy(update={"conversion": conv}), job, root, num_workers=1, progress=False
            )
        )
    for i in _loops(loops):
        result = results[i % 2]
        datasets["lf"].save(result.lf_rows)
        datasets["im"].save(result.im_rows)
        datasets["rejects"].save(result.rejects)
        datasets["funnel"].save(result.funnel)
        datasets["info"].save(
            {LF_NAME: {"file_name": paths["lf"].name, "formatting": "sharegpt", "rows": len(result.lf_rows)}}
        )


def run_writeback(config: Path, tag: str, loops: str, go_file: Path | None) -> None:
    from sft.config.writeback import write_runtime_output

    _ready(go_file)
    for i in _loops(loops):
        write_runtime_output(config, output_for(tag, i))


def run_record(root: Path, tag: str, loops: str, go_file: Path | None) -> None:
    from sft.train.history import record_run

    config = root / "config.yaml"
    _ready(go_file)
    for i in _loops(loops):
        run_id = record_run(
            root,
            started_at=f"2026-01-01T00:00:{i % 60:02d}",
            completed_at="2026-01-01T01:00:00",
            exit_code=0,
            status="completed",
            config_path=config,
            training_yaml_path=None,
            notes=f"{tag}-{i}",
        )
        sys.stdout.write(f"{run_id}\n")
        sys.stdout.flush()


def run_register(info_path: Path, tag: str, loops: str, go_file: Path | None) -> None:
    from sft.datasets.llamafactory import DatasetInfoDataset

    dataset = DatasetInfoDataset(str(info_path))
    _ready(go_file)
    for i in _loops(loops):
        dataset.save({f"{tag}_{i}": {"file_name": f"{tag}_{i}.json", "formatting": "sharegpt"}})


def main(argv: list[str]) -> None:
    mode = argv[1]
    go_file = Path(argv[5]) if len(argv) > 5 else None
    if mode == "convert":
        run_convert(Path(argv[2]), Path(argv[3]), argv[4])
    elif mode == "writeback":
        run_writeback(Path(argv[2]), argv[3], argv[4], go_file)
    elif mode == "record":
        run_record(Path(argv[2]), argv[3], argv[4], go_file)
    elif mode == "register":
        run_register(Path(argv[2]), argv[3], argv[4], go_file)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
