"""MQTT 5 PUBLISH properties between their bytes on the wire and a capture's JSON.

The JSON uses paho-mqtt's property names (docs/capture-format.md): UserProperty as
[[key, value], ...] in the order sent, CorrelationData as hex, SubscriptionIdentifier
as a list. Written here because the recorder and the replayer read and write packets
themselves (simulators/record.py says why), and paho's Properties class cannot be fed
raw bytes without the rest of its client.
"""

from __future__ import annotations

import struct
from typing import Any

from fleetpulse.ingest.mqtt_subscriber import MalformedPacket, encode_varint, read_body_varint

# identifier -> (name, kind): b byte, h two bytes, i four bytes, v variable byte
# integer, s UTF-8 string, d binary data, p string pair
_BY_ID: dict[int, tuple[str, str]] = {
    0x01: ("PayloadFormatIndicator", "b"), 0x02: ("MessageExpiryInterval", "i"),
    0x03: ("ContentType", "s"), 0x08: ("ResponseTopic", "s"), 0x09: ("CorrelationData", "d"),
    0x0B: ("SubscriptionIdentifier", "v"), 0x23: ("TopicAlias", "h"),
    0x26: ("UserProperty", "p"),
}
_BY_NAME = {name: (ident, kind) for ident, (name, kind) in _BY_ID.items()}
# paho's json() lists properties in this order; captures written by paho look the same
_ORDER = [name for _, (name, _) in sorted(_BY_ID.items())]
_MULTIPLE = ("SubscriptionIdentifier", "UserProperty")
_INT_SIZES = {"b": 1, "h": 2, "i": 4}


def decode(raw: bytes) -> dict[str, Any] | None:
    """The properties of a PUBLISH (the bytes after its length) as JSON-ready values, or
    None when it had none."""
    if not raw:
        return None
    out: dict[str, Any] = {}
    pos, end = 0, len(raw)
    while pos < end:
        ident, pos = read_body_varint(raw, pos, end)
        name, kind = _BY_ID.get(ident, ("", ""))
        if not name:
            raise MalformedPacket(f"property 0x{ident:02x} does not belong in a PUBLISH")
        value: Any
        if kind == "v":
            value, pos = read_body_varint(raw, pos, end)
        elif kind in _INT_SIZES:
            n = _INT_SIZES[kind]
            value, pos = int.from_bytes(_take(raw, pos, n), "big"), pos + n
        elif kind == "p":
            key, pos = _string(raw, pos)
            val, pos = _string(raw, pos)
            value = [key.decode(), val.decode()]
        else:
            data, pos = _string(raw, pos)
            value = data.hex() if kind == "d" else data.decode()
        if name in _MULTIPLE:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return {name: out[name] for name in _ORDER if name in out}


def encode(props: dict[str, Any] | None) -> bytes:
    """A capture's properties as the bytes a PUBLISH carries (without their length).
    A subscription identifier is the broker's, added on delivery: never sent."""
    if not props:
        return b""
    out = bytearray()
    for name in _ORDER:
        if name not in props or name == "SubscriptionIdentifier":
            continue
        ident, kind = _BY_NAME[name]
        for value in props[name] if name in _MULTIPLE else [props[name]]:
            out += encode_varint(ident)
            if kind in _INT_SIZES:
                out += int(value).to_bytes(_INT_SIZES[kind], "big")
            elif kind == "p":
                out += _lp(value[0].encode()) + _lp(value[1].encode())
            else:
                out += _lp(bytes.fromhex(value) if kind == "d" else value.encode())
    return bytes(out)


def _take(raw: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(raw):
        raise MalformedPacket("property runs past the end of the packet")
    return raw[pos:pos + n]


def _string(raw: bytes, pos: int) -> tuple[bytes, int]:
    n = int.from_bytes(_take(raw, pos, 2), "big")
    return _take(raw, pos + 2, n), pos + 2 + n


def _lp(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b
