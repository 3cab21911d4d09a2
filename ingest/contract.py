"""Telemetry contract v1: validate one MQTT message and flatten it into table rows.

docs/telemetry-contract.md is the prose; tests/vectors/ pin it down. Envelope-level
problems reject the whole message; a bad record rejects only that record, so one
faulty sensor value never costs the rest of the batch. Every rejection carries a
stable reason code (for counting) and a one-line detail (for people).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .schema import TABLES

CONTRACT_VERSION = 1
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_RECORDS = 256
TELEMETRY_TOPIC = "devices/{device_id}/telemetry"
STATUS_TOPIC = "devices/{device_id}/status"
CONFIG_TOPIC = "devices/{device_id}/config"
TELEMETRY_FILTER = "devices/+/telemetry"

# Records older than this are from a device whose clock was never set.
MIN_TIME_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
# Records further ahead of the receive time than this have a broken clock.
MAX_CLOCK_AHEAD_MS = 24 * 3600 * 1000

# Names are checked with fullmatch (never match with `$`, which also accepts a
# trailing newline): a name that reaches a file, a topic or a column must be exact.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Install id: random, made once by the firmware and kept with its boot counter; a new
# one after the flash is erased, so a reflashed device never reuses an old identity.
INSTALL_ID = re.compile(r"[0-9a-z]{8,32}")
# Unknown fields nested deeper than this are refused rather than walked.
MAX_EXTRA_DEPTH = 32


def is_device_id(s: object) -> bool:
    return isinstance(s, str) and DEVICE_ID.fullmatch(s) is not None

REASONS = (
    "oversize",
    "bad_encoding",
    "bad_json",
    "not_an_object",
    "bad_topic",
    "topic_mismatch",
    "unsupported_version",
    "too_many_records",
    "missing_field",
    "bad_type",
    "bad_value",
    "bad_time",
    "unknown_record_type",
    "too_deep",
    # an exception of ingest's own while handling the message: a bug, never the
    # device's fault, but the message is kept in quarantine and ingest goes on
    "internal",
)

# Events a person caused. A device is "active" on a day when it sent one of these;
# power cycles, heartbeats and errors happen without anyone using the product.
USAGE_EVENTS = ("feature_used", "setting_changed", "button_press", "session_start", "session_end")

# power_on reset causes that mean the device crashed rather than was switched on or
# updated; an error event or one of these makes a device-day not crash-free. Only what
# boards can report: "exception" (the firmware noted an unhandled exception before the
# reset), "watchdog" (a watchdog timeout), "panic" (an ESP32 reset the firmware did not
# make). MicroPython reports a brownout as a power-on, so no board can say "brownout".
CRASH_RESET_CAUSES = ("exception", "watchdog", "panic")
# Every reset cause our firmware sends (docs/telemetry-contract.md).
RESET_CAUSES = ("power_on", "software_reset", "soft_reset", "deepsleep", "update",
                *CRASH_RESET_CAUSES)
# Heartbeat interval assumed for a heartbeat that does not say its own (the firmware's
# default): connectivity's expected heartbeats come from it.
DEFAULT_HEARTBEAT_S = 3600

_NUM = (int, float)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_READING_REQUIRED = ("temperature_c", "humidity_pct")
_READING_OPTIONAL = ("pressure_hpa", "light_lux", "battery_pct", "rssi_dbm")
# Required fields per known event, with the JSON types each accepts.
_EVENT_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "power_on": {},
    "power_off": {},
    "feature_used": {"feature": (str,)},
    "setting_changed": {"name": (str,), "value": (str, int, float, bool)},
    "button_press": {},
    "session_start": {},
    "session_end": {},
    "error": {"code": (str, int)},
    "heartbeat": {"uptime_s": (int,), "reconnects": (int,), "free_mem": (int,)},
}
_EVENT_OPTIONAL: dict[str, tuple[type, ...]] = {
    "feature": (str,),
    "name": (str,),
    "value": (str, int, float, bool),
    "button": (str, int),
    "code": (str, int),
    "uptime_s": (int,),
    "reconnects": (int,),
    "free_mem": (int,),
    "records_dropped": (int,),
    "reset_cause": (str,),
    "last_error": (str,),
    "interval_s": (int,),
}
_READING_KNOWN = {"t", "type", *_READING_REQUIRED, *_READING_OPTIONAL}
_EVENT_KNOWN = {"t", "type", "event", *_EVENT_OPTIONAL}
COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Column names a learned field may not take: the stored tables' own columns.
_RESERVED = {"date", *_READING_KNOWN, *_EVENT_KNOWN,
             *(name for table in ("readings", "events", "quarantine")
               for name in TABLES[table].names)}
_ENVELOPE_KEYS = ("v", "device_id", "boot", "seq", "fw", "hw", "sent_ms", "records")


class Rejected(Exception):
    """The whole message breaks the contract."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class RecordReject:
    idx: int
    reason: str
    detail: str


@dataclass
class Parsed:
    """Rows of one accepted message, plus the records that were refused."""

    device_id: str
    boot: int
    seq: int
    sent_ms: int = 0
    iid: str | None = None
    readings: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[RecordReject] = field(default_factory=list)


def device_from_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "devices" or parts[2] != "telemetry":
        raise Rejected("bad_topic", f"topic {topic!r} is not devices/<device_id>/telemetry")
    if not is_device_id(parts[1]):
        raise Rejected("bad_topic", f"topic device id {parts[1]!r} is not a valid device id")
    return parts[1]


def _slow_parse(payload: bytes) -> Any:
    """What orjson refused, parsed again by the standard library, which names the exact
    problem (bad UTF-8 vs bad JSON) and reads integers beyond 64 bits, so that they are
    refused as out of range rather than as malformed."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected(
            "bad_encoding", f"payload is not UTF-8 ({e.reason} at byte {e.start})"
        ) from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise Rejected("bad_json", f"payload is not JSON: {e}") from None
    try:
        # A \ud800-style escape of half a surrogate pair decodes to a string no UTF-8
        # column can hold: refused here, not at the Parquet write.
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected("bad_encoding", "payload escapes half of a UTF-16 surrogate pair "
                       "(\\uD800-\\uDFFF alone)") from None
    except (ValueError, RecursionError):
        pass  # nesting too deep to re-encode: the record checks refuse it
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_int(x: object) -> bool:
    # Bounded to int64 because every integer lands in an int64 Parquet column.
    return isinstance(x, int) and not isinstance(x, bool) and _INT64_MIN <= x <= _INT64_MAX


def _is_num(x: object) -> bool:
    if isinstance(x, bool) or not isinstance(x, _NUM):
        return False
    return math.isfinite(x) if isinstance(x, float) else _INT64_MIN <= x <= _INT64_MAX


def _type_ok(x: object, types: tuple[type, ...]) -> bool:
    if isinstance(x, bool):
        return bool in types
    if isinstance(x, int):
        return (int in types and _is_int(x)) or (float in types and _is_num(x))
    if isinstance(x, float):
        return float in types and math.isfinite(x)
    return isinstance(x, types)


def _type_name(x: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(x), "null" if x is None else "number"
    )


def parse_message(topic: str, payload: bytes, received_ms: int) -> Parsed:
    """Validate one telemetry message; raise Rejected if the envelope is unusable."""
    topic_device = device_from_topic(topic)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("oversize", f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = _slow_parse(payload)
    if not isinstance(doc, dict):
        raise Rejected("not_an_object", f"envelope must be a JSON object, got {_type_name(doc)}")
    for key in _ENVELOPE_KEYS:
        if key not in doc:
            raise Rejected("missing_field", f"envelope has no {key!r}")
    if doc["v"] != CONTRACT_VERSION or not _is_int(doc["v"]):
        raise Rejected("unsupported_version", f"contract version {doc['v']!r}, expected 1")
    device_id = doc["device_id"]
    if not is_device_id(device_id):
        raise Rejected("bad_value", f"device_id {device_id!r} is not a valid device id")
    if device_id != topic_device:
        raise Rejected(
            "topic_mismatch", f"envelope device {device_id!r} published on {topic_device!r}'s topic"
        )
    for key in ("boot", "seq", "sent_ms"):
        if not _is_int(doc[key]) or doc[key] < 0:
            raise Rejected("bad_type", f"{key!r} must be a non-negative integer")
    for key in ("fw", "hw"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise Rejected("bad_type", f"{key!r} must be a non-empty string")
    iid = doc.get("iid")
    if iid is not None and not (isinstance(iid, str) and INSTALL_ID.fullmatch(iid)):
        raise Rejected("bad_value", f"iid {iid!r} is not 8-32 characters of 0-9 a-z")
    records = doc["records"]
    if not isinstance(records, list):
        raise Rejected("bad_type", f"'records' must be an array, got {_type_name(records)}")
    if len(records) > MAX_RECORDS:
        raise Rejected("too_many_records", f"{len(records)} records, limit {MAX_RECORDS}")

    out = Parsed(device_id=device_id, boot=doc["boot"], seq=doc["seq"], sent_ms=doc["sent_ms"],
                 iid=iid)
    base = {
        "device_id": device_id,
        "iid": iid,
        "boot": doc["boot"],
        "seq": doc["seq"],
        "fw": doc["fw"],
        "hw": doc["hw"],
        "received_at": received_ms,
    }
    for idx, rec in enumerate(records):
        try:
            table, row = _parse_record(rec, received_ms)
        except Rejected as e:
            out.rejects.append(RecordReject(idx, e.reason, f"record {idx}: {e.detail}"))
            continue
        row.update(base)
        row["idx"] = idx
        (out.readings if table == "readings" else out.events).append(row)
    return out


def _parse_record(rec: object, received_ms: int) -> tuple[str, dict[str, Any]]:
    if not isinstance(rec, dict):
        raise Rejected("bad_type", f"must be an object, got {_type_name(rec)}")
    if "t" not in rec:
        raise Rejected("missing_field", "has no 't'")
    t = rec["t"]
    if not _is_int(t):
        raise Rejected("bad_type", "'t' must be an integer (Unix epoch milliseconds)")
    if t < MIN_TIME_MS:
        raise Rejected("bad_time", f"'t' {t} is before 2020: the device clock was not set")
    if t > received_ms + MAX_CLOCK_AHEAD_MS:
        raise Rejected("bad_time", f"'t' {t} is more than a day ahead of the receive time")
    kind = rec.get("type")
    if kind == "reading":
        row = _parse_reading(rec)
        table = "readings"
    elif kind == "event":
        row = _parse_event(rec)
        table = "events"
    else:
        raise Rejected("unknown_record_type", f"'type' is {kind!r}, expected 'reading' or 'event'")
    row["ts"] = t
    return table, row


def _parse_reading(rec: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in _READING_REQUIRED:
        if key not in rec:
            raise Rejected("missing_field", f"reading has no {key!r}")
    for key in (*_READING_REQUIRED, *_READING_OPTIONAL):
        if key in rec and rec[key] is not None:
            if not _is_num(rec[key]):
                raise Rejected("bad_type", f"{key!r} must be a number, got {_type_name(rec[key])}")
            row[key] = float(rec[key])
    _extra(rec, _READING_KNOWN, row)
    return row


def _parse_event(rec: dict[str, Any]) -> dict[str, Any]:
    name = rec.get("event")
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
        raise Rejected("bad_value", f"'event' {name!r} is not an event name")
    # Unknown event names are accepted: newer firmware may add kinds, and the name
    # pattern above already keeps garbage out.
    required = _EVENT_REQUIRED.get(name, {})
    for key, types in required.items():
        if key not in rec or rec[key] is None:
            raise Rejected("missing_field", f"{name} event has no {key!r}")
        if not _type_ok(rec[key], types):
            raise Rejected("bad_type", f"{name} event {key!r} has the wrong type")
    row: dict[str, Any] = {"event": name}
    for key, types in _EVENT_OPTIONAL.items():
        if key not in rec or rec[key] is None:
            continue
        v = rec[key]
        if not _type_ok(v, types):
            raise Rejected("bad_type", f"{name} event {key!r} has the wrong type")
        if key == "value" and not isinstance(v, str):
            v = json.dumps(v)  # numbers and booleans keep their JSON spelling
        elif key in ("code", "button"):
            v = str(v)
        elif key in ("uptime_s", "reconnects", "free_mem", "records_dropped") and v < 0:
            raise Rejected("bad_value", f"{name} event {key!r} must not be negative")
        row[key] = v
    _extra(rec, _EVENT_KNOWN, row)
    return row


def _extra(rec: dict[str, Any], known: set[str], row: dict[str, Any]) -> None:
    """Sort fields the contract does not name: scalars with column-like names go to
    row["_new"] (ingest makes them columns), anything else into the JSON `extra`."""
    new: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for k, v in rec.items():
        if k in known:
            continue
        if (v is not None and not isinstance(v, dict | list) and COLUMN_NAME.fullmatch(k)
                and k not in _RESERVED and (not isinstance(v, int | float) or _is_num(v))):
            new[k] = v
        else:
            rest[k] = v
    if new:
        row["_new"] = new
    if rest and _depth(rest) > MAX_EXTRA_DEPTH:
        raise Rejected("too_deep", f"an unknown field nests deeper than {MAX_EXTRA_DEPTH} levels")
    row["extra"] = json.dumps(rest, sort_keys=True, separators=(",", ":")) if rest else None


def _depth(value: object) -> int:
    """Nesting depth of a JSON value, without recursion (a hostile value may be deep
    enough to exhaust the stack)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_EXTRA_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v)
    return deepest
