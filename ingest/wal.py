"""Write-ahead log: raw messages made durable before the broker is acknowledged.

A batch of messages is appended and fdatasync'ed once (group commit), then acked.
Every Parquet flush closes the current segment; once the flush's files are renamed
into place, the segments it covered are deleted. After a crash, leftover segments are
replayed through the pipeline, and because a flush's file names derive from its
segment's name, a replay overwrites a file that was already written instead of adding
a second copy. Segment names are `<number>-<token>`: the number orders them, the
random token of each process run keeps a name from ever being used twice, even after
every segment was deleted and numbering started again (a reused name would let a new
flush overwrite an older flush's Parquet file).

Frame: crc32 (of everything after it), payload length, receive time (ms), topic
length, topic, payload. A frame cut short by a crash ends the segment; a frame whose
CRC does not match is reported and the rest of the segment is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from fleetpulse.files import fsync_dir as _fsync_dir

log = logging.getLogger("fleetpulse.ingest.wal")

SUFFIX = ".wal"
_HEAD = struct.Struct("!IIQH")
_BODY_HEAD = struct.Struct("!IQH")  # what the CRC covers starts with this


class Written(NamedTuple):
    """Where a write() went: its segment's descriptor and the offset it started at."""
    fd: int
    start: int


class WriteAheadLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._next = (segment_number(existing[-1]) + 1) if existing else 1
        self._token = os.urandom(4).hex()
        self._file: int | None = None
        self.current: Path | None = None
        # Newest segment with frames not yet covered by a flush; what rotate() returns.
        self._pending: Path | None = existing[-1] if existing else None
        self._lock = threading.RLock()

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"), key=segment_number)

    def append(self, frames: list[tuple[int, str, bytes]]) -> None:
        """Append (received_ms, topic, payload) frames; durable when this returns."""
        self.sync(self.write(frames))

    def write(self, frames: list[tuple[int, str, bytes]]) -> Written:
        """Write frames to the current segment without waiting for the disk: durable
        only once sync() of what this returns has returned. The service validates the
        batch while another thread waits for the fdatasync."""
        if self._file is None:
            self.current = self.directory / f"{self._next:012d}-{self._token}{SUFFIX}"
            self._next += 1
            self._file = os.open(self.current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fsync_dir(self.directory)
            self._pending = self.current
        # Header, topic and payload are joined once: building each frame as bytes first
        # copied every payload three times (building and writing frames was 10% of the
        # event loop's busy time at 32 records per message: profile in bench/RESULTS.md).
        parts: list[bytes] = []
        add = parts.append
        pack, body_head = _HEAD.pack, _BODY_HEAD.pack
        crc32 = zlib.crc32
        for received_ms, topic, payload in frames:
            t = topic.encode()
            crc = crc32(payload, crc32(t, crc32(body_head(len(payload), received_ms, len(t)))))
            add(pack(crc, len(payload), received_ms, len(t)))
            add(t)
            add(payload)
        data = b"".join(parts)
        fd = self._file
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, data)
            while written < len(data):  # os.write may write less than asked (disk nearly full)
                written += os.write(fd, data[written:])
        except OSError:
            self._cut(fd, start)
            raise
        return Written(fd, start)

    def sync(self, written: Written) -> None:
        """Wait until a write() is on disk. May run in another thread than write(): the
        lock keeps rotate() from closing the file under it."""
        with self._lock:
            if written.fd != self._file:  # the caller must not rotate() in between
                raise RuntimeError("a write-ahead log segment was closed before its write "
                                   "was synced")
            try:
                os.fdatasync(written.fd)
            except OSError:
                self._cut(written.fd, written.start)
                raise

    def _cut(self, fd: int, start: int) -> None:
        # Cut the failed batch off so the segment ends on a whole frame, and start a
        # new segment for the retry: later frames never follow a torn one.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        self.rotate()

    def rotate(self) -> Path | None:
        """Close the current segment (the next append opens a new one); return the newest
        segment holding frames that no flush has covered yet, or None."""
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    os.close(self._file)
                self._file = None
                self.current = None
            return self._pending

    def delete_through(self, last: Path) -> None:
        """Delete `last` and every older segment."""
        n = segment_number(last)
        for path in self.segments():
            if segment_number(path) <= n:
                path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        if self._pending is not None and segment_number(self._pending) <= n:
            self._pending = None

    def close(self) -> None:
        self.rotate()


def segment_number(path: Path) -> int:
    return int(path.stem.split("-", 1)[0])


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


