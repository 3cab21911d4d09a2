"""Per-day rollups: written by compaction, read by the metric views in place of raw rows.

A rollup of day D is computed from the one readings file and the one events file that
D's partitions hold after compaction, and its file is named after them:

    <root>/rollups/<name>/date=D/<readings file stem>~<events file stem>.parquet

(an empty stem for a table with no file that day). The views read it only while those
are still D's only files: late data landing on a compacted day adds a file, and from
then on the day is computed from raw rows again, until the next compaction rolls it
up anew. The check is made from file listings at query time (DuckDB's glob), so views
stay live as files come and go, and no rollup is ever trusted without matching the
data it came from.

Only a local dataset gets rollups: the object-storage views are pyarrow datasets fixed
when a connection opens, and compute every day from raw rows.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path

import duckdb
import pyarrow as pa

from fleetpulse.ingest.contract import CRASH_RESET_CAUSES, USAGE_EVENTS
from fleetpulse.ingest.store import Store

log = logging.getLogger("fleetpulse.rollups")

ROLLUPS_SQL = Path(__file__).with_name("rollups.sql")
ROLLUP_DIR = "rollups"
# rolled_up_<name>: the days of rollup_<name> that come from rollup files
ROLLED_UP_PREFIX = "rolled_up_"
_SOURCES = ("readings", "events")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@cache
def rollup_queries() -> dict[str, str]:
    """name -> query over {readings} and {events}, from rollups.sql."""
    def sql_list(items: tuple[str, ...]) -> str:
        return ", ".join(_sql_str(i) for i in items)

    text = (ROLLUPS_SQL.read_text().replace("{usage_events}", sql_list(USAGE_EVENTS))
            .replace("{crash_reset_causes}", sql_list(CRASH_RESET_CAUSES)))
    out: dict[str, str] = {}
    for chunk in re.split(r"^-- rollup: ", text, flags=re.M)[1:]:
        name, body = chunk.split("\n", 1)
        code = "\n".join(line for line in body.splitlines()
                         if not line.strip().startswith("--"))
        out[name.strip()] = code.strip().rstrip(";")
    return out


def _over(query: str, readings: str, events: str) -> str:
    return query.replace("{readings}", readings).replace("{events}", events)


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".parquet")


def rollup_key(readings: str | None, events: str | None) -> str:
    """The file stem of a day's rollups, naming the files they were computed from."""
    return f"{_stem(readings) if readings else ''}~{_stem(events) if events else ''}"


def write_rollups(store: Store) -> list[str]:
    """Roll up every day whose partitions hold one file per table and whose rollups
    are missing or stale; remove the stale ones. Return the days rolled up."""
    if not store.local:
        return []
    parts = {t: store.partitions(t) for t in _SOURCES}
    done = []
    for day in sorted(set(parts["readings"]) | set(parts["events"])):
        files = {t: parts[t].get(day, []) for t in _SOURCES}
        if any(len(f) > 1 for f in files.values()):
            continue  # not compacted yet
        src = {t: (f[0] if f else None) for t, f in files.items()}
        key = rollup_key(src["readings"], src["events"])
        if all(Path(store.path(ROLLUP_DIR, name, day, f"{key}.parquet")).exists()
               for name in rollup_queries()):
            continue
        _write_day(store, day, key, src)
        done.append(day)
    return done


def _write_day(store: Store, day: str, key: str, src: dict[str, str | None]) -> None:
    from .dataset import empty_select  # the typed empty table, for a missing source

    rel = {}
    for table, path in src.items():
        # The date comes from the path (date=...), as in the views.
        body = (f"SELECT * FROM read_parquet([{_sql_str(path)}], hive_partitioning = true, "
                f"hive_types = {{'date': DATE}}) UNION ALL BY NAME " if path else "")
        rel[table] = f"({body}{empty_select(table)})"
    con = duckdb.connect()
    try:
        for name, query in rollup_queries().items():
            result = con.sql(_over(query, rel["readings"], rel["events"])).to_arrow_table()
            result = result.drop_columns(["date"])
            d = Path(store.path(ROLLUP_DIR, name, day))
            d.mkdir(parents=True, exist_ok=True)
            stale = [p for p in d.glob("*.parquet") if p.stem != key]
            store.write_table(f"{ROLLUP_DIR}/{name}/{day}/{key}.parquet", _plain(result))
            # Readers only ever read the file matching the day's data files, so a stale
            # one can go at once.
            store.delete([str(p) for p in stale])
    finally:
        con.close()
    log.info("rolled up %s (%s)", day, key)


def _plain(t: pa.Table) -> pa.Table:
    """DuckDB hands back HUGEINT sums as decimals; rollup counts fit in int64."""
    fields = [pa.field(f.name, pa.int64()) if pa.types.is_decimal(f.type) else f
              for f in t.schema]
    return t.cast(pa.schema(fields))


def view_statements(store: Store) -> list[str]:
    """`rollup_<name>` views: each day from its rollup while that matches the day's
    files, from raw rows otherwise. Run after the `readings` and `events` views exist."""
    queries = rollup_queries()
    raw = {t: f"(SELECT * FROM {t} WHERE date IN (SELECT d FROM rollup_raw_days "
              f"WHERE name = '{{name}}'))" for t in _SOURCES}
    have = _rollup_names(store)
    stmts = [] if not have else _validity_views(store)
    for name, query in queries.items():
        if name not in have:
            # No rollup of this name yet: every day from raw rows (a connection opened
            # before the first compaction keeps doing so until it is opened again).
            stmts.append(f"CREATE OR REPLACE VIEW rollup_{name} AS "
                         f"{_over(query, 'readings', 'events')}")
            continue
        files = _sql_str(store.url(ROLLUP_DIR, name, "date=*", "*.parquet"))
        computed = _over(query, raw["readings"].replace("{name}", name),
                         raw["events"].replace("{name}", name))
        # The rollups alone are a view of their own: a reader that has snapshotted
        # rollup_raw_days and found no day to compute (a dashboard refresh) reads just
        # these, without planning the raw query (analytics/report.py).
        stmts.append(
            f"CREATE OR REPLACE VIEW {ROLLED_UP_PREFIX}{name} AS "
            f"SELECT * EXCLUDE (filename) FROM read_parquet({files}, hive_partitioning = true, "
            f"hive_types = {{'date': DATE}}, filename = true) "
            f"WHERE filename IN (SELECT file FROM rollup_valid WHERE name = '{name}')")
        stmts.append(
            f"CREATE OR REPLACE VIEW rollup_{name} AS SELECT * FROM {ROLLED_UP_PREFIX}{name} "
            f"UNION ALL BY NAME (SELECT * FROM ({computed}))")
    return stmts


def _rollup_names(store: Store) -> set[str]:
    if not store.local:
        return set()
    root = Path(store.path(ROLLUP_DIR))
    return {name for name in rollup_queries() if any((root / name).glob("date=*/*.parquet"))}


def _validity_views(store: Store) -> list[str]:
    """rollup_valid(name, d, file): the rollups that match their day's files now;
    rollup_raw_days(name, d): the days each rollup does not cover."""
    def listing(table: str) -> str:
        glob = _sql_str(store.url(table, "date=*", "*.parquet*"))
        return (f"SELECT '{table}' AS t, regexp_extract(file, 'date=([0-9-]+)/', 1)::DATE AS d, "
                f"regexp_extract(file, '/([^/]*)\\.parquet$', 1) AS stem "
                f"FROM glob({glob}) WHERE file NOT LIKE '%.tmp'")

    rollups = _sql_str(store.url(ROLLUP_DIR, "*", "date=*", "*.parquet"))
    names = ", ".join(f"('{n}')" for n in rollup_queries())
    return [
        # A day's expected key; superseded files (*.parquet.superseded) count as files,
        # so a day being compacted has no valid rollup until the old files are gone.
        "CREATE OR REPLACE VIEW rollup_days AS "
        f"WITH files AS ({listing('readings')} UNION ALL {listing('events')}) "
        "SELECT d, count(*) FILTER (WHERE t = 'readings') <= 1 "
        "AND count(*) FILTER (WHERE t = 'events') <= 1 AS single, "
        "coalesce(max(stem) FILTER (WHERE t = 'readings'), '') || '~' || "
        "coalesce(max(stem) FILTER (WHERE t = 'events'), '') AS key "
        "FROM files GROUP BY d",
        "CREATE OR REPLACE VIEW rollup_valid AS "
        "SELECT regexp_extract(file, '/rollups/([^/]+)/', 1) AS name, r.d, file "
        f"FROM glob({rollups}) g, rollup_days r "
        "WHERE r.single AND r.d = regexp_extract(file, 'date=([0-9-]+)/', 1)::DATE "
        "AND r.key = regexp_extract(file, '/([^/]*)\\.parquet$', 1)",
        "CREATE OR REPLACE VIEW rollup_raw_days AS "
        f"SELECT n.name, r.d FROM rollup_days r, (VALUES {names}) n(name) "
        "WHERE NOT EXISTS (SELECT 1 FROM rollup_valid v WHERE v.name = n.name AND v.d = r.d)",
    ]
