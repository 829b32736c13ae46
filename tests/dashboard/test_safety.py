"""Nothing outside artifacts/ and data/ is served, no credential file is served, no secret value leaves."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from sft.dashboard import create_app
from sft.dashboard.safety import ForbiddenPath, ProjectFiles, Scrubber, is_credential_name, is_loopback
from tests.dashboard.fake_project import (
    CONFIG_SECRET,
    DATA_NAME,
    DOTENV_SECRET,
    FINISHED,
    HF_TOKEN,
    LIVE,
    WANDB_KEY,
    FakeProject,
)

TRAVERSALS: tuple[str, ...] = (
    "/files/../conf/local/credentials.yml",
    "/files/%2e%2e/conf/local/credentials.yml",
    "/files/%2E%2E%2Fconf%2Flocal%2Fcredentials.yml",
    "/files/artifacts/..%2F..%2Fconf/local/credentials.yml",
    "/files/artifacts%2F..%2F..%2Fetc%2Fpasswd",
    "/files/artifacts/%2e%2e/outside.txt",
    "/files/%2Fetc%2Fpasswd",
    "/files//etc/passwd",
    "/files/artifacts/....//....//outside.txt",
    "/files/artifacts/link_to_conf/credentials.yml",
    "/files/artifacts/link_to_outside.txt",
    "/files/data/link_to_etc/passwd",
    "/files/artifacts/credentials.yml",
    "/files/artifacts/.env",
    "/files/.env",
    "/files/conf/local/credentials.yml",
    "/files/config.yaml",
    "/files/outside.txt",
    "/files/artifacts/env/lf/pyvenv.cfg",
    "/files/artifacts/model/qwen3-8b-sft-v1/model.safetensors",
    "/static/..%2F..%2F..%2Fconf/local/credentials.yml",
    "/static/%2e%2e/app.py",
    "/api/runs/..%2F..%2Fconf/series",
    "/api/runs/%2e%2e/log",
    "/api/datasets/..%2F..%2F..%2Fconf%2Flocal%2Fcredentials/samples/0",
    "/api/datasets/%2e%2e/samples/0",
)


def test_served_text_is_scrubbed_but_served(client: TestClient) -> None:
    response = client.get("/files/data/notes.txt")
    assert response.status_code == 200
    assert response.text == "the key is ***REDACTED***\n"


def test_results_file_is_served(client: TestClient) -> None:
    response = client.get(f"/files/artifacts/model/{FINISHED}/train_results.json")
    assert response.status_code == 200 and response.json()["train_loss"] == 0.9123
    assert (
        client.get(f"/files/artifacts/model/{FINISHED}/training_loss.png").headers["content-type"]
        == "image/png"
    )


def test_served_yaml_has_secret_keys_redacted(client: TestClient) -> None:
    text = client.get("/files/artifacts/archives/run_001/config.yaml").text
    assert "wandb_api_key: '***REDACTED***'" in text or "wandb_api_key: ***REDACTED***" in text
    assert WANDB_KEY not in text


@pytest.mark.parametrize("url", TRAVERSALS)
def test_traversal_and_credential_requests_are_refused(
    client: TestClient, project: FakeProject, url: str
) -> None:
    response = client.get(url)
    assert response.status_code in (403, 404), f"{url} answered {response.status_code}"
    for secret in project.secrets:
        assert secret not in response.text
    assert "root:" not in response.text


@pytest.fixture
def live_server(project: FakeProject) -> Iterator[tuple[str, int]]:
    """A real uvicorn server: raw request targets reach it exactly as written (no client-side normalising)."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(project.root), host="127.0.0.1", port=0, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not (server.started and server.servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize(
    "target",
    [
        "/files/../../conf/local/credentials.yml",
        "/files/artifacts/../../conf/local/credentials.yml",
        "/files/artifacts/../outside.txt",
        "/files/..%2f..%2fconf%2flocal%2fcredentials.yml",
        "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/files/%252e%252e/outside.txt",
        "/static/../../../conf/local/credentials.yml",
        "/static/..%2f..%2fapp.py",
        "/files/artifacts/link_to_outside.txt",
    ],
)
def test_raw_traversal_over_http_is_refused(
    live_server: tuple[str, int], project: FakeProject, target: str
) -> None:
    connection = http.client.HTTPConnection(*live_server, timeout=10)
    connection.request("GET", target)
    response = connection.getresponse()
    body = response.read().decode("utf-8", errors="replace")
    assert response.status in (400, 403, 404), f"{target} answered {response.status}"
    assert all(secret not in body for secret in project.secrets)
    assert "import" not in body and "root:" not in body


def test_no_api_answer_contains_a_secret(client: TestClient, project: FakeProject) -> None:
    urls = [
        "/api/runs",
        f"/api/datasets/{DATA_NAME}",
        f"/api/datasets/{DATA_NAME}/samples/0",
        "/api/datasets",
    ]
    for run in (FINISHED, LIVE, "qwen3-8b-sft-crash", "run_003"):
        urls += [
            f"/api/runs/{run}",
            f"/api/runs/{run}/series",
            f"/api/runs/{run}/config",
            f"/api/runs/{run}/log",
            f"/api/runs/{run}/dataset",
        ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        for secret in project.secrets:
            assert secret not in response.text, f"{url} leaks a secret"


def test_secret_values_in_training_data_are_scrubbed(client: TestClient, project: FakeProject) -> None:
    rows_file = project.root / "artifacts/data/lf_data" / f"{DATA_NAME}.json"
    rows = json.loads(rows_file.read_text())
    rows[1]["conversations"][1]["value"] = f"my token is {HF_TOKEN}"
    rows_file.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    data = client.get(f"/api/datasets/{DATA_NAME}/samples/1").json()
    assert data["turns"][1]["text"] == "my token is ***REDACTED***"


def test_environment_secrets_are_scrubbed_too(project: FakeProject, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "env-only-wandb-key-424242")
    (project.root / "data/env_leak.txt").write_text("key env-only-wandb-key-424242\n")
    client = TestClient(create_app(project.root))
    assert client.get("/files/data/env_leak.txt").text == "key ***REDACTED***\n"


def test_scrubber_collects_every_project_secret(project: FakeProject) -> None:
    scrubber = Scrubber.for_project(project.root, env={})
    text = " ".join((WANDB_KEY, HF_TOKEN, CONFIG_SECRET))
    assert scrubber.text(text) == " ".join(["***REDACTED***"] * 3)
    assert scrubber.text("hf_" + "x" * 34) == "***REDACTED***"  # an unknown token of the HF shape
    assert DOTENV_SECRET  # .env is never read, so it is refused by name instead (see the traversal tests)


def test_project_files_refuse_by_rule(project: FakeProject) -> None:
    files = ProjectFiles.at(project.root)
    assert files.resolve(f"artifacts/model/{FINISHED}/train_results.json").is_file()
    for bad in (
        "../x",
        "/etc/passwd",
        "artifacts/../conf/local/credentials.yml",
        "conf/local/credentials.yml",
        "artifacts/link_to_conf/credentials.yml",
        "artifacts/.env",
        "data/link_to_etc/hostname",
        "artifacts\\..\\config.yaml",
        "artifacts/a\x00b",
    ):
        with pytest.raises(ForbiddenPath):
            files.resolve(bad)


@pytest.mark.parametrize(
    ("name", "denied"),
    [
        ("credentials.yml", True),
        (".env", True),
        ("prod.env", True),
        (".netrc", True),
        ("hf_token", True),
        ("api_key.txt", True),
        ("client_secret.json", True),
        ("id_rsa", True),
        ("server.pem", True),
        ("tokenizer.json", False),
        ("special_tokens_map.json", False),
        ("token_stats.json", False),
        ("trainer_log.jsonl", False),
        ("sample_stats.jsonl", False),
        ("config.yaml", False),
    ],
)
def test_credential_names(name: str, denied: bool) -> None:
    assert is_credential_name(name) is denied


def test_loopback_detection() -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and is_loopback("::1")
        and is_loopback("127.0.1.1")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("::")


def test_loopback_app_rejects_foreign_host_headers(project: FakeProject) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the API."""
    app = create_app(project.root, allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://evil.example").get("/api/runs").status_code == 400
