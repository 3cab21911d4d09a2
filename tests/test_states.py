"""The per-device states (analytics/states.py) change no number: every metric over a
seeded random fleet gives the same rows from raw rows as from states over the first days
plus the later days, whichever day the states stop at, and a state whose days changed
since (late data) is not read.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from test_metric_definitions import _dataset, _random_activity_fleet, ev, reading, rows, t

from fleetpulse.analytics.dataset import connect, metric_catalog
from fleetpulse.analytics.panels import coverage
from fleetpulse.analytics.states import NO_STATE, state_queries

DAYS = 21  # Jan 1 .. Jan 21 2026


def _random_fleet() -> dict[str, list[tuple[str, list[dict]]]]:
    # Usage, funnel steps, features, crashes, heartbeats and readings on random days, a
    # firmware update mid-way for some, and sessions across midnight for others (so
    # chains and per-day counts straddle every cut below).
    rnd = random.Random(7)
    fleet = {}
    for i in range(36):
        envelopes = []
        for day in sorted(rnd.sample(range(1, DAYS + 1), rnd.randint(1, 12))):
            fw = "1.1" if day > 8 + i % 7 else "1.0"
            recs = [reading(t(day, rnd.randint(0, 23), rnd.randint(0, 59)))]
            for _ in range(rnd.randint(0, 6)):
                hh, mm = rnd.randint(0, 23), rnd.randint(0, 59)
                kind = rnd.choice(["button_press", "power_on", "session_start", "feature_used",
                                   "feature_used", "error", "heartbeat", "power_on_crash"])
                if kind == "feature_used":
                    recs.append(ev(t(day, hh, mm), kind, feature=rnd.choice(["eco", "schedule"])))
                elif kind == "power_on_crash":
                    recs.append(ev(t(day, hh, mm), "power_on", reset_cause="exception"))
                elif kind == "heartbeat":  # at a 4 h interval: a few make a share
                    recs.append(ev(t(day, hh, mm), kind, uptime_s=1, reconnects=0, free_mem=1,
                                   interval_s=14_400))
                elif kind == "error":
                    recs.append(ev(t(day, hh, mm), kind, code="E_X"))
                else:
                    recs.append(ev(t(day, hh, mm), kind))
            if i % 3 == 1:  # hourly heartbeats: connectivity far from 0
                recs += [ev(t(day, hh, 30), "heartbeat", uptime_s=1, reconnects=0, free_mem=1)
                         for hh in range(rnd.randint(0, 12), 24)]
            if i % 4 == 0 and day < DAYS:  # a session over midnight into the next day
                recs += [ev(t(day, 23, 45), "button_press"), ev(t(day + 1, 0, 5), "button_press")]
            envelopes.append((fw, sorted(recs, key=lambda r: r["t"])))
        fleet[f"s{i:02d}"] = envelopes
    return fleet


FLEET = _random_fleet()
SENT = t(DAYS) + 86_400_000


def _queries() -> list[str]:
    out = []
    for m in metric_catalog():
        if m.name.startswith("experiment"):
            continue  # needs a key; reads activations, which the other metrics cover
        args = ["", "since := DATE '2026-01-04', until := DATE '2026-01-17'"]
        if "segment_by" in m.parameters:
            args += ["segment_by := 'all'", "segment_by := 'fw'", "segment_by := 'hw'"]
        if m.name == "fleet_health":  # as_of on a day some states cover, others do not
            args += ["as_of := TIMESTAMPTZ '2026-01-12 12:00:00+00'"]
        if m.name == "funnel":
            args += ["window_days := 3", "step3 := 'feature_used:schedule'"]
        out += [f"SELECT * FROM {m.name}({a}) ORDER BY ALL" for a in args]
    # the dashboard's weekly health: ranges that cut weeks at either end
    return out + [f"SELECT * FROM crash_free_weeks({a}) ORDER BY ALL" for a in (
        "", "since := DATE '2026-01-04', until := DATE '2026-01-17'",
        "since := DATE '2026-01-06'", "until := DATE '2026-01-18'")]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return _dataset(tmp_path_factory.mktemp("states_raw"), FLEET, sent_ms=SENT)


@pytest.mark.parametrize("cut", [3, 11, 19])
def test_states_change_no_number(raw, tmp_path: Path, cut: int) -> None:
    con = _dataset(tmp_path / "data", FLEET, layout="states", sent_ms=SENT,
                   cut=date(2026, 1, cut))
    assert rows(con, "SELECT day(state_through())") == [(cut,)]
    for q in _queries():
        assert rows(con, q) == rows(raw, q), q
    assert coverage(con) == coverage(raw)  # the dashboard's header and choices


def test_each_states_empty_form_has_its_columns(raw, tmp_path: Path) -> None:
    # what a connection reads while no state is valid is written by hand in states.sql
    # (the queries read macros that read the states): it must not drift from the query
    con = _dataset(tmp_path / "data", FLEET, layout="states", sent_ms=SENT,
                   cut=date(2026, 1, 11))
    for name, q in state_queries().items():
        written = sorted(rows(con, f"SELECT column_name, column_type FROM "
                                   f"(DESCRIBE SELECT * FROM state_{name})"))
        empty = sorted(rows(con, f"SELECT column_name, column_type FROM (DESCRIBE {q.empty})"))
        assert written == empty, name


def test_a_state_whose_days_changed_is_not_read(raw, tmp_path: Path) -> None:
    data = tmp_path / "data"
    con = _dataset(data, FLEET, layout="states", sent_ms=SENT, cut=date(2026, 1, 11))
    assert rows(con, "SELECT day(state_through())") == [(11,)]
    late = {"late": [("1.0", [ev(t(5, 12), "button_press"), ev(t(15, 12), "button_press")])]}
    _dataset(data, late, sent_ms=SENT)  # a second file on Jan 5, a covered day
    con = connect(data)
    assert rows(con, "SELECT state_through()::VARCHAR") == [(NO_STATE,)]
    assert rows(con, "SELECT count(*) FROM activations WHERE device_id = 'late'") == [(1,)]
    assert rows(con, "SELECT dau FROM active_devices() WHERE day = DATE '2026-01-05'") == \
        rows(raw, "SELECT dau + 1 FROM active_devices() WHERE day = DATE '2026-01-05'")


ACTIVITY = _random_activity_fleet()  # 80 days, gaps either side of 7 and 30 days


@pytest.fixture(scope="module")
def raw_activity(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return _dataset(tmp_path_factory.mktemp("activity_raw"), ACTIVITY,
                    sent_ms=t(1) + 90 * 86_400_000)


@pytest.mark.parametrize("days", [35, 58])
def test_activity_after_the_states_counts_every_earlier_active_day(raw_activity, tmp_path: Path,
                                                                  days: int) -> None:
    # WAU and MAU of the days after a state's last day count the devices last active up
    # to 29 days before
    con = _dataset(tmp_path / "data", ACTIVITY, layout="states",
                   cut=date(2026, 1, 1) + timedelta(days=days), sent_ms=t(1) + 90 * 86_400_000)
    for by in ("all", "fw", "hw"):
        q = f"SELECT * FROM active_devices(segment_by := '{by}') ORDER BY ALL"
        assert rows(con, q) == rows(raw_activity, q), q
