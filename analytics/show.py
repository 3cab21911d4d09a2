"""Print query results for people (rich tables) or scripts (CSV, JSON)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fleetpulse.output import print_rows

from .dataset import Result


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


# A table is for reading: rich lays out every cell (about 1 ms per row), so 10,000 rows
# took 10 s to print and scrolled out of sight. Like the duckdb shell, show the first
# rows and say how to get all of them; csv and json print every row.
MAX_TABLE_ROWS = 40


def print_result(result: Result, fmt: str = "table", title: str | None = None,
                 console: Console | None = None) -> None:
    cols = result.columns
    rows = result.rows
    if fmt in ("csv", "json"):
        print_rows(cols, rows, fmt)
    else:
        cut = len(rows) > MAX_TABLE_ROWS
        half = MAX_TABLE_ROWS // 2
        shown = [*rows[:half], None, *rows[-half:]] if cut else rows
        out = console or Console()
        cells = [None if r is None else [_cell(v) for v in r] for r in shown]
        keep = fit_columns([len(c) for c in cols], [c for c in cells if c is not None],
                           out.width)
        table = Table(title=title, title_justify="left", title_style="bold")
        for i in keep:
            if i is None:
                table.add_column("…", justify="center")
                continue
            numeric = result.types[i] in ("BIGINT", "INTEGER", "DOUBLE", "HUGEINT", "FLOAT")
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
