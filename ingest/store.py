"""Where the Parquet dataset lives: a local directory or an S3 prefix (pyarrow.fs).

Layout in both: <root>/<table>/date=YYYY-MM-DD/part-*.parquet. A local file is written
under a temporary name, fsynced and renamed; an object store makes a PUT visible whole
or not at all, so objects are written in place.

S3 settings come from the environment, as AWS tools expect: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION (default us-east-1), and FLEETPULSE_S3_ENDPOINT
(e.g. http://127.0.0.1:9000) for S3-compatible stores such as MinIO.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fleetpulse.errors import UserError, one_line

from .parquet_writer import day_name, utc_days, write_table
from .schema import PARTITION_TIME, TABLES

SUPERSEDED_SUFFIX = ".superseded"
# Superseded files older than this are a stopped compaction's leftovers, not files in
# a running compaction's grace periods (two of the default 10 s).
LEFTOVER_AGE_S = 60.0


def is_remote(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def s3_filesystem() -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
    }
    endpoint = os.environ.get("FLEETPULSE_S3_ENDPOINT")
    if endpoint:
        u = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = u.netloc
        kwargs["scheme"] = u.scheme
    return pafs.S3FileSystem(**kwargs)


class Store:
    def __init__(self, uri: str | Path) -> None:
        self.uri = str(uri)
        self.local = not is_remote(uri)
        if self.local:
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
            self.root = str(Path(uri).resolve())
        else:
            self.fs = s3_filesystem()
            self.root = self.uri.removeprefix("s3://").rstrip("/")

    def __str__(self) -> str:
        return self.uri

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, *parts: str) -> str:
        """The location as readers outside this process name it (a path or s3:// URL)."""
        return self.path(*parts) if self.local else "s3://" + self.path(*parts)

    def write_table(self, rel: str, table: pa.Table, row_group_size: int | None = None) -> str:
        if self.local:
            return str(write_table(Path(self.path(rel)), table, row_group_size))
        # Encoded in memory first, then uploaded: an object stream completes its upload on
        # close even after an exception (pyarrow exposes no abort), so a write that fails
        # part-way would leave a truncated object. Encoding can then fail without touching
        # the store, and a failed upload is deleted: a failed write leaves no object.
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
        data = sink.getvalue()
        path = self.path(rel)
        try:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)
            raise
        return self.url(rel)

    def write_rows(self, table: str, rows: list[dict[str, Any]], name: str,
                   schema: pa.Schema | None = None) -> list[str]:
        """Rows (dicts) of one table, as write_table_by_date writes them."""
        return self.write_table_by_date(
            table, pa.Table.from_pylist(rows, schema=schema or TABLES[table]), name)

    def write_table_by_date(self, table: str, data: pa.Table, name: str) -> list[str]:
        """A table's rows as <table>/date=<UTC date>/part-<name>.parquet, one file per
        date. Writing the same name again replaces the file."""
        if not data.num_rows:
            return []
        days = utc_days(data.column(PARTITION_TIME[table]))
        first, last = int(days.min()), int(days.max())
        parts = [(first, data)] if first == last else [
            (int(d), data.filter(pa.array(days == d))) for d in np.unique(days)]
        return [self.write_table(f"{table}/date={day_name(d)}/part-{name}.parquet", part)
                for d, part in parts]

    def partitions(self, table: str) -> dict[str, list[str]]:
        """date=YYYY-MM-DD -> that partition's Parquet files (store paths), sorted."""
        sel = pafs.FileSelector(self.path(table), recursive=True, allow_not_found=True)
        out: dict[str, list[str]] = defaultdict(list)
        try:
            infos = self.fs.get_file_info(sel)
        except OSError as e:
            if self.local:
                raise
            # an unreachable bucket or endpoint is the user's to fix: one line, not a
            # pyarrow traceback
            raise UserError(f"cannot list {self.url(table)} ({one_line(e)}): check the "
                            "bucket, FLEETPULSE_S3_ENDPOINT and the AWS credentials") from None
        for info in infos:
            parts = info.path.rsplit("/", 2)
            if (info.type == pafs.FileType.File and info.path.endswith(".parquet")
                    and len(parts) == 3 and parts[1].startswith("date=")):
                out[parts[1]].append(info.path)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def files(self, table: str) -> list[str]:
        return [f for files in self.partitions(table).values() for f in files]

    def read_each(self, paths: list[str]) -> list[pa.Table]:
        return [pq.ParquetFile(self.fs.open_input_file(p)).read() for p in paths]

    def read(self, paths: list[str]) -> pa.Table:
        """The files as one table, columns united by name (missing ones become nulls)."""
        return pa.concat_tables(self.read_each(paths), promote_options="permissive")

    def supersede(self, paths: list[str]) -> list[str]:
        """Move files out of readers' *.parquet globs; return their new paths."""
        out = []
        for p in paths:
            new = p + SUPERSEDED_SUFFIX
            with contextlib.suppress(FileNotFoundError):
                self.fs.move(p, new)
                out.append(new)
        return out

    def leftover_superseded(self, min_age_s: float = LEFTOVER_AGE_S) -> list[str]:
        """Superseded files moved aside at least min_age_s ago: a compaction that was
        stopped between moving them and deleting them left them (their rows are in
        the merged file written before the move). Younger ones may belong to a
        compaction in its grace period. Locally the move time is the inode change
        time; in object storage a move is a copy, so the object's modification time."""
        now = time.time()
        out = []
        infos = [i for table in TABLES for i in self.fs.get_file_info(
            pafs.FileSelector(self.path(table), recursive=True, allow_not_found=True))]
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(SUPERSEDED_SUFFIX):
                continue
            if self.local:
                try:
                    moved = os.stat(info.path).st_ctime
                except FileNotFoundError:
                    continue
            else:
                moved = info.mtime.timestamp() if info.mtime else now
            if now - moved >= min_age_s:
                out.append(info.path)
        return sorted(out)

    def delete(self, paths: list[str]) -> None:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(p)
