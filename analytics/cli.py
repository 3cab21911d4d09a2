"""`fleetpulse sql`, `fleetpulse metrics`, `fleetpulse catalog`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from fleetpulse.gateway import config
from fleetpulse.gateway.errors import UserError

# DuckDB and pyarrow load only when an analytics command runs, so that `fleetpulse
# ingest` and the other long-running commands do not carry them in memory.
if TYPE_CHECKING:
    import duckdb

SUMMARY_QUERIES = {
    "Daily active devices and temperature": """
        SELECT d.day, d.active_devices, t.median_temperature_c, t.readings
        FROM daily_active_devices d FULL JOIN daily_temperature t USING (day)
        ORDER BY day""",
    "Feature adoption (share of active devices that used each feature)": """
        SELECT feature, devices, round(100 * share_of_active, 1) AS pct_of_active, uses
        FROM feature_adoption ORDER BY devices DESC, feature""",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run SQL over the dataset's views",
                       description="Run one SQL query over the views readings, events, "
                                   "quarantine, devices and every metric view.")
    config.add_data_arg(p)
    p.add_argument("query", help='for example "SELECT count(*) FROM events"')
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=_sql)

    p = sub.add_parser("metrics", help="print the product metrics",
                       description="Daily active devices, feature adoption and daily "
                                   "median temperature.")
    config.add_data_arg(p)
    p.set_defaults(func=_metrics)

    p = sub.add_parser("catalog", help="write a DuckDB file of views for BI tools",
                       description="Write a DuckDB database holding only views over the "
                                   "dataset's absolute paths; open it read-only.")
    config.add_data_arg(p)
    p.add_argument("--out", type=Path, default=Path("fleet.duckdb"),
                   help="database file to write (default %(default)s)")
    p.set_defaults(func=_catalog)


def open_dataset(data: str | Path) -> duckdb.DuckDBPyConnection:
    from .dataset import connect

    config.require_dataset(str(data))
    return connect(data)


def _sql(args: argparse.Namespace) -> int:
    import duckdb

    from .dataset import query
    from .show import print_result

    con = open_dataset(args.data)
    try:
        result = query(con, args.query)
    except duckdb.Error as e:
        raise UserError(f"query failed: {str(e).splitlines()[0]}") from None
    if result.columns:
        print_result(result, args.format)
    return 0


def print_metrics(data_dir: str | Path, console: Console | None = None) -> None:
    from .dataset import query
    from .show import print_result

    con = open_dataset(data_dir)
    for title, sql in SUMMARY_QUERIES.items():
        print_result(query(con, sql), title=title, console=console)


def _metrics(args: argparse.Namespace) -> int:
    print_metrics(args.data)
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from .dataset import write_catalog

    config.require_dataset(args.data)
    names = write_catalog(args.data, args.out)
    Console().print(f"wrote {args.out} with {len(names)} views: {', '.join(names)}\n"
                    f"open it read-only: duckdb -readonly {args.out.resolve()}")
    return 0
