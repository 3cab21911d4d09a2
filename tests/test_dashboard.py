"""The report file and the dashboard, checked in a real headless Chromium."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fleetpulse.analytics.dashboard import view_from_query
from fleetpulse.analytics.dataset import connect, query
from fleetpulse.analytics.panels import PANELS, View, run_groups
from fleetpulse.analytics.report import build_report, report_data
from fleetpulse.gateway.broker import free_port
from fleetpulse.ingest.contract import TELEMETRY_TOPIC
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.simulators.offline import write_dataset

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _fill(data: Path, devices: int, days: int, start: date) -> None:
    """A simulated fleet written straight through the ingest pipeline (no broker needed
    to test a page)."""
    write_dataset(data, devices, days, 3, start)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("dash") / "data"
    _fill(data, devices=40, days=14, start=date(2026, 2, 2))
    return data


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough devices for the experiments to have a verdict (100 exposed per variant)."""
    data = tmp_path_factory.mktemp("fleet") / "data"
    _fill(data, devices=300, days=21, start=date(2026, 2, 2))
    return data


def _payload(html: str) -> dict:
    return json.loads(re.search(
        r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_report_is_one_offline_file(dataset: Path, tmp_path: Path) -> None:
    html = build_report(dataset)
    assert not re.search(r"""(src|href)=["']?https?://""", html), "nothing fetched"
    assert "vegaEmbed" in html, "the chart library is inline"
    payload = _payload(html)
    keys = [p["key"] for p in payload["panels"]]
    # every metric panel, then one per experiment the devices reported applying
    assert keys == [p.key for p in PANELS] + ["experiment-aa_check", "experiment-eco_nudge"]
    assert all(p["rows"] for p in payload["panels"]), "every panel has data"
    assert payload["coverage"] == {"first_day": "2026-02-02", "last_day": "2026-02-15",
                                   "devices": 40, "experiments": ["aa_check", "eco_nudge"],
                                   "features": payload["coverage"]["features"],
                                   "attributes": ["region"]}
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "report", "--data",
                        str(dataset), "--out", str(tmp_path / "r.html"), "--since",
                        "2026-02-09", "--by", "hw"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fixed = _payload((tmp_path / "r.html").read_text())
    assert fixed["view"] == {"since": "2026-02-09", "until": "", "by": "hw",
                             "feature": "eco_mode"}
    activity = next(p for p in fixed["panels"] if p["key"] == "activity")
    assert activity["rows"][0][:2] == ["2026-02-09", "plug-picow"]


def test_experiment_panels_say_what_the_cli_says(fleet: Path) -> None:
    payload = report_data(fleet)
    for key in ("aa_check", "eco_nudge"):
        panel = next(p for p in payload["panels"] if p["key"] == f"experiment-{key}")
        r = subprocess.run([sys.executable, "-m", "fleetpulse", "metrics", "experiment",
                            "--data", str(fleet), "--key", key, "--format", "json"],
                           capture_output=True, text=True, check=True)
        cli = json.loads(r.stdout)
        assert panel["subtitle"].startswith(
            f"exposed A {cli['exposed']['A']:,}, B {cli['exposed']['B']:,} ")
        assert panel["subtitle"].endswith(f"verdict: {cli['verdict']}")
        rows = [dict(zip(panel["columns"], row, strict=True)) for row in panel["rows"]]
        lifts = {(c["variant"], c["metric"]): c["relative_lift"] for c in cli["comparisons"]}
        assert lifts and {(r["variant"], r["metric"]): r["relative_lift"] for r in rows
                          if r["metric"] in {m for _, m in lifts}} == pytest.approx(lifts, abs=1e-6)
    # the planted effect is found, the A/A check is not
    assert "significant (Holm-adjusted)" in next(
        p for p in payload["panels"] if p["key"] == "experiment-eco_nudge")["subtitle"]
    assert "no significant difference" in next(
        p for p in payload["panels"] if p["key"] == "experiment-aa_check")["subtitle"]


@pytest.mark.parametrize("view", [View(), View(date(2026, 2, 9), date(2026, 2, 12), "fw")])
def test_snapshot_of_shared_views_changes_no_number(dataset: Path, view: View) -> None:
    """A page refresh reads device_days and activations from one snapshot: every panel
    equals its query over the live views, and the snapshot is gone afterwards."""
    con = connect(dataset)
    live = [query(con, p.sql(view)).rows for p in PANELS]
    steps: list[str] = []
    snap = run_groups(con, view, timer=lambda step, _secs: steps.append(step))
    assert [r.rows for r in snap] == live
    assert steps[:1] == ["snapshot activations"]
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    con.close()


@pytest.mark.parametrize("since, until", [(None, None), (date(2026, 2, 4), date(2026, 2, 18))],
                         ids=["whole weeks", "a range cutting weeks"])
def test_weekly_health_is_fleet_health_over_each_week(fleet: Path, since: date | None,
                                                      until: date | None) -> None:
    """The dashboard's crash-free share per firmware and week is fleet_health's over that
    week alone, or its part in the view's range (the 21 days start on a Monday: three
    whole weeks)."""
    con = connect(fleet)
    view = View(since=since, until=until)
    weekly = query(con, next(p for p in PANELS if p.key == "health_weekly").sql(view))
    assert {r[0] for r in weekly.rows} == {date(2026, 2, 2), date(2026, 2, 9), date(2026, 2, 16)}
    crashed = 0
    for week, fw, devices, crash_free, share in weekly.rows:
        lo = max(week, since or week)
        hi = min(week + timedelta(days=6), until or week + timedelta(days=6))
        want = query(con, f"SELECT devices, crash_free_devices, crash_free_share FROM "
                          f"fleet_health(since := DATE '{lo}', until := DATE '{hi}') "
                          f"WHERE segment = '{fw}'").rows
        assert want == [(devices, crash_free, share)], (week, fw)
        crashed += devices - crash_free
    assert crashed > 0, "the simulated fleet crashes: the fixture tests the filter"
    con.close()


@pytest.mark.parametrize("query_string, message", [
    ("since=2026-02-30", "since='2026-02-30' is not a day: use YYYY-MM-DD"),
    ("since=2026-02-10&until=2026-02-01", "since 2026-02-10 is after until 2026-02-01"),
    ("by=region", "'region': use fw, hw, variant:KEY"),
    ("from=2026-02-01", "unknown parameter 'from': the page takes since, until, by, feature"),
])
def test_a_wrong_url_names_the_parameter(query_string: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        view_from_query(query_string)
    assert str(e.value).startswith(message)


def test_a_url_is_the_view_it_restores() -> None:
    view = View(date(2026, 2, 9), None, "variant:eco_nudge", "boost")
    assert view_from_query(urlencode(view.query_string())) == view
    assert View().query_string() == {}


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


def _shown(page) -> dict:
    """The payload the page drew, and its date and breakdown controls."""
    page.wait_for_function("document.body.dataset.rendered > 0", timeout=30_000)
    payload = page.evaluate("JSON.parse(document.getElementById('data').textContent)")
    payload["controls"] = {name: page.locator(f"[name={name}]").input_value()
                           for name in ("since", "until", "by", "feature")}
    return payload


def _panel(payload: dict, key: str) -> list[dict]:
    p = next(p for p in payload["panels"] if p["key"] == key)
    return [dict(zip(p["columns"], row, strict=True)) for row in p["rows"]]


def test_dashboard_in_a_browser(fleet: Path, browser, tmp_path: Path) -> None:
    """Every chart draws data, a tooltip shows a value, the date range and the breakdown
    re-query and change the numbers, the URL restores the view, CSV export gives the
    table, and a reload shows new data."""
    data = tmp_path / "data"
    shutil.copytree(fleet, data)
    ARTIFACTS.mkdir(exist_ok=True)
    with dashboard_server(data) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        whole = _shown(page)
        panels = page.locator("figure.panel")
        assert panels.count() == len(PANELS) + 2  # two experiments reported
        for i in range(panels.count()):
            fig = panels.nth(i)
            assert fig.get_attribute("data-error") is None, fig.get_attribute("data-error")
            assert int(fig.get_attribute("data-marks") or 0) > 0, fig.get_attribute("id")
        assert page.locator("#meta").inner_text().startswith(
            "data covers 2026-02-02..2026-02-22, 300 devices")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # a tooltip names the day and its counts
        # force: WAU and MAU points can coincide; whichever is on top answers
        page.locator("#panel-activity .mark-symbol path").nth(10).hover(force=True, timeout=5_000)
        tip = page.locator("#vg-tooltip-element.visible")
        tip.wait_for(timeout=5_000)
        text = tip.inner_text()
        day = re.search(r"\d{4}-\d{2}-\d{2}", text).group(0)
        row = next(r for r in _panel(whole, "activity") if r["day"] == day)
        assert re.search(rf"dau\s+{row['dau']}\b", text), text

        # a date range: the server re-queries, the URL carries it
        page.fill("[name=since]", "2026-02-09")
        page.wait_for_url("**/?since=2026-02-09")
        ranged = _shown(page)
        assert _panel(ranged, "activity")[0]["day"] == "2026-02-09"
        assert _panel(ranged, "features") != _panel(whole, "features")

        # a breakdown by firmware, on top of the range
        page.select_option("[name=by]", "fw")
        page.wait_for_url("**/?since=2026-02-09&by=fw")
        by_fw = _shown(page)
        assert {r["segment"] for r in _panel(by_fw, "activity")} == {"1.4.0", "1.5.0"}
        assert {r["segment"] for r in _panel(by_fw, "health")} == {"1.4.0", "1.5.0"}
        page.screenshot(path=str(ARTIFACTS / "dashboard-by-fw.png"), full_page=True)

        # a bookmarked URL restores the view and its numbers
        again = browser.new_page(viewport={"width": 1280, "height": 900})
        again.goto(page.url)
        restored = _shown(again)
        assert restored["controls"] == {"since": "2026-02-09", "until": "", "by": "fw",
                                        "feature": "eco_mode"}
        assert restored["panels"] == by_fw["panels"]

        # each chart's table as CSV
        with again.expect_download() as download:
            again.click("#panel-features button.csv")
        assert download.value.suggested_filename == "features.csv"
        with open(download.value.path(), newline="") as f:
            got = list(csv.DictReader(f))
        assert got == [{k: "" if v is None else str(v) for k, v in r.items()}
                       for r in _panel(by_fw, "features")]

        # a breakdown by a device attribute (the registry's regions, exported)
        page.select_option("[name=by]", "attr:region")
        page.wait_for_url("**/?since=2026-02-09&by=attr*region")
        by_region = _shown(page)
        assert {r["segment"] for r in _panel(by_region, "activity")} == {
            "eu-north", "eu-west", "us-east"}

        # new days arrive: a reload shows them
        _fill(data, devices=10, days=3, start=date(2026, 2, 23))
        again.reload()
        assert len(_panel(_shown(again), "activity")) == len(_panel(by_fw, "activity")) + 3 * 2


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
            charts = page.locator("figure.panel")
            assert charts.count() == len(PANELS) + 2, url  # and the two experiments
            for i in range(charts.count()):
                assert int(charts.nth(i).get_attribute("data-marks") or 0) > 0, url
            assert page.evaluate("window.__pwned") is None, url
            # a file cannot re-query: its controls say so instead of doing nothing
            assert page.locator("[name=by]").is_disabled() == (url == report.as_uri())
            assert page.locator("img").count() == 0 and not dialogs, url
            text = page.locator("main").text_content() or ""
            for name in HOSTILE[:3]:
                assert name in text, (url, name)  # shown as text, not parsed as markup
            page.close()


def test_dashboard_error_page_is_escaped(tmp_path: Path) -> None:
    from fleetpulse.analytics import dashboard

    def broken(*_args):
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
