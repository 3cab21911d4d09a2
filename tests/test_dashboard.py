"""The report file and the dashboard, checked in a real headless Chromium."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
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
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "report", "--data",
                        str(dataset), "--out", str(tmp_path / "r.html")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "r.html").stat().st_size > 5000


def test_report_has_a_panel_per_experiment_asked_for(dataset: Path) -> None:
    html = build_report(dataset, [("eco_nudge", "eco_mode")])
    payload = json.loads(re.search(
        r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1))
    panel = payload["groups"][-1]
    assert panel["key"] == "experiment-eco_nudge"
    # 40 devices: below the minimum sample, the panel says so instead of a lift
    assert "not enough data" in panel["title"] and panel["rows"] == []
    assert panel["sql"] == "fleetpulse metrics experiment --key eco_nudge --feature eco_mode"


def test_snapshot_of_shared_views_changes_no_number(dataset: Path) -> None:
    """A page refresh reads device_days and activations from one snapshot: every group
    equals its query over the live views, and the snapshot is gone afterwards."""
    con = connect(dataset)
    live = [query(con, g.sql).rows for g in GROUPS]
    steps: list[str] = []
    snap = run_groups(con, lambda step, _secs: steps.append(step))
    assert [r.rows for r in snap] == live
    assert steps[:3] == ["snapshot rollup_firmware_days", "snapshot device_days",
                         "snapshot activations"]
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    con.close()


@contextlib.contextmanager
def dashboard_server(data: Path) -> Iterator[str]:
    """`fleetpulse dashboard` on a free port, answering; yields its URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fleetpulse", "dashboard",
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
        yield url
    finally:
        server.terminate()
        server.wait(10)


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
    with dashboard_server(data) as url:
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


HOSTILE = ["<!--<script", "</script><script>window.__pwned=1</script>",
           '<img src=x onerror="window.__pwned=1">', "a&amp;b\u2028\u2029'\"`${x}"]


def test_hostile_feature_names_neither_break_nor_run(dataset: Path, browser,
                                                     tmp_path: Path) -> None:
    """Strings devices send reach the page as data: every chart still draws, the names
    show as text, and nothing they carry runs. Device ids cannot carry markup at all
    (the contract refuses them), which the pipeline shows too."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    pipe = Pipeline(data, "hostile")
    t0 = int(time.mktime(date(2026, 2, 10).timetuple())) * 1000
    for i in range(20):
        dev = f"sim-{i:04d}"
        env = {"v": 1, "device_id": dev, "boot": 9, "seq": i, "fw": "1.0.0", "hw": "x",
               "sent_ms": t0, "records": [{"t": t0 + k, "type": "event", "event": "feature_used",
                                           "feature": name} for k, name in enumerate(HOSTILE)]}
        pipe.handle(TELEMETRY_TOPIC.format(device_id=dev), json.dumps(env).encode(), t0)
    pipe.handle("devices/<script>/telemetry", b"{}", t0)
    pipe.flush()
    assert pipe.stats.rejected_by_reason == {"bad_topic": 1}

    report = tmp_path / "report.html"
    report.write_text(build_report(data))
    with dashboard_server(data) as dashboard:
        dialogs: list[str] = []
        for url in (report.as_uri(), dashboard):
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url)
            page.wait_for_function("document.body.dataset.rendered > 0", timeout=20_000)
            charts = page.locator("figure.chart")
            assert charts.count() == len(GROUPS), url
            for i in range(charts.count()):
                assert int(charts.nth(i).get_attribute("data-marks") or 0) > 0, url
            assert page.evaluate("window.__pwned") is None, url
            assert page.locator("img").count() == 0 and not dialogs, url
            text = page.locator("main").text_content() or ""
            for name in HOSTILE[:3]:
                assert name in text, (url, name)  # shown as text, not parsed as markup
            page.close()


def test_dashboard_error_page_is_escaped(tmp_path: Path) -> None:
    from fleetpulse.analytics import dashboard

    def broken(_data, _experiments=()):
        raise RuntimeError("<script>alert(1)</script> in the dataset")

    import threading

    orig = dashboard.report_data
    dashboard.report_data = broken
    try:
        server = dashboard.make_server(tmp_path, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)
        except urllib.error.HTTPError as e:
            body = e.read().decode()
            assert e.code == 500 and "<script>" not in body and "&lt;script&gt;" in body
        else:
            raise AssertionError("a broken dataset answered 200")
        finally:
            server.shutdown()
    finally:
        dashboard.report_data = orig
