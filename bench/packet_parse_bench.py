"""The subscriber's packet parser on one core, without a socket.

    .venv/bin/python bench/packet_parse_bench.py

CPU time per PUBLISH of ingest/mqtt_subscriber.parse_packets over one socket read's
worth of QoS 1 packets (MAX_BATCH_BYTES, as the subscriber hands them over), with the
C run (ingest/native_mqtt.c) and with every packet through the Python loop alone, for
payloads the size of the shared harness's contract v1 envelopes of 1, 10 and 32
readings. Best of 20.
"""

from __future__ import annotations

import time

from fleetpulse.ingest import mqtt_subscriber
from fleetpulse.ingest.mqtt_subscriber import MAX_BATCH_BYTES, encode_varint, parse_packets

PAYLOAD_BYTES = {1: 190, 10: 1210, 32: 3670}  # the harness's mean envelope sizes


def publish(topic: str, payload: bytes, pid: int) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + pid.to_bytes(2, "big") + b"\x00" + payload
    return b"\x32" + encode_varint(len(body)) + body


def per_publish(buf: bytearray) -> float:
    best = float("inf")
    for _ in range(20):
        started = time.process_time()
        pubs, _, _ = parse_packets(buf)
        best = min(best, time.process_time() - started)
    return best / len(pubs)


def main() -> None:
    print("| records/msg | payload bytes | C run us/PUBLISH | Python loop us/PUBLISH |")
    print("| --- | --- | --- | --- |")
    for per, size in PAYLOAD_BYTES.items():
        one = [publish(f"devices/sensor-{i % 1000:04d}/telemetry", b"x" * size, i % 65535 + 1)
               for i in range(MAX_BATCH_BYTES // size + 1)]
        buf = bytearray(b"".join(one))
        c = per_publish(buf)
        real = mqtt_subscriber.take_publishes
        mqtt_subscriber.take_publishes = lambda _buf, pos, _end, _limit, _out: pos
        try:
            python = per_publish(buf)
        finally:
            mqtt_subscriber.take_publishes = real
        print(f"| {per} | {size} | {c * 1e6:.2f} | {python * 1e6:.2f} |")


if __name__ == "__main__":
    main()
