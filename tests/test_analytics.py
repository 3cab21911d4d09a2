"""The dataset views on hand-made Parquet: dedup, empty tables, schema drift, catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from fleetpulse.analytics.dataset import connect, write_catalog
from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000  # 2026-01-01T12:00Z
DAY = 86_400_000


def _env(device: str, seq: int, records: list[dict], boot: int = 1) -> bytes:
    return json.dumps({"v": 1, "device_id": device, "boot": boot, "seq": seq, "fw": "1.0",
                       "hw": "h", "sent_ms": T, "records": records}).encode()


def _use(t: int, feature: str | None = None) -> dict:
    if feature:
        return {"t": t, "type": "event", "event": "feature_used", "feature": feature}
    return {"t": t, "type": "event", "event": "button_press"}


def _write(data: Path, messages: list[tuple[str, bytes]]) -> None:
    pipe = Pipeline(data, "fixture")
    for topic_device, payload in messages:
        pipe.handle(f"devices/{topic_device}/telemetry", payload, T + 10 * DAY)
    pipe.flush()


def test_redelivered_message_is_counted_once(tmp_path: Path) -> None:
    msg = _env("a", 0, [_use(T, "eco"), _use(T + 1)])
    _write(tmp_path, [("a", msg)])
    _write(tmp_path, [("a", msg)])  # the broker delivered it again after a reconnect
    con = connect(tmp_path)
    assert con.execute("SELECT count(*) FROM events_raw").fetchone() == (4,)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (2,)
    assert con.execute("SELECT uses FROM feature_usage_daily()").fetchone() == (1,)


def test_hand_computed_daily_metrics(tmp_path: Path) -> None:
    # day 0: a uses eco twice, b presses a button, c only sends a heartbeat (not active)
    # day 1: a uses boost; b uses eco at 23:59:59 UTC (still day 1)
    hb = {"t": T, "type": "event", "event": "heartbeat", "uptime_s": 1, "reconnects": 0,
          "free_mem": 1}
    end_of_day1 = T - 12 * 3600_000 + 2 * DAY - 1000
    _write(tmp_path, [
        ("a", _env("a", 0, [_use(T, "eco"), _use(T + 5, "eco")])),
        ("b", _env("b", 0, [_use(T)])),
        ("c", _env("c", 0, [hb])),
        ("a", _env("a", 1, [_use(T + DAY, "boost")])),
        ("b", _env("b", 1, [_use(end_of_day1, "eco")])),
    ])
    con = connect(tmp_path)
    assert con.execute("SELECT day::VARCHAR, dau FROM active_devices() "
                       "ORDER BY day").fetchall() == [("2026-01-01", 2), ("2026-01-02", 2)]
    assert con.execute(
        "SELECT day::VARCHAR, feature, devices, uses, share_of_active FROM feature_usage_daily() "
        "ORDER BY day, feature").fetchall() == [
        ("2026-01-01", "eco", 1, 2, 0.5),
        ("2026-01-02", "boost", 1, 1, 0.5),
        ("2026-01-02", "eco", 1, 1, 0.5),
    ]
    assert con.execute("SELECT feature, devices, share_of_active FROM feature_adoption() "
                       "ORDER BY feature").fetchall() == [("boost", 1, 0.5), ("eco", 2, 1.0)]


def test_empty_dataset_has_every_view_with_its_columns(tmp_path: Path) -> None:
    con = connect(tmp_path)
    for view in ("readings", "events", "quarantine", "devices", "active_devices()",
                 "feature_adoption()", "daily_temperature()", "retention()", "sessions()",
                 "fleet_health()", "experiment_exposure('k')"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,), view
    cols = [c[0] for c in con.execute("DESCRIBE readings").fetchall()]
    assert cols[:4] == ["device_id", "iid", "boot", "seq"] and "date" in cols


def test_files_with_a_new_column_mix_with_old_ones(tmp_path: Path) -> None:
    _write(tmp_path, [("a", _env("a", 0, [_use(T)]))])
    old = next(tmp_path.glob("events/date=*/*.parquet"))
    newer = pq.read_table(old).append_column("co2_ppm", pa.array([612.0]))
    newer = newer.set_column(newer.schema.get_field_index("seq"), "seq", pa.array([1]))
    pq.write_table(newer, old.with_name("part-newer.parquet"))
    con = connect(tmp_path)
    assert con.execute("SELECT count(*), count(co2_ppm) FROM events").fetchone() == (2, 1)


def test_catalog_opens_read_only_from_another_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data, [("a", _env("a", 0, [_use(T, "eco")]))])
    out = tmp_path / "fleet.duckdb"
    names = write_catalog(data, out)
    assert {"readings", "events", "devices", "device_days"} <= set(names)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import duckdb; c = duckdb.connect('" + str(out) + "', read_only=True); "
            "print(c.execute('SELECT count(*) FROM active_devices()').fetchone()[0])")
    r = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip() == "1"
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)  # views only


def test_files_missing_declared_columns_still_serve_every_metric(tmp_path: Path) -> None:
    """A file from another writer with only some columns must not break the metrics."""
    folder = tmp_path / "events" / "date=2026-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({
        "device_id": ["x"], "boot": [1], "seq": [0], "idx": pa.array([0], pa.int32()),
        "ts": pa.array([T], pa.timestamp("ms", tz="UTC")),
        "received_at": pa.array([T], pa.timestamp("ms", tz="UTC")), "event": ["button_press"]}),
        folder / "part-other.parquet")
    con = connect(tmp_path)
    assert con.execute("SELECT dau FROM active_devices()").fetchall() == [(1,)]
    assert con.execute("SELECT count(*) FROM fleet_health()").fetchall() == [(1,)]
