"""The report file and the dashboard, checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from fleetpulse.analytics.dataset import connect, query
from fleetpulse.analytics.report import GROUPS, build_report, run_groups
from fleetpulse.gateway.broker import free_port
from fleetpulse.ingest.contract import TELEMETRY_TOPIC
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.simulators.fleet import Fleet

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _fill(data: Path, devices: int, days: int, start: date) -> None:
    """A simulated fleet written straight through the ingest pipeline (no broker needed
    to test a page)."""
    pipe = Pipeline(data, f"fill-{start}")
    for _, hour in Fleet(devices, days, 3, start).hours():
        for device_id, env in hour:
            pipe.handle(TELEMETRY_TOPIC.format(device_id=device_id), json.dumps(env).encode(),
                        env["sent_ms"])
    pipe.flush()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("dash") / "data"
    _fill(data, devices=40, days=14, start=date(2026, 2, 2))
    return data


def test_report_is_one_offline_file(dataset: Path, tmp_path: Path) -> None:
    html = build_report(dataset)
    assert not re.search(r"""(src|href)=["']?https?://""", html), "nothing fetched"
    payload = json.loads(re.search(
        r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert [g["key"] for g in payload["groups"]] == [g.key for g in GROUPS]
    assert all(g["rows"] for g in payload["groups"]), "every metric group has data"
    r = subprocess.run([sys.executable, "-m", "fleetpulse.gateway.cli", "report", "--data",
                        str(dataset), "--out", str(tmp_path / "r.html")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "r.html").stat().st_size > 5000


def test_snapshot_of_shared_views_changes_no_number(dataset: Path) -> None:
    """A page refresh reads device_days and activations from one snapshot: every group
    equals its query over the live views, and the snapshot is gone afterwards."""
    con = connect(dataset)
    live = [query(con, g.sql).rows for g in GROUPS]
    steps: list[str] = []
    snap = run_groups(con, lambda step, _secs: steps.append(step))
    assert [r.rows for r in snap] == live
    assert steps[:2] == ["snapshot device_days", "snapshot activations"]
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    con.close()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield b
        b.close()


def test_dashboard_renders_every_chart_and_requeries_on_reload(dataset: Path, browser,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fleetpulse.gateway.cli", "dashboard",
                               "--data", str(data), "--port", str(port)],
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "healthz", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no dashboard"
                time.sleep(0.1)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_function("document.body.dataset.rendered > 0", timeout=20_000)
        charts = page.locator("figure.chart")
        assert charts.count() == len(GROUPS)
        for i in range(charts.count()):
            fig = charts.nth(i)
            marks = int(fig.get_attribute("data-marks") or 0)
            assert marks > 0, f"{fig.get_attribute('id')} drew no data"
            assert fig.locator("[data-mark]").count() > 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        def days_shown() -> int:
            summary = page.locator("#chart-activity summary").inner_text()
            return int(re.search(r"\((\d+) rows\)", summary).group(1))

        before = days_shown()
        _fill(data, devices=10, days=3, start=date(2026, 2, 16))  # new days arrive
        page.reload()
        page.wait_for_function("document.body.dataset.rendered > 0", timeout=20_000)
        assert days_shown() == before + 3, "a reload re-queries the dataset"
    finally:
        server.terminate()
        server.wait(10)
