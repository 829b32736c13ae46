"""source.scaffold auto converts every Harbor agent: no trial is refused for its agent name."""

from __future__ import annotations

import json
from pathlib import Path

import sft.engine.harbor as engine
from tests.engine.conftest import engine_config, make_root
from tests.sources.conftest import HarborBuilder
from tests.sources.test_atif_agents import CODEX_STEPS, FIXTURES, _doc


def test_auto_converts_agents_without_a_proxy_log_adapter(tmp_path: Path) -> None:
    builder = HarborBuilder(tmp_path / "job")
    codex = builder.trial("calc__codex", instance_id="calc-1", agent_name="codex")
    builder.write_atif(codex / "agent", _doc(json.loads(json.dumps(CODEX_STEPS)), agent="codex"))
    openhands = builder.trial("hello__oh", instance_id="hello-1", agent_name="openhands")
    builder.copy_fixture("openhands_hello_world.trajectory.json", openhands / "agent" / "trajectory.json")
    unknown = builder.trial("calc__new", instance_id="calc-2", agent_name="not-in-harbor-yet")
    steps = json.loads(json.dumps(CODEX_STEPS))
    steps[0]["message"] = "Fix the other failing test"  # not a duplicate of the codex row (dedup)
    builder.write_atif(unknown / "agent", _doc(steps, agent="not-in-harbor-yet"))
    assert (FIXTURES / "openhands_hello_world.trajectory.json").is_file()
    cfg = engine_config(use_cache=False, instance_status="all", exclude_repos_file="")
    result = engine.convert_job(
        cfg, builder.job_dir, make_root(tmp_path / "root"), num_workers=1, progress=False
    )
    assert [r for r in result.rejects if r["stage"] == "scaffold"] == []
    scaffolds = sorted(json.loads(row["_meta"])["scaffold"] for row in result.lf_rows)
    assert scaffolds == ["codex", "not-in-harbor-yet", "openhands"]
    assert engine.scaffold_of_trial(codex) == "codex"
    assert engine.scaffold_of_trial(builder.trial("x__cc", agent_name="claude-code")) == "claude-code"
