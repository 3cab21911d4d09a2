"""Simulated fleet -> real mosquitto -> ingest process -> Parquet -> DuckDB == truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse.analytics.dataset import connect
from fleetpulse.simulators.simulate import simulate


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
        truth = simulate(broker.host, broker.port, devices=60, days=12, seed=21,
                         truth_path=root / "truth.json", progress=False, username=user,
                         password=password)
        ingest.wait_messages(truth["messages"], timeout=120)
        assert ingest.stop() == 0
    finally:
        ingest.kill()
    return truth, root / "data"


def test_every_record_published_is_stored_once(fleet_run) -> None:
    truth, data = fleet_run
    con = connect(data)
    readings, events = con.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events)").fetchone()
    assert readings == truth["readings"]
    assert events == truth["events"]
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    by_name = dict(con.execute("SELECT event, count(*) FROM events GROUP BY 1").fetchall())
    assert by_name == truth["events_by_name"]


def test_daily_active_devices_equal_truth_every_day(fleet_run) -> None:
    truth, data = fleet_run
    con = connect(data)
    got = {str(d): n for d, n in con.execute(
        "SELECT day, dau FROM active_devices()").fetchall()}
    want = {d: v["active_devices"] for d, v in truth["days"].items() if v["active_devices"]}
    assert len(want) == 12
    assert got == want


def test_devices_and_uses_per_feature_equal_truth_every_day(fleet_run) -> None:
    truth, data = fleet_run
    con = connect(data)
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
    con = connect(data)
    got = dict(con.execute("SELECT day::VARCHAR, median_temperature_c FROM daily_temperature()"
                           ).fetchall())
    want = {d: v["median_temperature_c"] for d, v in truth["days"].items()}
    assert got.keys() == want.keys()
    for d in want:
        assert got[d] == pytest.approx(want[d], abs=1e-9)


def test_devices_view_knows_every_device_and_its_firmware(fleet_run) -> None:
    truth, data = fleet_run
    con = connect(data)
    rows = con.execute("SELECT device_id, hw FROM devices").fetchall()
    plan = truth["plan"]
    seen = {d for d, p in plan.items()}
    assert {r[0] for r in rows} <= seen
    assert all(plan[d]["hw"] == hw for d, hw in rows)
