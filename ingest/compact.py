"""Merge each partition's small Parquet files into one, while readers keep reading.

For every date partition with at least `min_files` files: DuckDB reads them (columns
united by name), keeps one row per record identity and sorts; the result is cast back
to the declared schema and written with large row groups by ingest's own atomic writer
(temporary name, fsync, rename),
and only after `grace_s` seconds are the files it replaces deleted. In between, both
copies are on disk and the deduplicating views show each record once; a query that
listed the old files before the rename can still open them during the grace period.
So at no moment does a record show twice or not at all. One window stays: a query
that lists the files in the instant before the old ones are deleted cannot open them
and fails; fleetpulse's own readers run it again (analytics.dataset.query), other
readers see an error and must re-run.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from .parquet_writer import fsync_dir, write_table
from .schema import TABLES

log = logging.getLogger("fleetpulse.compact")

_ORDER = {"readings": "device_id, ts", "events": "device_id, ts", "quarantine": "received_at"}
_DEDUP = ("QUALIFY row_number() OVER (PARTITION BY device_id, boot, seq, idx "
          "ORDER BY received_at) = 1")


@dataclass
class Compacted:
    table: str
    partition: str
    files_before: int
    rows_before: int
    rows_after: int
    output: Path
    replaced: list[Path]


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def compact_partition(folder: Path, table: str, row_group_rows: int) -> Compacted:
    """Write the merged file; the files it replaces are listed in `replaced`."""
    files = sorted(folder.glob("*.parquet"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    final = folder / f"part-compacted-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    con = duckdb.connect()
    src = f"read_parquet({_sql_list(files)}, union_by_name = true, hive_partitioning = false)"
    try:
        rows_before = _count(con, src)
        dedup = _DEDUP if table != "quarantine" else ""
        merged = con.sql(f"SELECT * FROM {src} {dedup} ORDER BY {_ORDER[table]}").to_arrow_table()
    finally:
        con.close()
    write_table(final, _declared_types(merged, table), row_group_size=row_group_rows)
    return Compacted(table, folder.name, len(files), rows_before, merged.num_rows, final, files)


def _declared_types(t: pa.Table, table: str) -> pa.Table:
    """DuckDB hands timestamps back as microseconds; keep the dataset's declared types."""
    declared = TABLES[table]
    fields = [declared.field(f.name) if f.name in declared.names else f for f in t.schema]
    return t.cast(pa.schema(fields))


def _count(con: duckdb.DuckDBPyConnection, source: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0])


def compact(data_dir: Path, grace_s: float = 10.0, min_files: int = 2,
            row_group_rows: int = 500_000) -> list[Compacted]:
    done: list[Compacted] = []
    superseded: list[Path] = []
    for table in TABLES:
        for folder in sorted((data_dir / table).glob("date=*")):
            if len(list(folder.glob("*.parquet"))) < min_files:
                continue
            report = compact_partition(folder, table, row_group_rows)
            done.append(report)
            superseded += report.replaced
            log.info("compacted %s/%s: %d files, %d -> %d rows", table, folder.name,
                     report.files_before, report.rows_before, report.rows_after)
    if superseded:
        time.sleep(grace_s)  # let queries that listed the old files finish reading them
        for path in superseded:
            path.unlink(missing_ok=True)
        for folder in {p.parent for p in superseded}:
            fsync_dir(folder)
    return done
