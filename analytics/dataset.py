"""DuckDB views over the Parquet dataset that ingest writes.

`readings`, `events` and `quarantine` read every file of their table (hive-partitioned
by UTC date, columns united by name so files from older and newer writers mix). The
first two keep one row per record identity (device_id, iid, boot, seq, idx): a message the
broker delivered twice is counted once. `*_raw` views show the files as they are.

A local dataset is read with DuckDB's own Parquet reader. A connection's views name
the files listed when it opened (analytics/layout.py): binding them costs no file
listing and no footer per query, and a query that finds a listed file gone (compaction
replaced it) runs again over a new listing. The views and macros come bound from a file
the dataset keeps per listing (analytics/view_cache.py), so opening a connection costs
no binding either. A catalog file for BI tools gets views that
list the files at query time instead, since such tools keep a connection open for
hours. A dataset in object storage is read through pyarrow datasets registered into
DuckDB: that needs no DuckDB extension (httpfs cannot be installed on machines without
internet); a connection sees the files that existed when it was opened.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fleetpulse.errors import UserError, one_line
from fleetpulse.gateway import attributes
from fleetpulse.gateway.attributes import ATTRIBUTES_FILE
from fleetpulse.ingest.schema import TABLES
from fleetpulse.ingest.store import Store

from . import rollups, states, view_cache
from .layout import SOURCES, Layout, list_layout, listed_file_gone
from .sources import DEDUP, deduplicated, empty_select, files_select, no_rows, parquet_select
from .sqltext import file_listing, fill_constants, sql_str, statements

log = logging.getLogger("fleetpulse.analytics")

METRICS_SQL = Path(__file__).with_name("metrics.sql")
EXPLAIN_SQL = Path(__file__).with_name("explain.sql")

def _source(store: Store, table: str) -> str:
    """A SELECT over the table's files by glob (absolute path or s3:// URL), or an empty
    one of the same shape when the table has no files yet."""
    if not store.files(table):
        return empty_select(table)
    return parquet_select(table, sql_str(store.url(table, "date=*", "*.parquet")))


# In object storage the attributes file is read through pyarrow into this table, as the
# other tables are (DuckDB would need httpfs): see _register_remote.
_REMOTE_ATTRIBUTES = "_device_attributes_file"


def _attributes_select(store: Store, registered: bool = False) -> str:
    """Device attributes with their history, as `fleetpulse devices export` wrote them
    into the dataset; none (same columns) before it ever did."""
    if registered:
        return f"SELECT * FROM {_REMOTE_ATTRIBUTES}"
    if not store.local or not Path(store.path(ATTRIBUTES_FILE)).exists():
        return no_rows(attributes.schema())
    return f"SELECT * FROM read_parquet({sql_str(store.url(ATTRIBUTES_FILE))})"


def _live_deduplicated(store: Store, table: str) -> str:
    """One row per record identity, choosing at query time (DuckDB's glob) which
    partitions hold several files and need the window (sources.deduplicated does the
    same from a listing taken once), so the view stays live as files come and go. Files
    that compaction has superseded count too: a query that listed them just before they
    were moved aside still deduplicates their partition."""
    if not store.local:
        return f"SELECT * FROM {table}_raw {DEDUP}"
    files = file_listing(store.url(table, "date=*", "*.parquet*"))
    return (f"WITH parts AS (SELECT d, count(*) AS n FROM ({files}) GROUP BY d) "
            f"SELECT * FROM {table}_raw WHERE date IN (SELECT d FROM parts WHERE n = 1) "
            f"UNION ALL BY NAME "
            f"SELECT * FROM {table}_raw WHERE date IN (SELECT d FROM parts WHERE n > 1) "
            f"{DEDUP}")


def data_view_statements(store: Store, layout: Layout | None,
                         raw_views: bool = True, remote_attributes: bool = False,
                         use_states: bool = True) -> list[str]:
    """The views over the dataset's files: over the files of `layout` (a connection's
    listing), or, with None, live views that list the files at query time (a catalog
    for BI tools, which keep a connection open while ingest and compaction change the
    files). The per-device states only over a listing, and with use_states."""
    stmts = []
    if raw_views:
        for table in TABLES:
            src = (_source(store, table) if layout is None else
                   files_select(table, layout.all_files(table), layout.uniform[table]))
            stmts.append(f"CREATE OR REPLACE VIEW {table}_raw AS {src}")
    for table in SOURCES:
        src = _live_deduplicated(store, table) if layout is None else deduplicated(layout, table)
        stmts.append(f"CREATE OR REPLACE VIEW {table} AS {src}")
    stmts.append("CREATE OR REPLACE VIEW device_attributes AS "
                 + _attributes_select(store, remote_attributes))
    stmts.append("CREATE OR REPLACE VIEW quarantine AS SELECT * FROM quarantine_raw")
    stmts.append("CREATE OR REPLACE VIEW presence AS SELECT * FROM presence_raw")
    found = states.find_states(store, layout) if layout is not None and use_states else None
    return stmts + rollups.view_statements(store, layout) + states.view_statements(found)


def view_statements(store: Store, layout: Layout | None = None,
                    raw_views: bool = True, remote_attributes: bool = False) -> list[str]:
    """Every view of the dataset and its metrics, over absolute paths."""
    return (data_view_statements(store, layout, raw_views, remote_attributes)
            + statements(_metrics_sql()) + _comments())


@dataclass
class Metric:
    name: str
    description: str
    parameters: list[str]


@cache
def _metrics_sql() -> str:
    """metrics.sql and explain.sql with the contract's lists filled in (read once per
    process)."""
    return fill_constants(METRICS_SQL.read_text() + "\n" + EXPLAIN_SQL.read_text())


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


# The catalog file is written in the oldest storage format that holds views and macros,
# so the DuckDB 1.x inside BI tools (DBeaver, Metabase, Grafana, duckdb-engine) and the
# duckdb CLI on PyPI can open it: a file in DuckDB 2's own format is refused there
# ("can only read versions between 64 and 68"). tests/test_catalog_compat.py opens it so.
CATALOG_STORAGE = "v1.0.0"


def _catalog_file(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), config={"storage_compatibility_version": CATALOG_STORAGE})


def _remote_catalog(store: Store, path: Path) -> duckdb.DuckDBPyConnection:
    """Views over s3:// URLs, for readers with DuckDB's httpfs extension (BI tools on
    machines with internet). Creating them needs httpfs here too."""
    con = _catalog_file(path)
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


def _rerun_if_file_vanished(action: Callable[[], T], attempts: int = 5,
                            before_rerun: Callable[[], None] | None = None) -> T:
    """Compaction deletes the files it replaced after a grace period; a statement that
    listed the files just before that finds one gone. Running it again, after listing
    the files afresh (before_rerun), sees the compacted file instead. The pause lets
    compaction finish deleting, so the next listing is stable."""
    for attempt in range(attempts):
        try:
            return action()
        except duckdb.IOException as e:
            if not listed_file_gone(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
            if before_rerun is not None:
                before_rerun()
    raise AssertionError("unreachable")


def query(con: duckdb.DuckDBPyConnection, sql: str) -> Result:
    """Run a query to completion over the dataset's views; a query that finds a file
    gone that the connection listed runs again over a new listing (refresh)."""

    def run() -> Result:
        rel = con.sql(sql)
        if rel is None:
            return Result([], [], [])
        return Result(list(rel.columns), [str(t) for t in rel.types], rel.fetchall())

    return _rerun_if_file_vanished(run, before_rerun=partial(refresh, con))


def query_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """As query, the result as an Arrow table: numbers stay in arrays, where fetched rows
    make a Python object of every value."""
    return _rerun_if_file_vanished(lambda: con.sql(sql).to_arrow_table(),
                                   before_rerun=partial(refresh, con))


def _register_remote(con: duckdb.DuckDBPyConnection, store: Store) -> bool:
    """`<table>_raw` views over pyarrow datasets of the store's files, and the exported
    device attributes as a table; whether there were attributes."""
    # Imported here: pyarrow.dataset brings pyarrow.compute, 0.1 s of every local
    # `fleetpulse metrics` process that never uses them.
    import pyarrow.dataset as ds

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
    path = store.path(ATTRIBUTES_FILE)
    if store.fs.get_file_info(path).type != pafs.FileType.File:
        return False
    con.register(_REMOTE_ATTRIBUTES, pq.read_table(path, filesystem=store.fs))
    return True


# The connection's own record of which dataset its views list (a DuckDB variable,
# so the connection carries it and nothing else needs to).
_DATASET_VARIABLE = "fleetpulse_dataset"


def connect(data: str | Path | Store, database: str = ":memory:", *,
            use_states: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the dataset's views and metric macros. A local dataset's
    views read the files listed when the connection opened (refresh lists again).
    use_states=False: every metric from the per-day rollups, none from the per-device
    states (what compaction computes the states with)."""
    store = data if isinstance(data, Store) else Store(data)
    con = duckdb.connect(database)
    if not store.local:
        attributes = _register_remote(con, store)
        _run(con, view_statements(store, raw_views=False, remote_attributes=attributes))
        return con
    con.execute(f"SET VARIABLE {_DATASET_VARIABLE} = ?", [store.root])
    # Binding opens the listed files: one gone by then (compaction) means listing again.
    _rerun_if_file_vanished(partial(_bind_local, con, store, use_states=use_states))
    return con


def refresh(con: duckdb.DuckDBPyConnection) -> None:
    """Point a connection's views at the local dataset's files as they are now (a
    connection from connect() over object storage, or from elsewhere, is left as is)."""
    row = con.execute(f"SELECT getvariable('{_DATASET_VARIABLE}')").fetchone()
    if row is None or row[0] is None:
        return
    _rerun_if_file_vanished(partial(_bind_local, con, Store(row[0])))


# The database a connection's views and macros live in, attached under this prefix: the
# file that holds them bound (analytics/view_cache.py), or one in memory they are
# created in when the dataset cannot hold that file (read-only, or no data yet) or is
# being written (view_cache.worth_keeping). Either
# way the connection's own database comes first in the search path, so what a caller
# creates goes there, and a refresh attaches the new one and detaches the old.
_BOUND = "fleetpulse_views_"


def _bind_local(con: duckdb.DuckDBPyConnection, store: Store,
                rewrite_broken: bool = True, use_states: bool = True) -> None:
    layout = list_layout(store)
    stmts = (data_view_statements(store, layout, use_states=use_states)
             + statements(_metrics_sql()) + _comments())
    has_data = any(layout.files[t] for t in TABLES)
    keep = has_data and view_cache.worth_keeping(layout.changed_at)
    path = view_cache.bound_file(store, stmts) if keep else None
    attached = _attached(con)
    if path is None:
        alias = f"{_BOUND}memory_{uuid.uuid4().hex[:8]}"
        own = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute(f"ATTACH ':memory:' AS {alias}")
        con.execute(f"USE {alias}")  # where CREATE goes
        try:
            _run(con, stmts)
        except BaseException:
            con.execute(f"USE {own}")
            con.execute(f"DETACH {alias}")
            raise
        con.execute(f"USE {own}")
    else:
        alias = _BOUND + path.stem[:16]
        if alias not in attached:
            try:
                con.execute(f"ATTACH {sql_str(str(path))} AS {alias} (READ_ONLY)")
            except duckdb.Error as e:
                if listed_file_gone(e) or not rewrite_broken:
                    raise  # pruned since it was found: the caller lists and looks again
                # not a DuckDB file (cut short by a crash): written again
                log.warning("rewriting %s, which DuckDB cannot open: %s", path, one_line(e))
                path.unlink(missing_ok=True)
                _bind_local(con, store, rewrite_broken=False, use_states=use_states)
                return
    con.execute(f"SET search_path = 'main,{alias}.main'")
    for name in attached:
        if name != alias:
            con.execute(f"DETACH {name}")


def _attached(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT database_name FROM duckdb_databases() WHERE starts_with(database_name, ?)",
        [_BOUND]).fetchall()]


def dataset_view(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """The qualified name of the dataset's view `name` in a connection from connect():
    what a TEMP table of the same name, which the unqualified name then finds, was made
    from."""
    return f"{db}.main.{name}" if (db := next(iter(_attached(con)), None)) else f"main.{name}"


def timed_query(con: duckdb.DuckDBPyConnection, sql: str, step: str,
                timer: Callable[[str, float], None] | None) -> Result:
    """query(), and `timer(step, seconds)` told how long it took."""
    t = time.perf_counter()
    result = query(con, sql)
    if timer is not None:
        timer(step, time.perf_counter() - t)
    return result


@contextmanager
def snapshot_views(con: duckdb.DuckDBPyConnection, names: Sequence[str],
                   timer: Callable[[str, float], None] | None = None) -> Iterator[None]:
    """The dataset's views `names` materialised as TEMP tables of the same names for what
    runs inside, which then reads them in place of the views (DuckDB looks in temp
    first): a view several queries aggregate the same way, aggregated once.
    `timer(step, seconds)` is told how long each took. Inside another snapshot of the
    same view, that one is read and left in place."""
    taken = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() "
                                       "WHERE temporary").fetchall()}
    names = [n for n in names if n not in taken]
    try:
        for name in names:
            timed_query(con, f"CREATE OR REPLACE TEMP TABLE {name} AS FROM "
                             f"{dataset_view(con, name)}", f"snapshot {name}", timer)
        yield
    finally:
        for name in names:
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")


def _run(con: duckdb.DuckDBPyConnection, stmts: list[str]) -> None:
    for stmt in stmts:
        con.execute(stmt)


def _live_catalog(store: Store, path: Path) -> duckdb.DuckDBPyConnection:
    con = _catalog_file(path)
    for stmt in view_statements(store):
        # Binding a live view lists the files and reads their footers.
        _rerun_if_file_vanished(partial(con.execute, stmt))
    return con


def write_catalog(data: str | Path, out: Path) -> list[str]:
    """A DuckDB file holding only views and macros over absolute paths; return their
    names (views first). Its views list the files at query time: a BI tool keeps its
    connection open while ingest and compaction change them."""
    store = Store(data)
    out = out.resolve()
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = _live_catalog(store, tmp) if store.local else _remote_catalog(store, tmp)
        names = [r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name"
        ).fetchall()]
        names += [f"{r[0]}()" for r in con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = "
            "'table_macro' AND NOT internal ORDER BY function_name").fetchall()]
        con.close()
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a catalog not written leaves nothing behind
        raise
    return names
