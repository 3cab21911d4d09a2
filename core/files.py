"""Files written whole or not at all, which every subsystem needs for its small state
files (registry, stats, manifests, reports); and how many a process may hold open."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import UserError


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_replacing(path: Path, data: str | bytes, mode: int = 0o644,
                    durable: bool = False) -> None:
    """Replace `path` with `data`: a reader sees the old file or the new one, never half
    of one. Written to a temporary beside it and renamed over it; a failed write or
    rename removes the temporary. `durable` also fsyncs the file and its folder (for
    what must survive a crash, not only a concurrent reader)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)  # a temporary left by a killed writer keeps its old mode
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def raise_open_files_limit(at_least: int | None = None) -> int:
    """Raise this process's soft limit on open files (1024 on many systems, which refuses
    connections long before the hard limit does) to `at_least`, or to the hard limit;
    children started afterwards (a broker) inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if at_least is None else at_least
    if soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(hard, want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if at_least is not None and soft < at_least:
        raise UserError(f"{at_least} open files are needed and this system allows {hard}: "
                        "raise the limit (ulimit -Hn)")
    return soft
