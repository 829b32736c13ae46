"""Lineage (kedro viz build) is one connected graph, and the exploration notebook executes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.pipelines.conftest import run_session

ROOT = Path(__file__).resolve().parents[2]


def _connected(nodes: list[str], edges: list[tuple[str, str]]) -> bool:
    adj: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, stack = set(), [nodes[0]]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(adj[n] - seen)
    return seen == set(nodes)


@pytest.mark.slow
def test_viz_build_graph_is_connected(demo_project: Path) -> None:
    env = {**os.environ, "SFT_PROJECT_ROOT": str(demo_project), "SFT_CONFIG": "config.demo.yaml"}
    kedro = Path(sys.executable).parent / "kedro"
    proc = subprocess.run(
        [str(kedro), "viz", "build"], cwd=demo_project, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    main = json.loads((demo_project / "build" / "api" / "main").read_text())
    names = {n["id"]: n["name"] for n in main["nodes"]}
    task_names = {n["name"] for n in main["nodes"] if n["type"] == "task"}
    for expected in ("build_dataset_node", "register_dataset_node", "train_model_node"):
        assert expected in task_names
    assert any("report" in n or "stats" in n for n in task_names)
    edges = [(e["source"], e["target"]) for e in main["edges"]]
    assert _connected(list(names), edges)
    layers = set(main["layers"])
    assert {"raw", "intermediate", "primary", "model_input", "feature", "models", "reporting"} <= layers
    # every dataset carries a layer
    assert all(
        n.get("layer") for n in main["nodes"] if n["type"] == "data" and not n["name"].startswith("params")
    )


@pytest.mark.slow
def test_explore_notebook_executes(demo_project: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    run_session(demo_project, "convert")
    nb = nbformat.read(ROOT / "notebooks" / "explore_dataset.ipynb", as_version=4)
    (demo_project / "notebooks").mkdir(exist_ok=True)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(demo_project)}}
    )
    client.execute()
    outputs = "".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "demo_agent_sft" in outputs
    assert "rows_written" in outputs
    assert "lf_dataset_table: (" in outputs and "'conversations'" in outputs  # the DataFrame cell
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
