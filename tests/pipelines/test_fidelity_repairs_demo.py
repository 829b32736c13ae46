"""On the demo job, the template-fidelity report explains every repair kind the conversion made: each kind in
the funnel's ``repairs`` is in the report's ``repairs`` section, registered, every row carrying it checked, and
every status equal or by-design."""

from __future__ import annotations

import json
from pathlib import Path

from sft.report.repairs import REPAIRS
from tests.pipelines.conftest import run_session


def test_every_repair_kind_of_the_demo_is_explained_as_equal_or_by_design(demo_project: Path) -> None:
    run_session(demo_project, "convert")
    reporting = demo_project / "data" / "08_reporting" / "demo_agent_sft"
    funnel = json.loads((reporting / "funnel.json").read_text())
    report = json.loads((reporting / "template_fidelity.json").read_text())
    rows = json.loads((demo_project / "artifacts" / "data" / "lf_data" / "demo_agent_sft.json").read_text())
    section = report["repairs"]
    assert funnel["repairs"] and set(section["kinds"]) == set(funnel["repairs"])  # the demo has repairs
    for kind, entry in section["kinds"].items():
        assert entry["registered"] and entry["explanation"] == REPAIRS[kind].why, kind
        # the rows carry what the funnel counts, and every row carrying a kind was compared
        assert entry["count"] == entry["dataset_count"] == funnel["repairs"][kind], kind
        carrying = [r for r in rows if kind in (json.loads(r["_meta"])["extra"].get("repairs") or {})]
        assert entry["rows"] == len(carrying) >= 1, kind
        # every row is compared up to 50 rows; above, every row of a rare kind, at least one of any kind
        assert (
            entry["checked"] == entry["rows"]
            if report["selection"]["mode"] == "all"
            else entry["checked"] >= 1
        )
        assert sum(entry["statuses"].values()) == entry["checked"]
        assert all(s == "equal" or s.startswith("by_design:") for s in entry["statuses"]), (kind, entry)
    assert section["unregistered"] == [] and section["mismatching"] == [] and section["all_explained"] is True
    assert report["passed"] is True
