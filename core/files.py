"""Files written whole or not at all, which every subsystem needs for its small state
files (registry, stats, manifests, reports)."""

from __future__ import annotations

import os
from pathlib import Path


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
