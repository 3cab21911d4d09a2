"""DuckDB views over the Parquet dataset that ingest writes.

`readings`, `events` and `quarantine` read every file of their table (hive-partitioned
by UTC date, columns united by name so files from older and newer writers mix). The
first two keep one row per record identity (device_id, boot, seq, idx): a message the
broker delivered twice is counted once. `*_raw` views show the files as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from fleetpulse.ingest.contract import USAGE_EVENTS
from fleetpulse.ingest.schema import TABLES

METRICS_SQL = Path(__file__).with_name("metrics.sql")

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE",
    pa.binary(): "BLOB",
}


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return _DUCK_TYPES[t]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _source(data_dir: Path, table: str) -> str:
    """A SELECT over the table's files, or an empty one of the same shape."""
    folder = data_dir / table
    if any(folder.glob("date=*/*.parquet")):
        glob = _sql_str(str(folder / "date=*" / "*.parquet"))
        return (f"SELECT * FROM read_parquet({glob}, hive_partitioning = true, "
                f"union_by_name = true, hive_types = {{'date': DATE}})")
    cols = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in TABLES[table]]
    return f"SELECT {', '.join(cols)}, CAST(NULL AS DATE) AS date WHERE false"


def view_statements(data_dir: Path) -> list[str]:
    """Every view of the dataset and its metrics, over absolute paths."""
    data_dir = data_dir.resolve()
    stmts = []
    for table in TABLES:
        stmts.append(f"CREATE OR REPLACE VIEW {table}_raw AS {_source(data_dir, table)}")
    for table in ("readings", "events"):
        stmts.append(
            f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {table}_raw "
            "QUALIFY row_number() OVER (PARTITION BY device_id, boot, seq, idx "
            "ORDER BY received_at) = 1"
        )
    stmts.append("CREATE OR REPLACE VIEW quarantine AS SELECT * FROM quarantine_raw")
    usage = ", ".join(_sql_str(e) for e in USAGE_EVENTS)
    text = METRICS_SQL.read_text().replace("{usage_events}", usage)
    stmts += [s.strip() for s in text.split(";") if _has_sql(s)]
    return stmts


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


T = TypeVar("T")


def _rerun_if_file_vanished(action: Callable[[], T], attempts: int = 5) -> T:
    """Compaction deletes the files it replaced after a grace period; a statement that
    listed the files just before that finds one gone. Running it again lists the files
    afresh and sees the compacted file instead. The pause lets compaction finish
    deleting, so the next listing is stable."""
    for attempt in range(attempts):
        try:
            return action()
        except duckdb.IOException as e:
            if "Cannot open file" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def query(con: duckdb.DuckDBPyConnection, sql: str) -> Result:
    """Run a query to completion over the dataset's views."""

    def run() -> Result:
        rel = con.sql(sql)
        if rel is None:
            return Result([], [], [])
        return Result(list(rel.columns), [str(t) for t in rel.types], rel.fetchall())

    return _rerun_if_file_vanished(run)


def connect(data_dir: Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database)
    for stmt in view_statements(data_dir):
        # Binding a view reads every file's footer (columns are united by name).
        _rerun_if_file_vanished(partial(con.execute, stmt))
    return con


def write_catalog(data_dir: Path, out: Path) -> list[str]:
    """A DuckDB file holding only views over absolute paths; return the view names."""
    out = out.resolve()
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = connect(data_dir, str(tmp))
    names = [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
    con.close()
    tmp.replace(out)
    return names
