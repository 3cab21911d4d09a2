"""Chaos through the real broker into a real ingest process: valid messages between
hostile ones, packets cut off and malformed on raw sockets, then SIGKILL with a poison
message still in the write-ahead log. Ingest keeps running, every valid record is stored
exactly once, every bad one is in quarantine with its reason."""

from __future__ import annotations

import socket
import struct

from conftest import fleet_credentials, wait_until
from vectorlib import load_vectors, payload_bytes

from fleetpulse.analytics.dataset import connect

T = 1767268800000
DAY = 86_400_000


def envelope(dev: str, boot: int, seq: int, t: int, **record: object) -> dict:
    return {"v": 1, "device_id": dev, "boot": boot, "seq": seq, "fw": "1.0", "hw": "chaos",
            "sent_ms": t, "records": [
                {"t": t, "type": "reading", "temperature_c": 20.5, "humidity_pct": 40},
                {"t": t, "type": "event", "event": "feature_used", "feature": "eco",
                 **record}]}


def raw_client(broker, cut: bytes) -> None:
    """Log in over a plain socket as the fleet account, send `cut`, hang up."""
    user, password = (s.encode() for s in fleet_credentials(broker))
    body = (b"\x00\x04MQTT\x04\xc2\x00\x1e" + struct.pack("!H", 9) + b"chaos-raw"
            + struct.pack("!H", len(user)) + user + struct.pack("!H", len(password)) + password)
    with socket.create_connection((broker.host, broker.port), timeout=5) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        assert s.recv(4)[:2] == b"\x20\x02"  # CONNACK
        s.sendall(cut)


def test_chaos(start_ingest, publisher, broker, tmp_path) -> None:
    data = tmp_path / "data"
    # a long flush interval keeps everything in the write-ahead log until the SIGKILL
    ingest = start_ingest(data=data, args=["--flush-seconds", "600", "--flush-rows", "100000"])
    ingest.wait_subscribed()
    deep = next(v for v in load_vectors() if v["name"] == "deeply_nested_unknown_field")
    good: list[tuple[str, int, int]] = []  # (device, boot, seq) of every valid envelope
    sent = 0

    def send(topic: str, payload: bytes | dict) -> None:
        nonlocal sent
        publisher.send(topic, payload)
        sent += 1

    def send_good(dev: str, boot: int, seq: int, t: int, **record: object) -> None:
        send(f"devices/{dev}/telemetry", envelope(dev, boot, seq, t, **record))
        good.append((dev, boot, seq))

    for i in range(10):
        send_good("chaos-a", 1, i, T + i * 1000, level=3)
    # the poison of old: an unknown field 1000 levels deep (RecursionError, crash loop)
    send("devices/dev-1/telemetry", payload_bytes(deep))
    send("devices/chaos-a/telemetry", b'{"v":1,"device_id":"chaos-a","fw":"\xff\xfe"}')
    # a learned column's type conflict: the record is kept, the value goes to extra
    send_good("chaos-a", 1, 10, T + 10_000, level="high")
    # a device reflashed: boot 0, seq 0 three days after its first boot 0, seq 0
    send_good("chaos-r", 0, 0, T - 3 * DAY)
    send_good("chaos-r", 0, 0, T)
    # packets the broker itself refuses: a PUBLISH cut off, one whose topic runs past it
    raw_client(broker, b"\x32\x40\x00\x13devices/chaos-a/tel")
    raw_client(broker, b"\x32\x04\x00\xc8ab")
    for i in range(11, 20):
        send_good("chaos-a", 1, i, T + i * 1000)
    ingest.wait_messages(sent, timeout=30)
    assert not list(data.glob("readings/*/*.parquet")), "nothing flushed before the kill"
    ingest.kill()
    logged = sent

    # restart with the poison still in the log: replayed through the same isolation
    ingest = start_ingest(data=data, client_id=ingest.client_id)
    ingest.wait_subscribed()
    for i in range(20, 30):
        send_good("chaos-a", 1, i, T + i * 1000)
    ingest.wait_messages(logged + 10, timeout=30)  # the replayed log counts too
    assert ingest.stop() == 0

    con = connect(data)
    # every valid record exactly once, no duplicate file; the deep vector's good reading
    # is stored beside its refused record
    for table, extra in (("readings", [("dev-1", 3, 17)]), ("events", [])):
        raw = con.execute(f"SELECT device_id, boot, seq FROM {table}_raw ORDER BY ALL").fetchall()
        assert raw == sorted(good + extra), table
    # the conflicting value is in extra; the learned column stayed a number
    assert con.execute("SELECT level, extra FROM events WHERE seq = 10 AND device_id = "
                       "'chaos-a'").fetchone() == (None, '{"level":"high"}')
    assert con.execute("SELECT typeof(level) FROM events LIMIT 1").fetchone() == ("DOUBLE",)
    reasons = con.execute("SELECT reason, idx FROM quarantine ORDER BY reason").fetchall()
    assert reasons == [("bad_encoding", None), ("too_deep", 1)]
    wait_until("ingest logged the replay",
               lambda: "replayed" in ingest.log_path.read_text(errors="replace"), timeout=5)
