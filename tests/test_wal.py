"""The write-ahead log's write/sync split: what the service validates while the disk
syncs must read back exactly, and a failed sync must leave no torn or unsynced frame."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from fleetpulse.ingest import wal as wal_mod
from fleetpulse.ingest.wal import WriteAheadLog, read_segment


def frames(n: int, start: int = 0) -> list[tuple[int, str, bytes]]:
    return [(1767268800000 + i, f"devices/d{i}/telemetry", b'{"i":%d}' % i + bytes([i % 256]))
            for i in range(start, start + n)]


def test_frames_written_then_synced_read_back_with_their_checksums(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    log.sync(log.write(frames(3)))
    log.append(frames(2, start=3))
    (segment,) = log.segments()
    assert list(read_segment(segment)) == frames(5)  # read_segment checks every CRC


def test_a_failed_sync_cuts_its_batch_off_and_starts_a_new_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = WriteAheadLog(tmp_path)
    log.append(frames(2))
    written = log.write(frames(3, start=2))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(wal_mod.os, "fdatasync", failing)
    with pytest.raises(OSError):
        log.sync(written)
    monkeypatch.undo()
    log.append(frames(1, start=10))
    first, second = log.segments()
    assert list(read_segment(first)) == frames(2)  # nothing of the failed batch
    assert list(read_segment(second)) == frames(1, start=10)


def test_a_segment_closed_before_its_write_was_synced_is_an_error(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    written = log.write(frames(1))
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
