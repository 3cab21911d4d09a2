"""Simulated fleet -> real mosquitto -> ingest process -> Parquet -> DuckDB == truth."""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.simulators.simulate import simulate


@functools.cache
def _con(data: Path) -> duckdb.DuckDBPyConnection:
    """One connection to the fleet's dataset for the module: every test here only reads,
    and binding the views costs 2-3 s a connection."""
    return connect(data)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker of this module's own. The session broker still queues (and autosaves)
    every telemetry message for the persistent sessions of ingest processes that earlier
    tests stopped minutes ago: with them the fleet below took 248 s to arrive instead of
    75 s."""
    with Broker(free_port(), tmp_path_factory.mktemp("e2e-broker")) as b:
        yield b


@pytest.fixture(scope="module")
def fleet_run(broker, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from conftest import fleet_credentials, ingest_credentials

    from fleetpulse.ingest.process import IngestProcess

    root = tmp_path_factory.mktemp("e2e")
    ingest = IngestProcess(broker.address, root / "data", client_id="ingest-e2e",
                           extra_args=["--flush-seconds", "0.5", "--flush-rows", "20000",
                                       "--session-expiry", "120"],
                           log_path=root / "ingest.log", credentials=ingest_credentials(broker))
    try:
        ingest.start().wait_subscribed()
        user, password = fleet_credentials(broker)
        # Large enough for the planted experiment to be measurable (about 200 a variant).
        truth = simulate(broker.host, broker.port, devices=400, days=21, seed=21,
                         truth_path=root / "truth.json", progress=False, username=user,
                         password=password)
        ingest.wait_messages(truth["messages"], timeout=120)
        assert ingest.stop() == 0
    finally:
        ingest.kill()
    return truth, root / "data"


def test_every_record_published_is_stored_once(fleet_run) -> None:
    truth, data = fleet_run
    con = _con(data)
    readings, events = con.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events)").fetchone()
    assert readings == truth["readings"]
    assert events == truth["events"]
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    by_name = dict(con.execute("SELECT event, count(*) FROM events GROUP BY 1").fetchall())
    assert by_name == truth["events_by_name"]


def test_daily_active_devices_equal_truth_every_day(fleet_run) -> None:
    truth, data = fleet_run
    con = _con(data)
    got = {str(d): n for d, n in con.execute(
        "SELECT day, dau FROM active_devices()").fetchall()}
    want = {d: v["active_devices"] for d, v in truth["days"].items() if v["active_devices"]}
    assert len(want) == 21
    assert got == want


def test_devices_and_uses_per_feature_equal_truth_every_day(fleet_run) -> None:
    truth, data = fleet_run
    con = _con(data)
    devices: dict[str, dict[str, int]] = {}
    uses: dict[str, dict[str, int]] = {}
    for day, feature, n_dev, n_use in con.execute(
            "SELECT day, feature, devices, uses FROM feature_usage_daily()").fetchall():
        devices.setdefault(str(day), {})[feature] = n_dev
        uses.setdefault(str(day), {})[feature] = n_use
    assert devices == {d: v["devices_per_feature"] for d, v in truth["days"].items()
                       if v["devices_per_feature"]}
    assert uses == {d: v["events_per_feature"] for d, v in truth["days"].items()
                    if v["events_per_feature"]}


def test_daily_median_temperature_equals_truth(fleet_run) -> None:
    truth, data = fleet_run
    con = _con(data)
    got = dict(con.execute("SELECT day::VARCHAR, median_temperature_c FROM daily_temperature()"
                           ).fetchall())
    want = {d: v["median_temperature_c"] for d, v in truth["days"].items()}
    assert got.keys() == want.keys()
    for d in want:
        assert got[d] == pytest.approx(want[d], abs=1e-9)


def test_devices_view_knows_every_device_and_its_firmware(fleet_run) -> None:
    truth, data = fleet_run
    con = _con(data)
    rows = con.execute("SELECT device_id, hw FROM devices").fetchall()
    plan = truth["plan"]
    seen = {d for d, p in plan.items()}
    assert {r[0] for r in rows} <= seen
    assert all(plan[d]["hw"] == hw for d, hw in rows)


def test_wau_mau_equal_truth_every_day(fleet_run) -> None:
    truth, data = fleet_run
    got = {str(d): (dau, wau, mau) for d, dau, wau, mau in _con(data).execute(
        "SELECT day, dau, wau, mau FROM active_devices()").fetchall()}
    want = {d: (v["active_devices"], v["wau"], v["mau"]) for d, v in truth["days"].items()}
    assert got == want


def test_firmware_rollout_equals_truth(fleet_run) -> None:
    truth, data = fleet_run
    got: dict[str, dict[str, int]] = {}
    for day, fw, n in _con(data).execute(
            "SELECT day, fw, devices FROM firmware_rollout()").fetchall():
        got.setdefault(str(day), {})[fw] = n
    want = {d: v["active_by_fw"] for d, v in truth["days"].items() if v["active_by_fw"]}
    assert got == want
    _, new = truth["planted"]["firmware_rollout"]
    first, last = min(got), max(got)
    assert new not in got[first] and got[last].get(new, 0) > 0, "the rollout is visible"


def test_lifecycle_equals_truth(fleet_run) -> None:
    truth, data = fleet_run
    got = {str(w): {"new": a, "returning": b, "resurrecting": c, "dormant": d}
           for w, a, b, c, d in _con(data).execute(
               "SELECT week, new_devices, returning_devices, resurrecting_devices, "
               "dormant_devices FROM lifecycle()").fetchall()}
    assert got == truth["lifecycle"]
    assert sum(v["new"] for v in got.values()) > 0
    assert sum(v["dormant"] for v in got.values()) > 0, "the planted churn shows up"


def test_retention_matrix_equals_truth(fleet_run) -> None:
    truth, data = fleet_run
    got: dict[str, dict] = {}
    for cohort, size, n, in_week, after in _con(data).execute(
            "SELECT cohort_week, cohort_size, weeks_since, active_in_week, active_in_or_after "
            "FROM retention() ORDER BY cohort_week, weeks_since").fetchall():
        c = got.setdefault(str(cohort), {"size": size, "active_in_week": [],
                                         "active_in_or_after": []})
        assert n == len(c["active_in_week"])
        c["active_in_week"].append(in_week)
        c["active_in_or_after"].append(after)
    assert got == truth["retention"]
    youngest = max(got)
    assert len(got[youngest]["active_in_week"]) < len(got[min(got)]["active_in_week"]), \
        "a young cohort has fewer columns"


def test_feature_adoption_equals_truth(fleet_run) -> None:
    truth, data = fleet_run
    got = dict(_con(data).execute(
        "SELECT feature, devices FROM feature_adoption()").fetchall())
    assert got == truth["feature_devices"]


def test_feature_adoption_by_experiment_variant_equals_truth(fleet_run) -> None:
    truth, data = fleet_run
    key = truth["planted"]["experiment"]["key"]
    rows = _con(data).execute(
        f"SELECT segment, feature, devices FROM feature_adoption(segment_by := 'variant:{key}')"
    ).fetchall()
    got: dict[str, dict[str, int]] = {}
    for variant, feature, n in rows:
        got.setdefault(variant, {})[feature] = n
    assert got == truth["feature_devices_by_variant"]
    assert set(got) == {"A", "B"}


def test_fleet_health_finds_the_crashing_firmware(fleet_run) -> None:
    truth, data = fleet_run
    rows = _con(data).execute(
        "SELECT segment, devices, crash_free_devices, crash_free_share FROM fleet_health()"
    ).fetchall()
    got = {fw: {"devices": n, "crash_free_devices": ok} for fw, n, ok, _ in rows}
    assert got == truth["fleet_health"]
    share = {fw: s for fw, _, _, s in rows}
    crashes = truth["planted"]["crashes_per_hour"]
    worst = max(crashes, key=crashes.get)
    assert share[worst] < min(s for fw, s in share.items() if fw != worst)


def _experiment(data, key: str, feature: str) -> dict:
    from fleetpulse.analytics.experiment_query import experiment_devices
    from fleetpulse.analytics.experiments import analyze

    return analyze(experiment_devices(_con(data), key, feature))


def test_experiment_finds_the_planted_effect(fleet_run) -> None:
    truth, data = fleet_run
    planted = truth["planted"]["experiment"]
    r = _experiment(data, planted["key"], planted["feature"])
    assert not r["sample_ratio_mismatch"]
    conversion = next(c for c in r["comparisons"] if c.metric == "conversion")
    assert conversion.lift_low <= planted["effect"] <= conversion.lift_high
    assert conversion.p_holm < 0.05 and r["verdict"].startswith("significant")
    assert not any(g.flagged for g in r["guardrails"])


def test_an_aa_experiment_is_not_significant(fleet_run) -> None:
    truth, data = fleet_run
    r = _experiment(data, truth["planted"]["aa_key"], truth["planted"]["experiment"]["feature"])
    assert all(c.p_value >= 0.05 for c in r["comparisons"])
    assert r["verdict"] == "no significant difference"
    assert all(c.lift_low <= 0 <= c.lift_high for c in r["comparisons"])
    assert all(c.cs_low <= 0 <= c.cs_high and c.detected_on is None for c in r["comparisons"])


def test_experiment_command_prints_json_and_csv(fleet_run) -> None:
    truth, data = fleet_run
    planted = truth["planted"]["experiment"]
    argv = [sys.executable, "-m", "fleetpulse", "metrics", "experiment",
            "--data", str(data), "--key", planted["key"], "--feature", planted["feature"]]
    out = subprocess.run([*argv, "--format", "json"], capture_output=True, text=True,
                         check=True).stdout
    doc = json.loads(out)
    assert doc["key"] == planted["key"] and set(doc["exposed"]) == {"A", "B"}
    assert {c["metric"] for c in doc["comparisons"]} == {"conversion", "uses_per_device"}
    assert {g["metric"] for g in doc["guardrails"]} == {
        "crash_free_share", "reboots_per_device_day", "connectivity"}
    rows = list(csv.DictReader(io.StringIO(subprocess.run(
        [*argv, "--format", "csv"], capture_output=True, text=True, check=True).stdout)))
    assert [r["metric"] for r in rows][:2] == ["conversion", "uses_per_device"]
    assert len(rows) == 2 + 3


def test_experiment_below_minimum_sample_gives_no_verdict() -> None:
    from fleetpulse.analytics.experiments import analyze
    from fleetpulse.analytics.exposed import Device

    r = analyze([Device("A", 1)] * 20 + [Device("B", 2)] * 20, min_sample=100)
    assert r["verdict"].startswith("not enough data") and r["comparisons"] == []
