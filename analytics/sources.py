"""The SELECTs every view starts from: a table's Parquet files (or none) in the shape its
schema declares, and one row per record identity over them."""

from __future__ import annotations

import pyarrow as pa

from fleetpulse.ingest.schema import RECORD_KEY, TABLES

from .layout import Layout
from .sqltext import sql_list

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


def no_rows(schema: pa.Schema, extra: str = "") -> str:
    """A SELECT with the schema's columns (and `extra` ones) and no rows."""
    cols = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in schema]
    return f"SELECT {', '.join(cols + ([extra] if extra else []))} WHERE false"


def empty_select(table: str) -> str:
    """A SELECT with the table's declared columns (and its date) and no rows."""
    return no_rows(TABLES[table], "CAST(NULL AS DATE) AS date")


def parquet_select(table: str, files: str, union_by_name: bool = True) -> str:
    """A SELECT over Parquet files of a table (files: a SQL glob or list literal), their
    date taken from the path. United by name with the empty typed table, so every declared
    column exists even if no file has it yet (files from an older writer or another tool).
    union_by_name=False when every file has the same columns: uniting opens every file's
    footer whenever a query using the SELECT is bound."""
    return (f"SELECT * FROM read_parquet({files}, hive_partitioning = true, "
            f"union_by_name = {str(union_by_name).lower()}, hive_types = {{'date': DATE}}) "
            f"UNION ALL BY NAME {empty_select(table)}")


def files_select(table: str, files: list[str], uniform: bool = False) -> str:
    """parquet_select over a list of files; empty_select for none."""
    if not files:
        return empty_select(table)
    return parquet_select(table, f"[{sql_list(files)}]",
                          union_by_name=not uniform)


DEDUP = (f"QUALIFY row_number() OVER (PARTITION BY date, {', '.join(RECORD_KEY)} "
         "ORDER BY received_at) = 1")


def deduplicated(layout: Layout, table: str, days: list[str] | None = None) -> str:
    """One row per record identity over the layout's files of `days` (all by default).
    Deduplicating is most of a query's cost, and a day holding a single file needs none:
    so only the days with several files (or compaction's superseded files still there)
    go through the window."""
    by_day = layout.files[table]
    chosen = list(by_day) if days is None else [d for d in days if d in by_day]
    single = set(layout.single_file_days(table))
    one = [f for d in chosen if d in single for f in by_day[d]]
    many = [f for d in chosen if d not in single for f in by_day[d]]
    uniform = layout.uniform[table]
    parts = []
    if one:
        parts.append(f"SELECT * FROM ({files_select(table, one, uniform)})")
    if many:
        parts.append(f"SELECT * FROM ({files_select(table, many, uniform)}) {DEDUP}")
    return " UNION ALL BY NAME ".join(parts) or empty_select(table)
