"""End to end: ``python -m sft.dashboard`` on loopback, driven in headless Chromium (Debian's ``chromium``
package through Playwright's Python API).

The page must show the runs, draw one loss point per ``trainer_log.jsonl`` line with a loss, overlay two
runs and export them, browse the dataset, refuse a traversal, and grow the chart when the log grows,
without reloading. A screenshot of each view is written to the test's tmp dir (and copied to
``data/08_reporting/dashboard_screenshots/`` when ``SFT_KEEP_SCREENSHOTS=1``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sft.core.io_utils import atomic_write_bytes
from tests.dashboard.fake_project import DATA_NAME, FINISHED, LIVE, FakeProject, log_line, make_project

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEEP_DIR = PROJECT_ROOT / "data" / "08_reporting" / "dashboard_screenshots"
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: install Debian's chromium package (apt-get install -y chromium; "
    ".ci/run does it) to run the dashboard's browser test",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def e2e_project(tmp_path_factory: pytest.TempPathFactory) -> FakeProject:
    return make_project(tmp_path_factory.mktemp("e2e") / "proj")


@pytest.fixture(scope="module")
def base_url(e2e_project: FakeProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    }
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sft.dashboard",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--project-dir",
                str(e2e_project.root),
                "--poll-seconds",
                "1",
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dashboard server did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed in this environment: it is in the project's `dev` extra "
            "(scripts/install_env.sh installs it); /usr/bin/chromium is present, so the test must run"
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("dashboard_screenshots")
    yield folder
    if os.environ.get("SFT_KEEP_SCREENSHOTS") == "1":
        for png in sorted(folder.glob("*.png")):
            atomic_write_bytes(KEEP_DIR / png.name, png.read_bytes())


@pytest.fixture
def page_errors() -> list[str]:
    """JavaScript errors and console errors of the test's page; the page fixture asserts there are none."""
    return []


@pytest.fixture
def page(browser: Any, base_url: str, page_errors: list[str]) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True, base_url=base_url
    )
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.on("pageerror", lambda exc: page_errors.append(f"page error: {exc}"))
    tab.on("console", lambda msg: page_errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    yield tab
    context.close()
    assert page_errors == [], page_errors


def loss_points(page: Any) -> int:
    return int(
        page.evaluate(
            "() => { const c = window.sftDashboard.charts.loss; return c ? c.data[1].filter(v => v != null).length : -1; }"
        )
    )


def test_run_list_shows_the_runs(page: Any, shots: Path) -> None:
    page.goto("/#/runs")
    row = page.locator(f'tr[data-run="{FINISHED}"]')
    row.wait_for()
    assert row.locator(".pill").inner_text() == "finished"
    assert page.locator(f'tr[data-run="{LIVE}"] .pill').inner_text() == "running"
    assert page.locator('tr[data-run="qwen3-8b-sft-crash"] .pill').inner_text() == "failed"
    assert page.locator("#runs-table tbody tr").count() == 5
    page.screenshot(path=str(shots / "runs.png"), full_page=True)


def test_a_run_recorded_only_in_the_index_has_a_view(page: Any) -> None:
    page.goto("/#/run/run_003")
    page.wait_for_selector("h1 .pill")
    assert page.locator("h1 .pill").inner_text() == "interrupted"
    assert page.locator("#chart-loss").get_attribute("data-points") == "0"
    page.wait_for_function("() => document.querySelector('#console-log').textContent.length > 1")


def test_run_view_draws_one_loss_point_per_log_line(page: Any, e2e_project: FakeProject, shots: Path) -> None:
    page.goto(f"/#/run/{FINISHED}")
    page.wait_for_selector("#chart-loss canvas")
    expected = e2e_project.log_lines_with_loss(FINISHED)
    assert expected == 10
    assert loss_points(page) == expected
    assert page.locator("#chart-loss").get_attribute("data-points") == str(expected)
    page.wait_for_selector("#final-metrics")
    assert "0.9123" in page.locator("#final-metrics").inner_text()
    assert page.locator("#stat-step").inner_text() == "10 / 10"
    page.wait_for_function("() => document.querySelector('#console-log').textContent.includes('train_loss')")
    log_text = page.locator("#console-log").inner_text()
    assert "***REDACTED***" in log_text and "hf_FAKE" not in log_text
    page.wait_for_selector(".dataset-link")
    page.screenshot(path=str(shots / "run.png"), full_page=True)


def test_compare_overlays_two_runs_and_exports(page: Any, shots: Path, tmp_path: Path) -> None:
    page.goto("/#/runs")
    page.locator(f'tr[data-run="{FINISHED}"] input[type=checkbox]').check()
    page.locator(f'tr[data-run="{LIVE}"] input[type=checkbox]').check()
    page.click("#compare-selected")
    page.wait_for_selector("#chart-compare canvas")
    page.wait_for_function("() => document.querySelector('#chart-compare').dataset.series === '2'")
    labels = page.evaluate("() => window.sftDashboard.charts.compare.series.slice(1).map(s => s.label)")
    assert sorted(labels) == sorted([FINISHED, LIVE])
    counts = page.evaluate(
        "() => window.sftDashboard.charts.compare.data.slice(1).map(s => s.filter(v => v != null).length)"
    )
    assert sorted(counts) == [6, 10]
    with page.expect_download() as csv_download:
        page.click("#export-csv")
    csv_text = Path(csv_download.value.path()).read_text()
    assert csv_text.count(f"\n{FINISHED},") == 10 and csv_text.count(f"\n{LIVE},") >= 6
    with page.expect_download() as png_download:
        page.click("#export-png")
    assert Path(png_download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.select_option("#compare-metric", "lr")
    page.wait_for_function(
        "() => window.sftDashboard.charts.compare && "
        "window.sftDashboard.charts.compare.data[1].some(v => v != null && v < 0.001)"
    )
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_dataset_view_shows_card_histogram_and_folded_turns(page: Any, shots: Path) -> None:
    page.goto(f"/#/dataset/{DATA_NAME}")
    page.wait_for_selector("#dataset-card h1")
    assert page.locator("#dataset-card h1").inner_text() == f"Dataset card: {DATA_NAME}"
    page.wait_for_selector("#chart-histogram canvas")
    assert page.evaluate("() => window.sftDashboard.charts.histogram.data[1].reduce((a, b) => a + b, 0)") == 3
    page.wait_for_selector("#sample-view .turn[data-role=user]")
    roles = page.locator("#sample-view .turn").evaluate_all("nodes => nodes.map(n => n.dataset.role)")
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    folded = page.locator("#sample-view details.reasoning, #sample-view details.call")
    assert folded.count() == 6
    assert folded.evaluate_all("nodes => nodes.every(n => !n.open)")
    assert not page.locator("#sample-view details.reasoning pre").first.is_visible()
    page.screenshot(path=str(shots / "dataset.png"), full_page=True)
    page.click("#sample-next")
    page.wait_for_function("() => document.querySelector('#sample-counter').textContent.startsWith('2 of 3')")
    assert page.locator("#sample-view .turn").count() == 3
    page.click("#sample-prev")
    page.wait_for_function("() => document.querySelector('#sample-counter').textContent.startsWith('1 of 3')")
    page.click("#expand-all")
    assert page.locator("#sample-view details.reasoning pre").first.is_visible()
    page.screenshot(path=str(shots / "dataset_unfolded.png"), full_page=True)


@pytest.mark.parametrize(
    "target",
    [
        "/files/%2e%2e/conf/local/credentials.yml",
        "/files/artifacts/..%2F..%2Fconf%2Flocal%2Fcredentials.yml",
        "/files/artifacts/link_to_conf/credentials.yml",
        "/files/artifacts/credentials.yml",
    ],
)
def test_traversal_request_from_the_browser_is_refused(
    page: Any, e2e_project: FakeProject, target: str
) -> None:
    response = page.request.get(target)
    assert response.status in (403, 404)
    assert all(secret not in response.text() for secret in e2e_project.secrets)


def test_traversal_navigation_is_refused(
    page: Any, page_errors: list[str], e2e_project: FakeProject, shots: Path
) -> None:
    # Chromium resolves a literal or %2e dot segment itself (the request never leaves the browser as
    # "../"); an encoded slash reaches the server, which must refuse it.
    normalised = page.goto("/files/%2e%2e/conf/local/credentials.yml")
    assert normalised is not None and normalised.status in (403, 404)
    response = page.goto("/files/artifacts/..%2F..%2Fconf%2Flocal%2Fcredentials.yml")
    assert response is not None and response.status == 403
    body = page.content()
    assert "forbidden" in body and all(secret not in body for secret in e2e_project.secrets)
    page.screenshot(path=str(shots / "traversal_refused.png"))
    # Chromium logs every 4xx navigation (and the favicon it then asks for) as a console error: those are
    # the expected refusals.
    assert page_errors and all("403" in e or "404" in e for e in page_errors), page_errors
    page_errors.clear()


def test_chart_grows_when_the_log_grows(page: Any, e2e_project: FakeProject, shots: Path) -> None:
    log = e2e_project.model(LIVE) / "trainer_log.jsonl"
    with log.open("a") as fh:  # keep the run fresh whatever ran before
        fh.write("")
    os.utime(log)
    page.goto(f"/#/run/{LIVE}")
    page.wait_for_selector("#chart-loss canvas")
    before = loss_points(page)
    assert before == e2e_project.log_lines_with_loss(LIVE)
    page.evaluate("() => { window.__noReload = true; }")
    polls_before = page.evaluate("() => window.sftDashboard.polls || 0")
    with log.open("a") as fh:
        for step in range(before + 1, before + 4):
            fh.write(json.dumps(log_line(step, 20, loss=1.0 - step / 100, throughput=1900.0)) + "\n")
    page.wait_for_function(
        f"() => window.sftDashboard.charts.loss && "
        f"window.sftDashboard.charts.loss.data[1].filter(v => v != null).length === {before + 3}"
    )
    assert loss_points(page) == e2e_project.log_lines_with_loss(LIVE) == before + 3
    assert page.evaluate("() => window.__noReload") is True
    # The growth came from the page's own polling (the counter moves when a refresh completes).
    page.wait_for_function(f"() => (window.sftDashboard.polls || 0) > {polls_before}")
    assert page.locator("#stat-step").inner_text() == f"{before + 3} / 20"
    assert page.locator("h1 .pill").inner_text() == "running"
    page.screenshot(path=str(shots / "run_live.png"), full_page=True)
