"""The peers of bench/analytics_bench.py: DAU, adoption, retention and the funnel as a
PM would write them by hand over the raw Parquet files, in plain DuckDB and in chdb
(in-process ClickHouse, `pip install chdb`), next to the same answers from our macros.

Each question is (ours, plain DuckDB, chdb): SQL whose rows, normalised by `rows()`,
must be equal. The hand-written queries read the raw files with no deduplication (the
generated dataset has no redeliveries) and compute only the columns compared; ours run
the whole macro.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from fleetpulse.analytics.dataset import connect
from fleetpulse.ingest.contract import USAGE_EVENTS

USAGE = ", ".join(f"'{e}'" for e in USAGE_EVENTS)


@dataclass(frozen=True)
class Question:
    name: str
    ours: str
    plain: str  # {d}: the dataset directory
    chdb: str


QUESTIONS = [
    Question(
        "DAU",
        "SELECT day, dau FROM active_devices()",
        "SELECT date AS day, count(DISTINCT device_id) AS dau "
        "FROM read_parquet('{d}/events/*/*.parquet', hive_partitioning = true) "
        f"WHERE event IN ({USAGE}) GROUP BY ALL",
        "SELECT toDate(ts) AS day, uniqExact(device_id) AS dau "
        "FROM file('{d}/events/*/*.parquet', Parquet) "
        f"WHERE event IN ({USAGE}) GROUP BY day",
    ),
    Question(
        "adoption",
        "SELECT feature, devices, share_of_active FROM feature_adoption()",
        "WITH u AS (SELECT device_id, event, feature "
        "FROM read_parquet('{d}/events/*/*.parquet') "
        f"WHERE event IN ({USAGE})) "
        "SELECT feature, count(DISTINCT device_id) AS devices, "
        "round(count(DISTINCT device_id) / (SELECT count(DISTINCT device_id) FROM u), 4) "
        "FROM u WHERE event = 'feature_used' GROUP BY feature",
        "WITH (SELECT uniqExact(device_id) FROM file('{d}/events/*/*.parquet', Parquet) "
        f"WHERE event IN ({USAGE})) AS active "
        "SELECT feature, uniqExact(device_id) AS devices, round(devices / active, 4) "
        "FROM file('{d}/events/*/*.parquet', Parquet) "
        "WHERE event = 'feature_used' GROUP BY feature",
    ),
    Question(
        "retention",
        # the grid's empty cells are left out: the hand-written queries have no grid
        "SELECT cohort_week, cohort_size, weeks_since, active_in_week FROM retention() "
        "WHERE active_in_week > 0",
        "WITH seen AS (SELECT device_id, date FROM read_parquet("
        "'{d}/readings/*/*.parquet', hive_partitioning = true) UNION ALL "
        "SELECT device_id, date FROM read_parquet('{d}/events/*/*.parquet', "
        "hive_partitioning = true)), "
        "cohort AS (SELECT device_id, date_trunc('week', min(date))::DATE AS cw "
        "FROM seen GROUP BY device_id), "
        "sizes AS (SELECT cw, count(*) AS n FROM cohort GROUP BY cw), "
        "aw AS (SELECT DISTINCT device_id, date_trunc('week', date)::DATE AS w "
        "FROM read_parquet('{d}/events/*/*.parquet', hive_partitioning = true) "
        f"WHERE event IN ({USAGE})) "
        "SELECT c.cw, s.n, (aw.w - c.cw) // 7, count(*) "
        "FROM cohort c JOIN aw USING (device_id) JOIN sizes s USING (cw) GROUP BY ALL",
        "WITH seen AS (SELECT device_id, toDate(ts) AS d FROM "
        "file('{d}/readings/*/*.parquet', Parquet) UNION ALL "
        "SELECT device_id, toDate(ts) FROM file('{d}/events/*/*.parquet', Parquet)), "
        "cohort AS (SELECT device_id, toMonday(min(d)) AS cw FROM seen GROUP BY device_id), "
        "sizes AS (SELECT cw, count() AS n FROM cohort GROUP BY cw), "
        "aw AS (SELECT DISTINCT device_id, toMonday(toDate(ts)) AS w "
        "FROM file('{d}/events/*/*.parquet', Parquet) "
        f"WHERE event IN ({USAGE})) "
        "SELECT c.cw, s.n, intDiv(dateDiff('day', c.cw, aw.w), 7) AS ws, count() "
        "FROM cohort AS c JOIN aw USING (device_id) JOIN sizes AS s USING (cw) "
        "GROUP BY c.cw, s.n, ws",
    ),
    Question(
        "funnel",
        "SELECT step, devices, round(median_minutes_from_previous, 1) FROM funnel()",
        "WITH ev AS (SELECT device_id, ts, event FROM read_parquet("
        "'{d}/events/*/*.parquet') WHERE event IN ('power_on', 'session_start', "
        "'feature_used')), "
        "s1 AS (SELECT device_id, min(ts) AS t1 FROM ev WHERE event = 'power_on' "
        "GROUP BY device_id), "
        "s2 AS (SELECT s1.device_id, s1.t1, min(ev.ts) AS t2 FROM s1 JOIN ev "
        "ON ev.device_id = s1.device_id AND ev.event = 'session_start' "
        "AND ev.ts >= s1.t1 AND ev.ts <= s1.t1 + INTERVAL 14 DAY GROUP BY ALL), "
        "s3 AS (SELECT s2.device_id, s2.t2, min(ev.ts) AS t3 FROM s2 JOIN ev "
        "ON ev.device_id = s2.device_id AND ev.event = 'feature_used' "
        "AND ev.ts >= s2.t2 AND ev.ts <= s2.t1 + INTERVAL 14 DAY GROUP BY ALL) "
        "SELECT 1, count(*), NULL FROM s1 UNION ALL "
        "SELECT 2, count(*), round(median(epoch(t2 - t1) / 60), 1) FROM s2 UNION ALL "
        "SELECT 3, count(*), round(median(epoch(t3 - t2) / 60), 1) FROM s3",
        # non-equi conditions in WHERE after an equi-join: the same rows as an inner join
        "WITH ev AS (SELECT device_id, ts, event FROM file('{d}/events/*/*.parquet', "
        "Parquet) WHERE event IN ('power_on', 'session_start', 'feature_used')), "
        "s1 AS (SELECT device_id, min(ts) AS t1 FROM ev WHERE event = 'power_on' "
        "GROUP BY device_id), "
        "s2 AS (SELECT s1.device_id AS device_id, any(s1.t1) AS t1, min(ev.ts) AS t2 "
        "FROM s1 JOIN ev ON ev.device_id = s1.device_id "
        "WHERE ev.event = 'session_start' AND ev.ts >= s1.t1 "
        "AND ev.ts <= s1.t1 + INTERVAL 14 DAY GROUP BY s1.device_id), "
        "s3 AS (SELECT s2.device_id AS device_id, any(s2.t2) AS t2, min(ev.ts) AS t3 "
        "FROM s2 JOIN ev ON ev.device_id = s2.device_id "
        "WHERE ev.event = 'feature_used' AND ev.ts >= s2.t2 "
        "AND ev.ts <= s2.t1 + INTERVAL 14 DAY GROUP BY s2.device_id) "
        "SELECT 1, count(), NULL FROM s1 UNION ALL "
        "SELECT 2, count(), round(quantileExactInclusive(0.5)("
        "dateDiff('millisecond', t1, t2) / 60000), 1) FROM s2 UNION ALL "
        "SELECT 3, count(), round(quantileExactInclusive(0.5)("
        "dateDiff('millisecond', t2, t3) / 60000), 1) FROM s3",
    ),
]


def _norm(v: Any) -> Any:
    s = str(v)
    if s in ("", "None", "\\N", "NULL"):
        return None
    for kind in (int, float):
        try:
            return round(kind(s), 3)
        except ValueError:
            pass
    return s[:10] if s[:4].isdigit() and s[4:5] == "-" else s  # a date, however typed


def rows(raw: list[tuple[Any, ...]] | list[list[str]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(_norm(v) for v in r) for r in raw), key=repr)


def ours(data: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect(data)
    out = con.sql(sql).fetchall()
    con.close()
    return rows(out)


def plain(data: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    out = con.sql(sql.format(d=data)).fetchall()
    con.close()
    return rows(out)


def chdb_answers(python: str, data: Path, runs: int) -> tuple[str, list[tuple[list[
        tuple[Any, ...]], float | None]]]:
    """(chdb's version, per question (rows, median seconds)), run by bench/chdb_peer.py
    in `python`."""
    r = subprocess.run([python, str(Path(__file__).with_name("chdb_peer.py")), str(runs)],
                       input=json.dumps([q.chdb.format(d=data) for q in QUESTIONS]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"chdb failed: {r.stderr.strip()[-2000:]}")
    doc = json.loads(r.stdout)
    return doc["version"], [(rows(a["rows"]), a["seconds"]) for a in doc["answers"]]
