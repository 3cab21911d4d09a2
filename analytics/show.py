"""Print query results for people (rich tables) or scripts (CSV, JSON)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from .dataset import Result


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def json_value(v: Any) -> Any:
    """A query result value as JSON can hold it."""
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


# A table is for reading: rich lays out every cell (about 1 ms per row), so 10,000 rows
# took 10 s to print and scrolled out of sight. Like the duckdb shell, show the first
# rows and say how to get all of them; csv and json print every row.
MAX_TABLE_ROWS = 40


def print_result(result: Result, fmt: str = "table", title: str | None = None,
                 console: Console | None = None) -> None:
    cols = result.columns
    rows = result.rows
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    elif fmt == "json":
        json.dump([{c: json_value(v) for c, v in zip(cols, r, strict=True)} for r in rows],
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        cut = len(rows) > MAX_TABLE_ROWS
        half = MAX_TABLE_ROWS // 2
        shown = [*rows[:half], None, *rows[-half:]] if cut else rows
        table = Table(title=title, title_justify="left", title_style="bold")
        for c, t in zip(cols, result.types, strict=True):
            numeric = t in ("BIGINT", "INTEGER", "DOUBLE", "HUGEINT", "FLOAT")
            table.add_column(c, justify="right" if numeric else "left")
        for r in shown:
            if r is None:
                table.add_row(*("…" for _ in cols))
            else:
                table.add_row(*(_cell(v) for v in r))
        out = console or Console()
        out.print(table)
        if cut:  # below the table, not as its caption: a narrow table would wrap it
            out.print(f"{MAX_TABLE_ROWS} of {len(rows):,} rows shown (the first and the last "
                      f"{half}): --format csv or json prints all", style="dim",
                      highlight=False)
