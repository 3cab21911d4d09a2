"""The subscriber against a scripted broker that misbehaves in ways mosquitto never
does on purpose: malformed packets, no PINGRESP, too many un-acked messages. Each ends
in one typed error, after the good messages before it were handed over."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from mqttpackets import publish_packet

from fleetpulse.ingest.mqtt_subscriber import (
    ConnectionLost,
    MalformedPacket,
    MqttError,
    PingTimeout,
    ProtocolViolation,
    Subscriber,
    encode_varint,
)


def publish(payload: bytes, pid: int) -> bytes:
    return publish_packet("devices/a/telemetry", payload, 1, pid)


def connack(session_present: bool = False, props: bytes = b"") -> bytes:
    body = bytes([int(session_present), 0]) + encode_varint(len(props)) + props
    return b"\x20" + encode_varint(len(body)) + body


SUBACK = b"\x90\x04\x00\x01\x00\x01"


class ScriptedBroker:
    """Accepts one connection, answers CONNECT and SUBSCRIBE, then runs `script`; keeps
    every byte the client sent."""

    def __init__(self, script: Callable, connack_packet: bytes = connack()) -> None:
        self.script = script
        self.connack = connack_packet
        self.received = bytearray()
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def read_packet() -> bytes:
            head = await reader.readexactly(2)
            n = head[1]  # small packets only: one length byte
            body = await reader.readexactly(n)
            self.received += head + body
            return head + body

        await read_packet()  # CONNECT
        writer.write(self.connack)
        await read_packet()  # SUBSCRIBE
        writer.write(SUBACK)
        try:
            await self.script(writer, read_packet)
            while data := await reader.read(65536):
                self.received += data
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable]:
    servers = []

    async def start(script: Callable, **kw: bytes) -> tuple[ScriptedBroker, Subscriber]:
        broker = ScriptedBroker(script, **kw)
        server = await asyncio.start_server(broker.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        sub = Subscriber("127.0.0.1", port, "scripted", keepalive=2, ping_timeout=0.5)
        await sub.connect()
        await sub.subscribe("devices/+/telemetry")
        return broker, sub

    yield start
    for s in servers:
        s.close()


async def test_malformed_publish_disconnects_with_0x81_after_good_messages(scripted) -> None:
    async def script(writer, _read):
        writer.write(publish(b"good", 1) + b"\x32\x04\x00\xc8ab" + publish(b"behind", 2))

    broker, sub = await scripted(script)
    batch = await asyncio.wait_for(sub.read_batch(), 5)
    assert [p.payload for p in batch] == [b"good"]
    sub.ack([1])
    with pytest.raises(MalformedPacket, match="topic length"):
        await asyncio.wait_for(sub.read_batch(), 5)
    await sub.close(graceful=False)
    await asyncio.wait_for(broker.closed.wait(), 5)
    assert b"\x40\x02\x00\x01" in broker.received  # the good one was acknowledged
    assert broker.received.endswith(b"\xe0\x01\x81")  # DISCONNECT, malformed packet


async def test_no_pingresp_is_a_ping_timeout(scripted) -> None:
    async def script(_writer, read):
        assert await read() == b"\xc0\x00"  # PINGREQ, never answered

    _, sub = await scripted(script)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PingTimeout):
        await asyncio.wait_for(sub.read_batch(), 10)
    # keepalive 2 s: PINGREQ after 1 s idle, then 0.5 s for the answer
    assert loop.time() - started < 5
    await sub.close(graceful=False)


async def test_answered_pings_keep_the_connection(scripted) -> None:
    async def script(writer, read):
        for _ in range(3):
            assert await read() == b"\xc0\x00"
            writer.write(b"\xd0\x00")
        writer.write(publish(b"late", 5))

    _, sub = await scripted(script)
    batch = await asyncio.wait_for(sub.read_batch(), 10)
    assert [p.payload for p in batch] == [b"late"]
    await sub.close(graceful=False)


async def test_server_keep_alive_and_session_present_are_read(scripted) -> None:
    async def script(_writer, _read):
        pass

    _, sub = await scripted(script, connack_packet=connack(True, b"\x13\x00\x07"))
    assert sub.session_present and sub.keepalive == 7
    await sub.close(graceful=False)


async def test_more_unacked_than_receive_maximum_is_a_violation(scripted) -> None:
    async def script(writer, _read):
        writer.write(b"".join(publish(b"m", i) for i in range(1, 6)))

    broker, sub = await scripted(script)
    sub.receive_maximum = 3
    with pytest.raises(ProtocolViolation, match="Receive Maximum"):
        await asyncio.wait_for(sub.read_batch(), 5)
    await sub.close(graceful=False)
    await asyncio.wait_for(broker.closed.wait(), 5)
    assert broker.received.endswith(b"\xe0\x01\x93")


async def test_broker_disconnect_reason_is_reported(scripted) -> None:
    async def script(writer, _read):
        reason = b"session taken over"
        props = b"\x1f" + struct.pack("!H", len(reason)) + reason
        body = b"\x8e" + encode_varint(len(props)) + props
        writer.write(b"\xe0" + encode_varint(len(body)) + body)

    _, sub = await scripted(script)
    with pytest.raises(ConnectionLost, match=r"0x8e: session taken over"):
        await asyncio.wait_for(sub.read_batch(), 5)
    await sub.close(graceful=False)


def test_every_error_is_an_mqtt_error() -> None:
    for cls in (ConnectionLost, MalformedPacket, PingTimeout, ProtocolViolation):
        assert issubclass(cls, MqttError)


async def test_a_backlog_past_the_high_water_mark_and_a_packet_larger_than_the_buffer(
        scripted) -> None:
    """Reading pauses while a backlog waits unparsed (the buffer does not grow for it) and
    resumes as it is taken; the buffer grows for one packet larger than itself; each
    batch's bytes are exactly its packets, in order (what the write-ahead log keeps)."""
    from fleetpulse.ingest import mqtt_subscriber as m

    small = [publish(b"s%06d" % i + b"." * 900, 1 + i % 60000)
             for i in range(3 * m.HIGH_WATER // 900)]
    huge = publish(b"h" * (m.BUFFER_SIZE + 12345), 7)
    sent = b"".join(small) + huge
    go_on = asyncio.Event()

    async def script(writer, _read):
        writer.write(b"".join(small))  # a backlog, sent before the client reads
        await go_on.wait()
        for i in range(0, len(huge), 100_000):  # in pieces, as a slow network would
            writer.write(huge[i:i + 100_000])
            await writer.drain()

    _, sub = await scripted(script)
    link = sub._link
    deadline = asyncio.get_running_loop().time() + 10
    while link.transport.is_reading():  # until the unread backlog pauses reading
        assert asyncio.get_running_loop().time() < deadline, "reading never paused"
        await asyncio.sleep(0.01)
    assert len(link.buf) == m.BUFFER_SIZE and link.end - link.start >= m.HIGH_WATER
    got, raw = [], b""
    while len(got) < len(small) + 1:
        received = await asyncio.wait_for(sub.read_packets(), 10)
        got += received.publishes
        raw += received.packets
        sub.ack([p.packet_id for p in received.publishes])
        go_on.set()
    assert raw == sent
    assert [p.payload[:7] for p in got[:-1]] == [b"s%06d" % i for i in range(len(small))]
    assert got[-1].payload == b"h" * (m.BUFFER_SIZE + 12345)
    assert len(link.buf) > m.BUFFER_SIZE
    await sub.close(graceful=False)
