"""A QoS 1 publisher for live-stream benchmarks: every PUBLISH encoded before the clock
starts, then written in large chunks while a thread reads the PUBACKs.

Not paho-mqtt and not the replay publisher (simulators/mqtt_publisher.py): both spend a
few microseconds of Python per message, about what the consumer under test spends, so
on two cores the publisher would set the pace. Here the timed part is a loop of
sendall() calls over pre-built bytes, and the window of unacknowledged messages is kept
under 30,000 so packet ids (1..65535) never collide.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from fleetpulse.ingest.mqtt_subscriber import (
    CONNACK,
    PUBACK,
    connect_packet,
    encode_varint,
    parse_packets,
)

WINDOW = 30_000
CHUNK = 1000


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """MQTT 5 PUBLISH at QoS 1 with no properties."""
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + struct.pack("!H", packet_id) + b"\x00" + payload
    return b"\x32" + encode_varint(len(body)) + body


class LivePublisher:
    def __init__(self, host: str, port: int, username: str, password: str,
                 messages: list[tuple[str, bytes]]) -> None:
        self.packets = [publish_packet(t, p, i % 65535 + 1) for i, (t, p) in
                        enumerate(messages)]
        self.acked = 0
        self.refused = 0
        self.first_send = 0.0
        self.last_ack = 0.0
        self._room = threading.Condition()
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(connect_packet("bench-live-publisher", 60, True, 0, 65535,
                                          username, password))
        buf = bytearray()
        while True:
            _, others, used = parse_packets(buf)
            del buf[:used]
            if others:
                kind, body = others[0]
                if kind != CONNACK or body[1] != 0:
                    raise SystemExit(f"the broker refused the bench publisher: {body!r}")
                break
            buf += self._sock.recv(65536)
        self._buf = buf
        self._reader = threading.Thread(target=self._read_acks, daemon=True)

    def run(self) -> float:
        """Send everything; returns the monotonic time of the first send."""
        self._reader.start()
        self.first_send = time.monotonic()
        for start in range(0, len(self.packets), CHUNK):
            limit = start - WINDOW
            with self._room:
                self._room.wait_for(lambda: self.acked > limit)  # noqa: B023 (waited on here)
            self._sock.sendall(b"".join(self.packets[start:start + CHUNK]))
        return self.first_send

    def wait_acknowledged(self, timeout: float) -> None:
        with self._room:
            if not self._room.wait_for(lambda: self.acked >= len(self.packets), timeout):
                raise SystemExit(f"only {self.acked:,} of {len(self.packets):,} "
                                 "messages were acknowledged")
        if self.refused:
            raise SystemExit(f"the broker refused {self.refused:,} messages")

    def close(self) -> None:
        self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()

    def _read_acks(self) -> None:
        buf = self._buf
        while self.acked < len(self.packets):
            data = self._sock.recv(1 << 16)
            if not data:
                return
            buf += data
            _, others, used = parse_packets(buf)
            del buf[:used]
            acks = [body for kind, body in others if kind == PUBACK]
            self.refused += sum(1 for body in acks if len(body) > 2 and body[2] >= 0x80)
            n = len(acks)
            if n:
                with self._room:
                    self.acked += n
                    self.last_ack = time.monotonic()
                    self._room.notify_all()
