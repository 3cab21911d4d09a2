"""A SIGKILL of mosquitto while it holds a backlog for ingest: what it had acknowledged
to devices and never handed on is bounded by mosquitto.conf's save interval, a time, and
after the restart ingest takes the rest. Figures for each setting:
bench/broker_crash_bench.py and docs/ingest-durability.md."""

from __future__ import annotations

import os
import re
import signal
import time

from conftest import LoadPublisher, ingest_credentials, wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import DEFAULT_CONF, Broker, free_port
from fleetpulse.ingest.process import IngestProcess


def saves_every_seconds() -> int:
    conf = DEFAULT_CONF.read_text()
    # saving after N changes makes each message's cost grow with the backlog held
    assert not re.search(r"^autosave_on_changes true$", conf, re.M), "saves are per change"
    return int(re.search(r"^autosave_interval (\d+)$", conf, re.M).group(1))


def stored_seqs(data) -> set[int]:
    if not list(data.glob("readings/*/*.parquet")):
        return set()
    con = connect(data)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT seq FROM readings").fetchall()}
    finally:
        con.close()


def test_sigkill_of_the_broker_loses_only_what_came_after_its_last_save(tmp_path) -> None:
    interval = saves_every_seconds()
    broker = Broker(free_port(), tmp_path / "broker").start()
    store = tmp_path / "broker" / "mosquitto.db"
    data = tmp_path / "data"

    def ingest() -> IngestProcess:
        return IngestProcess(broker.address, data, client_id="crash-ingest",
                             log_path=tmp_path / "ingest.log",
                             extra_args=["--flush-seconds", "0.3"],
                             credentials=ingest_credentials(broker)).start()

    def saved_since(t: float) -> float:
        """The store's time once a save has finished after t (0 until then)."""
        m = store.stat().st_mtime if store.exists() else 0.0
        return m if m > t else 0.0

    try:
        first = ingest()  # the persistent session, saved by a graceful restart
        first.wait_subscribed()
        assert first.stop() == 0
        broker.stop()
        broker.start()
        # ingest is away: the broker queues every message for its session
        early, late = 2000, 1000
        load = LoadPublisher(broker, messages=early + late, per_message=1, devices=1,
                             prefix="crash")
        for i in range(early):
            load.pub.publish(*load.envelope(i))
        load.pub.drain(60)
        assert load.acked == early
        acked_at = time.time()
        # Two saves finished after the last ack: the second began after the first ended,
        # so it holds every early message (a save that ends after the ack may have begun
        # before it). Saves come every `interval` + 1 s, on time, however few changes.
        first_save = wait_until("a save after the acks", lambda: saved_since(acked_at),
                                timeout=4 * (interval + 1))
        wait_until("a second save", lambda: saved_since(first_save), timeout=4 * (interval + 1))
        for i in range(early, early + late):
            load.pub.publish(*load.envelope(i))
        load.pub.drain(60)
        assert load.acked == early + late
        load.close()
        os.kill(broker.proc.pid, signal.SIGKILL)  # before any save can hold the late ones
        broker.proc.wait()
        broker.start()
        after = ingest()
        after.wait_subscribed()
        # a sentinel behind the restored queue: mosquitto delivers a client's queue in
        # order, so once it is stored, everything the broker still had is stored too
        sentinel = LoadPublisher(broker, messages=early + late + 1, per_message=1, devices=1,
                                 prefix="crash")
        sentinel.pub.publish(*sentinel.envelope(early + late))
        sentinel.pub.drain(30)
        sentinel.close()
        wait_until("the sentinel stored", lambda: stored_seqs(data) & {early + late},
                   timeout=60)
        assert after.stop() == 0
        got = stored_seqs(data) - {early + late}
        assert set(range(early)) <= got, f"lost {early - len(got & set(range(early)))} " \
            f"of the {early} messages acknowledged before the last save"
        assert got <= set(range(early + late))
    finally:
        broker.stop()
