"""The write-ahead log's write/sync split: what the service validates while the disk
syncs must read back exactly, and a failed sync must leave no torn or unsynced chunk."""

from __future__ import annotations

import asyncio
import errno
import os
import struct
import zlib
from pathlib import Path

import pytest
from mqttpackets import publish_packet

from fleetpulse.ingest import wal as wal_mod
from fleetpulse.ingest.wal import WriteAheadLog, read_segment

T = 1767268800000


def messages(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"devices/d{i}/telemetry", b'{"i":%d}' % i + bytes([i % 256]))
            for i in range(start, start + n)]


def packets(msgs: list[tuple[str, bytes]]) -> bytes:
    """The PUBLISH packets of one socket read."""
    return b"".join(publish_packet(t, p, 1, pid=i + 1) for i, (t, p) in enumerate(msgs))


def read(segment: Path) -> list[tuple[int, str, bytes]]:
    return list(read_segment(segment))  # read_segment checks every CRC


def test_reads_written_then_synced_read_back_with_their_checksums(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    first = messages(3)
    log.sync(log.write(T, packets(first[:1]) + b"\xd0\x00" + packets(first[1:])))  # a PINGRESP
    log.append(T + 1, packets(messages(2, start=3)))
    (segment,) = log.segments()
    assert read(segment) == ([(T, t, p) for t, p in first]
                             + [(T + 1, t, p) for t, p in messages(2, start=3)])


def test_a_failed_sync_cuts_its_batch_off_and_starts_a_new_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = WriteAheadLog(tmp_path)
    log.append(T, packets(messages(2)))
    written = log.write(T, packets(messages(3, start=2)))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(wal_mod.os, "fdatasync", failing)
    with pytest.raises(OSError):
        log.sync(written)
    monkeypatch.undo()
    log.append(T, packets(messages(1, start=10)))
    first, second = log.segments()
    assert read(first) == [(T, t, p) for t, p in messages(2)]  # nothing of the failed batch
    assert read(second) == [(T, t, p) for t, p in messages(1, start=10)]


def test_a_crash_mid_write_or_a_corrupt_chunk_loses_only_that_chunk(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    log.append(T, packets(messages(2)))
    log.append(T, packets(messages(2, start=2)))
    log.close()
    (segment,) = log.segments()
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-5])  # the second write cut short
    assert read(segment) == [(T, t, p) for t, p in messages(2)]
    flipped = bytearray(whole)
    flipped[-3] ^= 1
    segment.write_bytes(bytes(flipped))  # the second chunk's bytes changed on disk
    assert read(segment) == [(T, t, p) for t, p in messages(2)]
    segment.write_bytes(wal_mod.MAGIC[:3])  # created, then killed before its marker
    assert read(segment) == []


def test_a_segment_of_the_older_one_frame_per_message_format_still_replays(
        tmp_path: Path) -> None:
    """Written by a version before chunks, left by a crash, read after the upgrade."""
    frames = [(T + i, t, p) for i, (t, p) in enumerate(messages(3))]
    data = b""
    for received_ms, topic, payload in frames:
        body = struct.pack("!IQH", len(payload), received_ms, len(topic)) + topic.encode() + payload
        data += struct.pack("!I", zlib.crc32(body)) + body
    segment = tmp_path / "000000000001-0a1b2c3d.wal"
    segment.write_bytes(data + data[:7])  # and a frame cut short after them
    assert read(segment) == frames


def test_a_segment_closed_before_its_write_was_synced_is_an_error(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    written = log.write(T, packets(messages(1)))
    log.rotate()
    with pytest.raises(RuntimeError, match="before its write was synced"):
        log.sync(written)


def test_the_service_waits_for_every_pending_sync_before_it_closes_a_segment(
        tmp_path: Path) -> None:
    """A flush that waited for one batch's sync must not close the segment while the next
    batch, written meanwhile, still waits for its own (seen as a crash at a stop under load)."""
    from fleetpulse.ingest.service import IngestConfig, IngestService

    async def scenario() -> None:
        svc = IngestService(IngestConfig(host="127.0.0.1", port=1, data=tmp_path))
        loop = asyncio.get_running_loop()
        first: asyncio.Future[None] = loop.create_future()
        second: asyncio.Future[None] = loop.create_future()
        svc._syncing = first
        waiting = asyncio.create_task(svc._wal_synced())
        await asyncio.sleep(0)
        first.set_result(None)
        svc._syncing = second  # the next batch was written before the waiter ran again
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        second.set_result(None)
        await asyncio.wait_for(waiting, 1)
        svc.close()

    asyncio.run(scenario())
