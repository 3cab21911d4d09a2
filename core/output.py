"""Rows for scripts: the CSV and JSON every command that prints a table can also print
(`--format csv|json`), so CI reads the same answer a person sees."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "csv", "json")


def add_format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table for people, csv or json for scripts (default %(default)s)")


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
