"""Atomic Parquet files on a local disk.

Each file is written under a temporary name that no reader's glob matches, fsynced,
renamed into place and its directory fsynced, so a reader sees a whole file or none,
even if the process is killed mid-write.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".parquet.tmp"


def utc_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


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
