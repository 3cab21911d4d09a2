"""A minimal MQTT 5 subscriber for ingest: batches in, acknowledgements out when durable.

Written here, not taken from paho-mqtt or aiomqtt, because neither can do the two
things at-least-once ingest at broker speed needs: hand over every PUBLISH that one
socket read holds as a batch (both deliver one message per callback or wake-up,
~26K and ~8K msg/s on this machine's 2 cores in the workplace's environment notes,
against ~64K for the C
client), and send PUBACK only when the caller says the batch is durable (aiomqtt acks
on receipt). It speaks only what a QoS 1 subscriber needs: CONNECT/CONNACK,
SUBSCRIBE/SUBACK, PUBLISH in, PUBACK out, PINGREQ/PINGRESP, DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import NamedTuple

from .native_mqtt import Publish
from .native_mqtt import publishes as take_publishes

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

# The read buffer: reading pauses while HIGH_WATER unparsed bytes wait, and a socket
# read is offered at least MIN_READ bytes of room.
BUFFER_SIZE = 4 << 20
HIGH_WATER = 2 << 20
MIN_READ = 256 << 10
# Most bytes of PUBLISH packets handed over as one batch. After a resumed session the
# broker sends its whole backlog at once; batches stay bounded, so memory does too.
MAX_BATCH_BYTES = 1 << 20

CONNACK_REASONS = {
    # MQTT 3.1.1 return codes: what a broker answers when it does not speak MQTT 5
    0x01: "unacceptable protocol version (the broker needs MQTT 5)",
    0x02: "client identifier rejected", 0x03: "server unavailable",
    0x04: "bad user name or password", 0x05: "not authorized",
    0x80: "unspecified error", 0x81: "malformed packet", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password",
    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x95: "packet too large", 0x97: "quota exceeded",
}
class MqttError(Exception):
    """Anything that ends a connection to the broker; reconnecting may help."""


class MqttConnectError(MqttError):
    """The broker refused the connection or the subscription (`code` says why)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class MalformedPacket(MqttError):
    """A whole packet arrived whose contents break MQTT 5 (reason code 0x81).

    `publishes`, `others` and `consumed` describe the well-formed packets before it,
    which the caller may still take."""

    code = 0x81

    def __init__(self, detail: str, publishes: list[Publish] | None = None,
                 others: list[tuple[int, bytes]] | None = None, consumed: int = 0) -> None:
        super().__init__(f"malformed packet from the broker: {detail}")
        self.publishes = publishes or []
        self.others = others or []
        self.consumed = consumed


class ProtocolViolation(MqttError):
    """Well-formed packets in an order or number MQTT 5 forbids."""

    def __init__(self, message: str, code: int = 0x82) -> None:
        super().__init__(message)
        self.code = code


class ConnectionLost(MqttError):
    """The broker closed the connection or said DISCONNECT."""


class PingTimeout(MqttError):
    """No PINGRESP in time: the connection is half-open."""




def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Incomplete(Exception):
    """The buffer ends inside a packet's fixed header: wait for more bytes."""


def _read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the variable byte integer at buf[pos:end]. Raises
    _Incomplete if `end` comes first, MalformedPacket beyond four bytes."""
    value = shift = 0
    while True:
        if pos >= end:
            raise _Incomplete
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than four bytes")


def read_body_varint(buf: bytes | bytearray | memoryview, pos: int, stop: int) -> tuple[int, int]:
    """A variable byte integer inside a packet that is whole: running out is malformed."""
    try:
        value, pos = _read_varint(buf, pos, stop)
    except _Incomplete:
        raise MalformedPacket("packet ends inside a variable byte integer") from None
    return value, pos


# Property identifier -> encoded size (or "s" string, "b" binary, "p" string pair,
# "v" varint), enough to walk the properties of CONNACK, SUBACK and DISCONNECT.
_PROPERTY_SIZES: dict[int, int | str] = {
    0x01: 1, 0x17: 1, 0x19: 1, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1,
    0x13: 2, 0x21: 2, 0x22: 2, 0x23: 2, 0x02: 4, 0x11: 4, 0x18: 4, 0x27: 4, 0x0B: "v",
    0x03: "s", 0x08: "s", 0x12: "s", 0x15: "s", 0x1A: "s", 0x1C: "s", 0x1F: "s",
    0x09: "b", 0x16: "b", 0x26: "p",
}


def parse_properties(body: bytes, pos: int) -> tuple[dict[int, int | bytes], int]:
    """MQTT 5 properties at body[pos:] -> ({identifier: int or raw bytes}, position after).
    Repeated identifiers (user properties) keep the last value; callers need none of them."""
    length, pos = read_body_varint(body, pos, len(body))
    stop = pos + length
    if stop > len(body):
        raise MalformedPacket("properties run past the end of the packet")
    props: dict[int, int | bytes] = {}
    while pos < stop:
        ident, pos = read_body_varint(body, pos, stop)
        size = _PROPERTY_SIZES.get(ident)
        if size is None:
            raise MalformedPacket(f"unknown property 0x{ident:02x}")
        if size == "v":
            props[ident], pos = read_body_varint(body, pos, stop)
            continue
        if isinstance(size, int):
            n = size
        else:
            if pos + 2 > stop:
                raise MalformedPacket("property runs past the end of the packet")
            n = 2 + (body[pos] << 8 | body[pos + 1])
            if size == "p":  # a string pair: a second length-prefixed string follows
                if pos + n + 2 > stop:
                    raise MalformedPacket("property runs past the end of the packet")
                n += 2 + (body[pos + n] << 8 | body[pos + n + 1])
        if pos + n > stop:
            raise MalformedPacket("property runs past the end of the packet")
        raw = body[pos:pos + n]
        props[ident] = int.from_bytes(raw, "big") if isinstance(size, int) else raw
        pos += n
    return props, stop


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + encode_varint(len(body)) + body


def connect_packet(client_id: str, keepalive: int, clean_start: bool, session_expiry: int,
                   receive_maximum: int, username: str | None, password: str | None) -> bytes:
    flags = (0x02 if clean_start else 0) | (0x80 if username else 0) | (0x40 if password else 0)
    props = (b"\x11" + struct.pack("!I", session_expiry)
             + b"\x21" + struct.pack("!H", receive_maximum))
    body = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
    body += encode_varint(len(props)) + props + _str(client_id)
    if username:
        body += _str(username)
    if password:
        body += _str(password)
    return _packet(CONNECT, 0, body)


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 1,
                     retain_as_published: bool = False) -> bytes:
    # retain as published: a retained message forwarded live keeps its retain flag
    options = qos | (0x08 if retain_as_published else 0)
    return _packet(SUBSCRIBE, 0x2, struct.pack("!H", packet_id) + b"\x00" + _str(topic_filter)
                   + bytes([options]))


def disconnect_packet(reason: int = 0, end_session: bool = False) -> bytes:
    if end_session:  # Session Expiry Interval 0: the broker drops the session now
        return bytes([0xE0, 7, reason, 5, 0x11, 0, 0, 0, 0])
    return b"\xe0\x00" if reason == 0 else bytes([0xE0, 1, reason])


_PUBACK = struct.Struct("!BBH")


def puback_packets(packet_ids: list[int]) -> bytes:
    """PUBACKs for many messages in one buffer (reason code 0 may be omitted in MQTT 5)."""
    pack = _PUBACK.pack
    return b"".join([pack(0x40, 2, pid) for pid in packet_ids])


def parse_packets(buf: bytes | bytearray | memoryview, max_bytes: int = MAX_BATCH_BYTES,
                  start: int = 0, end: int | None = None
                  ) -> tuple[list[Publish], list[tuple[int, bytes]], int]:
    """Parse complete packets in buf[start:end] from its start, stopping after about
    max_bytes.

    Returns (publishes, other packets as (type, body), bytes consumed); a packet cut off
    by the end stays for the next call. A whole packet whose contents are invalid
    raises MalformedPacket, carrying the good packets before it: every read inside a
    packet is checked against the packet's own end, never the buffer's, so a bad length
    can neither wait forever for bytes that are already there nor read into the next
    packet. The run of valid PUBLISH packets, the hot path, is parsed in C
    (native_mqtt.c), which stops at anything else; this loop takes it from there.
    """
    publishes: list[Publish] = []
    others: list[tuple[int, bytes]] = []
    pos = start
    if end is None:
        end = len(buf)
    limit = min(end, start + max_bytes)
    mv = memoryview(buf)
    try:
        while pos < limit:
            pos = take_publishes(buf, pos, end, limit, publishes)  # the common case, in C
            if pos >= limit:
                break
            # Here when C stopped at a packet: another type, one cut off, or one that
            # breaks a rule (then raised with its reason below).
            header = buf[pos]
            try:
                length, body = _read_varint(buf, pos + 1, end)
            except _Incomplete:
                break
            stop = body + length
            if stop > end:
                break
            kind = header >> 4
            if kind == PUBLISH:
                qos = (header >> 1) & 3
                if qos == 3:
                    raise MalformedPacket("PUBLISH with QoS 3")
                if body + 2 > stop:
                    raise MalformedPacket("PUBLISH too short for its topic length")
                tlen = buf[body] << 8 | buf[body + 1]
                p = body + 2 + tlen
                if p + (2 if qos else 0) > stop:
                    raise MalformedPacket(f"PUBLISH topic length {tlen} runs past the packet")
                if not tlen:
                    # no Topic Alias Maximum was offered, so an empty topic has no meaning
                    raise MalformedPacket("PUBLISH with an empty topic")
                try:
                    topic = str(mv[body + 2:p], "utf-8")
                except UnicodeDecodeError:
                    raise MalformedPacket("PUBLISH topic is not UTF-8") from None
                if qos:
                    pid = buf[p] << 8 | buf[p + 1]
                    p += 2
                    if not pid:
                        raise MalformedPacket("QoS 1 PUBLISH with packet id 0")
                else:
                    pid = 0
                plen, p = read_body_varint(buf, p, stop)  # MQTT 5 properties: kept raw
                if p + plen > stop:
                    raise MalformedPacket("PUBLISH properties run past the packet")
                publishes.append(Publish((topic, bytes(mv[p + plen:stop]), pid, bool(header & 8),
                                          qos, bool(header & 1), bytes(mv[p:p + plen]))))
            elif kind == 0:
                raise MalformedPacket("reserved packet type 0")
            else:
                others.append((kind, bytes(mv[body:stop])))
            pos = stop
    except MalformedPacket as e:
        e.publishes, e.others, e.consumed = publishes, others, pos - start
        raise
    finally:
        mv.release()
    return publishes, others, pos - start


class Received(NamedTuple):
    """One batch: its PUBLISH packets parsed, and the bytes they came in (a run of whole
    packets, possibly with control packets between them) for the write-ahead log."""
    publishes: list[Publish]
    packets: bytes


class _Link(asyncio.BufferedProtocol):
    """The connection's socket reads land straight in one buffer that the parser walks.
    Written here because asyncio's StreamReader copies every byte three times on its way
    to a parser (into its buffer, out as a bytes object, into the caller's buffer): at 32
    records a message `memmove`, mostly those copies, was 11% of the event loop's time
    (bench/RESULTS.md, issue 17's third pass).

    The unparsed bytes are buf[start:end]. Reading pauses while HIGH_WATER of them wait,
    and resumes once they are taken, or whenever the parser waits for more (a packet
    larger than HIGH_WATER can only be finished by reading on)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray(BUFFER_SIZE)
        self.start = self.end = 0
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None  # why the connection ended, if it did
        self.eof = False
        self._data: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._read_paused = False
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- asyncio's side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.end < MIN_READ:
            self._make_room()
        return memoryview(self.buf)[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        if self.end - self.start >= HIGH_WATER and not self._read_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._read_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # drain() then sees the connection is gone
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- the subscriber's side ------------------------------------------------------

    def consumed(self, n: int) -> None:
        """The parser is done with the first n unparsed bytes."""
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0
        if self._read_paused and self.end - self.start < HIGH_WATER:
            self._resume_reading()

    async def more(self) -> None:
        """Wait for bytes beyond what is buffered."""
        if self._read_paused:
            self._resume_reading()
        if self.eof:
            raise ConnectionLost("broker closed the connection"
                                 + (f" ({self.error})" if self.error else ""))
        self._data = self.loop.create_future()
        try:
            await self._data
        finally:
            self._data = None

    async def drain(self) -> None:
        if self.eof:
            raise ConnectionLost("broker closed the connection")
        if self._drained is not None and not self._drained.done():
            await self._drained
            if self.eof:
                raise ConnectionLost("broker closed the connection")

    def _wake(self) -> None:
        if self._data is not None and not self._data.done():
            self._data.set_result(None)

    def _resume_reading(self) -> None:
        self._read_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _make_room(self) -> None:
        """Move the unparsed bytes to the front, into a larger buffer if they need it.
        Safe here: the parser hands out copies only, never views of the buffer."""
        n = self.end - self.start
        if n + MIN_READ > len(self.buf):
            grown = bytearray(max(2 * len(self.buf), n + MIN_READ))
            grown[:n] = memoryview(self.buf)[self.start:self.end]
            self.buf = grown
        elif n:
            self.buf[:n] = self.buf[self.start:self.end]
        self.start, self.end = 0, n


class Subscriber:
    """One connection to the broker. `read_batch()` returns the next batch of messages;
    `ack()` acknowledges QoS 1 messages once the caller has made them durable.

    Every way the connection can go wrong ends in an MqttError: a malformed packet is
    answered with DISCONNECT 0x81 (as MQTT 5 requires) and raised, a PINGREQ without a
    PINGRESP within `ping_timeout` is a PingTimeout, more un-acked messages than the
    Receive Maximum we offered is a ProtocolViolation (DISCONNECT 0x93). The caller
    reconnects; the persistent session redelivers whatever was not acknowledged."""

    def __init__(self, host: str, port: int, client_id: str, *, keepalive: int = 30,
                 clean_start: bool = False, session_expiry: int = 7 * 86400,
                 receive_maximum: int = 10000, username: str | None = None,
                 password: str | None = None, ping_timeout: float | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.keepalive = keepalive
        self.ping_timeout = ping_timeout
        self.receive_maximum = receive_maximum
        self._connect = connect_packet(client_id, keepalive, clean_start, session_expiry,
                                       receive_maximum, username, password)
        self._link: _Link | None = None
        self._next_id = 1
        self._last_sent = 0.0
        self._ping_sent: float | None = None
        self._inflight = 0
        self._pending_error: MqttError | None = None
        self.session_present = False
        self.connack_properties: dict[int, int | bytes] = {}

    async def connect(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        link = _Link(loop)
        await asyncio.wait_for(loop.create_connection(lambda: link, self.host, self.port),
                               timeout)
        self._link = link
        self._send(self._connect)
        kind, body = await asyncio.wait_for(self._control_packet(), timeout)
        if kind != CONNACK:
            raise ProtocolViolation(f"expected CONNACK, got packet type {kind}")
        if len(body) < 2:
            raise MalformedPacket("CONNACK shorter than two bytes")
        if body[1] != 0:
            reason = CONNACK_REASONS.get(body[1], f"reason code 0x{body[1]:02x}")
            raise MqttConnectError(f"broker refused the connection: {reason}", body[1])
        self.session_present = bool(body[0] & 1)
        self.connack_properties, _ = parse_properties(body, 2) if len(body) > 2 else ({}, 2)
        server_keepalive = self.connack_properties.get(0x13)
        if isinstance(server_keepalive, int):
            self.keepalive = server_keepalive  # MQTT 5: the broker's value wins

    async def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10.0,
                        retain_as_published: bool = False) -> None:
        pid = self._packet_id()
        self._send(subscribe_packet(pid, topic_filter, qos, retain_as_published))
        # Messages of a resumed session may arrive before the SUBACK; keep them.
        while True:
            kind, body = await asyncio.wait_for(self._control_packet(), timeout)
            if kind == SUBACK and len(body) >= 2 and struct.unpack("!H", body[:2])[0] == pid:
                _, p = parse_properties(body, 2)
                if p >= len(body):
                    raise MalformedPacket("SUBACK without a reason code")
                code = body[p]
                if code > 2:
                    raise MqttConnectError(
                        f"broker refused the subscription to {topic_filter} (0x{code:02x})",
                        code)
                return
            if kind == DISCONNECT:
                raise ConnectionLost(disconnect_reason(body))

    async def _control_packet(self) -> tuple[int, bytes]:
        """Read until a non-PUBLISH packet arrives; PUBLISHes stay buffered for read_batch."""
        link = self._link
        assert link is not None
        scan = 0  # how far from link.start the buffered packets are all PUBLISHes
        while True:
            scan, kind_body = self._find_control(scan)
            if kind_body is not None:
                return kind_body
            await link.more()

    def _find_control(self, scan: int) -> tuple[int, tuple[int, bytes] | None]:
        link = self._link
        assert link is not None
        buf, first, end = link.buf, link.start, link.end
        pos = first + scan
        while pos < end:
            try:
                length, body = _read_varint(buf, pos + 1, end)
            except _Incomplete:
                break
            stop = body + length
            if stop > end:
                break
            kind = buf[pos] >> 4
            if kind != PUBLISH:
                packet = (kind, bytes(buf[body:stop]))
                # take it out: the PUBLISHes before it move up to close the gap
                buf[first + stop - pos:stop] = buf[first:pos]
                link.consumed(stop - pos)
                return pos - first, packet
            pos = stop
        return pos - first, None

    async def read_batch(self) -> list[Publish]:
        """The messages of the next socket read(s): at least one, as many as arrived."""
        return (await self.read_packets()).publishes

    async def read_packets(self) -> Received:
        """The next batch, with the bytes it came in."""
        link = self._link
        assert link is not None
        if self._pending_error is not None:
            raise self._fail(self._pending_error)
        loop = link.loop
        while True:
            if link.end > link.start:
                first = link.start
                try:
                    pubs, others, used = parse_packets(link.buf, MAX_BATCH_BYTES, first, link.end)
                except MalformedPacket as e:
                    # Hand over the good messages before it first; the error ends the
                    # connection at the next call, after the caller acked them.
                    packets = bytes(memoryview(link.buf)[first:first + e.consumed])
                    link.consumed(e.consumed)
                    self._control(e.others)
                    if not e.publishes:
                        raise self._fail(e) from None
                    self._pending_error = e
                    return Received(self._count(e.publishes), packets)
                packets = bytes(memoryview(link.buf)[first:first + used]) if pubs else b""
                link.consumed(used)
                self._control(others)
                if pubs:
                    return Received(self._count(pubs), packets)
            now = loop.time()
            ping_timeout = self.ping_timeout or max(1.0, self.keepalive / 2)
            if self._ping_sent is not None:
                if now - self._ping_sent >= ping_timeout:
                    raise PingTimeout(f"no PINGRESP within {ping_timeout:g}s: the connection "
                                      "is half-open")
                timeout = self._ping_sent + ping_timeout - now
            else:
                timeout = max(0.05, self._last_sent + self.keepalive / 2 - now)
            try:
                async with asyncio.timeout(timeout):
                    await link.more()
            except TimeoutError:
                if self._ping_sent is None and self.keepalive:
                    self._send(b"\xc0\x00")  # PINGREQ keeps an idle connection alive
                    self._ping_sent = loop.time()

    def _control(self, others: list[tuple[int, bytes]]) -> None:
        for kind, body in others:
            if kind == PINGRESP:
                self._ping_sent = None
            elif kind == DISCONNECT:
                raise ConnectionLost(disconnect_reason(body))

    def _count(self, pubs: list[Publish]) -> list[Publish]:
        self._inflight += sum(1 for p in pubs if p.packet_id)
        if self._inflight > self.receive_maximum:
            raise self._fail(ProtocolViolation(
                f"broker sent {self._inflight} unacknowledged messages, more than the "
                f"Receive Maximum of {self.receive_maximum}", 0x93))
        return pubs

    def _fail(self, error: MqttError) -> MqttError:
        """Tell the broker why we leave (MQTT 5 DISCONNECT reason), then let it raise."""
        code = getattr(error, "code", None)
        transport = self._link.transport if self._link is not None else None
        if transport is not None and isinstance(code, int):
            with contextlib.suppress(OSError, RuntimeError):
                transport.write(disconnect_packet(code))
        self._pending_error = None
        return error

    def ack(self, packet_ids: list[int]) -> None:
        if packet_ids:
            self._inflight = max(0, self._inflight - len(packet_ids))
            self._send(puback_packets(packet_ids))

    async def drain(self) -> None:
        if self._link is not None:
            await self._link.drain()

    def _send(self, data: bytes) -> None:
        assert self._link is not None and self._link.transport is not None
        self._link.transport.write(data)
        self._last_sent = asyncio.get_running_loop().time()

    def _packet_id(self) -> int:
        pid = self._next_id
        self._next_id = pid % 65535 + 1
        return pid

    async def close(self, graceful: bool = True, end_session: bool = False) -> None:
        """Disconnect; `end_session` asks the broker to forget the session (nothing is
        queued for this client any more)."""
        link, self._link = self._link, None
        if link is None or link.transport is None:
            return
        try:
            if graceful and not link.eof:
                link.transport.write(disconnect_packet(end_session=end_session))
                await link.drain()
        except (OSError, MqttError):
            pass
        link.transport.close()
        await link.closed


async def close_connection(writer: asyncio.StreamWriter, farewell: bytes | None) -> None:
    """Send `farewell` (a DISCONNECT), then close; a connection already gone is fine."""
    try:
        if farewell:
            writer.write(farewell)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (OSError, ConnectionError):
        pass


def disconnect_reason(body: bytes) -> str:
    if not body:
        return "broker sent DISCONNECT"
    text = ""
    with contextlib.suppress(MalformedPacket):
        props, _ = parse_properties(body, 1) if len(body) > 1 else ({}, 1)
        raw = props.get(0x1F)
        if isinstance(raw, bytes):
            text = ": " + raw[2:].decode("utf-8", "replace")
    return f"broker sent DISCONNECT (reason 0x{body[0]:02x}{text})"
