"""A store that takes seconds per file: while Parquet is written, ingest goes on
reading, logging and acknowledging, and keeps its connection alive with pings."""

from __future__ import annotations

import asyncio
import threading
import time

from conftest import LoadPublisher, ingest_credentials

from fleetpulse.ingest import stats
from fleetpulse.ingest.service import IngestConfig, run
from fleetpulse.ingest.store import Store


async def wait_for(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_reading_acking_and_pings_go_on_during_a_slow_flush(broker, tmp_path,
                                                                  monkeypatch) -> None:
    writing, written = threading.Event(), threading.Event()
    original = Store.write_table

    def slow_write(self, rel, table, row_group_size=None):
        writing.set()
        time.sleep(4)  # the fake at the edge: a store far slower than the fleet
        out = original(self, rel, table, row_group_size)
        written.set()
        return out

    monkeypatch.setattr(Store, "write_table", slow_write)
    data = tmp_path / "data"
    user, password = ingest_credentials(broker)
    cid = f"slow-store-{tmp_path.name}"[:60]
    # keepalive 2 s: mosquitto drops a client it hears nothing from for 3 s, so a flush
    # that blocked the event loop for 4 s would cost the connection
    cfg = IngestConfig(host=broker.host, port=broker.port, data=data, client_id=cid,
                       flush_rows=20, flush_seconds=60, keepalive=2, username=user,
                       password=password)
    stop = asyncio.Event()
    service = asyncio.create_task(run(cfg, stop))

    def st() -> dict:
        return stats.read(data, cid) or {}

    await wait_for("subscribed", lambda: st().get("subscribed"), 20)
    load = LoadPublisher(broker, messages=60, per_message=1, devices=3, prefix="slow")
    try:
        for i in range(20):  # reaches flush_rows: the first flush starts
            await asyncio.to_thread(load.pub.publish, *load.envelope(i))
        await asyncio.to_thread(writing.wait, 10)
        for i in range(20, 60):
            await asyncio.to_thread(load.pub.publish, *load.envelope(i))
        # all taken, logged and acknowledged while the first file is still being written
        await wait_for("60 messages acked", lambda: st().get("messages", 0) >= 60, 3)
        assert not written.is_set(), "the flush finished before the test could look"
        await asyncio.to_thread(written.wait, 10)
        await asyncio.sleep(2.5)  # idle beyond the broker's 3 s limit since the flush began
        await wait_for("everything written", lambda: st().get("readings", 0) >= 60, 30)
        assert st()["connects"] == 1, "the connection was lost during the slow flush"
    finally:
        stop.set()
        assert await asyncio.wait_for(service, 60) == 0
        load.close()


async def test_a_stop_during_a_write_waits_for_it_and_writes_each_row_once(
        broker, tmp_path, monkeypatch) -> None:
    """The demo's ending: the stream goes quiet, the timer's flush starts writing, and the
    stop arrives mid-write. The write's thread cannot be cancelled; the stop must wait for
    it rather than write the same batch beside it (which raced it for the file names)."""
    from conftest import dataset_counts

    writing = threading.Event()
    original = Store.write_table

    def slow_write(self, rel, table, row_group_size=None):
        writing.set()
        time.sleep(1.5)
        return original(self, rel, table, row_group_size)

    monkeypatch.setattr(Store, "write_table", slow_write)
    data = tmp_path / "data"
    user, password = ingest_credentials(broker)
    cid = f"stop-mid-write-{tmp_path.name}"[:60]
    cfg = IngestConfig(host=broker.host, port=broker.port, data=data, client_id=cid,
                       flush_rows=100_000, flush_seconds=0.3, username=user,
                       password=password)
    stop = asyncio.Event()
    service = asyncio.create_task(run(cfg, stop))
    await wait_for("subscribed", lambda: (stats.read(data, cid) or {}).get("subscribed"), 20)
    load = LoadPublisher(broker, messages=30, per_message=1, devices=3, prefix="stopmid")
    try:
        for i in range(30):
            await asyncio.to_thread(load.pub.publish, *load.envelope(i))
        await asyncio.to_thread(writing.wait, 10)  # the timer's flush is writing
        stop.set()
        assert await asyncio.wait_for(service, 60) == 0
        raw, distinct, _ = dataset_counts(data)
        assert raw == distinct == 30
    finally:
        load.close()
