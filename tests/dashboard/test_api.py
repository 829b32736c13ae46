"""The JSON API over a fake project: run discovery, series, final metrics, config, log, dataset, CSV."""

from __future__ import annotations

import csv
import io
import json

from fastapi.testclient import TestClient

from tests.dashboard.fake_project import (
    CRASHED,
    DATA_NAME,
    DATASET_KEY,
    FINISHED,
    INDEX_ONLY,
    LIVE,
    STALE,
    FakeProject,
    log_line,
)


def runs_by_name(client: TestClient) -> dict[str, dict]:
    response = client.get("/api/runs")
    assert response.status_code == 200
    return {run["name"]: run for run in response.json()["runs"]}


def test_run_list_discovers_model_folders_and_index_only_runs(client: TestClient) -> None:
    runs = runs_by_name(client)
    assert set(runs) == {FINISHED, CRASHED, LIVE, STALE, INDEX_ONLY}
    assert runs[INDEX_ONLY]["has_model_dir"] is False
    assert runs[FINISHED]["index"]["id"] == "run_001"
    assert runs[CRASHED]["index"]["id"] == "run_002"
    assert runs[LIVE]["index"] is None


def test_run_list_puts_running_runs_first(client: TestClient) -> None:
    names = [run["name"] for run in client.get("/api/runs").json()["runs"]]
    assert names[0] == LIVE


def test_statuses_follow_the_rules(client: TestClient) -> None:
    runs = runs_by_name(client)
    assert runs[LIVE]["status"] == "running"
    assert runs[FINISHED]["status"] == "finished"
    assert runs[CRASHED]["status"] == "failed"
    assert runs[INDEX_ONLY]["status"] == "interrupted"
    assert runs[STALE]["status"] == "unknown"


def test_a_folder_without_trainer_log_or_state_is_not_a_run(client: TestClient, project: FakeProject) -> None:
    (project.root / "artifacts/model/just-weights").mkdir()
    (project.root / "artifacts/model/just-weights/model.safetensors").write_bytes(b"\0")
    assert "just-weights" not in runs_by_name(client)


def test_series_has_one_loss_point_per_log_line_with_loss(client: TestClient, project: FakeProject) -> None:
    data = client.get(f"/api/runs/{FINISHED}/series").json()
    losses = [v for v in data["series"]["loss"] if v is not None]
    assert len(losses) == project.log_lines_with_loss(FINISHED) == 10
    assert data["series"]["step"] == list(range(1, 11))
    # The final line (no loss, 100 %) completes step 10 instead of adding a point or changing its timing.
    assert data["series"]["percentage"][-1] == 100.0
    assert data["series"]["step_time_sec"][1:] == [31.0] * 9


def test_series_takes_grad_norm_from_trainer_state(client: TestClient) -> None:
    series = client.get(f"/api/runs/{FINISHED}/series").json()["series"]
    assert series["grad_norm"][:3] == [3.0, 1.5, 1.0]
    assert series["lr"][0] is not None and series["epoch"][-1] == 2.0


def test_series_reports_throughput_when_logged(client: TestClient) -> None:
    series = client.get(f"/api/runs/{LIVE}/series").json()["series"]
    assert series["tokens_per_sec"] == [1830.5] * 6
    assert series["total_tokens"][0] == int(1830.5 * 31)
    assert all(
        v is None for v in client.get(f"/api/runs/{FINISHED}/series").json()["series"]["tokens_per_sec"]
    )


def test_running_run_has_progress_and_eta(client: TestClient) -> None:
    live = runs_by_name(client)[LIVE]
    assert live["step"] == 6 and live["total_steps"] == 20 and live["percentage"] == 30.0
    assert live["eta_sec"] == 14 * 31.0  # median step time x steps left
    assert runs_by_name(client)[FINISHED]["eta_sec"] is None


def test_final_metrics_come_from_train_results(client: TestClient) -> None:
    detail = client.get(f"/api/runs/{FINISHED}").json()
    assert detail["final_metrics"]["train_loss"] == 0.9123
    assert detail["final_metrics"]["train_runtime"] == 312.4
    assert detail["final_loss"] == 0.9123
    assert detail["checkpoints"] == ["checkpoint-10"]
    assert "training_loss.png" in detail["model_files"]
    assert detail["state"]["global_step"] == 10


def test_series_answers_304_when_nothing_changed_and_200_after_an_append(
    client: TestClient, project: FakeProject
) -> None:
    first = client.get(f"/api/runs/{LIVE}/series")
    etag = first.headers["etag"]
    assert client.get(f"/api/runs/{LIVE}/series", headers={"If-None-Match": etag}).status_code == 304
    with (project.model(LIVE) / "trainer_log.jsonl").open("a") as fh:
        fh.write(json.dumps(log_line(7, 20, loss=1.0)) + "\n")
    again = client.get(f"/api/runs/{LIVE}/series", headers={"If-None-Match": etag})
    assert again.status_code == 200
    assert again.json()["points"] == 7


def test_half_written_last_line_waits_for_its_newline(client: TestClient, project: FakeProject) -> None:
    log = project.model(LIVE) / "trainer_log.jsonl"
    line = json.dumps(log_line(7, 20, loss=1.0))
    with log.open("a") as fh:
        fh.write(line[:20])
    assert client.get(f"/api/runs/{LIVE}/series").json()["points"] == 6
    with log.open("a") as fh:
        fh.write(line[20:] + "\n")
    assert client.get(f"/api/runs/{LIVE}/series").json()["points"] == 7


def test_unknown_run_is_404(client: TestClient) -> None:
    response = client.get("/api/runs/no-such-run/series")
    assert response.status_code == 404
    assert "no-such-run" in response.json()["detail"]


def test_config_is_the_archived_one_and_redacted(client: TestClient, project: FakeProject) -> None:
    data = client.get(f"/api/runs/{FINISHED}/config").json()
    assert data["config_path"] == "artifacts/archives/run_001/config.yaml"
    training = data["config"]["runtime_info"]["input"]["training"]
    # The archive leaked the key into a free-text field: the server redacts it again.
    assert training["notes"] == "uses key ***REDACTED***"
    assert data["training_yaml"]["dataset"] == DATASET_KEY
    assert data["archive_metadata"]["id"] == "run_001"
    body = json.dumps(data)
    for secret in project.secrets:
        assert secret not in body


def test_config_of_a_run_not_archived_yet_is_its_training_yaml(client: TestClient) -> None:
    data = client.get(f"/api/runs/{LIVE}/config").json()
    assert data["config"] is None and "no archive yet" in data["config_source"]
    assert data["training_yaml_path"] == f"artifacts/training_config/{LIVE}.yaml"


def test_console_log_tail_is_scrubbed_and_keeps_the_last_progress_frame(
    client: TestClient, project: FakeProject
) -> None:
    data = client.get(f"/api/runs/{FINISHED}/log").json()
    assert data["path"] == f"artifacts/logs/{FINISHED}_20250601_100000.log"
    assert "100%|##########| 10/10 [05:12<00:00, 31.2s/it]" in data["lines"]
    assert "[INFO] pushing with token ***REDACTED***" in data["lines"]
    assert all(secret not in json.dumps(data) for secret in project.secrets)


def test_console_log_tail_is_limited_to_the_requested_lines(client: TestClient) -> None:
    data = client.get(f"/api/runs/{LIVE}/log", params={"lines": 3}).json()
    assert data["lines"] == ["[INFO] step 398", "[INFO] step 399", "last live line"]
    assert data["truncated"] is True


def test_run_dataset_is_found_through_the_training_yaml(client: TestClient) -> None:
    data = client.get(f"/api/runs/{LIVE}/dataset").json()
    assert data["available"] is True
    assert data["datasets"] == [
        {"key": DATASET_KEY, "file_name": f"{DATA_NAME}.json", "name": DATA_NAME, "browsable": True}
    ]


def test_dataset_overview_has_card_stats_and_exact_histogram(client: TestClient) -> None:
    data = client.get(f"/api/datasets/{DATA_NAME}").json()
    assert data["rows"] == 3
    assert data["card"].startswith(f"# Dataset card: {DATA_NAME}")
    assert data["stats"]["token_lens"]["max"] == 2100
    hist = data["histogram"]
    assert hist["exact"] is True and sum(hist["counts"]) == 3 and hist["cutoff_len"] == 32768
    assert hist["edges"][0] == 40 and hist["edges"][-1] == 2100


def test_dataset_histogram_is_an_estimate_without_sample_stats(
    client: TestClient, project: FakeProject
) -> None:
    (project.root / "data/08_reporting" / DATA_NAME / "sample_stats.jsonl").unlink()
    hist = client.get(f"/api/datasets/{DATA_NAME}").json()["histogram"]
    assert hist["exact"] is False and "estimated" in hist["source"] and sum(hist["counts"]) == 3


def test_sample_is_split_into_turns(client: TestClient) -> None:
    data = client.get(f"/api/datasets/{DATA_NAME}/samples/0").json()
    assert data["count"] == 3 and data["system"] == "You are a coding agent."
    assert [t["role"] for t in data["turns"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    call_turn = data["turns"][1]
    assert call_turn["reasoning"] == "I should look at the test first."
    assert call_turn["tool_calls"] == [{"name": "bash", "arguments": {"command": "pytest -x"}}]
    assert len(data["turns"][3]["tool_calls"]) == 2
    assert data["turns"][4]["results"] == ["def slug(s): return s", "def test_slug(): ..."]
    assert data["tools"][0]["name"] == "bash"


def test_sample_out_of_range_is_404(client: TestClient) -> None:
    response = client.get(f"/api/datasets/{DATA_NAME}/samples/3")
    assert response.status_code == 404 and "3 rows" in response.json()["detail"]


def test_sample_list_pages(client: TestClient) -> None:
    data = client.get(f"/api/datasets/{DATA_NAME}/samples", params={"offset": 1, "limit": 5}).json()
    assert [item["index"] for item in data["items"]] == [1, 2]
    assert data["items"][1] == {
        "index": 2,
        "uid": "acme__ls-3#0",
        "instance_id": "acme__ls-3",
        "repo": None,
        "turns": 4,
        "tool_calls": 1,
        "chars": data["items"][1]["chars"],
    }


def test_dataset_list_and_unknown_dataset(client: TestClient) -> None:
    assert client.get("/api/datasets").json()["datasets"] == [
        {"name": DATA_NAME, "dataset_keys": [DATASET_KEY]}
    ]
    response = client.get("/api/datasets/nope")
    assert response.status_code == 404 and DATA_NAME in response.json()["detail"]


def test_compare_csv_has_every_step_of_each_run(client: TestClient) -> None:
    response = client.get("/api/compare.csv", params={"runs": f"{FINISHED},{LIVE}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sum(r["run"] == FINISHED for r in rows) == 10
    assert sum(r["run"] == LIVE for r in rows) == 6
    assert rows[0]["loss"] != "" and rows[0]["step"] == "1"


def test_only_get_and_head_are_allowed(client: TestClient) -> None:
    assert client.post("/api/runs").status_code == 405
    assert client.delete(f"/api/runs/{FINISHED}").status_code == 405


def test_page_and_vendored_chart_library_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/dashboard.js" in page.text
    assert "Content-Security-Policy" in page.headers
    lib = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert lib.status_code == 200 and "uPlot" in lib.text
    assert client.get("/static/vendor/uplot/LICENSE").status_code == 200
