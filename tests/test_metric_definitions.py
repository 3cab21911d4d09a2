"""Each metric's definition pinned by a dozen hand-made devices, expected values worked
out by hand (below, per device), including the edge cases: a device active only once,
a cohort too young for a column, a session crossing midnight, a session longer than
24 h, a device that changes firmware mid-day, a funnel step outside the window.

Weeks start on Monday: week 1 = Jan 5-11 2026, week 2 = Jan 12-18, week 3 = Jan 19-25.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.experiment_query import experiment_devices
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
    # 25 h, cut at 24 h into a 1440-minute session (Jan 12, its last press at exactly
    # 24 h) and a 40-minute one (Jan 13 00:20 to 01:00)
    "d11": [("1.0", [ev(t(12, 0) + i * 20 * 60_000, "button_press") for i in range(40)]),
            ("1.0", [ev(t(12, 0) + i * 20 * 60_000, "button_press") for i in range(40, 76)])],
    # d12: first seen Jan 5, first uses `schedule` three days later
    "d12": [("1.0", [reading(t(5, 7))]), ("1.0", [ev(t(8), "feature_used", feature="schedule")])],
}


def _record_day(record: dict) -> date:
    return datetime.fromtimestamp(record["t"] / 1000, UTC).date()


def _dataset(data: Path, fleet: dict[str, list[tuple[str, list[dict]]]],
             hw: dict[str, str] | None = None, layout: str = "raw", sent_ms: int = 0,
             cut: date | None = None):
    """The fleet's dataset and a connection to it, in one of LAYOUTS."""
    days = sorted(_record_day(r) for envs in fleet.values() for _, recs in envs for r in recs)
    # "states": the records up to the middle day (or `cut`) first, rolled up with the
    # states over them, then the rest (days after it) from raw rows
    if layout != "states":
        cut = days[-1]
    elif cut is None:
        cut = days[len(days) // 2]
    pipe = Pipeline(data, "fixture")

    def send(keep: Callable[[date], bool], first_seq: int) -> None:
        for device, envelopes in fleet.items():
            for seq, (fw, records) in enumerate(envelopes, first_seq):
                records = [r for r in records if keep(_record_day(r))]
                if not records:
                    continue
                env = {"v": 1, "device_id": device, "boot": 1, "seq": seq, "fw": fw,
                       "hw": (hw or {}).get(device, "h"), "sent_ms": sent_ms or t(25),
                       "records": records}
                pipe.handle(f"devices/{device}/telemetry", json.dumps(env).encode(),
                            sent_ms or t(25))
        pipe.flush()
        assert pipe.stats.records_rejected == 0 and pipe.stats.messages_rejected == 0

    send(lambda d: d <= cut, 0)
    if layout == "raw":
        return connect(data)
    # Every definition must give the same rows from compaction's per-day rollups
    # (and the states over them) as from raw rows: each test runs on every layout.
    assert write_rollups(Store(data))
    if layout == "states":
        send(lambda d: d > cut, 1000)
    con = connect(data)
    assert rows(con, "SELECT state_through()") == [(cut,)]
    if layout == "rollups":
        assert rows(con, "SELECT count(*) FROM rollup_raw_days") == [(0,)]
    return con


# "raw": every day computed from raw rows; "rollups": every day from per-day rollups and
# the per-device states over all of them; "states": the states over the first half of
# the days, the rest from raw rows
LAYOUTS = ["raw", "rollups", "states"]


def fleet_fixture(name: str, fleet: dict[str, list[tuple[str, list[dict]]]],
                  hw: dict[str, str] | None = None, sent_ms: int = 0):
    """A module-wide connection to `fleet`'s dataset, once per layout."""
    @pytest.fixture(scope="module", params=LAYOUTS)
    def fixture(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
        return _dataset(tmp_path_factory.mktemp(name), fleet, hw, request.param,
                        sent_ms=sent_ms)
    return fixture


con = fleet_fixture("fixtures", FLEET)


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


env_con = fleet_fixture("env-fixtures", ENV_FLEET, {"e1": "plug", "e2": "thermostat"})


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


def test_daily_temperature_quantiles_across_models(env_con) -> None:
    # Jan 10, both models: 19.0, 20.6, 22.0, 22.5 -> median 21.3; p10 at 0.3 -> 19.48;
    # p90 at 2.7 -> 22.35; humidity 41, 43, 50, 55 -> 46.5. Jan 11: 23.9 alone.
    got = rows(env_con, "SELECT day, round(median_temperature_c, 6), "
                        "round(p10_temperature_c, 6), round(p90_temperature_c, 6), "
                        "median_humidity_pct, readings FROM daily_temperature()")
    assert got == [(date(2026, 1, 10), 21.3, 19.48, 22.35, 46.5, 4),
                   (date(2026, 1, 11), 23.9, 23.9, 23.9, 59.0, 1)]


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def d(day: int) -> date:
    return date(2026, 1, day)


def test_daily_weekly_monthly_active(con) -> None:
    got = {r[0]: r[1:] for r in rows(con, "SELECT day, dau, wau, mau FROM active_devices()")}
    # a row for every day from the first to the last day of data, records or not
    assert {k: v[0] for k, v in got.items()} == {
        d(5): 3, d(6): 3, d(7): 2, d(8): 2, d(9): 1, d(10): 0, d(11): 0, d(12): 1, d(13): 1,
        d(14): 0, d(15): 0, d(16): 0, d(17): 0, d(18): 0, d(19): 1, d(20): 1, d(21): 1}
    # Jan 3-9: d01 d02 d03 d05 d06 d08 d09 d12; everyone but d07 by Jan 21
    assert got[d(9)][1] == 8 and got[d(21)][2] == 11
    # on days without any record WAU and MAU still hold: Jan 5-11 is week 1's eight;
    # Jan 8-14: d06 d12 (8), d08 (9), d11 (12, 13)
    assert got[d(11)][1] == 8 and got[d(14)][1] == 4 and got[d(14)][2] == 9


def test_active_days_per_week(con) -> None:
    got = rows(con, "SELECT active_days, devices FROM active_days_per_week() "
                    "WHERE week = DATE '2026-01-05' ORDER BY 1")
    assert got == [(1, 6), (2, 1), (3, 1)]  # d02: 3 days, d05: 2 (Jan 6 and 7)


def test_lifecycle(con) -> None:
    # new = activated that week, as retention's cohorts (10, 1, 1)
    assert rows(con, "SELECT * FROM lifecycle()") == [
        (d(5), 10, 0, 0, 0),  # d07 and d10 are new but not active
        (d(12), 1, 0, 0, 8),  # d11 new; the eight active in week 1 dormant
        (d(19), 1, 0, 2, 1),  # d04 new; d03 and d10 (first used now) resurrecting; d11 dormant
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
    assert got[d(12)] == (1, 1, 1440.0, 1440.0)
    assert got[d(13)] == (1, 1, 40.0, 40.0)


def test_firmware_changed_mid_day_counts_on_the_new_version(con) -> None:
    assert rows(con, "SELECT fw, devices FROM firmware_rollout() WHERE day = DATE '2026-01-08'"
                ) == [("1.0", 1), ("1.1", 1)]


def test_fleet_health_by_firmware(con) -> None:
    got = rows(con, "SELECT segment, devices, crash_free_devices, crash_free_share, crashes "
                    "FROM fleet_health()")
    # d06 ran 1.0 and 1.1 on Jan 8: a device of both that day
    assert got == [("1.0", 11, 11, 1.0, 0), ("1.1", 2, 1, 0.5, 1)]


def test_funnel_window(con) -> None:
    assert rows(con, "SELECT step, devices, median_minutes_from_previous FROM funnel()") == [
        (1, 2, None), (2, 1, 10.0), (3, 1, 10.0)]
    assert rows(con, "SELECT devices FROM funnel(window_days := 20) WHERE step = 2") == [(2,)]
    assert rows(con, "SELECT devices FROM funnel(step3 := 'feature_used:schedule') "
                     "WHERE step = 3") == [(0,)]
    # a feature step matches that feature only, as a first step too: d05 and d09 used eco,
    # d12 only schedule
    assert rows(con, "SELECT step, devices, median_minutes_from_previous FROM "
                     "funnel(step3 := 'feature_used:eco')") == [(1, 2, None), (2, 1, 10.0),
                                                               (3, 1, 10.0)]
    assert rows(con, "SELECT devices FROM funnel(step1 := 'feature_used:eco', "
                     "step2 := 'feature_used:eco', step3 := 'feature_used:schedule')") == [
        (2,), (2,), (0,)]


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


# -- the cases a code read found wrong, on a fleet of their own (March 2026: New York
# moves its clocks forward on Sunday March 8)

def tm(day: int, hh: int = 10, mm: int = 0) -> int:
    return int(datetime(2026, 3, day, hh, mm, tzinfo=UTC).timestamp() * 1000)


def hb(ts: int, interval_s: int) -> dict:
    return ev(ts, "heartbeat", uptime_s=1, reconnects=0, free_mem=1, interval_s=interval_s)


CASES_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # r1: on 2.0 it uses eco and crashes (the next boot says "exception"); rolled back to
    # 1.0 the same afternoon. The crash and the use are 2.0's, on a 2.0 device-day.
    "r1": [("2.0", [ev(tm(2, 9), "button_press"), ev(tm(2, 9, 5), "feature_used", feature="eco"),
                    ev(tm(2, 10), "power_on", reset_cause="exception",
                       last_error="MemoryError: x")]),
           ("1.0", [reading(tm(2, 15))])],
    # s1: a press every 20 minutes from Mar 3 00:00 to Mar 4 00:00: exactly 24 h, one
    # session of 1440 minutes on Mar 3 and nothing on Mar 4
    "s1": [("1.0", [ev(tm(3, 0) + i * 20 * 60_000, "button_press") for i in range(73)])],
    # f1: power_on Mar 1 12:00, session_start Mar 15 11:30: 13 days 23.5 h later, inside
    # a 14-day window in UTC (in New York's calendar, 14 days after 07:00 EST is 07:00
    # EDT, 11:00 UTC: outside)
    "f1": [("1.0", [ev(tm(1, 12), "power_on"), ev(tm(15, 11, 30), "session_start")])],
    # c1: heartbeats every 10 minutes (interval_s 600), first record Mar 4 23:00: 6 of 6
    # expected that hour, and 146 on Mar 5 (a reboot's extra two) of 144: a share of 1
    "c1": [("1.0", [reading(tm(4, 23)), *(hb(tm(4, 23, 5) + i * 600_000, 600) for i in range(6))]),
           ("1.0", [hb(tm(5, 0, 5) + i * 600_000, 600) for i in range(72)]),
           ("1.0", [hb(tm(5, 0, 5) + i * 600_000, 600) for i in range(72, 144)]
            + [hb(tm(5, 12, 7), 600), hb(tm(5, 12, 9), 600)])],
    # c2: first record Mar 5 00:00, heartbeats every 20 minutes at interval_s 600: 72 of
    # 144 expected
    "c2": [("1.0", [reading(tm(5, 0)),
                    *(hb(tm(5, 0, 1) + i * 1_200_000, 600) for i in range(72))])],
    # v1 hashes to B in exp2 but was forced to A (the firmware reports what it applied);
    # its use before applying does not count, two after it do
    "v1": [("1.0", [ev(tm(6, 9), "feature_used", feature="eco"),
                    ev(tm(6, 10), "setting_changed", name="experiment.exp2", value="A"),
                    ev(tm(6, 11), "feature_used", feature="eco"),
                    ev(tm(6, 11, 5), "feature_used", feature="eco")])],
    # v2 hashes to A and reports nothing: A by the hash, one use
    "v2": [("1.0", [ev(tm(6, 9), "feature_used", feature="eco")])],
}


cases = fleet_fixture("cases", CASES_FLEET, {"c1": "plug", "c2": "plug"}, sent_ms=tm(25))


def test_a_crash_before_a_same_day_rollback_counts_for_the_crashing_firmware(cases) -> None:
    got = rows(cases, "SELECT segment, devices, crash_free_devices, crashes, "
                      "reboots_per_device_day FROM fleet_health()")
    # 1.0: c1 c2 f1 r1 s1 v1 v2 (r1 after its rollback); 2.0: r1 alone, crashed
    # f1's power_on (Mar 1) is the one reboot in 1.0's 10 device-days (c1, f1, s1 two each)
    assert got == [("1.0", 7, 7, 0, 0.1), ("2.0", 1, 0, 1, 1.0)]
    # the fleet: r1's Mar 2 on 2.0 and on 1.0 is one device-day, so 2 reboots (f1's, r1's)
    # in 10 device-days
    assert rows(cases, "SELECT devices, crash_free_devices, reboots_per_device_day FROM "
                       "fleet_health(segment_by := 'all')") == [(7, 6, 0.2)]
    got = rows(cases, "SELECT feature, segment, devices, share_of_active FROM "
                      "feature_adoption(segment_by := 'fw') ORDER BY 1, 2")
    # active on 1.0: s1 f1 v1 v2 (r1's 1.0 records are a reading); on 2.0: r1
    assert got == [("eco", "1.0", 2, 0.5), ("eco", "2.0", 1, 1.0)]


def test_a_session_of_exactly_24_hours_is_one_session(cases) -> None:
    got = rows(cases, "SELECT day, sessions, median_minutes FROM sessions() "
                      "WHERE day IN (DATE '2026-03-03', DATE '2026-03-04')")
    assert got == [(date(2026, 3, 3), 1, 1440.0)]


def test_connectivity_is_a_share_of_the_expected_heartbeats(cases) -> None:
    # plug: c1 (6 + 144 of 6 + 144, its extra two not counted) and c2 (72 of 144)
    got = rows(cases, "SELECT segment, connectivity FROM fleet_health(segment_by := 'hw') "
                      "WHERE segment = 'plug'")
    assert got == [("plug", round((6 + 144 + 72) / (6 + 144 + 144), 4))]
    assert rows(cases, "SELECT max(connectivity) <= 1 FROM fleet_health(segment_by := 'hw')"
                ) == [(True,)]


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo"])
def test_windows_are_utc_whatever_the_client_zone(cases, zone: str) -> None:
    cases.execute(f"SET TimeZone = '{zone}'")
    try:
        got = rows(cases, "SELECT step, devices FROM funnel(window_days := 14)")
        assert got == [(1, 2), (2, 1), (3, 0)]  # f1 and r1 powered on; f1 went on in time
        got = rows(cases, "SELECT day, sessions, median_minutes FROM sessions() "
                          "WHERE day = DATE '2026-03-03'")
        assert got == [(date(2026, 3, 3), 1, 1440.0)]
        assert rows(cases, "SELECT day FROM active_devices() ORDER BY day LIMIT 1"
                    ) == [(date(2026, 3, 1),)]
    finally:
        cases.execute("SET TimeZone = 'UTC'")


def test_a_forced_variant_counts_in_its_forced_arm(cases) -> None:
    got = rows(cases, "SELECT device_id, variant, uses, exposed_at FROM "
                      "experiment_exposure('exp2', feature_name := 'eco') ORDER BY 1")
    # v1: exposed at its first use after applying A (11:00), two uses; v2 by the hash
    by = {r[0]: r[1:3] for r in got}
    assert by["v1"] == ("A", 2) and by["v2"] == ("A", 1)
    assert [r[3] for r in got if r[0] == "v1"] == [datetime(2026, 3, 6, 11, tzinfo=UTC)]
    got = rows(cases, "SELECT segment, dau FROM active_devices(segment_by := 'variant:exp2') "
                      "WHERE day = DATE '2026-03-06' ORDER BY 1")
    assert got == [("A", 2)]  # by the hash v1 was B's


# -- an experiment's uses around each device's exposure (February 2026): whole days from
# the rollup, raw rows only where a day is split by the exposure or the pre-period's start

def tf(day: int, hh: int = 10, mm: int = 0) -> int:
    return int(datetime(2026, 2, day, hh, mm, tzinfo=UTC).timestamp() * 1000)


EXPOSURE_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # p1 never reports the experiment. From Feb 16 its first usage is a press at 10:00:
    # exposed then, the day's first use, so that day's eco use at 12:00 counts whole.
    # The pre-period starts Feb 2 10:00: Feb 1 and Feb 2 09:00 are before it, Feb 2 11:00
    # and Feb 10 inside it.
    "p1": [("1.0", [ev(tf(1, 9), "feature_used", feature="eco"),
                    ev(tf(2, 9), "feature_used", feature="eco"),
                    ev(tf(2, 11), "feature_used", feature="eco"),
                    ev(tf(10, 12), "feature_used", feature="eco"),
                    ev(tf(16, 10), "button_press"),
                    ev(tf(16, 12), "feature_used", feature="eco"),
                    ev(tf(17, 8), "feature_used", feature="eco"),
                    ev(tf(17, 9), "feature_used", feature="eco")])],
    # p2 uses eco at 09:00, applies A at 10:00, is exposed by its 11:00 use: its 09:00 use
    # is in the pre-period, its 11:00, 11:30 and Feb 18 uses after
    "p2": [("1.0", [ev(tf(16, 9), "feature_used", feature="eco"),
                    ev(tf(16, 10), "setting_changed", name="experiment.expx", value="A"),
                    ev(tf(16, 11), "feature_used", feature="eco"),
                    ev(tf(16, 11, 30), "feature_used", feature="eco"),
                    ev(tf(18, 9), "feature_used", feature="eco")])],
    # p3 never reports the experiment either: exposed by its press at Feb 16 10:00; on Feb
    # 17 it uses eco once on 1.0, updates, and twice on 1.1: three uses that day, counted
    # from both of the day's firmware rows; its Feb 10 use is in the pre-period
    "p3": [("1.0", [ev(tf(10, 8), "feature_used", feature="eco"), ev(tf(16, 10), "button_press"),
                    ev(tf(17, 8), "feature_used", feature="eco")]),
           ("1.1", [ev(tf(17, 12), "feature_used", feature="eco"),
                    ev(tf(17, 13), "feature_used", feature="eco")])],
}


exposure_fleet = fleet_fixture("exposure", EXPOSURE_FLEET, sent_ms=tf(25))


def test_uses_around_the_exposure_split_days_exactly(exposure_fleet) -> None:
    got = rows(exposure_fleet, "SELECT device_id, epoch_ms(exposed_at), uses, pre_uses "
                               "FROM experiment_exposure('expx', feature_name := 'eco', "
                               "since := DATE '2026-02-16') ORDER BY device_id")
    assert got == [("p1", tf(16, 10), 3, 2), ("p2", tf(16, 11), 3, 1), ("p3", tf(16, 10), 3, 1)]
    got = rows(exposure_fleet, "SELECT device_id, day, uses FROM experiment_daily_uses("
                               "'expx', feature_name := 'eco', since := DATE '2026-02-16') "
                               "ORDER BY 1, 2")
    assert got == [("p1", date(2026, 2, 16), 1), ("p1", date(2026, 2, 17), 2),
                   ("p2", date(2026, 2, 16), 2), ("p2", date(2026, 2, 18), 1),
                   ("p3", date(2026, 2, 17), 3)]
    # the analysis counts the same uses, once per device and day, for totals and looks
    devices = experiment_devices(exposure_fleet, "expx", "eco", since=date(2026, 2, 16))
    assert sorted((d.uses, d.pre_uses, float(d.daily.uses.sum())) for d in devices) == [
        (3.0, 1.0, 3.0), (3.0, 1.0, 3.0), (3.0, 2.0, 3.0)]


# -- the funnel on days that hold a step's events both before and after the previous
# step's time (April 2026)

def ta(day: int, hh: int = 10, mm: int = 0) -> int:
    return int(datetime(2026, 4, day, hh, mm, tzinfo=UTC).timestamp() * 1000)


FUNNEL_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # a1: session_start 08:00, power_on 09:00, session_start 09:30, feature_used 09:20 and
    # 09:40: both later steps' days are split; t2 = 09:30 (+30), t3 = 09:40 (+10)
    "a1": [("1.0", [ev(ta(1, 8), "session_start"), ev(ta(1, 9), "power_on"),
                    ev(ta(1, 9, 20), "feature_used", feature="eco"),
                    ev(ta(1, 9, 30), "session_start"),
                    ev(ta(1, 9, 40), "feature_used", feature="eco")])],
    # a2: its day-1 session_start is before its power_on: step 2 on day 2 (+1440); no
    # feature used
    "a2": [("1.0", [ev(ta(1, 9), "session_start"), ev(ta(1, 10), "power_on"),
                    ev(ta(2, 10), "session_start")])],
    # a3: power_on Apr 1 10:00, so the window ends Apr 15 10:00; session_start Apr 15 08:00
    # (+20040); feature_used Apr 15 07:00 and 11:00 straddle it, but 11:00 is past the
    # window: no step 3
    "a3": [("1.0", [ev(ta(1, 10), "power_on")]),
           ("1.0", [ev(ta(15, 7), "feature_used", feature="eco"), ev(ta(15, 8), "session_start"),
                    ev(ta(15, 11), "feature_used", feature="eco")])],
    # a4: all three at the same instant (+0, +0)
    "a4": [("1.0", [ev(ta(3, 12), "power_on"), ev(ta(3, 12), "session_start"),
                    ev(ta(3, 12), "feature_used", feature="schedule")])],
}


funnel_fleet = fleet_fixture("funnel", FUNNEL_FLEET, sent_ms=ta(20))


def test_funnel_on_days_with_a_step_before_and_after_the_previous(funnel_fleet) -> None:
    assert rows(funnel_fleet, "SELECT step, devices, median_minutes_from_previous FROM "
                              "funnel()") == [(1, 4, None), (2, 4, (30 + 1440) / 2),
                                              (3, 2, 5.0)]
    # a zero-day window keeps only a4, whose steps share one instant
    assert rows(funnel_fleet, "SELECT devices FROM funnel(window_days := 0)") == [
        (4,), (1,), (1,)]
    # a feature step: a1 used eco after its t2; a3's eco at 11:00 is still out of the window
    assert rows(funnel_fleet, "SELECT devices FROM funnel(step3 := 'feature_used:eco')") == [
        (4,), (4,), (1,)]


def _funnel_over_events(con, step1: str, step2: str, step3: str, window_days: int) -> list:
    # The definition written plainly over every event, for the macro to be compared with.
    def match(step: str) -> str:
        event, _, feature = step.partition(":")
        return f"(event = '{event}'" + (f" AND feature = '{feature}')" if feature else ")")
    w = f"INTERVAL {window_days} DAY"
    return rows(con, f"""
        WITH s1 AS (SELECT device_id, min(ts) AS t1 FROM events WHERE {match(step1)}
                    GROUP BY 1),
        s2 AS (SELECT s1.device_id, t1, min(ts) AS t2 FROM s1 JOIN events e USING (device_id)
               WHERE {match(step2)} AND ts >= t1 AND ts <= t1 + {w} GROUP BY ALL),
        s3 AS (SELECT s2.device_id, t1, t2, min(ts) AS t3 FROM s2 JOIN events e
               USING (device_id) WHERE {match(step3)} AND ts >= t2 AND ts <= t1 + {w}
               GROUP BY ALL)
        SELECT (SELECT count(*) FROM s1), (SELECT count(*) FROM s2),
               (SELECT median(epoch(t2 - t1) / 60) FROM s2), (SELECT count(*) FROM s3),
               (SELECT median(epoch(t3 - t2) / 60) FROM s3)""")


def _random_funnel_fleet() -> dict[str, list[tuple[str, list[dict]]]]:
    # Dense enough that most days hold steps on both sides of the previous step's time.
    import random
    rnd = random.Random(18)
    kinds = [("power_on", None), ("session_start", None), ("feature_used", "eco"),
             ("feature_used", "schedule"), ("heartbeat", None)]
    fleet = {}
    for i in range(40):
        recs = []
        for _ in range(rnd.randint(4, 30)):
            event, feature = rnd.choice(kinds)
            ts = ta(rnd.randint(1, 4), rnd.randint(0, 23), rnd.randint(0, 59))
            fields = {"feature": feature} if feature else (
                {"uptime_s": 1, "reconnects": 0, "free_mem": 1} if event == "heartbeat" else {})
            recs.append(ev(ts, event, **fields))
        fleet[f"r{i:02d}"] = [("1.0", sorted(recs, key=lambda r: r["t"]))]
    return fleet


random_funnel_fleet = fleet_fixture("funnel_random", _random_funnel_fleet(), sent_ms=ta(20))


@pytest.mark.parametrize("steps,window_days", [
    (("power_on", "session_start", "feature_used"), 14),
    (("power_on", "session_start", "feature_used"), 1),
    (("power_on", "session_start", "feature_used"), 0),
    (("session_start", "feature_used:eco", "power_on"), 2),
    (("feature_used", "feature_used:schedule", "feature_used:eco"), 3),
    (("power_on", "power_on", "session_start"), 1),
])
def test_funnel_equals_the_definition_over_every_event(random_funnel_fleet, steps,
                                                       window_days) -> None:
    s1, s2, s3 = steps
    got = rows(random_funnel_fleet, f"SELECT devices, median_minutes_from_previous FROM "
                                    f"funnel(step1 := '{s1}', step2 := '{s2}', "
                                    f"step3 := '{s3}', window_days := {window_days})")
    want = _funnel_over_events(random_funnel_fleet, s1, s2, s3, window_days)[0]
    assert [got[0][0], got[1][0], got[1][1], got[2][0], got[2][1]] == list(want)
    assert window_days == 0 or want[1] > 0 < want[3]  # the comparison reaches step 3


def test_the_random_fleet_has_steps_on_both_sides_of_the_previous(random_funnel_fleet) -> None:
    # days where session_start comes both before and after the device's first power_on:
    # where a funnel built from each day's first time of each step goes wrong (one was
    # tried: bench/RESULTS.md, "fourth measurement"), so the comparison above can catch it
    got = rows(random_funnel_fleet, """
        WITH t AS (SELECT device_id, min(ts) AS t1 FROM events WHERE event = 'power_on'
                   GROUP BY 1)
        SELECT count(*) FROM (SELECT e.device_id FROM events e JOIN t USING (device_id)
                              WHERE e.event = 'session_start' AND e.date = t1::DATE
                              GROUP BY 1 HAVING min(ts) < any_value(t1)
                                  AND max(ts) >= any_value(t1))""")
    assert got[0][0] >= 3


# -- today is not over: heartbeats are expected up to `as_of` (default now), not to
# midnight (March 2026)

HORIZON_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # h1: first record Mar 14 23:55 (0.5 heartbeats expected by midnight, 1 received,
    # counted as 0.5); then every 10 minutes from Mar 15 00:05 to 11:25, 69 heartbeats:
    # read as of 11:25, 68.5 expected (11 h 25 min), not 144, and the 69 received count
    # as 68.5. A share of 1.
    "h1": [("1.0", [hb(tm(14, 23, 55), 600)]),
           ("1.0", [hb(tm(15, 0, 5) + i * 600_000, 600) for i in range(69)])],
    # h2: every 10 minutes all of Mar 13 (144 of 144), then only until 11:55 on Mar 14:
    # Mar 14 is over by then, so 72 of 144. A share of 0.75.
    "h2": [("1.0", [hb(tm(13, 0) + i * 600_000, 600) for i in range(72)]),
           ("1.0", [hb(tm(13, 0) + i * 600_000, 600) for i in range(72, 144)]),
           ("1.0", [hb(tm(14, 0, 5) + i * 600_000, 600) for i in range(72)])],
}


horizon = fleet_fixture("horizon", HORIZON_FLEET, {"h1": "sensor", "h2": "gone"},
                        sent_ms=tm(25))


def test_connectivity_expects_heartbeats_up_to_as_of_only(horizon) -> None:
    as_of = "as_of := TIMESTAMPTZ '2026-03-15 11:25:00+00'"
    got = rows(horizon, "SELECT segment, connectivity FROM fleet_health(segment_by := 'hw', "
                        f"{as_of}) ORDER BY 1")
    assert got == [("gone", 0.75), ("sensor", 1.0)]
    got = rows(horizon, "SELECT device_id, day, round(expected_heartbeats, 2) FROM "
                        f"device_health_days(segment_by := 'hw', {as_of}) ORDER BY 1, 2")
    assert got == [("h1", date(2026, 3, 14), 0.5), ("h1", date(2026, 3, 15), 68.5),
                   ("h2", date(2026, 3, 13), 144.0), ("h2", date(2026, 3, 14), 144.0)]
    # read today, long after: Mar 15 is over and expects its 144
    assert rows(horizon, "SELECT connectivity FROM fleet_health(segment_by := 'hw') "
                         "WHERE segment = 'sensor'") == [(round((0.5 + 69) / (0.5 + 144), 4),)]
    # as of before h1's first record on a day: nothing expected, nothing negative
    assert rows(horizon, "SELECT min(expected_heartbeats) FROM device_health_days("
                         "as_of := TIMESTAMPTZ '2026-03-13 00:00:00+00')") == [(0.0,)]


# -- a run of use over two midnights (March 2026): a chain of three day-edge sub-runs

# l1: a press every 20 minutes from Mar 20 00:00 to Mar 22 01:00 (49 h): cut at 24 h from
# its start, a 1440-minute session on Mar 20 (its last press at exactly 24 h), then one
# from Mar 21 00:20 to Mar 22 00:00 (1420 minutes, on Mar 21, a day whose sessions are all
# chained) and one from Mar 22 00:20 to 01:00 (40 minutes)
LONG_RUN_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    "l1": [("1.0", [ev(tm(20, 0) + i * 20 * 60_000, "button_press")
                    for i in range(start, min(start + 60, 148))])
           for start in range(0, 148, 60)],
}
long_run = fleet_fixture("long_run", LONG_RUN_FLEET, sent_ms=tm(25))


def test_a_run_over_two_midnights_is_cut_every_24_hours(long_run) -> None:
    got = rows(long_run, "SELECT day, devices, sessions, median_minutes FROM sessions()")
    assert got == [(date(2026, 3, 20), 1, 1, 1440.0), (date(2026, 3, 21), 1, 1, 1420.0),
                   (date(2026, 3, 22), 1, 1, 40.0)]


# -- a device counted once on a day that holds both a whole session and one chained
# across midnight, and under each firmware it had a session on (March 2026)

CHAINED_FLEET: dict[str, list[tuple[str, list[dict]]]] = {
    # c1, on 1.0: a press at 10:00 Mar 10 (a session of 0 minutes), and presses at 23:50
    # and 00:10 Mar 11 (20 minutes, chained across midnight, counted on Mar 10)
    "c1": [("1.0", [ev(tm(10, 10), "button_press"), ev(tm(10, 23, 50), "button_press"),
                    ev(tm(11, 0, 10), "button_press")])],
    # c2: the same, but updated to 1.1 between the two: its whole session is on 1.0, its
    # chained one on 1.1, so by firmware it is a device of both that day
    "c2": [("1.0", [ev(tm(10, 10), "button_press")]),
           ("1.1", [ev(tm(10, 23, 50), "button_press"), ev(tm(11, 0, 10), "button_press")])],
}
chained = fleet_fixture("chained", CHAINED_FLEET, sent_ms=tm(15))


def test_a_device_with_a_whole_and_a_chained_session_counts_once(chained) -> None:
    assert rows(chained, "SELECT day, devices, sessions, median_minutes, mean_minutes "
                         "FROM sessions()") == [(date(2026, 3, 10), 2, 4, 10.0, 10.0)]
    assert rows(chained, "SELECT segment, devices, sessions, median_minutes FROM "
                         "sessions(segment_by := 'fw')") == [("1.0", 2, 3, 0.0),
                                                              ("1.1", 1, 1, 20.0)]


# -- DAU, WAU and MAU against their definition over device_days, on a seeded fleet whose
# active days come in runs separated by gaps on both sides of 7 and 30 days, some on a
# firmware updated mid-day (January to March 2026)

def _random_activity_fleet() -> dict[str, list[tuple[str, list[dict]]]]:
    import random
    rnd = random.Random(21)
    fleet = {}
    for i in range(30):
        day, envelopes = rnd.randint(0, 5), []
        while day < 80:
            fw = "1.1" if day > 40 else "1.0"
            ts = t(1) + day * 86_400_000
            records = [ev(ts + rnd.randint(0, 23) * 3_600_000, "button_press")]
            if day == 41 and i % 3 == 0:  # the update: 1.0 in the morning, then 1.1
                envelopes.append(("1.0", [ev(ts + 3_600_000, "button_press")]))
                records = [ev(ts + 20 * 3_600_000, "button_press")]
            envelopes.append((fw, records))
            day += rnd.choice([1, 1, 1, 2, 6, 7, 8, 29, 30, 31])
        fleet[f"a{i:02d}"] = envelopes
    return fleet


random_activity = fleet_fixture("activity_random", _random_activity_fleet(),
                                sent_ms=t(1) + 90 * 86_400_000)


@pytest.mark.parametrize("segment_by", ["all", "fw"])
def test_active_devices_equal_the_definition(random_activity, segment_by) -> None:
    seg = "fw" if segment_by == "fw" else "'all'"
    got = rows(random_activity, f"SELECT day, segment, dau, wau, mau FROM "
                                f"active_devices(segment_by := '{segment_by}') "
                                "WHERE dau + wau + mau > 0")
    want = rows(random_activity, f"""
        WITH act AS (SELECT device_id, day, {seg} AS segment FROM device_days WHERE active),
        days AS (SELECT unnest(range(min(day), max(day) + 1, INTERVAL 1 DAY))::DATE AS day
                 FROM device_days)
        SELECT d.day, s.segment,
               count(DISTINCT a.device_id) FILTER (WHERE a.day = d.day),
               count(DISTINCT a.device_id) FILTER (WHERE a.day > d.day - 7),
               count(DISTINCT a.device_id)
        FROM days d CROSS JOIN (SELECT DISTINCT segment FROM act) s
        JOIN act a ON a.segment = s.segment AND a.day <= d.day AND a.day > d.day - 30
        GROUP BY ALL ORDER BY 1, 2""")
    assert got == want
    assert len({r[2] for r in got}) > 5  # DAU varies: the comparison is not trivial


@pytest.mark.parametrize("since", ["1970-01-01", "2026-02-17"])
def test_feature_usage_daily_equals_the_definition(exposure_fleet, since) -> None:
    # p3 used eco on two firmware versions on Feb 17: one device (with p1, two), three
    # uses (with p1's, five)
    got = rows(exposure_fleet, "SELECT day, feature, devices, uses, share_of_active FROM "
                               f"feature_usage_daily(since := DATE '{since}')")
    want = rows(exposure_fleet, f"""
        WITH dau AS (SELECT day, count(*) AS n FROM device_days WHERE active GROUP BY day)
        SELECT date, feature, count(DISTINCT device_id), count(*),
               round(count(DISTINCT device_id) / any_value(n), 4)
        FROM events JOIN dau ON dau.day = events.date
        WHERE event = 'feature_used' AND date >= DATE '{since}'
        GROUP BY ALL ORDER BY 1, 2""")
    assert got == want
    assert (date(2026, 2, 17), "eco", 2, 5, 1.0) in got


@pytest.mark.parametrize("step", ["power_on", "feature_used", "feature_used:eco",
                                  "feature_used:schedule", "heartbeat"])
def test_the_rollups_step_condition_is_the_macros(random_funnel_fleet, step) -> None:
    # funnel_days is written with sqltext.step_condition for the dashboard's steps; the
    # funnel over other steps matches events with the funnel_step_is macro
    from fleetpulse.analytics.sqltext import sql_str, step_condition
    by_python, by_macro = rows(
        random_funnel_fleet, f"SELECT count(*) FILTER (WHERE {step_condition(step)}), "
        f"count(*) FILTER (WHERE funnel_step_is({sql_str(step)}, event, feature)) FROM events")[0]
    assert by_python == by_macro > 0
