"""The dataset page's model-turn accounting (stats.json ``model_turns`` / ``repairs``, sft.core.turns)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from sft.dashboard.datasets import model_turns_view
from tests.dashboard.fake_project import DATA_NAME, FakeProject

MODEL_TURNS = {
    "source": 30,
    "output": 24,
    "unsourced": 0,
    "lost": {"extract:side_call": 2, "validate:empty_assistant_turn": 4},
    "per_agent": {
        "claude-code/main": {
            "source": 20,
            "output": 16,
            "unsourced": 0,
            "lost": {"validate:empty_assistant_turn": 4},
        },
        "open-code/main": {"source": 10, "output": 8, "unsourced": 0, "lost": {"extract:side_call": 2}},
    },
    "trials_counted": 5,
    "trials_not_counted": {},
}


def test_dataset_overview_shows_model_turns_per_agent(client: TestClient, project: FakeProject) -> None:
    path = project.root / "artifacts/data/lf_data" / f"{DATA_NAME}.stats.json"
    stats = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(
        json.dumps({**stats, "model_turns": MODEL_TURNS, "repairs": {"trimmed_tail": 3}}), encoding="utf-8"
    )
    view = client.get(f"/api/datasets/{DATA_NAME}").json()["model_turns"]
    assert view["summary"] == (
        "model turns: kept 24 of 30 (80.0%), lost: validate:empty_assistant_turn 4, extract:side_call 2"
    )
    assert view["kept_pct"] == 80.0 and view["repairs"] == {"trimmed_tail": 3}
    assert view["agents"] == [
        {
            "agent": "claude-code/main",
            "source": 20,
            "output": 16,
            "kept_pct": 80.0,
            "lost": {"validate:empty_assistant_turn": 4},
        },
        {
            "agent": "open-code/main",
            "source": 10,
            "output": 8,
            "kept_pct": 80.0,
            "lost": {"extract:side_call": 2},
        },
    ]


def test_stats_without_model_turns_show_none(client: TestClient) -> None:
    assert client.get(f"/api/datasets/{DATA_NAME}").json()["model_turns"] is None
    assert model_turns_view({"model_turns": "garbled"}) is None
