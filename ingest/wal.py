"""Write-ahead log: raw messages made durable before the broker is acknowledged.

A batch of messages is appended and fdatasync'ed once (group commit), then acked.
Every Parquet flush closes the current segment; once the flush's files are renamed
into place, the segments it covered are deleted. After a crash, leftover segments are
replayed through the pipeline, and because a flush's file names derive from its
segment number, a replay overwrites a file that was already written instead of adding
a second copy.

Frame: crc32 (of everything after it), payload length, receive time (ms), topic
length, topic, payload. A frame cut short by a crash ends the segment; a frame whose
CRC does not match is reported and the rest of the segment is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from .parquet_writer import fsync_dir as _fsync_dir

log = logging.getLogger("fleetpulse.ingest.wal")

_HEAD = struct.Struct("!IIQH")
SUFFIX = ".wal"


class WriteAheadLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._next = (int(existing[-1].stem) + 1) if existing else 1
        self._file: int | None = None
        self.current: int | None = None
        # Highest segment with frames not yet covered by a flush; what rotate() returns.
        self._pending: int | None = int(existing[-1].stem) if existing else None

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def _path(self, n: int) -> Path:
        return self.directory / f"{n:012d}{SUFFIX}"

    def append(self, frames: list[tuple[int, str, bytes]]) -> None:
        """Append (received_ms, topic, payload) frames; durable when this returns."""
        if self._file is None:
            self.current = self._next
            self._next += 1
            self._file = os.open(self._path(self.current),
                                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fsync_dir(self.directory)
            self._pending = self.current
        parts = []
        pack = _HEAD.pack
        crc32 = zlib.crc32
        for received_ms, topic, payload in frames:
            t = topic.encode()
            rest = struct.pack("!IQH", len(payload), received_ms, len(t)) + t + payload
            parts.append(pack(crc32(rest), len(payload), received_ms, len(t)) + t + payload)
        data = b"".join(parts)
        fd = self._file
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, data)
            while written < len(data):  # os.write may write less than asked (disk nearly full)
                written += os.write(fd, data[written:])
            os.fdatasync(fd)
        except OSError:
            # Cut the failed batch off so the segment ends on a whole frame, and start a
            # new segment for the retry: later frames never follow a torn one.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self.rotate()
            raise

    def rotate(self) -> int | None:
        """Close the current segment (the next append opens a new one); return the highest
        segment holding frames that no flush has covered yet, or None."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.close(self._file)
            self._file = None
            self.current = None
        return self._pending

    def delete_through(self, n: int) -> None:
        for path in self.segments():
            if int(path.stem) <= n:
                path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        if self._pending is not None and self._pending <= n:
            self._pending = None

    def close(self) -> None:
        self.rotate()


def read_segment(path: Path) -> Iterator[tuple[int, str, bytes]]:
    data = path.read_bytes()
    pos, size = 0, _HEAD.size
    while pos + size <= len(data):
        crc, plen, received_ms, tlen = _HEAD.unpack_from(data, pos)
        end = pos + size + tlen + plen
        if end > len(data):
            break  # the tail of a write cut short by a crash: never acknowledged
        body = data[pos + 4:end]
        if zlib.crc32(body) != crc:
            log.error("corrupt frame in %s at byte %d; skipping the rest of the segment",
                      path, pos)
            return
        topic = data[pos + size:pos + size + tlen].decode()
        yield received_ms, topic, data[pos + size + tlen:end]
        pos = end


