"""MQTT 5 packets built by hand for the subscriber's tests."""

from __future__ import annotations

import struct

from fleetpulse.ingest.mqtt_subscriber import encode_varint


def publish_packet(topic: str, payload: bytes, qos: int, pid: int = 0, props: bytes = b"",
                   dup: bool = False) -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t
    if qos:
        body += struct.pack("!H", pid)
    body += encode_varint(len(props)) + props + payload
    return bytes([0x30 | (8 if dup else 0) | qos << 1]) + encode_varint(len(body)) + body
