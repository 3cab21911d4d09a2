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

A segment starts with MAGIC, then holds chunks: CRC32C (of everything after it), length,
receive time (ms), then the MQTT packets of one socket read exactly as the broker sent
them. Logging the bytes as they came costs one checksum and one write per batch, where
framing each message cost a Python loop, three checksums and a copy per message (the
log was a fifth of the event loop's time at 32 records a message: bench/RESULTS.md).
CRC32C, not zlib's CRC32: the CPU computes it, at 23 GB/s here against 2.9, and zlib's
was still 3% of ingest's time over whole chunks (both in bench/RESULTS.md).
A replay parses the packets again, with the subscriber's own parser. A chunk cut short
by a crash ends the segment; a chunk whose CRC does not match is reported and the rest
of the segment is skipped.

Segments without MAGIC were written by versions before it, one frame per message: crc32,
payload length, receive time (ms), topic length, topic, payload. They still replay.
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

import google_crc32c as crc32c

from fleetpulse.files import fsync_dir as _fsync_dir

from .mqtt_subscriber import MalformedPacket, parse_packets

log = logging.getLogger("fleetpulse.ingest.wal")

SUFFIX = ".wal"
# An old segment's first four bytes after its CRC are a payload length, which MQTT caps
# at 256 MB: 0xFFFFFFFF there can only be this marker.
MAGIC = b"FPW2\xff\xff\xff\xff"
_CHUNK = struct.Struct("!IIQ")  # crc32c, length, received_ms
_CHUNK_BODY = struct.Struct("!IQ")  # what the CRC covers starts with this
_OLD_HEAD = struct.Struct("!IIQH")  # crc32, payload length, received_ms, topic length


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

    def append(self, received_ms: int, packets: bytes) -> None:
        """Append one socket read's packets; durable when this returns. The service calls
        it in its log thread, validating the batch meanwhile: the write into the page
        cache was the event loop's largest cost once it ran there (perf profile in
        bench/RESULTS.md)."""
        with self._lock:
            self.sync(self.write(received_ms, packets))

    def write(self, received_ms: int, packets: bytes) -> Written:
        """Write the MQTT packets of one read (received at `received_ms`) to the current
        segment without waiting for the disk: durable only once sync() of what this
        returns has returned."""
        with self._lock:
            if self._file is None:
                self._open()
            assert self._file is not None
            fd = self._file
            head = _CHUNK_BODY.pack(len(packets), received_ms)
            crc = crc32c.extend(crc32c.value(head), packets)
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                _write_all(fd, [struct.pack("!I", crc) + head, packets])
            except OSError:
                self._cut(fd, start)
                raise
            return Written(fd, start)

    def _open(self) -> None:
        self.current = self.directory / f"{self._next:012d}-{self._token}{SUFFIX}"
        self._next += 1
        self._file = fd = os.open(self.current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pending = self.current
        try:
            _write_all(fd, [MAGIC])
            _fsync_dir(self.directory)
        except OSError:
            self._cut(fd, 0)
            raise

    def sync(self, written: Written) -> None:
        """Wait until a write() is on disk. The lock keeps rotate(), called from another
        thread, from closing the file under it."""
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


def _write_all(fd: int, parts: list[bytes]) -> None:
    """os.writev until everything is written (it may write less: a disk nearly full)."""
    written, total = os.writev(fd, parts), sum(len(p) for p in parts)
    if written < total:
        rest = b"".join(parts)[written:]
        while rest:
            rest = rest[os.write(fd, rest):]


def read_segment(path: Path) -> Iterator[tuple[int, str, bytes]]:
    """(received_ms, topic, payload) of every message a segment holds, in order."""
    data = path.read_bytes()
    if data.startswith(MAGIC):
        yield from _read_chunks(path, data)
    elif not MAGIC.startswith(data):  # not a segment cut short while it was created
        yield from _read_frames(path, data)


def _read_chunks(path: Path, data: bytes) -> Iterator[tuple[int, str, bytes]]:
    pos, size = len(MAGIC), _CHUNK.size
    while pos + size <= len(data):
        crc, length, received_ms = _CHUNK.unpack_from(data, pos)
        end = pos + size + length
        if end > len(data):
            break  # the tail of a write cut short by a crash: never acknowledged
        if crc32c.value(data[pos + 4:end]) != crc:
            log.error("corrupt chunk in %s at byte %d; skipping the rest of the segment",
                      path, pos)
            return
        try:
            publishes, _, _ = parse_packets(memoryview(data)[pos + size:end], max_bytes=length)
        except MalformedPacket as e:  # cannot be: the subscriber parsed these bytes first
            log.error("%s in %s at byte %d; skipping the rest of the chunk", e, path, pos)
            publishes = e.publishes
        for p in publishes:
            yield received_ms, p.topic, p.payload
        pos = end


def _read_frames(path: Path, data: bytes) -> Iterator[tuple[int, str, bytes]]:
    pos, size = 0, _OLD_HEAD.size
    while pos + size <= len(data):
        crc, plen, received_ms, tlen = _OLD_HEAD.unpack_from(data, pos)
        end = pos + size + tlen + plen
        if end > len(data):
            break
        if zlib.crc32(data[pos + 4:end]) != crc:
            log.error("corrupt frame in %s at byte %d; skipping the rest of the segment",
                      path, pos)
            return
        topic = data[pos + size:pos + size + tlen].decode()
        yield received_ms, topic, data[pos + size + tlen:end]
        pos = end
