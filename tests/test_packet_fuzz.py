"""The subscriber's packet parser against random bytes and randomly split valid streams:
it raises nothing but its own MalformedPacket, never waits for bytes it already has,
and never loses a packet that arrived whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mqttpackets import publish_packet

from fleetpulse.ingest import mqtt_subscriber
from fleetpulse.ingest.mqtt_subscriber import MalformedPacket, encode_varint, parse_packets

packets = st.one_of(
    st.builds(publish_packet, st.text(min_size=1, max_size=30), st.binary(max_size=300),
              st.sampled_from([0, 1]), st.integers(1, 65535),
              st.sampled_from([b"", b"\x01\x01", b"\x23\x00\x05"])),
    st.just(b"\xd0\x00"),  # PINGRESP
    st.just(b"\x90\x04\x00\x01\x00\x01"),  # SUBACK
)


def drain(chunks: list[bytes]) -> tuple[list, list]:
    """Feed chunks one read at a time, as the subscriber does."""
    buf = bytearray()
    pubs: list = []
    others: list = []
    for chunk in chunks:
        buf += chunk
        got, oth, used = parse_packets(buf)
        pubs += got
        others += oth
        del buf[:used]
    assert not buf, "a whole stream left bytes unparsed"
    return pubs, others


@settings(max_examples=400)
@given(st.lists(packets, min_size=1, max_size=12), st.data())
def test_random_split_points_lose_nothing(stream: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    pubs, others = drain(chunks)
    want_pubs = [p for p in stream if p[0] >> 4 == 3]
    assert len(pubs) == len(want_pubs)
    assert len(others) == len(stream) - len(want_pubs)
    assert pubs == drain([whole])[0]


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_malformed(raw: bytes) -> None:
    buf = bytearray(raw)
    for _ in range(len(raw) + 1):
        try:
            _, _, used = parse_packets(buf)
        except MalformedPacket as e:
            assert 0 <= e.consumed <= len(buf)
            return
        if not used:
            assert buf == b"" or _unfinished(buf), "waited although the packet was whole"
            return
        del buf[:used]


def _unfinished(buf: bytearray) -> bool:
    """The first packet's fixed header, or its declared body, runs past the buffer."""
    length = shift = 0
    for i, byte in enumerate(buf[1:5], start=1):
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return i + 1 + length > len(buf)
    return len(buf) < 5


@given(st.lists(packets, max_size=5), st.binary(min_size=1, max_size=40))
def test_good_packets_before_garbage_are_kept(good: list[bytes], junk: bytes) -> None:
    whole = b"".join(good)
    buf = bytearray(whole + junk)
    try:
        pubs, _, used = parse_packets(buf)
    except MalformedPacket as e:
        pubs, used = e.publishes, e.consumed
    assert used >= len(whole)
    assert len(pubs) >= sum(1 for p in good if p[0] >> 4 == 3)


def test_the_issue_example_does_not_stall() -> None:
    """A PUBLISH whose topic length points past its own end used to be taken for an
    unfinished packet, so it and everything behind it waited forever."""
    good = publish_packet("devices/a/telemetry", b"ok", 1, 9)
    buf = bytearray(b"\x32\x04\x00\xc8ab" + good)
    try:
        parse_packets(buf)
    except MalformedPacket as e:
        assert e.consumed == 0 and "topic length" in str(e)
    else:
        raise AssertionError("malformed PUBLISH was not reported")
    # and good packets in front of it are handed over
    buf = bytearray(good + b"\x32\x04\x00\xc8ab")
    try:
        parse_packets(buf)
    except MalformedPacket as e:
        assert [p.payload for p in e.publishes] == [b"ok"] and e.consumed == len(good)


def test_bad_utf8_topic_is_malformed() -> None:
    buf = bytearray(b"\x30\x06\x00\x02\xff\xfe\x00x")
    try:
        parse_packets(buf)
    except MalformedPacket as e:
        assert "UTF-8" in str(e)
    else:
        raise AssertionError("bad UTF-8 topic accepted")


def outcome(buf: bytearray) -> tuple:
    """What parse_packets makes of buf: what it returns, or what it raises."""
    try:
        pubs, others, used = parse_packets(buf)
        return "ok", [tuple(p) for p in pubs], others, used
    except MalformedPacket as e:
        return str(e), [tuple(p) for p in e.publishes], e.others, e.consumed


def python_only(buf: bytearray) -> tuple:
    """The same with the C run turned off: every packet through the Python loop."""
    real = mqtt_subscriber.take_publishes
    mqtt_subscriber.take_publishes = lambda _buf, pos, _end, _limit, _out: pos
    try:
        return outcome(buf)
    finally:
        mqtt_subscriber.take_publishes = real


@st.composite
def near_publish(draw: st.DrawFn) -> bytes:
    """A PUBLISH with each field drawn near its edges: any flags (QoS 3 too), an empty or
    bad UTF-8 topic, a topic length that is wrong, packet id 0, properties whose length
    runs past the packet or is too long a varint, a remaining length that is wrong."""
    flags = draw(st.integers(0, 15))
    qos = (flags >> 1) & 3
    topic = draw(st.sampled_from([b"", b"a", b"devices/a/telemetry", b"\xff\xfe",
                                  b"\xed\xa0\x80", b"d\x00"]))
    tlen = draw(st.one_of(st.just(len(topic)), st.integers(0, 40)))
    pid = draw(st.sampled_from([0, 1, 65535])).to_bytes(2, "big") if qos else b""
    props = draw(st.sampled_from([b"\x00", b"\x02\x01\x01", b"\x05\x01", b"\x80",
                                  b"\xff\xff\xff\xff\x01", b""]))
    body = tlen.to_bytes(2, "big") + topic + pid + props + draw(st.binary(max_size=20))
    length = draw(st.one_of(st.just(len(body)), st.integers(0, len(body) + 5)))
    return bytes([0x30 | flags]) + encode_varint(length) + body


@settings(max_examples=1000)
@given(st.lists(st.one_of(packets, near_publish()), min_size=1, max_size=6))
def test_the_c_run_parses_edge_publishes_as_the_python_loop_does(stream: list[bytes]) -> None:
    buf = bytearray(b"".join(stream))
    assert outcome(buf) == python_only(buf)


@settings(max_examples=300)
@given(st.lists(packets, min_size=1, max_size=8), st.data())
def test_the_c_run_parses_as_the_python_loop_does(stream: list[bytes],
                                                  data: st.DataObject) -> None:
    """native_mqtt.c against the Python parser alone, on valid streams cut anywhere and
    with random bytes changed: the same packets, reasons and positions."""
    whole = bytearray(b"".join(stream))
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(whole) - 1))
        whole[at] = data.draw(st.integers(0, 255))
    cut = bytearray(whole[:data.draw(st.integers(0, len(whole)))])
    for buf in (whole, cut):
        assert outcome(buf) == python_only(buf)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_the_c_run_parses_random_bytes_as_the_python_loop_does(raw: bytes) -> None:
    for start in range(len(raw) + 1):  # every suffix: packets that end with the buffer
        buf = bytearray(raw[start:])
        assert outcome(buf) == python_only(buf)


def test_the_c_run_stops_inside_short_packets_at_the_buffer_end() -> None:
    """PUBLISH packets too short for their own fields, each the last bytes of a buffer of
    exactly its size (under the sanitizers a read past it is caught), are left to the
    Python loop, which names them."""
    from fleetpulse.ingest.native_mqtt import publishes

    for packet in (b"\x30\x00", b"\x30\x01\x00", b"\x32\x00", b"\x32\x01\x00",
                   b"\x32\x03\x00\x01a", b"\x30\x03\x00\x01a", b"\x30\x04\x00\x01a\x05"):
        assert publishes(bytes(packet), 0, len(packet), len(packet), []) == 0, packet
        buf = bytearray(packet)
        assert outcome(buf) == python_only(buf)
        assert outcome(buf)[0] != "ok", packet
