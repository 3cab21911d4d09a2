"""Which files a local dataset holds at one moment: what a connection's views read.

Listing a directory tree costs microseconds in Python, while a view that lists files
and chooses among them in SQL (DuckDB's glob, a window over the listing) is bound
and planned again by every query that reads it, once per reference. So a connection
takes one listing when it opens and its views name the files it found: which days
need deduplicating (more than one file, or compaction's superseded files still
there), which rollups match their day's files, whether the files' columns differ (only
then does the reader unite them by name, which opens every footer when a query is
bound). A query that finds a listed file gone (compaction removed it) lists again
(analytics/dataset.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from fleetpulse.ingest.schema import TABLES
from fleetpulse.ingest.store import SUPERSEDED_SUFFIX, Store

from .rollups import ROLLUP_DIR, rollup_dir, rollup_key, rollup_queries

SOURCES = ("readings", "events")


@dataclass(frozen=True)
class Layout:
    # table -> day ("YYYY-MM-DD") -> its data files, sorted
    files: dict[str, dict[str, list[str]]]
    # table -> days with superseded files still on disk (compaction in its grace period)
    settling: dict[str, set[str]]
    # table -> every data file has the same columns
    uniform: dict[str, bool]
    # rollup name -> day -> the rollup file that matches the day's data files
    rollups: dict[str, dict[str, str]] = field(default_factory=dict)
    # when a data file last appeared or went (the newest partition folder's change)
    changed_at: float = 0.0

    def all_files(self, table: str) -> list[str]:
        return [f for files in self.files[table].values() for f in files]

    def single_file_days(self, table: str) -> list[str]:
        """Days whose one file needs no deduplication (compaction leaves one
        deduplicated file, ingest drops repeats within what it writes at once)."""
        return [d for d, f in self.files[table].items()
                if len(f) == 1 and d not in self.settling[table]]

    def data_days(self) -> list[str]:
        return sorted({d for t in SOURCES for d in self.files[t]})

    def raw_days(self, name: str) -> list[str]:
        """The days rollup `name` does not cover: computed from raw rows."""
        return [d for d in self.data_days() if d not in self.rollups.get(name, {})]


def _list_table(root: Path) -> tuple[dict[str, list[str]], set[str], float]:
    files: dict[str, list[str]] = {}
    settling: set[str] = set()
    changed_at = 0.0
    try:
        parts = list(os.scandir(root))
    except FileNotFoundError:
        return files, settling, changed_at
    for part in parts:
        if not (part.is_dir() and part.name.startswith("date=")):
            continue
        day = part.name.removeprefix("date=")
        try:
            entries = list(os.scandir(part.path))
            # a folder's time changes when a file is renamed into it or out of it
            changed_at = max(changed_at, part.stat().st_mtime)
        except FileNotFoundError:  # removed since the listing above
            continue
        for e in entries:
            if e.name.endswith(".parquet"):
                files.setdefault(day, []).append(e.path)
            elif e.name.endswith(".parquet" + SUPERSEDED_SUFFIX):
                settling.add(day)
    return {d: sorted(f) for d, f in sorted(files.items())}, settling, changed_at


def listed_file_gone(e: Exception) -> bool:
    """Whether a DuckDB error is a listed file that is gone (opening it, or, a list entry
    being a glob, matching it): compaction removed it, and listing again fixes it."""
    return isinstance(e, duckdb.IOException) and (
        "Cannot open file" in str(e) or "No files found that match" in str(e))


@lru_cache(maxsize=1 << 16)
def _columns(path: str) -> tuple[str, ...]:
    # Keyed by path alone: a data file is never rewritten under its name (writers
    # rename a finished temporary file to a new name), so a dashboard that opens a
    # connection per page reads each footer once.
    return tuple(pq.read_schema(path).names)


def _uniform(paths: list[str]) -> bool:
    """Every file has the same columns (a file that vanished counts as different, so
    the views unite by name, which is always right)."""
    seen = None
    for p in paths:
        try:
            names = _columns(p)
        except OSError:
            return False
        if seen is not None and names != seen:
            return False
        seen = names
    return True


def list_layout(store: Store) -> Layout:
    """The local dataset's files now."""
    files, settling, uniform, changed_at = {}, {}, {}, 0.0
    for table in TABLES:
        files[table], settling[table], changed = _list_table(Path(store.path(table)))
        changed_at = max(changed_at, changed)
        uniform[table] = _uniform([f for fs in files[table].values() for f in fs])
    layout = Layout(files, settling, uniform, changed_at=changed_at)
    for name in rollup_queries():
        root = Path(store.path(ROLLUP_DIR, rollup_dir(name)))
        valid = {}
        for day in layout.data_days():
            src = {t: files[t].get(day, []) for t in SOURCES}
            if any(len(f) > 1 or day in settling[t] for t, f in src.items()):
                continue  # not compacted yet, or compaction still settling
            key = rollup_key(*(f[0] if f else None for f in src.values()))
            path = root / f"date={day}" / f"{key}.parquet"
            if path.exists():
                valid[day] = str(path)
        layout.rollups[name] = valid
    return layout
