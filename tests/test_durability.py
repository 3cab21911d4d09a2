"""Nothing acknowledged is lost, nothing is counted twice: crashes, broker restarts, a
full disk, and two workers sharing the load, all against real mosquitto processes."""

from __future__ import annotations

import os
import random
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import LoadPublisher, dataset_counts, ingest_credentials, wait_until

from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess


def _all_stored(data: Path, expected: int):
    def check():
        raw, distinct, view = dataset_counts(data)
        return distinct >= expected and (raw, distinct, view)
    return check


def test_sigkill_five_times_under_load_loses_and_duplicates_nothing(broker, start_ingest,
                                                                     tmp_path):
    data = tmp_path / "data"
    load = LoadPublisher(broker, messages=25_000, per_message=4,
                         prefix="crash")
    assert load.records >= 100_000
    args = ["--flush-rows", "3000", "--flush-seconds", "0.2"]
    rng = random.Random(11)
    ingest = start_ingest(data=data, client_id="ingest-crashloop", args=args)
    ingest.wait_subscribed()
    load.start()
    kills = 0
    try:
        while kills < 6:
            time.sleep(rng.uniform(0.05, 0.8))
            ingest.kill()  # SIGKILL: no flush, no goodbye
            kills += 1
            ingest = start_ingest(data=data, client_id="ingest-crashloop", args=args)
        ingest.wait_subscribed()
        load.wait_acked(timeout=120)
        _raw, distinct, view = wait_until("every record stored", _all_stored(data, load.records),
                                          timeout=120)
        assert ingest.stop() == 0
    finally:
        load.close()
    raw, distinct, view = dataset_counts(data)
    assert distinct == load.records, "distinct records must equal records published"
    assert view == distinct, "the readings view must show no duplicates"
    assert raw >= distinct
    assert kills >= 5
    assert not list(data.rglob("*.tmp"))


def test_broker_restart_loses_nothing(start_ingest, tmp_path):
    port = free_port()
    b = Broker(port, tmp_path / "broker").start()
    data = tmp_path / "data"
    load = None
    try:
        ingest = IngestProcess(b.address, data, client_id="ingest-restart",
                               extra_args=["--flush-seconds", "0.2", "--session-expiry", "300"],
                               log_path=tmp_path / "ingest.log",
                               credentials=ingest_credentials(b)).start()
        ingest.wait_subscribed()
        load = LoadPublisher(b, messages=6000, per_message=5, prefix="rst").start()
        wait_until("ingest receiving", lambda: ingest.stats().get("messages", 0) > 500, 30)
        b.stop()  # mosquitto saves its queues on SIGTERM
        wait_until("ingest notices", lambda: not ingest.stats().get("subscribed"), 30)
        b = Broker(port, tmp_path / "broker").start()
        load.wait_acked(timeout=120)
        wait_until("every record stored", _all_stored(data, load.records), timeout=120)
        assert ingest.stats()["connects"] >= 2, "ingest reconnected by itself"
        assert ingest.stop() == 0
    finally:
        if load:
            load.close()
        ingest.kill()
        b.stop()
    _raw, distinct, view = dataset_counts(data)
    assert distinct == view == load.records


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_stops_acking_then_recovers(broker, start_ingest, small_disk):
    data = small_disk / "data"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (6 * 1024 * 1024 - 300 * 1024))  # leave 300 KB
    # Large flushes, so the write-ahead log needs more room than there is.
    ingest = start_ingest(data=data, client_id="ingest-diskfull",
                          args=["--flush-rows", "50000", "--flush-seconds", "5"])
    ingest.wait_subscribed()
    load = LoadPublisher(broker, messages=4000, per_message=5,
                         prefix="full").start()  # ~2.5 MB of payload: more than fits
    try:
        # The stats file is on the full disk too: the log line is what an operator sees.
        said = "not acknowledging new messages (the broker keeps them)"
        wait_until("ingest to report the full disk",
                   lambda: said in ingest.log_path.read_text(), timeout=60)
        load.wait_acked(timeout=60)  # the broker holds what ingest did not ack
        assert ingest.proc.poll() is None, "ingest keeps running"
        assert ingest.log_path.read_text().count(said) == 1, "said once, not once per retry"
        filler.unlink()  # the operator frees space
        wait_until("every record stored", _all_stored(data, load.records), timeout=90)
        assert ingest.stats()["store_ok"] is True
        assert ingest.stop() == 0
    finally:
        load.close()
    _raw, distinct, view = dataset_counts(data)
    assert distinct == view == load.records
    assert not list(data.rglob("*.tmp"))


def test_two_workers_share_the_load_exactly_once(broker, tmp_path):
    data = tmp_path / "data"
    ingest = IngestProcess(broker.address, data, client_id="ingest-pair",
                           extra_args=["--workers", "2", "--flush-seconds", "0.2",
                                       "--session-expiry", "60"],
                           log_path=tmp_path / "workers.log",
                           credentials=ingest_credentials(broker))
    ingest.start()
    workers = [IngestProcess(broker.address, data, client_id=f"ingest-pair-{i}")
               for i in range(2)]
    for w in workers:
        w.wait_for("subscribed", lambda s: s.get("subscribed"), 30)
    load = LoadPublisher(broker, messages=4000, per_message=3,
                         prefix="share").start()
    try:
        load.wait_acked(timeout=60)
        wait_until("every record stored", _all_stored(data, load.records), timeout=60)
        assert ingest.stop() == 0
    finally:
        load.close()
        ingest.kill()
    got = [w.stats()["messages"] for w in workers]
    assert sum(got) == load.messages, got
    assert min(got) > load.messages * 0.2, f"both workers take a share: {got}"
    raw, distinct, view = dataset_counts(data)
    assert raw == distinct == view == load.records


def test_prometheus_metrics(start_ingest, publisher, tmp_path):
    port = free_port()
    ingest = start_ingest(args=["--metrics-port", str(port)])
    ingest.wait_subscribed()
    load = LoadPublisher.__new__(LoadPublisher)
    load.devices, load.prefix, load.per_message = 5, "prom", 2
    for i in range(20):
        publisher.send(*load.envelope(i))
    publisher.send("devices/prom-0000/telemetry", b"garbage")
    publisher.send(*load.envelope(3))  # a redelivery
    ingest.wait_messages(22, timeout=30)
    # records_written counts rows on disk, so it is read after the flush
    ingest.wait_for("40 rows written", lambda s: s["readings"] >= 40, timeout=30)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    cid = ingest.client_id
    assert f'fleetpulse_ingest_messages_received_total{{client_id="{cid}"}} 22.0' in body
    assert f'fleetpulse_ingest_records_written_total{{client_id="{cid}"}} 40.0' in body
    assert f'fleetpulse_ingest_duplicates_dropped_total{{client_id="{cid}"}} 1.0' in body
    assert (f'fleetpulse_ingest_quarantined_total{{client_id="{cid}",reason="bad_json"}} 1.0'
            in body)
    for name in ("flush_latency_seconds", "buffered_records", "oldest_unacked_seconds"):
        assert f"fleetpulse_ingest_{name}{{" in body
    assert ingest.stop() == 0


def test_wal_replay_after_kill_between_ack_and_flush(broker, start_ingest, publisher,
                                                     tmp_path):
    """Acked but not yet in Parquet when killed: the write-ahead log brings it back."""
    data = tmp_path / "data"
    ingest = start_ingest(data=data, client_id="ingest-wal",
                          args=["--flush-seconds", "3600", "--flush-rows", "1000000"])
    ingest.wait_subscribed()
    load = LoadPublisher.__new__(LoadPublisher)
    load.devices, load.prefix, load.per_message = 3, "wal", 2
    for i in range(30):
        publisher.send(*load.envelope(i))  # each returns once the broker has it
    ingest.wait_messages(30, timeout=30)  # ...and ingest acked it: durable in the log
    assert not list(data.glob("readings/*/*.parquet")), "nothing flushed yet"
    ingest.kill()
    assert list((data / "_wal" / "ingest-wal").glob("*.wal"))
    ingest = start_ingest(data=data, client_id="ingest-wal")
    ingest.wait_subscribed()  # replay happens before subscribing
    assert dataset_counts(data) == (60, 60, 60)
    assert not list((data / "_wal" / "ingest-wal").glob("*.wal"))
    assert ingest.stop() == 0
    assert os.listdir(data / "_wal" / "ingest-wal") == []
