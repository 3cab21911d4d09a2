"""The second fast path of contract v1: any valid spelling of an envelope.

Ingest tries the C path first (native_v1.c), which takes only the plain spelling; this
one takes what that declines but is still well formed (escapes, non-ASCII text, an
envelope key the contract does not name). msgspec decodes an envelope straight into
typed structs, checking on the way every type and bound the contract sets, so what
stays in Python per record is the check against the receive time and, for events, the
name and the fields its kind requires. The fast path never refuses anything: it
declines (returns None) whatever it does not take whole, a field the contract does not
name, a wrong type, a bad value, a record out of time, and contract.parse_message then
takes that message the slow way, which names each refusal's reason. Everything the
fast path takes, the slow path would take into the same rows
(tests/test_envelope_decoder.py holds the two to that).
"""

from __future__ import annotations

import functools
import sys
from operator import attrgetter
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from .contract import (
    _EVENT_REQUIRED,
    CONTRACT_VERSION,
    EVENT_NAME,
    MAX_CLOCK_AHEAD_MS,
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS,
    MIN_TIME_MS,
    Rejected,
    device_from_topic,
)

_I64_MAX = 2**63 - 1
_DBL_MAX = sys.float_info.max
I64 = Annotated[int, Meta(ge=-(2**63), le=_I64_MAX)]
Count = Annotated[int, Meta(ge=0, le=_I64_MAX)]
Finite = Annotated[float, Meta(ge=-_DBL_MAX, le=_DBL_MAX)]
# A reading's number: an integer beyond 2**53 has no exact double, and Arrow refuses to
# round it, so such values are left to the slow path, which rounds as float() does.
Number = Annotated[int, Meta(ge=-(2**53), le=2**53)] | Finite
Time = Annotated[int, Meta(ge=MIN_TIME_MS, le=_I64_MAX)]
Text = Annotated[str, Meta(min_length=1)]
InstallId = Annotated[str, Meta(pattern=r"\A[0-9a-z]{8,32}\Z")]


# gc=False: the structs hold only scalars (and the envelope its list of records), so
# they can form no reference cycle; untracked, the hundreds of thousands a flush buffers
# no longer make every garbage collection walk them (which cost more than decoding).
class Reading(Struct, tag="reading", tag_field="type", forbid_unknown_fields=True, gc=False):
    t: Time
    # required, though null is allowed (as in the slow path)
    temperature_c: Number | None
    humidity_pct: Number | None
    pressure_hpa: Number | None = None
    light_lux: Number | None = None
    battery_pct: Number | None = None
    rssi_dbm: Number | None = None


class Event(Struct, tag="event", tag_field="type", forbid_unknown_fields=True, gc=False):
    t: Time
    event: str
    feature: str | None = None
    name: str | None = None
    value: str | I64 | Finite | bool | None = None
    button: str | I64 | None = None
    code: str | I64 | None = None
    uptime_s: Count | None = None
    reconnects: Count | None = None
    free_mem: Count | None = None
    records_dropped: Count | None = None
    reset_cause: str | None = None
    last_error: str | None = None
    interval_s: I64 | None = None

    def __post_init__(self) -> None:
        # msgspec calls this while decoding, for events only; raising declines the
        # message (msgspec reports it as a ValidationError)
        if EVENT_NAME.fullmatch(self.event) is None:
            raise ValueError("not an event name")
        for key in _EVENT_REQUIRED.get(self.event, ()):
            if getattr(self, key) is None:
                raise ValueError(f"no {key}")


class Envelope(Struct, gc=False):
    # unknown envelope keys are ignored, as the slow path ignores them
    v: Literal[1]
    device_id: str
    boot: Count
    seq: Count
    fw: Text
    hw: Text
    sent_ms: Count
    records: Annotated[list[Reading | Event], Meta(max_length=MAX_RECORDS)]
    iid: InstallId | None = None


assert CONTRACT_VERSION == 1  # the Literal above
_decoder = msgspec.json.Decoder(Envelope)


# The same fleet publishes on the same topics all day: each is checked once.
@functools.lru_cache(maxsize=1 << 16)
def topic_device(topic: str) -> str | None:
    """The device id a telemetry topic names, or None when it is not one."""
    try:
        return device_from_topic(topic)
    except Rejected:
        return None


def decode(topic: str, payload: bytes, received_ms: int) -> Envelope | None:
    """The envelope, when the fast path takes the whole message; else None."""
    if len(payload) > MAX_PAYLOAD_BYTES or not _utf8(payload):
        return None
    try:
        env = _decoder.decode(payload)
    except msgspec.MsgspecError:
        return None
    if topic_device(topic) != env.device_id:  # the topic's id is valid, so is this one
        return None
    recs = env.records
    if recs and max(map(_time, recs)) > received_ms + MAX_CLOCK_AHEAD_MS:
        return None
    return env


_time = attrgetter("t")


def _utf8(payload: bytes) -> bool:
    # msgspec skips the keys a struct does not name without checking their bytes, so a
    # payload that is not UTF-8 there was taken where the slow path refuses it
    if payload.isascii():
        return True
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True
