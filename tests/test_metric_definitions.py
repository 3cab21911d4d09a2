"""Each metric's definition pinned by a dozen hand-made devices, expected values worked
out by hand (below, per device), including the edge cases: a device active only once,
a cohort too young for a column, a session crossing midnight, a session longer than
24 h, a device that changes firmware mid-day, a funnel step outside the window.

Weeks start on Monday: week 1 = Jan 5-11 2026, week 2 = Jan 12-18, week 3 = Jan 19-25.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.rollups import write_rollups
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.ingest.store import Store


def t(day: int, hh: int = 10, mm: int = 0) -> int:
    return int(datetime(2026, 1, day, hh, mm, tzinfo=UTC).timestamp() * 1000)


def ev(ts: int, event: str, **fields: object) -> dict:
    return {"t": ts, "type": "event", "event": event, **fields}


def reading(ts: int) -> dict:
    return {"t": ts, "type": "reading", "temperature_c": 21.0, "humidity_pct": 45.0}


# device -> [(fw, records)] ; each tuple becomes one envelope
FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # d01: active once (Jan 5)
    "d01": [("1.0", [ev(t(5), "button_press")])],
    # d02: active Jan 5, 6, 7 (three days in week 1)
    "d02": [("1.0", [ev(t(5), "button_press"), ev(t(6), "button_press"),
                     ev(t(7), "button_press")])],
    # d03: active in week 1 and week 3, not week 2: resurrecting in week 3
    "d03": [("1.0", [ev(t(6), "button_press"), ev(t(20), "button_press")])],
    # d04: first seen Jan 19: a cohort too young for any column but week 0
    "d04": [("1.0", [reading(t(19, 8)), ev(t(19), "button_press")])],
    # d05: one session from 23:50 Jan 6 to 00:10 Jan 7 (counted on Jan 6, 20 minutes)
    "d05": [("1.0", [ev(t(6, 23, 50), "session_start"),
                     ev(t(6, 23, 55), "feature_used", feature="eco"),
                     ev(t(7, 0, 10), "session_end")])],
    # d06: 1.0 in the morning, 1.1 in the afternoon of Jan 8: counts on 1.1 that day
    "d06": [("1.0", [reading(t(8, 8))]), ("1.1", [ev(t(8, 14), "button_press")])],
    # d07: only a heartbeat: seen, never active
    "d07": [("1.0", [ev(t(5), "heartbeat", uptime_s=1, reconnects=0, free_mem=1)])],
    # d08: on 1.1, used on Jan 9 and crashed (an error) the same day
    "d08": [("1.1", [ev(t(9, 11), "button_press"), ev(t(9, 12), "error", code="E_PANIC")])],
    # d09: power_on -> session_start (+10 min) -> feature_used (+10 min)
    "d09": [("1.0", [ev(t(5, 9), "power_on"), ev(t(5, 9, 10), "session_start"),
                     ev(t(5, 9, 20), "feature_used", feature="eco")])],
    # d10: power_on Jan 5, session_start 16 days later: outside a 14-day funnel window
    "d10": [("1.0", [ev(t(5, 9), "power_on")]), ("1.0", [ev(t(21, 9), "session_start")])],
    # d11: a button press every 20 minutes from Jan 12 00:00 to Jan 13 01:00: one run of
    # 25 h, cut at 24 h into a 1420-minute session (Jan 12) and a 60-minute one (Jan 13)
    "d11": [("1.0", [ev(t(12, 0) + i * 20 * 60_000, "button_press") for i in range(40)]),
            ("1.0", [ev(t(12, 0) + i * 20 * 60_000, "button_press") for i in range(40, 76)])],
    # d12: first seen Jan 5, first uses `schedule` three days later
    "d12": [("1.0", [reading(t(5, 7))]), ("1.0", [ev(t(8), "feature_used", feature="schedule")])],
}


def _dataset(data: Path, fleet: dict[str, list[tuple[str, list[dict]]]],
             hw: dict[str, str] | None = None, rolled_up: bool = False):
    pipe = Pipeline(data, "fixture")
    for device, envelopes in fleet.items():
        for seq, (fw, records) in enumerate(envelopes):
            env = {"v": 1, "device_id": device, "boot": 1, "seq": seq, "fw": fw,
                   "hw": (hw or {}).get(device, "h"), "sent_ms": t(25), "records": records}
            pipe.handle(f"devices/{device}/telemetry", json.dumps(env).encode(), t(25))
    pipe.flush()
    assert pipe.stats.records_rejected == 0 and pipe.stats.messages_rejected == 0
    if rolled_up:
        # Every definition must give the same rows from compaction's per-day rollups
        # as from raw rows: each test runs on both.
        assert write_rollups(Store(data))
        con = connect(data)
        assert rows(con, "SELECT count(*) FROM rollup_raw_days") == [(0,)]
        return con
    return connect(data)


# "raw": every day computed from raw rows; "rollups": every day from per-day rollups
LAYOUTS = ["raw", "rollups"]


@pytest.fixture(scope="module", params=LAYOUTS)
def con(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    return _dataset(tmp_path_factory.mktemp("fixtures"), FLEET,
                    rolled_up=request.param == "rollups")


def env_reading(ts: int, temperature_c: float, humidity_pct: float) -> dict:
    return {"t": ts, "type": "reading", "temperature_c": temperature_c,
            "humidity_pct": humidity_pct}


# Environment context, on devices of their own (the fleet above reads 21.0 / 45 % only)
ENV_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # e1 (plug), Jan 10. Hour 10: readings 19.0 / 41 and 20.6 / 43 average 19.8 / 42, so the
    # 18-20 degC and 40-50 % band, with two usage events (the heartbeat is not usage).
    # Hour 11: 22.5 / 55 with no usage. Hour 12 has usage but no reading: no device-hour.
    "e1": [("1.0", [env_reading(t(10, 10), 19.0, 41.0), ev(t(10, 10, 15), "button_press"),
                    env_reading(t(10, 10, 30), 20.6, 43.0),
                    ev(t(10, 10, 45), "feature_used", feature="eco"),
                    env_reading(t(10, 11), 22.5, 55.0), ev(t(10, 11, 5), "heartbeat",
                                                           uptime_s=1, reconnects=0,
                                                           free_mem=1),
                    ev(t(10, 12, 5), "button_press")])],
    # e2 (thermostat): 23:30 Jan 10 at 22.0 / 50 with one press, and 00:10 Jan 11 at
    # 23.9 / 59 with one press: two device-hours in the 22-24 degC, 50-60 % band
    "e2": [("1.0", [env_reading(t(10, 23, 30), 22.0, 50.0), ev(t(10, 23, 50), "button_press"),
                    env_reading(t(11, 0, 10), 23.9, 59.0), ev(t(11, 0, 20), "button_press")])],
}


@pytest.fixture(scope="module", params=LAYOUTS)
def env_con(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    return _dataset(tmp_path_factory.mktemp("env-fixtures"), ENV_FLEET,
                    {"e1": "plug", "e2": "thermostat"},
                    rolled_up=request.param == "rollups")


def test_usage_by_temperature_and_humidity_band(env_con) -> None:
    got = rows(env_con, "SELECT temp_from_c, temp_to_c, humidity_from_pct, humidity_to_pct, "
                        "device_hours, usage_events, usage_per_device_hour "
                        "FROM usage_by_environment()")
    # 22-24 / 50-60: e1 hour 11 (0 uses), e2 23:00 (1) and 00:00 (1) -> 2 / 3
    assert got == [(18, 20, 40, 50, 1, 2, 2.0), (22, 24, 50, 60, 3, 2, 0.6667)]
    assert rows(env_con, "SELECT device_hours FROM usage_by_environment("
                         "since := DATE '2026-01-11')") == [(1,)]


def test_reading_distributions_by_model(env_con) -> None:
    # plug 19.0, 20.6, 22.5: p10 at position 0.2 -> 19.32; p90 at 1.8 -> 22.12
    # thermostat 22.0, 23.9: p10 at 0.1 -> 22.19; median 22.95; p90 at 0.9 -> 23.71
    assert rows(env_con, "SELECT * FROM readings_by_model()") == [
        ("plug", 1, 3, 19.32, 20.6, 22.12, 43.0),
        ("thermostat", 1, 2, 22.19, 22.95, 23.71, 54.5)]


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def d(day: int) -> date:
    return date(2026, 1, day)


def test_daily_weekly_monthly_active(con) -> None:
    got = {r[0]: r[1:] for r in rows(con, "SELECT day, dau, wau, mau FROM active_devices()")}
    assert {k: v[0] for k, v in got.items()} == {
        d(5): 3, d(6): 3, d(7): 2, d(8): 2, d(9): 1, d(12): 1, d(13): 1, d(19): 1, d(20): 1,
        d(21): 1}
    # Jan 3-9: d01 d02 d03 d05 d06 d08 d09 d12; everyone but d07 by Jan 21
    assert got[d(9)][1] == 8 and got[d(21)][2] == 11


def test_active_days_per_week(con) -> None:
    got = rows(con, "SELECT active_days, devices FROM active_days_per_week() "
                    "WHERE week = DATE '2026-01-05' ORDER BY 1")
    assert got == [(1, 6), (2, 1), (3, 1)]  # d02: 3 days, d05: 2 (Jan 6 and 7)


def test_lifecycle(con) -> None:
    assert rows(con, "SELECT * FROM lifecycle()") == [
        (d(5), 8, 0, 0, 0),
        (d(12), 1, 0, 0, 8),  # d11 new; the eight of week 1 dormant
        (d(19), 2, 0, 1, 1),  # d04 and d10 new; d03 resurrecting; d11 dormant
    ]


def test_retention_with_a_cohort_too_young(con) -> None:
    got = rows(con, "SELECT cohort_week, cohort_size, weeks_since, active_in_week, "
                    "active_in_or_after FROM retention()")
    assert got == [
        (d(5), 10, 0, 8, 9), (d(5), 10, 1, 0, 2), (d(5), 10, 2, 2, 2),
        (d(12), 1, 0, 1, 1), (d(12), 1, 1, 0, 0),
        (d(19), 1, 0, 1, 1),  # week 3's cohort has reached only week 0
    ]


def test_sessions_across_midnight_and_over_24_hours(con) -> None:
    got = {r[0]: r[1:] for r in rows(
        con, "SELECT day, devices, sessions, median_minutes, mean_minutes FROM sessions()")}
    assert got[d(6)] == (3, 3, 0.0, 6.67)  # d02, d03 single events; d05's 20 minutes
    assert got[d(7)] == (1, 1, 0.0, 0.0)  # only d02: d05's session belongs to Jan 6
    assert got[d(12)] == (1, 1, 1420.0, 1420.0)
    assert got[d(13)] == (1, 1, 60.0, 60.0)


def test_firmware_changed_mid_day_counts_on_the_new_version(con) -> None:
    assert rows(con, "SELECT fw, devices FROM firmware_rollout() WHERE day = DATE '2026-01-08'"
                ) == [("1.0", 1), ("1.1", 1)]


def test_fleet_health_by_firmware(con) -> None:
    got = rows(con, "SELECT segment, devices, crash_free_devices, crash_free_share, crashes "
                    "FROM fleet_health()")
    assert got == [("1.0", 10, 10, 1.0, 0), ("1.1", 2, 1, 0.5, 1)]


def test_funnel_window(con) -> None:
    assert rows(con, "SELECT step, devices, median_minutes_from_previous FROM funnel()") == [
        (1, 2, None), (2, 1, 10.0), (3, 1, 10.0)]
    assert rows(con, "SELECT devices FROM funnel(window_days := 20) WHERE step = 2") == [(2,)]
    assert rows(con, "SELECT devices FROM funnel(step3 := 'feature_used:schedule') "
                     "WHERE step = 3") == [(0,)]


def test_feature_adoption(con) -> None:
    got = rows(con, "SELECT feature, devices, share_of_active, median_days_to_first_use "
                    "FROM feature_adoption()")
    assert got == [("eco", 2, round(2 / 11, 4), 0.0), ("schedule", 1, round(1 / 11, 4), 3.0)]


def test_breakdown_and_date_range(con) -> None:
    got = rows(con, "SELECT segment, dau FROM active_devices(since := DATE '2026-01-08', "
                    "until := DATE '2026-01-08', segment_by := 'fw')")
    assert got == [("1.0", 1), ("1.1", 1)]  # d12 on 1.0, d06 on 1.1
    # session days from Jan 12: d11 (12, 13), d04 (19), d03 (20), d10 (21)
    assert rows(con, "SELECT count(*) FROM sessions(since := DATE '2026-01-12')") == [(5,)]


def test_breakdown_by_experiment_variant(con) -> None:
    # Experiment "exp1" (analytics/assignment.py, share 0.5): buckets of sha256("exp1:dNN")
    # put d01 d02 d04 d06 d09 d11 in B, d03 d05 d07 d08 d10 d12 in A.
    got = rows(con, "SELECT day, segment, dau FROM active_devices(since := DATE '2026-01-05', "
                    "until := DATE '2026-01-06', segment_by := 'variant:exp1')")
    # Jan 5: d01 d02 d09 (all B); Jan 6: d02 (B), d03 and d05 (A)
    assert got == [(d(5), "A", 0), (d(5), "B", 3), (d(6), "A", 2), (d(6), "B", 1)]
    got = rows(con, "SELECT segment, devices, crash_free_devices FROM "
                    "fleet_health(segment_by := 'variant:exp1')")
    assert got == [("A", 6, 5), ("B", 6, 6)]  # d08's crash is in A
    # B's share 0.4: buckets under 4000 (d01 3946, d02 904, d06 3503, d09 3842, d11 3761)
    assert rows(con, "SELECT segment, devices FROM "
                     "fleet_health(segment_by := 'variant:exp1:0.4')") == [("A", 7), ("B", 5)]
    # active (all but d07): A d03 d05 d08 d10 d12, B d01 d02 d04 d06 d09 d11
    got = rows(con, "SELECT feature, segment, devices, share_of_active FROM "
                    "feature_adoption(segment_by := 'variant:exp1') ORDER BY 1, 2")
    assert got == [("eco", "A", 1, 0.2), ("eco", "B", 1, round(1 / 6, 4)),
                   ("schedule", "A", 1, 0.2)]
    # Session lengths are rolled up per firmware and model, not per device.
    with pytest.raises(duckdb.InvalidInputException, match="no breakdown by experiment"):
        rows(con, "SELECT * FROM sessions(segment_by := 'variant:exp1')")
