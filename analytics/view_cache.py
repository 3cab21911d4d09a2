"""A connection's views and macros kept bound on disk, so opening one costs no binding.

Creating the views and macros binds each of them (DuckDB checks a macro's body against
the views when it is created): about 85 statements, 0.3 s at full scale, paid by every
`fleetpulse metrics` process and every page refresh before its first query. Attaching a
DuckDB file that already holds them takes about 20 ms. The file is named after a hash
of the statements themselves (and DuckDB's version), and the statements name the files
of the dataset's listing: a file appearing or going, a rollup written, or metrics.sql
changed gives new statements and so another file, and a file once written is never
wrong for its name. No staleness check is needed, and none is made.

The files live in the dataset, under _catalog/, written by whoever first needs them
(under a temporary name, renamed when complete, so a reader never attaches half a
file); the newest few are kept. A dataset the reader cannot write into, or one ingest
is writing (worth_keeping), is bound in memory instead, as before.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import duckdb

from fleetpulse.ingest.store import Store

from .layout import listed_file_gone

CACHE_DIR = "_catalog"
# Files kept besides the one just written: other processes may still be attaching
# an older listing's file (one deleted after they attached stays readable to them).
KEEP = 8
# A temporary file older than this is a crashed writer's, not one being written.
STALE_TMP_S = 600.0
# A listing whose files changed more recently than this is a dataset ingest is writing:
# its next flush gives the next connection another listing, so a file for this one would
# be written (and fsynced, next to ingest's own fsyncs) to be read by no one; such a
# connection is bound in memory, as before. Compacted and quiet datasets, what PMs and
# dashboards mostly read, get the file.
SETTLED_S = 30.0


def worth_keeping(changed_at: float) -> bool:
    """Whether a listing whose files last changed at `changed_at` (epoch seconds) is
    likely to be read again."""
    return time.time() - changed_at >= SETTLED_S


def key(stmts: list[str]) -> str:
    h = hashlib.sha256(duckdb.__version__.encode())
    for s in stmts:
        h.update(b"\0" + s.encode())
    return h.hexdigest()[:32]


def bound_file(store: Store, stmts: list[str]) -> Path | None:
    """The file holding `stmts` bound, written now if no process has yet; None when the
    dataset cannot be written into (the caller binds in memory). A listed data file
    that is gone while binding raises duckdb.IOException, as binding in memory does."""
    root = Path(store.path(CACHE_DIR))
    path = root / f"{key(stmts)}.duckdb"
    if path.exists():
        return path
    # One writer per name: DuckDB shares a database file among a process's connections.
    tmp = root / f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        root.mkdir(exist_ok=True)
        con = duckdb.connect(str(tmp))
    except (OSError, duckdb.IOException):
        return None  # a read-only dataset, or not there at all
    try:
        try:
            for stmt in stmts:  # fails as binding in memory would: the caller's to handle
                con.execute(stmt)
        finally:
            con.close()
        os.replace(tmp, path)
    except (OSError, duckdb.IOException) as e:
        if listed_file_gone(e):
            raise  # the caller lists again
        return None  # writing the file failed (a full disk): bind in memory
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    _prune(root, path)
    return path


def _prune(root: Path, keep: Path) -> None:
    now = time.time()
    done: list[tuple[float, Path]] = []
    for e in os.scandir(root):
        try:
            mtime = e.stat().st_mtime
        except FileNotFoundError:
            continue  # another process pruned it
        p = Path(e.path)
        if e.name.endswith(".duckdb") and p != keep:
            done.append((mtime, p))
        elif e.name.endswith((".tmp", ".tmp.wal")) and now - mtime > STALE_TMP_S:
            p.unlink(missing_ok=True)
    for _, p in sorted(done, reverse=True)[KEEP:]:
        p.unlink(missing_ok=True)
