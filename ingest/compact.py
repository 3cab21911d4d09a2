"""Merge each partition's small Parquet files into one, while readers keep reading.

For every date partition with at least `min_files` files: the files are read as one
table (columns united by name), DuckDB keeps one row per record identity and sorts,
and the result, cast back to the declared schema, is written with large row groups by
the store's atomic writer (locally: temporary name, fsync, rename; in object storage:
one PUT),
and only after `grace_s` seconds are the files it replaces deleted. In between, both
copies are on disk and the deduplicating views show each record once; a query that
listed the old files before the rename can still open them during the grace period.
Then the old files are renamed to *.parquet.superseded (out of readers' globs, but
still counted by the views' choice of which partitions need deduplicating) and deleted
after a second grace period.
So at no moment does a record show twice or not at all. One window stays: a query
that lists the files in the instant before the old ones are deleted cannot open them
and fails; fleetpulse's own readers run it again (analytics.dataset.query), other
readers see an error and must re-run.

Last, every day left with one file per table gets its per-day rollups
(analytics/rollups.py), which the metric views read in place of raw rows.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from .learned_columns import LearnedColumns, merge_extra
from .schema import RECORD_KEY, TABLES
from .store import LEFTOVER_AGE_S, Store

log = logging.getLogger("fleetpulse.compact")

_ORDER = {"readings": "device_id, ts", "events": "device_id, ts", "quarantine": "received_at",
          "presence": "device_id, seen_at"}
_DEDUP = (f"QUALIFY row_number() OVER (PARTITION BY {', '.join(RECORD_KEY)} "
          "ORDER BY received_at) = 1")


@dataclass
class Compacted:
    table: str
    partition: str
    files_before: int
    rows_before: int
    rows_after: int
    output: str
    replaced: list[str]


def compact_partition(store: Store, table: str, partition: str, files: list[str],
                      row_group_rows: int) -> Compacted:
    """Write the merged file; the files it replaces are listed in `replaced`."""
    parts = store.read_each(files)
    if table in ("readings", "events"):
        parts = reconcile_learned(parts, _learned_types(store, table))
    merged = pa.concat_tables(parts, promote_options="permissive")
    for f in TABLES[table]:  # files from before a column was declared lack it
        if f.name not in merged.column_names:
            merged = merged.append_column(f.name, pa.nulls(merged.num_rows, f.type))
    con = duckdb.connect()
    try:
        con.register("merged", merged)
        dedup = _DEDUP if table in ("readings", "events") else ""
        result = con.sql(f"SELECT * FROM merged {dedup} ORDER BY {_ORDER[table]}"
                         ).to_arrow_table()
    finally:
        con.close()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = f"{table}/{partition}/part-compacted-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    out = store.write_table(name, _declared_types(result, table), row_group_size=row_group_rows)
    return Compacted(table, partition, len(files), merged.num_rows, result.num_rows, out, files)


def _learned_types(store: Store, table: str) -> dict[str, pa.DataType]:
    """The learned columns' agreed types (ingest's _schema files; local datasets keep
    them next to the data)."""
    if not store.local:
        return {}
    return LearnedColumns(Path(store.root)).arrow_types(table)


def reconcile_learned(parts: list[pa.Table], agreed: dict[str, pa.DataType]
                      ) -> list[pa.Table]:
    """Files whose learned column has another type than the other files' (two workers
    that met a new field at once): the column keeps the agreed type (else the first
    file's), and the other type's values move into each row's JSON `extra`, as ingest
    does with a single conflicting value. Declared columns are never touched."""
    declared = {name for schema in TABLES.values() for name in schema.names}
    seen: dict[str, pa.DataType] = {}
    for t in parts:
        for f in t.schema:
            if f.name not in declared and not pa.types.is_null(f.type):
                seen.setdefault(f.name, agreed.get(f.name, f.type))
    out = []
    for t in parts:
        for name, want in seen.items():
            if name in t.column_names and not _compatible(t.schema.field(name).type, want):
                t = _move_to_extra(t, name, want)
        out.append(t)
    return out


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    numeric = pa.types.is_integer(have) or pa.types.is_floating(have)
    return have == want or pa.types.is_null(have) or (numeric and pa.types.is_floating(want))


def _move_to_extra(t: pa.Table, name: str, want: pa.DataType) -> pa.Table:
    values = t.column(name).to_pylist()
    extras = t.column("extra").to_pylist() if "extra" in t.column_names else [None] * len(values)
    merged = [e if v is None else merge_extra(e, {name: v})
              for v, e in zip(values, extras, strict=True)]
    i = t.column_names.index(name)
    t = t.set_column(i, name, pa.nulls(len(values), want))
    extra = pa.array(merged, pa.string())
    if "extra" in t.column_names:
        return t.set_column(t.column_names.index("extra"), "extra", extra)
    return t.append_column("extra", extra)


def _declared_types(t: pa.Table, table: str) -> pa.Table:
    """Keep the dataset's declared types whatever a file or DuckDB handed back."""
    declared = TABLES[table]
    fields = [declared.field(f.name) if f.name in declared.names else f for f in t.schema]
    return t.cast(pa.schema(fields))


def remove_leftovers(store: Store, min_age_s: float = LEFTOVER_AGE_S) -> int:
    """Delete what a stopped compaction left: superseded files (their rows are in the
    merged file) and rollups of outdated definitions. Returns the files removed."""
    from fleetpulse.analytics.rollups import remove_outdated

    left = store.leftover_superseded(min_age_s)
    store.delete(left)
    if left:
        log.info("removed %d superseded files a stopped compaction left", len(left))
    remove_outdated(store)
    return len(left)


def compact(data: str | Path | Store, grace_s: float = 10.0, min_files: int = 2,
            row_group_rows: int = 500_000, rollups: bool = True,
            leftover_age_s: float = LEFTOVER_AGE_S) -> list[Compacted]:
    """Remove what a stopped compaction left (superseded files moved aside at least
    leftover_age_s ago), compact every partition with at least min_files files, then
    (unless rollups is False, for a caller that writes and reports them itself) write
    the per-day rollups."""
    # Imported here: the rollups are the analytics package's, and only compaction
    # writes them.
    from fleetpulse.analytics.rollups import write_rollups

    store = data if isinstance(data, Store) else Store(data)
    remove_leftovers(store, leftover_age_s)
    done: list[Compacted] = []
    superseded: list[str] = []
    for table in TABLES:
        for partition, files in store.partitions(table).items():
            if len(files) < min_files:
                continue
            report = compact_partition(store, table, partition, files, row_group_rows)
            done.append(report)
            superseded += report.replaced
            log.info("compacted %s/%s: %d files, %d -> %d rows", table, partition,
                     report.files_before, report.rows_before, report.rows_after)
    if superseded:
        # Queries that listed the old files before the merged one appeared finish first;
        # then the old files leave readers' globs but stay visible as "superseded", so a
        # query still running sees its partition as several files and deduplicates;
        # after a second grace they are deleted.
        time.sleep(grace_s)
        renamed = store.supersede(superseded)
        time.sleep(grace_s)
        store.delete(renamed)
    # After the old files are gone: a rollup is only read while its day holds exactly
    # the files it names.
    if rollups:
        days = write_rollups(store)
        if days:
            log.info("rolled up %d days", len(days))
    return done
