"""A SIGKILL of mosquitto while it holds a backlog for ingest: what it had acknowledged
to devices and never handed on is bounded by mosquitto.conf's save interval, and after
the restart ingest takes the rest. Figures for each setting: bench/broker_crash_bench.py
and docs/ingest-durability.md."""

from __future__ import annotations

import os
import re
import signal

from conftest import LoadPublisher, ingest_credentials, wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import DEFAULT_CONF, Broker, free_port
from fleetpulse.ingest.process import IngestProcess


def saves_every_changes() -> int:
    conf = DEFAULT_CONF.read_text()
    assert re.search(r"^autosave_on_changes true$", conf, re.M), "saves are not per change"
    return int(re.search(r"^autosave_interval (\d+)$", conf, re.M).group(1))


def stored_seqs(data) -> set[int]:
    if not list(data.glob("readings/*/*.parquet")):
        return set()
    con = connect(data)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT seq FROM readings").fetchall()}
    finally:
        con.close()


def test_sigkill_of_the_broker_loses_at_most_one_save_interval(tmp_path) -> None:
    interval = saves_every_changes()
    broker = Broker(free_port(), tmp_path / "broker").start()
    data = tmp_path / "data"

    def ingest() -> IngestProcess:
        return IngestProcess(broker.address, data, client_id="crash-ingest",
                             log_path=tmp_path / "ingest.log",
                             extra_args=["--flush-seconds", "0.3"],
                             credentials=ingest_credentials(broker)).start()

    try:
        first = ingest()  # the persistent session, saved by a graceful restart
        first.wait_subscribed()
        assert first.stop() == 0
        broker.stop()
        broker.start()
        # ingest is away: the broker queues every message for its session
        messages = 3 * interval + interval // 3  # not a multiple of the interval
        load = LoadPublisher(broker, messages=messages, per_message=1, devices=1,
                             prefix="crash").start()
        load.wait_acked(60)
        acked = load.acked
        load.close()
        os.kill(broker.proc.pid, signal.SIGKILL)
        broker.proc.wait()
        broker.start()
        after = ingest()
        after.wait_subscribed()
        # a sentinel behind the restored queue: mosquitto delivers a client's queue in
        # order, so once it is stored, everything the broker still had is stored too
        sentinel = LoadPublisher(broker, messages=messages + 1, per_message=1, devices=1,
                                 prefix="crash")
        sentinel.pub.publish(*sentinel.envelope(messages))
        sentinel.pub.drain(30)
        sentinel.close()
        wait_until("the sentinel stored", lambda: stored_seqs(data) & {messages}, timeout=60)
        assert after.stop() == 0
        got = len(stored_seqs(data) - {messages})
        assert acked == messages
        assert 0 <= acked - got <= interval, f"lost {acked - got} of {acked} acked messages"
    finally:
        broker.stop()
