"""Compaction's per-day rollups give every metric the same rows as raw rows do, and a
day whose files change after it was rolled up is computed from raw rows again."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb

from fleetpulse.analytics.dataset import connect, metric_catalog, query, write_catalog
from fleetpulse.analytics.panels import PANELS, View, run_groups
from fleetpulse.analytics.rollups import rollup_dir, rollup_queries
from fleetpulse.ingest.compact import compact
from fleetpulse.ingest.contract import TELEMETRY_TOPIC
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.simulators.fleet import Fleet

START = date(2026, 3, 2)


def _fill(data: Path, devices: int, days: int) -> list[tuple[str, dict]]:
    """A simulated fleet through the ingest pipeline, flushed every 6 hours so each day
    has several files to compact; returns the envelopes sent."""
    sent = []
    pipe = None
    for n, (day, hour) in enumerate(Fleet(devices, days, 5, START).hours()):
        pipe = pipe or Pipeline(data, f"fill-{day}-{n}")
        for device_id, env in hour:
            pipe.handle(TELEMETRY_TOPIC.format(device_id=device_id), json.dumps(env).encode(),
                        env["sent_ms"])
            sent.append((device_id, env))
        if n % 6 == 5:
            pipe.flush()
            pipe = None
    if pipe is not None:
        pipe.flush()
    return sent


def _metrics(data: Path, catalog: Path | None = None,
             segments: tuple[str, ...] = ("all", "fw", "hw", "variant:rollup-test")
             ) -> dict[str, list[tuple]]:
    """Every metric with its default parameters, on each of `segments` it has; through a
    connection's views over the files it listed, or a catalog's live views."""
    con = connect(data) if catalog is None else duckdb.connect(str(catalog), read_only=True)
    out = {}
    for m in metric_catalog():
        args = ["key := 'rollup-test'"] if "key" in m.parameters else []
        for seg in segments if "segment_by" in m.parameters else [None]:
            a = args + ([f"segment_by := '{seg}'"] if seg else [])
            try:
                out[f"{m.name}({seg})"] = con.sql(
                    f"SELECT * FROM {m.name}({', '.join(a)}) ORDER BY ALL").fetchall()
            except duckdb.InvalidInputException as e:  # no breakdown by variant: same either way
                out[f"{m.name}({seg})"] = [(str(e),)]
    out["devices"] = con.sql("SELECT * EXCLUDE (last_seen) FROM devices ORDER BY ALL").fetchall()
    con.close()
    return out


def _raw_days(data: Path) -> set[tuple[str, str]]:
    con = connect(data)
    try:
        return {(n, str(d)) for n, d in con.sql("SELECT name, d FROM rollup_raw_days").fetchall()}
    finally:
        con.close()


def _page_matches_views(data: Path) -> None:
    """A dashboard refresh (shared views snapshotted once) gives every group the rows of
    its query over the views, and leaves nothing behind."""
    con = connect(data)
    try:
        plain = [query(con, p.sql(View())).rows for p in PANELS]
        assert [r.rows for r in run_groups(con)] == plain
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary UNION ALL "
                           "SELECT count(*) FROM duckdb_views() WHERE temporary AND NOT internal"
                           ).fetchall() == [(0,), (0,)]
    finally:
        con.close()


def _reads_raw_files(data: Path, view: str) -> bool:
    con = connect(data)
    try:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?",
                          [view]).fetchone()[0]
        return f"{data}/events/" in sql or f"{data}/readings/" in sql
    finally:
        con.close()


def _without_rollups(data: Path, to: Path) -> Path:
    shutil.copytree(data, to, ignore=shutil.ignore_patterns("rollups"))
    return to


def test_rollups_match_raw_rows_and_late_data_invalidates_a_day(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sent = _fill(data, devices=24, days=9)
    expected = _metrics(data)  # no rollups yet: every day from raw rows
    assert all(expected[k] for k in ("active_devices(all)", "sessions(all)",
                                     "usage_by_environment(None)", "readings_by_model(None)"))

    compact(data, grace_s=0)
    assert _raw_days(data) == set()
    sessions_dir = data / "rollups" / rollup_dir("session_parts")
    assert len(list(sessions_dir.glob("date=*/*.parquet"))) == 9
    # A rollup written by another definition of its query (an older release) sits in
    # a folder of another name: never read (its rows would count twice), and the next
    # compaction removes it.
    outdated = data / "rollups" / "session_parts-0ldc0de0"
    shutil.copytree(sessions_dir, outdated)
    assert _metrics(data) == expected
    # every day rolled up: the rollup views do not plan a scan of raw rows at all
    assert not _reads_raw_files(data, "rollup_session_parts")
    _page_matches_views(data)

    # Late data on a compacted day: a redelivered message (already counted) and a new one.
    device_id, env = next((d, e) for d, e in sent
                          if any(r.get("event") == "feature_used" for r in e["records"]))
    late = dict(env, seq=env["seq"] + 100_000,
                records=[dict(r, t=r["t"] + 1) for r in env["records"]])
    pipe = Pipeline(data, "late")
    for e in (env, late):
        pipe.handle(TELEMETRY_TOPIC.format(device_id=device_id), json.dumps(e).encode(),
                    e["sent_ms"])
    pipe.flush()
    day = next(iter(sorted(p.parent.name for p in (data / "events").glob("*/part-late*"))))
    stale = {(n, day.removeprefix("date=")) for n, _ in _raw_days(data)}
    assert {d for _, d in stale} == {day.removeprefix("date=")}
    assert len(stale) == len(rollup_queries())

    reference = _metrics(_without_rollups(data, tmp_path / "reference"))
    assert reference != expected  # the late record counts
    assert _metrics(data) == reference
    assert _reads_raw_files(data, "rollup_session_parts")
    _page_matches_views(data)
    # A catalog's views choose rollups and raw days at query time: the same rows.
    write_catalog(data, tmp_path / "fleet.duckdb")
    live = _metrics(data, tmp_path / "fleet.duckdb", segments=("fw",))
    assert live == {k: v for k, v in reference.items() if k in live}

    # The next compaction merges the day and rolls it up anew; the stale rollup goes.
    compact(data, grace_s=0)
    assert _raw_days(data) == set()
    assert len(list((sessions_dir / day).glob("*.parquet"))) == 1
    assert _metrics(data) == reference
    assert not outdated.exists()
