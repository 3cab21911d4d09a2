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

import hashlib
import logging
import shutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from fleetpulse.ingest.store import Store

from .sqltext import declared, file_listing, query_text, sql_list, sql_str

if TYPE_CHECKING:
    from .layout import Layout

log = logging.getLogger("fleetpulse.rollups")

ROLLUPS_SQL = Path(__file__).with_name("rollups.sql")
ROLLUP_DIR = "rollups"
_SOURCES = ("readings", "events")


@cache
def rollup_queries() -> dict[str, str]:
    """name -> query over {readings} and {events}, from rollups.sql."""
    return {name: query_text(body) for name, body in declared(ROLLUPS_SQL, "rollup").items()}


def rollup_dir(name: str) -> str:
    """The folder of a rollup's files, named after the rollup and its query: a rollup
    written by an older definition is never read as this one's (its folder is left
    for compaction to remove)."""
    return f"{name}-{hashlib.sha256(rollup_queries()[name].encode()).hexdigest()[:8]}"


def _over(query: str, readings: str, events: str) -> str:
    return query.replace("{readings}", readings).replace("{events}", events)


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".parquet")


def rollup_key(readings: str | None, events: str | None) -> str:
    """The file stem of a day's rollups, naming the files they were computed from."""
    return f"{_stem(readings) if readings else ''}~{_stem(events) if events else ''}"


def write_rollups(store: Store) -> list[str]:
    """Roll up every day whose partitions hold one file per table and whose rollups
    are missing or stale; remove the stale ones; then the per-device states over the
    days rolled up (analytics/states.py). Return the days rolled up."""
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
        if all(Path(store.path(ROLLUP_DIR, rollup_dir(name), day, f"{key}.parquet")).exists()
               for name in rollup_queries()):
            continue
        _write_day(store, day, key, src)
        done.append(day)
    # Imported here: states reads through a connection, whose module imports this one.
    from .states import write_states
    write_states(store)
    return done


def _write_day(store: Store, day: str, key: str, src: dict[str, str | None]) -> None:
    # Imported here: sources imports layout, which imports this module.
    from .sources import empty_select, parquet_select

    # Each rollup reads the day's files itself, only the columns it needs: loading them
    # once into temp tables for all of them was no faster (bench/RESULTS.md, "Rollups: one
    # read per day") and holds every column in memory.
    rel = {}
    for table, path in src.items():
        body = parquet_select(table, f"[{sql_str(path)}]") if path else empty_select(table)
        rel[table] = f"({body})"
    con = duckdb.connect()
    try:
        for name, query in rollup_queries().items():
            result = con.sql(_over(query, rel["readings"], rel["events"])).to_arrow_table()
            result = result.drop_columns(["date"])
            d = Path(store.path(ROLLUP_DIR, rollup_dir(name), day))
            d.mkdir(parents=True, exist_ok=True)
            stale = [p for p in d.glob("*.parquet") if p.stem != key]
            store.write_table(f"{ROLLUP_DIR}/{rollup_dir(name)}/{day}/{key}.parquet",
                              plain_ints(result))
            # Readers only ever read the file matching the day's data files, so a stale
            # one can go at once.
            store.delete([str(p) for p in stale])
    finally:
        con.close()
    log.info("rolled up %s (%s)", day, key)


def plain_ints(t: pa.Table) -> pa.Table:
    """DuckDB hands back HUGEINT sums as decimals; rollup counts fit in int64."""
    fields = [pa.field(f.name, pa.int64()) if pa.types.is_decimal(f.type) else f
              for f in t.schema]
    return t.cast(pa.schema(fields))


def view_statements(store: Store, layout: Layout | None = None) -> list[str]:
    """`rollup_<name>` views: each day from its rollup while that matches the day's
    files, from raw rows otherwise; the choice made from `layout` (a connection's
    listing), or with None at query time from the files then. Run after the `readings`
    and `events` views exist."""
    if layout is not None:
        stored = {n for n, days in layout.rollups.items() if days}
        return [*_snapshot_view_statements(layout), _stored_macro(stored)]
    def raw_days_of(table: str, name: str) -> str:
        return (f"(SELECT * FROM {table} WHERE date IN "
                f"(SELECT d FROM rollup_raw_days WHERE name = '{name}'))")

    have = _rollup_names(store)
    stmts = [] if not have else _validity_views(store)
    for name, query in rollup_queries().items():
        if name not in have:
            # No rollup of this name yet: every day from raw rows (a connection opened
            # before the first compaction keeps doing so until it is opened again).
            stmts.append(f"CREATE OR REPLACE VIEW rollup_{name} AS "
                         f"{_over(query, 'readings', 'events')}")
            continue
        files = sql_str(store.url(ROLLUP_DIR, rollup_dir(name), "date=*", "*.parquet"))
        computed = _over(query, raw_days_of("readings", name), raw_days_of("events", name))
        stmts.append(
            f"CREATE OR REPLACE VIEW rollup_{name} AS "
            f"SELECT * EXCLUDE (filename) FROM read_parquet({files}, hive_partitioning = true, "
            f"hive_types = {{'date': DATE}}, filename = true) "
            f"WHERE filename IN (SELECT file FROM rollup_valid WHERE name = '{name}') "
            f"UNION ALL BY NAME (SELECT * FROM ({computed}))")
    return [*stmts, _stored_macro(have)]


def _stored_macro(names: set[str]) -> str:
    """rollup_stored(name): whether any day of rollup `name` is stored (a constant), for a
    metric with a faster way than computing the rollup from raw rows on every day."""
    return ("CREATE OR REPLACE MACRO rollup_stored(name) AS "
            f"list_contains([{sql_list(sorted(names))}]::VARCHAR[], name)")


def _snapshot_view_statements(layout: Layout) -> list[str]:
    # Imported here: sources imports layout, which imports this module.
    from .sources import deduplicated

    stmts = []
    for name, query in rollup_queries().items():
        valid, raw = layout.rollups[name], layout.raw_days(name)
        if not valid:
            stmts.append(f"CREATE OR REPLACE VIEW rollup_{name} AS "
                         f"{_over(query, 'readings', 'events')}")
            continue
        files = f"[{sql_list(valid.values())}]"
        parts = [f"SELECT * FROM read_parquet({files}, hive_partitioning = true, "
                 "hive_types = {'date': DATE})"]
        if raw:  # days whose files changed since compaction rolled them up
            parts.append("SELECT * FROM (" + _over(
                query, *(f"({deduplicated(layout, t, raw)})" for t in ("readings", "events")))
                + ")")
        stmts.append(f"CREATE OR REPLACE VIEW rollup_{name} AS "
                     + " UNION ALL BY NAME ".join(parts))
    valid_rows = [f"({sql_str(n)}, DATE {sql_str(d)}, {sql_str(f)})"
                  for n, days in layout.rollups.items() for d, f in days.items()]
    raw_rows = [f"({sql_str(n)}, DATE {sql_str(d)})"
                for n in rollup_queries() for d in layout.raw_days(n)]
    stmts.append("CREATE OR REPLACE VIEW rollup_valid AS " + (
        f"SELECT * FROM (VALUES {', '.join(valid_rows)}) v(name, d, file)" if valid_rows else
        "SELECT NULL::VARCHAR AS name, NULL::DATE AS d, NULL::VARCHAR AS file WHERE false"))
    stmts.append("CREATE OR REPLACE VIEW rollup_raw_days AS " + (
        f"SELECT * FROM (VALUES {', '.join(raw_rows)}) v(name, d)" if raw_rows else
        "SELECT NULL::VARCHAR AS name, NULL::DATE AS d WHERE false"))
    return stmts


def _rollup_names(store: Store) -> set[str]:
    if not store.local:
        return set()
    root = Path(store.path(ROLLUP_DIR))
    return {name for name in rollup_queries()
            if any((root / rollup_dir(name)).glob("date=*/*.parquet"))}


def remove_outdated(store: Store) -> list[str]:
    """Remove the folders of rollups no current definition writes; return their names."""
    root = Path(store.path(ROLLUP_DIR)) if store.local else None
    if root is None or not root.is_dir():
        return []
    current = {rollup_dir(name) for name in rollup_queries()}
    gone = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in current)
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def _validity_views(store: Store) -> list[str]:
    """rollup_valid(name, d, file): the rollups that match their day's files now;
    rollup_raw_days(name, d): the days each rollup does not cover."""
    def listing(table: str) -> str:
        return (f"SELECT '{table}' AS t, d, stem "
                f"FROM ({file_listing(store.url(table, 'date=*', '*.parquet*'))})")

    rollups = file_listing(store.url(ROLLUP_DIR, "*", "date=*", "*.parquet"))
    names = ", ".join(f"('{n}')" for n in rollup_queries())
    dirs = ", ".join(f"('{rollup_dir(n)}', '{n}')" for n in rollup_queries())
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
        "SELECT m.name, r.d, g.file "
        f"FROM ({rollups}) g, rollup_days r, (VALUES {dirs}) m(dir, name) "
        "WHERE regexp_extract(g.file, '/rollups/([^/]+)/', 1) = m.dir "
        "AND r.single AND r.d = g.d AND r.key = g.stem",
        "CREATE OR REPLACE VIEW rollup_raw_days AS "
        f"SELECT n.name, r.d FROM rollup_days r, (VALUES {names}) n(name) "
        "WHERE NOT EXISTS (SELECT 1 FROM rollup_valid v WHERE v.name = n.name AND v.d = r.d)",
    ]
