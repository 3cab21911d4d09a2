"""A minimal MQTT 5 publisher for replay: packets written in batches, acknowledgements
read as they come, as many in flight as the broker's Receive Maximum allows.

Written here rather than taken from paho-mqtt because paho builds a Properties object
and queues a message through its network thread for every publish, which held replay to
about 6-7K msg/s on this machine, below what a replay of a real fleet's capture needs
(and below the 3x-mqtt-recorder floor of docs/ci-replay.md's bench). It speaks only what
a publisher needs: CONNECT/CONNACK, PUBLISH out at QoS 0, 1 and 2, PUBACK, PUBREC/PUBREL/
PUBCOMP, PINGREQ/PINGRESP, DISCONNECT. Packet parsing is ingest's (mqtt_subscriber).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from fleetpulse.errors import UserError
from fleetpulse.ingest.mqtt_subscriber import (
    CONNACK,
    CONNACK_REASONS,
    DISCONNECT,
    PINGRESP,
    PUBACK,
    ConnectionLost,
    MalformedPacket,
    MqttConnectError,
    MqttError,
    ProtocolViolation,
    close_connection,
    connect_packet,
    disconnect_packet,
    disconnect_reason,
    encode_varint,
    parse_packets,
    parse_properties,
)

PUBREC, PUBREL, PUBCOMP = 5, 6, 7
READ_SIZE = 1 << 16
# Bytes of PUBLISH packets gathered before one write: one system call for many messages.
WRITE_BATCH_BYTES = 1 << 16


class PublishRefused(MqttError):
    """The broker answered a QoS 1 or 2 PUBLISH with a failure reason code."""


class Publisher:
    def __init__(self, host: str, port: int, client_id: str, *, keepalive: int = 30,
                 username: str | None = None, password: str | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.keepalive = keepalive
        self._connect = connect_packet(client_id, keepalive, True, 0, 65535, username,
                                       password)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._inflight: set[int] = set()
        self._next_id = 1
        self.window = 65535
        self.refused: dict[int, int] = {}  # reason code -> messages
        self._room = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout)
        self._reader, self._writer = reader, writer
        writer.write(self._connect)
        buf = bytearray()
        while True:
            _, others, used = parse_packets(buf)
            del buf[:used]
            if others:
                break
            data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            if not data:
                raise ConnectionLost("broker closed the connection")
            buf += data
        kind, body = others[0]
        if kind != CONNACK or len(body) < 2:
            raise ProtocolViolation(f"expected CONNACK, got packet type {kind}")
        if body[1] != 0:
            reason = CONNACK_REASONS.get(body[1], f"reason code 0x{body[1]:02x}")
            raise MqttConnectError(f"broker refused the connection: {reason}", body[1])
        props, _ = parse_properties(body, 2) if len(body) > 2 else ({}, 2)
        receive_max = props.get(0x21)
        if isinstance(receive_max, int) and receive_max:
            self.window = receive_max
        keepalive = props.get(0x13)
        if isinstance(keepalive, int):
            self.keepalive = keepalive
        self._room.set()
        self._reading = asyncio.ensure_future(self._read_acks(buf))

    async def connect_or_explain(self, timeout: float = 10.0) -> None:
        """connect(), with a failure turned into the one line a person acts on."""
        try:
            await self.connect(timeout)
        except OSError as e:
            raise UserError(f"cannot reach the broker at {self.host}:{self.port} "
                            f"({e.strerror or e}): start it or pass --broker HOST:PORT") from None
        except MqttConnectError as e:
            raise UserError(f"the broker at {self.host}:{self.port} refused the connection "
                            f"({e}): check --username and --password, or --registry") from None

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                      properties: bytes = b"") -> None:
        """Queue one PUBLISH; waits only while the broker's window is full."""
        if self._error is not None:
            raise self._error
        if qos:
            while len(self._inflight) >= self.window:
                self.flush()
                self._room.clear()
                await self._room.wait()
                if self._error is not None:
                    raise self._error
            pid = self._next_id
            while pid in self._inflight:
                pid = pid % 65535 + 1
            self._next_id = pid % 65535 + 1
            self._inflight.add(pid)
            ident = struct.pack("!H", pid)
        else:
            ident = b""
        t = topic.encode()
        body_len = 2 + len(t) + len(ident) + len(encode_varint(len(properties))) \
            + len(properties) + len(payload)
        packet = b"".join((bytes([0x30 | qos << 1 | retain]), encode_varint(body_len),
                           struct.pack("!H", len(t)), t, ident,
                           encode_varint(len(properties)), properties, payload))
        self._pending.append(packet)
        self._pending_bytes += len(packet)
        if self._pending_bytes >= WRITE_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand every queued PUBLISH to the socket in one write."""
        if self._pending and self._writer is not None:
            self._writer.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0

    async def drain(self) -> None:
        self.flush()
        if self._writer is not None:
            await self._writer.drain()

    async def finish(self, timeout: float) -> None:
        """Return once the broker acknowledged every QoS 1 and 2 PUBLISH sent and refused
        none; otherwise raise, saying which."""
        if not await self.wait_acknowledged(timeout):
            raise MqttError(f"the broker did not acknowledge {self.unacknowledged:,} QoS 1/2 "
                            f"messages within {timeout:.0f} s")
        if self.refused:
            codes = ", ".join(f"{n:,} with reason 0x{code:02x}" for code, n in
                              sorted(self.refused.items()))
            raise PublishRefused(f"the broker refused {sum(self.refused.values()):,} messages "
                                 f"({codes}; 0x87: the account may not publish on those "
                                 "topics)")

    @property
    def unacknowledged(self) -> int:
        return len(self._inflight)

    async def wait_acknowledged(self, timeout: float) -> bool:
        """True once the broker acknowledged every QoS 1 and 2 PUBLISH sent."""
        await self.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._inflight:
            if self._error is not None:
                raise self._error
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), min(left, self.keepalive / 2))
            if self._inflight and self._writer is not None:
                self._writer.write(b"\xc0\x00")  # PINGREQ: a long wait stays connected
        return True

    async def _read_acks(self, buf: bytearray) -> None:
        assert self._reader is not None and self._writer is not None
        try:
            while True:
                _, others, used = parse_packets(buf)
                del buf[:used]
                for kind, body in others:
                    self._control(kind, body)
                data = await self._reader.read(READ_SIZE)
                if not data:
                    raise ConnectionLost("broker closed the connection")
                buf += data
        except (MqttError, OSError) as e:
            self._error = e
        finally:
            self._room.set()

    def _control(self, kind: int, body: bytes) -> None:
        if kind in (PUBACK, PUBREC, PUBCOMP):
            if len(body) < 2:
                raise MalformedPacket(f"acknowledgement (type {kind}) without a packet id")
            pid = body[0] << 8 | body[1]
            reason = body[2] if len(body) > 2 else 0
            if kind == PUBREC and reason < 0x80:
                assert self._writer is not None
                self._writer.write(b"\x62\x02" + body[:2])  # PUBREL; PUBCOMP completes it
                return
            if reason >= 0x80:
                self.refused[reason] = self.refused.get(reason, 0) + 1
            self._inflight.discard(pid)
            self._room.set()
        elif kind == DISCONNECT:
            raise ConnectionLost(disconnect_reason(body))
        elif kind != PINGRESP:
            raise ProtocolViolation(f"unexpected packet type {kind} from the broker")

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is None:
            return
        self.flush()
        writer, self._writer = self._writer, None
        await close_connection(writer, disconnect_packet())
