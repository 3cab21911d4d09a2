"""DuckDB views over the Parquet dataset that ingest writes.

`readings`, `events` and `quarantine` read every file of their table (hive-partitioned
by UTC date, columns united by name so files from older and newer writers mix). The
first two keep one row per record identity (device_id, iid, boot, seq, idx): a message the
broker delivered twice is counted once. `*_raw` views show the files as they are.

A local dataset is read with DuckDB's own Parquet reader over a glob, so a view sees
files written after it was created. A dataset in object storage is read through
pyarrow datasets registered into DuckDB: that needs no DuckDB extension (httpfs cannot
be installed on machines without internet), but a connection sees the files that
existed when it was opened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fleetpulse.gateway.errors import UserError
from fleetpulse.ingest.schema import RECORD_KEY, TABLES
from fleetpulse.ingest.store import Store

from . import rollups
from .sqltext import file_listing, fill_contract, sql_str, statements

METRICS_SQL = Path(__file__).with_name("metrics.sql")

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE",
    pa.binary(): "BLOB",
    pa.bool_(): "BOOLEAN",
}


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return _DUCK_TYPES[t]


def empty_select(table: str) -> str:
    """A SELECT with the table's declared columns (and its date) and no rows."""
    cols = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in TABLES[table]]
    return f"SELECT {', '.join(cols)}, CAST(NULL AS DATE) AS date WHERE false"


def parquet_select(table: str, files: str) -> str:
    """A SELECT over Parquet files of a table (files: a SQL glob or list literal), their
    date taken from the path. United by name with the empty typed table, so every declared
    column exists even if no file has it yet (files from an older writer or another tool)."""
    return (f"SELECT * FROM read_parquet({files}, hive_partitioning = true, "
            f"union_by_name = true, hive_types = {{'date': DATE}}) "
            f"UNION ALL BY NAME {empty_select(table)}")


def _source(store: Store, table: str) -> str:
    """A SELECT over the table's files by glob (absolute path or s3:// URL), or an empty
    one of the same shape when the table has no files yet."""
    if not store.files(table):
        return empty_select(table)
    return parquet_select(table, sql_str(store.url(table, "date=*", "*.parquet")))


_DEDUP = (f"QUALIFY row_number() OVER (PARTITION BY date, {', '.join(RECORD_KEY)} "
          "ORDER BY received_at) = 1")


def _deduplicated(store: Store, table: str) -> str:
    """One row per record identity. Deduplicating is most of a query's cost, and a
    partition holding a single file needs none: compaction leaves one deduplicated file,
    and ingest drops repeats within what it writes at once. So only partitions with
    several files go through the window; which ones is read from the file listing at
    query time (DuckDB's glob), so the view stays live as files come and go. Files that
    compaction has superseded count too: a query that listed them just before they
    were moved aside still deduplicates their partition."""
    if not store.local:
        return f"SELECT * FROM {table}_raw {_DEDUP}"
    files = file_listing(store.url(table, "date=*", "*.parquet*"))
    return (f"WITH parts AS (SELECT d, count(*) AS n FROM ({files}) GROUP BY d) "
            f"SELECT * FROM {table}_raw WHERE date IN (SELECT d FROM parts WHERE n = 1) "
            f"UNION ALL BY NAME "
            f"SELECT * FROM {table}_raw WHERE date IN (SELECT d FROM parts WHERE n > 1) "
            f"{_DEDUP}")


def view_statements(store: Store, raw_views: bool = True) -> list[str]:
    """Every view of the dataset and its metrics, over absolute paths."""
    stmts = []
    if raw_views:
        for table in TABLES:
            stmts.append(f"CREATE OR REPLACE VIEW {table}_raw AS {_source(store, table)}")
    for table in ("readings", "events"):
        stmts.append(f"CREATE OR REPLACE VIEW {table} AS {_deduplicated(store, table)}")
    stmts.append("CREATE OR REPLACE VIEW quarantine AS SELECT * FROM quarantine_raw")
    stmts.append("CREATE OR REPLACE VIEW presence AS SELECT * FROM presence_raw")
    stmts += rollups.view_statements(store)
    stmts += statements(_metrics_sql())
    return stmts + _comments()


@dataclass
class Metric:
    name: str
    description: str
    parameters: list[str]


@cache
def _metrics_sql() -> str:
    """metrics.sql with the contract's lists filled in (read once per process)."""
    return fill_contract(METRICS_SQL.read_text())


@cache
def metric_catalog() -> tuple[Metric, ...]:
    """The metrics metrics.sql declares with '-- metric: NAME: description' lines."""
    out = []
    lines = METRICS_SQL.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("-- metric: "):
            name, description = line.removeprefix("-- metric: ").split(": ", 1)
            params = _macro_params(lines[i + 1:], name)
            out.append(Metric(name, description, params))
    return tuple(out)


def _macro_params(lines: list[str], name: str) -> list[str]:
    head = ""
    for line in lines:
        head += " " + line.strip()
        if " AS TABLE" in head:
            break
    inside = head.split(f"MACRO {name}(", 1)[1].rsplit(")", 1)[0]
    return [p.split(":=")[0].strip() for p in inside.split(",") if p.strip()]


def _comments() -> list[str]:
    """COMMENT ON statements, so BI tools show what each metric means."""
    return [f"COMMENT ON MACRO TABLE {m.name} IS {sql_str(m.description)}"
            for m in metric_catalog()]


def _remote_catalog(store: Store, path: Path) -> duckdb.DuckDBPyConnection:
    """Views over s3:// URLs, for readers with DuckDB's httpfs extension (BI tools on
    machines with internet). Creating them needs httpfs here too."""
    con = duckdb.connect(str(path))
    try:
        con.execute("LOAD httpfs")
        for stmt in view_statements(store):
            con.execute(stmt)
    except duckdb.Error as e:
        con.close()
        path.unlink(missing_ok=True)
        raise UserError(
            "a catalog over object storage needs DuckDB's httpfs extension: run "
            f"`INSTALL httpfs` once on a machine with internet ({str(e).splitlines()[0]})"
        ) from None
    return con


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


def _register_remote(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """`<table>_raw` views over pyarrow datasets of the store's files."""
    for table in TABLES:
        files = store.files(table)
        if not files:
            con.execute(f"CREATE OR REPLACE VIEW {table}_raw AS {empty_select(table)}")
            continue
        # Columns united by name across files, as read_parquet(union_by_name) does.
        schema = pa.unify_schemas(
            [TABLES[table], *(pq.read_schema(f, filesystem=store.fs) for f in files)],
            promote_options="permissive")
        part = pa.schema([pa.field("date", pa.date32())])
        dataset = ds.dataset(files, filesystem=store.fs, format="parquet",
                             schema=pa.unify_schemas([schema, part]),
                             partitioning=ds.partitioning(part, flavor="hive"),
                             partition_base_dir=store.path(table))
        con.register(f"_{table}_files", dataset)
        con.execute(f"CREATE OR REPLACE VIEW {table}_raw AS SELECT * FROM _{table}_files")


def connect(data: str | Path | Store, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    store = data if isinstance(data, Store) else Store(data)
    con = duckdb.connect(database)
    if not store.local:
        _register_remote(con, store)
    for stmt in view_statements(store, raw_views=store.local):
        # Binding a view reads every file's footer (columns are united by name).
        _rerun_if_file_vanished(partial(con.execute, stmt))
    return con


def write_catalog(data: str | Path, out: Path) -> list[str]:
    """A DuckDB file holding only views and macros over absolute paths; return their
    names (views first)."""
    store = Store(data)
    out = out.resolve()
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = connect(store, str(tmp)) if store.local else _remote_catalog(store, tmp)
    names = [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
    names += [f"{r[0]}()" for r in con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = "
        "'table_macro' AND NOT internal ORDER BY function_name").fetchall()]
    con.close()
    tmp.replace(out)
    return names
