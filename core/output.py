"""Rows printed by every command: a table for people, with one number format, or CSV /
JSON for scripts (`--format csv|json`), so CI reads the same answer a person sees."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich costs start-up time; it is imported when a table is printed
    from rich.console import Console

FORMATS = ("table", "csv", "json")


def add_format_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--format", choices=FORMATS, default="table",
                   help=f"{what}as a table for people, csv or json for scripts (default "
                        "%(default)s)")


def json_value(v: Any) -> Any:
    """A value as JSON can hold it."""
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    """Every row as CSV (a header line first) or as a JSON list of objects."""
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
    elif fmt == "json":
        json.dump([{c: json_value(v) for c, v in zip(columns, r, strict=True)} for r in rows],
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        raise ValueError(f"print_rows prints csv or json, not {fmt!r}")


def cell(v: Any) -> str:
    """A value in a table for people: integers grouped (12,345), fractions to at most
    three decimals (0.84, not 0.8400), days as YYYY-MM-DD, nothing for NULL."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1e6:
            return f"{v:,.0f}"
        return f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return str(v)


# A table is for reading: rich lays out every cell (about 1 ms per row), so 10,000 rows
# took 10 s to print and scrolled out of sight. Like the duckdb shell, show the first
# rows and say how to get all of them; csv and json print every row.
MAX_TABLE_ROWS = 40


def print_table(cols: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table",
                title: str | None = None, console: Console | None = None) -> None:
    """Rows for people (a table that fits the terminal, numbers in one format, long
    results cut with a note) or, with fmt csv or json, every row for scripts."""
    from rich.console import Console
    from rich.table import Table

    if fmt in ("csv", "json"):
        print_rows(cols, rows, fmt)
    else:
        cut = len(rows) > MAX_TABLE_ROWS
        half = MAX_TABLE_ROWS // 2
        shown = [*rows[:half], None, *rows[-half:]] if cut else rows
        out = console or Console()
        cells = [None if r is None else [cell(v) for v in r] for r in shown]
        keep = fit_columns([len(c) for c in cols], [c for c in cells if c is not None],
                           out.width)
        table = Table(title=title, title_justify="left", title_style="bold")
        for i in keep:
            if i is None:
                table.add_column("…", justify="center")
                continue
            numeric = all(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                          for r in rows if r[i] is not None)
            table.add_column(cols[i], justify="right" if numeric else "left")
        for row in cells:
            table.add_row(*("…" if row is None or i is None else row[i] for i in keep))
        out.print(table)
        notes = []
        if cut:
            notes.append(f"{MAX_TABLE_ROWS} of {len(rows):,} rows shown (the first and the "
                         f"last {half})")
        hidden = len(cols) - sum(i is not None for i in keep)
        if hidden:
            notes.append(f"{hidden} of {len(cols)} columns hidden to fit the terminal "
                         "(select fewer)")
        if notes:  # below the table, not as its caption: a narrow table would wrap it
            out.print("; ".join(notes) + ": --format csv or json prints all", style="dim",
                      highlight=False)


# A column narrower than this shows mostly "…"; wider cells may still wrap.
_READABLE = 24


def fit_columns(header_widths: list[int], rows: list[list[str]], width: int
                ) -> list[int | None]:
    """Which columns a table `width` characters wide can show readably: all of them, or
    the first and last ones with None where the middle ones are left out. Rich would
    squeeze every column instead, and 17 columns in 80 characters read as all "…"."""
    n = len(header_widths)
    need = [min(_READABLE, max([h, *(len(r[i]) for r in rows)])) + 3  # padding, border
            for i, h in enumerate(header_widths)]
    if sum(need) + 1 <= width:
        return list(range(n))
    room = width - 1 - 4  # the border, and the "…" column
    left: list[int] = []
    right: list[int] = []
    lo, hi = 0, n - 1
    while lo <= hi:
        take_left = len(left) <= len(right)
        i = lo if take_left else hi
        if need[i] > room:
            break
        room -= need[i]
        if take_left:
            left.append(i)
            lo += 1
        else:
            right.append(i)
            hi -= 1
    if not left:  # even one column is wider than the terminal: rich wraps it
        return [0, None] if n > 1 else [0]
    return [*left, None, *reversed(right)]
