"""Atomic, hive-partitioned Parquet writes: DIR/<table>/date=YYYY-MM-DD/<unique>.parquet.

Each file is written under a temporary name that no reader's glob matches, fsynced,
renamed into place and its directory fsynced, so a reader sees a whole file or none,
even if the process is killed mid-write.
"""

from __future__ import annotations

import os
import uuid
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
    data_dir: Path, table: str, rows: list[dict[str, Any]], writer_id: str
) -> list[Path]:
    """Write rows of one table, one file per UTC date partition; return the files."""
    by_date: dict[str, list[dict[str, Any]]] = defaultdict(list)
    time_col = PARTITION_TIME[table]
    for row in rows:
        by_date[utc_date(row[time_col])].append(row)
    schema = TABLES[table]
    written = []
    for date, part in sorted(by_date.items()):
        arrow = pa.Table.from_pylist(part, schema=schema)
        written.append(write_table(data_dir / table / f"date={date}", arrow, writer_id))
    return written


def write_table(directory: Path, table: pa.Table, writer_id: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    final = directory / f"part-{stamp}-{writer_id}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = final.with_name(final.stem + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, final)
    fsync_dir(directory)
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
