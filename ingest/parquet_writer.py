"""Atomic, hive-partitioned Parquet writes: DIR/<table>/date=YYYY-MM-DD/<unique>.parquet.

Each file is written under a temporary name that no reader's glob matches, fsynced,
renamed into place and its directory fsynced, so a reader sees a whole file or none,
even if the process is killed mid-write.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import PARTITION_TIME, TABLES

TMP_SUFFIX = ".parquet.tmp"


def utc_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def write_rows(
    data_dir: Path, table: str, rows: list[dict[str, Any]], name: str,
    schema: pa.Schema | None = None,
) -> list[Path]:
    """Write rows of one table as DIR/<table>/date=<UTC date>/part-<name>.parquet, one
    file per date; return the files. Writing the same name again replaces the file."""
    by_date: dict[str, list[dict[str, Any]]] = defaultdict(list)
    time_col = PARTITION_TIME[table]
    for row in rows:
        by_date[utc_date(row[time_col])].append(row)
    schema = schema or TABLES[table]
    written = []
    for date, part in sorted(by_date.items()):
        arrow = pa.Table.from_pylist(part, schema=schema)
        written.append(write_table(data_dir / table / f"date={date}" / f"part-{name}.parquet",
                                   arrow))
    return written


def write_table(final: Path, table: pa.Table, row_group_size: int | None = None) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.stem + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd", row_group_size=row_group_size)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind, not even a tmp
        raise
    fsync_dir(final.parent)
    return final


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(data_dir: Path) -> int:
    """Delete temporary files a killed writer left behind; return how many."""
    n = 0
    for tmp in data_dir.glob(f"*/date=*/*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n
