"""SIGKILL of ingest at random moments never leaves a file that breaks a query."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from mqttpackets import publish_packet

from fleetpulse.analytics.dataset import connect

T = 1767268800000


def test_sigkill_during_writes_leaves_a_readable_dataset(start_ingest, publisher, tmp_path):
    data = tmp_path / "data"
    stop = threading.Event()

    def publish_forever() -> None:
        seq = 0
        while not stop.is_set() and seq < 20_000:
            records = [{"t": T + seq * 10 + i, "type": "reading", "temperature_c": 20.0,
                        "humidity_pct": 50.0} for i in range(20)]
            env = {"v": 1, "device_id": "crash-dev", "boot": 1, "seq": seq, "fw": "1",
                   "hw": "t", "sent_ms": T, "records": records}
            publisher.client.publish("devices/crash-dev/telemetry", json.dumps(env), qos=1)
            seq += 1
            time.sleep(0.0005)

    pub = threading.Thread(target=publish_forever, daemon=True)
    pub.start()
    rng = random.Random(4)
    try:
        for _ in range(5):
            # tiny flushes so that a kill very likely lands during a write
            ingest = start_ingest(data=data, client_id="ingest-crash",
                                  args=["--flush-rows", "400", "--flush-seconds", "0.05"])
            ingest.wait_subscribed()
            ingest.wait_for("some files written", lambda s: s.get("files_written", 0) >= 3, 30)
            time.sleep(rng.uniform(0.0, 0.3))
            ingest.kill()
            con = connect(data)  # every query over what is on disk must work
            assert con.execute("SELECT count(*) FROM readings_raw").fetchone()[0] > 0
    finally:
        stop.set()
        pub.join()
    ingest = start_ingest(data=data, client_id="ingest-crash")
    ingest.wait_subscribed()
    assert ingest.stop() == 0
    assert not list(data.rglob("*.tmp")), "partial files are cleaned up at start"
    con = connect(data)
    n_raw, n = con.execute(
        "SELECT (SELECT count(*) FROM readings_raw), (SELECT count(*) FROM readings)").fetchone()
    assert n > 0 and n_raw >= n


def test_partial_file_from_a_killed_writer_is_invisible_and_removed(start_ingest, tmp_path):
    """What a kill mid-write leaves is a *.parquet.tmp: readers never match it, and the
    next ingest start deletes it."""
    from fleetpulse.ingest.pipeline import Pipeline

    data = tmp_path / "data"
    pipe = Pipeline(data, "w")
    pipe.handle("devices/a/telemetry", json.dumps(
        {"v": 1, "device_id": "a", "boot": 1, "seq": 0, "fw": "1", "hw": "h", "sent_ms": T,
         "records": [{"t": T, "type": "reading", "temperature_c": 1, "humidity_pct": 2}]}
    ).encode(), T)
    [good] = map(Path, pipe.flush())
    partial = good.with_name("part-killed-writer-000000000001-0a1b2c3d.parquet.tmp")
    partial.write_bytes(good.read_bytes()[:40])  # no footer, like a write cut short
    sibling = good.with_name("part-other-worker-000000000001-0a1b2c3d.parquet.tmp")
    sibling.write_bytes(b"a write in flight")
    assert connect(data).execute("SELECT count(*) FROM readings").fetchone() == (1,)
    ingest = start_ingest(data=data, client_id="killed-writer")
    ingest.wait_subscribed()
    assert ingest.stop() == 0
    assert not partial.exists()
    assert sibling.exists(), "another worker's temporary file was deleted"
    assert connect(data).execute("SELECT count(*) FROM readings").fetchone() == (1,)


def test_sigterm_while_starting_is_a_clean_stop(start_ingest, tmp_path):
    """A supervisor may stop ingest while it is still importing or replaying its log."""
    data = tmp_path / "data"
    wal = data / "_wal" / "ingest-early"
    wal.mkdir(parents=True)
    from fleetpulse.ingest.wal import WriteAheadLog

    log = WriteAheadLog(wal)  # a log left by a crash, to replay at start
    env = {"v": 1, "device_id": "a", "boot": 1, "seq": 0, "fw": "1", "hw": "h", "sent_ms": T,
           "records": [{"t": T, "type": "reading", "temperature_c": 1, "humidity_pct": 2}]}
    log.append(T, publish_packet("devices/a/telemetry", json.dumps(env).encode(), 1, pid=1))
    log.close()
    ingest = start_ingest(data=data, client_id="ingest-early")
    ingest.wait_for("started", lambda s: s.get("state"), timeout=20)
    assert ingest.stop() == 0  # while starting, or just after: a clean stop either way
    assert ingest.stats()["state"] == "stopped"
    assert connect(data).execute("SELECT count(*) FROM readings").fetchone() == (1,)
