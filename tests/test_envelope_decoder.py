"""The fast paths (C: ingest/native_v1.c + native_columns.py; msgspec:
envelope_decoder.py + accepted_columns.py) take only what the slow path
(contract.parse_message) takes, into the same rows; everything else they decline, and
the slow path names the reason."""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectorlib import load_vectors, payload_bytes

from fleetpulse.ingest import contract, envelope_decoder, native_v1
from fleetpulse.ingest.accepted_columns import AcceptedColumns
from fleetpulse.ingest.contract import MAX_PAYLOAD_BYTES, Rejected, parse_message
from fleetpulse.ingest.native_columns import NativeColumns
from fleetpulse.ingest.schema import TABLES

T = 1767268800000
TOPIC = "devices/dev-1/telemetry"


Taken = dict[str, tuple[tuple[Any, ...], dict[str, pa.Table]]]


def fast_paths(topic: str, payload: bytes, received_ms: int) -> Taken:
    """What each fast path took of the message: its identity and its tables."""
    out: Taken = {}
    device = envelope_decoder.topic_device(topic)
    if device is not None and len(payload) <= MAX_PAYLOAD_BYTES:
        native = NativeColumns()
        rest = native.add(device, payload, received_ms)
        if rest is None:
            assert len(native) == 0 and native.seal() == set(), "declined, yet kept rows"
        else:
            out["native"] = ((device, *rest), native.tables())
    env = envelope_decoder.decode(topic, payload, received_ms)
    if env is not None:
        cols = AcceptedColumns()
        cols.add(env, received_ms)
        out["msgspec"] = ((env.device_id, env.iid, env.boot, env.seq, env.sent_ms),
                          cols.tables())
    return out


def same_as_slow_path(topic: str, payload: bytes, received_ms: int) -> set[str]:
    """Check the fast paths against the slow one; the names of those that took it."""
    taken = fast_paths(topic, payload, received_ms)
    if not taken:
        return set()
    try:
        parsed = parse_message(topic, payload, received_ms)
    except Rejected as e:
        raise AssertionError(f"{set(taken)} took what the slow path refuses: {e}") from None
    assert not parsed.rejects, parsed.rejects
    for path, (key, got) in taken.items():
        assert key == (parsed.device_id, parsed.iid, parsed.boot, parsed.seq, parsed.sent_ms)
        for table, rows in (("readings", parsed.readings), ("events", parsed.events)):
            assert all("_new" not in r for r in rows), "a learned column on a fast path"
            want = pa.Table.from_pylist(rows, schema=TABLES[table]).to_pylist()
            have = got[table].to_pylist() if table in got else []
            # repr: -0.0 is not 0.0, and every bit of a float counts
            assert repr(have) == repr(want), (path, table)
    return set(taken)


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_every_vector(vector: dict[str, Any]) -> None:
    took = same_as_slow_path(vector["topic"], payload_bytes(vector), vector["received_ms"])
    expect = vector["expect"]
    if "reject" in expect or expect.get("record_rejects"):
        assert not took
    plain = ("reading_minimal", "reading_all_fields", "every_event_kind", "max_records")
    if vector["name"] in plain:
        assert took == {"native", "msgspec"}, "a fast path declined a plain envelope"


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 30
           ) -> st.SearchStrategy[Any]:
    """`bad` once in `one_in` draws: each message has a few fields, each may go wrong, and
    many messages must still reach the fast path's rows."""
    return st.integers(1, one_in).flatmap(lambda i: bad if i == 1 else good)


edge_numbers = st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, -(2**63),
                                -(2**63) - 1, 2**70, 1e308, -0.0, 1.5e-320])
numbers = mostly(st.integers(-100, 100) | st.floats(-1e6, 1e6), edge_numbers)
values = st.one_of(
    st.none(), st.booleans(), numbers, edge_numbers, st.text(max_size=6),
    st.sampled_from(["feature_used", "eco_mode", "a\n", "", "\u0000", "Ünïcode", "x" * 65]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from("ab"), st.integers(),
                                                         max_size=1))
times = mostly(st.integers(T - 10**9, T + 86_400_000),
               st.sampled_from([T + 86_400_001, 1_577_836_800_000, 1_577_836_799_999, 0, -1,
                                2**63, True, float(T), str(T)]))
EVENT_NAMES = ["feature_used", "setting_changed", "error", "heartbeat", "power_on",
               "button_press", "new_kind"]
BAD_EVENT_NAMES = ["Bad", "a" * 65, "x\n", "", None, 3]
# per key, what the contract takes, then what it refuses or sends to `extra`
EVENT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "feature": st.sampled_from(["eco", "boost"]), "name": st.sampled_from(["mode", "fan"]),
    "value": st.sampled_from(["on", 1, 2.5, True, False, 2**63 - 1]),
    "button": st.sampled_from(["a", 2, 0]), "code": st.sampled_from(["E1", 7, -1]),
    "uptime_s": st.integers(0, 10**9), "reconnects": st.integers(0, 9),
    "free_mem": st.integers(0, 10**6), "records_dropped": st.integers(0, 9),
    "reset_cause": st.sampled_from(["power_on", "watchdog"]),
    "last_error": st.sampled_from(["OSError: 5", ""]), "interval_s": st.integers(-5, 3600),
}
READING_KEYS = ["temperature_c", "humidity_pct", "pressure_hpa", "light_lux", "battery_pct",
                "rssi_dbm"]


@st.composite
def record(draw: st.DrawFn) -> Any:
    kind = draw(mostly(st.sampled_from(["reading", "event"]), st.just("other")))
    rec: dict[str, Any] = {"t": draw(times)} if draw(st.integers(0, 29)) else {}
    if kind == "reading":
        rec["type"] = "reading"
        for k in READING_KEYS:
            required = k in ("temperature_c", "humidity_pct")
            if draw(st.integers(0, 29)) if required else draw(st.booleans()):
                rec[k] = draw(mostly(numbers | st.none(), values))
    elif kind == "event":
        rec["type"] = "event"
        rec["event"] = draw(mostly(st.sampled_from(EVENT_NAMES), st.sampled_from(BAD_EVENT_NAMES)))
        for k, good in EVENT_VALUES.items():
            if draw(st.integers(0, 3)) == 0:
                rec[k] = draw(mostly(good | st.none(), values))
    else:
        return draw(values | st.just({"type": draw(st.sampled_from(["x", None, 1]))}))
    if not draw(st.integers(0, 29)):
        rec[draw(st.sampled_from(["zz", "newer_field", "Bad-Key", "type"]))] = draw(values)
    return rec


envelopes = st.fixed_dictionaries(
    {"v": mostly(st.just(1), st.sampled_from([2, 1.0, True, "1"])),
     "device_id": mostly(st.just("dev-1"), st.sampled_from(["dev-2", "dev-1\n", 5])),
     "boot": mostly(st.integers(0, 3), st.sampled_from([-1, 2**63, "1", None, 1.0])),
     "seq": mostly(st.integers(0, 2**63 - 1), st.sampled_from([-1, 2**63, None])),
     "fw": mostly(st.just("1.0"), st.sampled_from(["", 3, None])),
     "hw": st.just("hw"), "sent_ms": mostly(st.just(T), st.sampled_from([-1, 2**64, 1.5])),
     "records": st.lists(record(), max_size=4)},
    optional={"iid": mostly(st.just("abcdef12"),
                            st.sampled_from(["short", "ABCDEFGH", "abcdef12\n", None, 7])),
              "extra_envelope_key": values})


# 1000 envelopes, each in two spellings (the C path takes only the compact one)
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(envelopes, mostly(st.just(TOPIC), st.sampled_from(["devices/dev-2/telemetry",
                                                         "devices/x/y", "devices/dev-1"])))
def test_random_envelopes_fast_equals_slow(doc: dict[str, Any], topic: str) -> None:
    same_as_slow_path(topic, json.dumps(doc).encode(), T)
    # as firmware writes it: no spaces, UTF-8 as is
    same_as_slow_path(topic, json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
                      T)


def test_duplicate_keys_and_odd_json_decline_or_agree() -> None:
    good = {"t": T, "type": "reading", "temperature_c": 1, "humidity_pct": 2}
    env = json.dumps({"v": 1, "device_id": "dev-1", "boot": 0, "seq": 0, "fw": "1", "hw": "h",
                      "sent_ms": T, "records": [good]})
    odd = [env.replace('"t": ', '"t": 5, "t": '),  # the last of a repeated key counts
           env.replace('"v": 1', '"v": 2, "v": 1'),
           env.replace('"temperature_c": 1', '"temperature_c": "\\ud800"'),
           "\ufeff" + env, env + " x", env.replace('"fw": "1"', '"fw": "\\u0000"')]
    for text in odd:
        same_as_slow_path(TOPIC, text.encode(), T)
    assert same_as_slow_path(TOPIC, env.encode(), T) == {"native", "msgspec"}


def envelope_text(*records: str, iid: str = "") -> bytes:
    """An envelope spelt exactly as given; @T in it is the time T."""
    return ('{"v":1,"device_id":"dev-1",' + iid + '"boot":0,"seq":0,"fw":"1","hw":"h",'
            '"sent_ms":@T,"records":[' + ",".join(records) + "]}").replace("@T", str(T)).encode()


@pytest.mark.parametrize("number", [
    "0.1", "0.30000000000000004", "1e-7", "1E5", "1e+5", "-0.0", "-0", "0", "21.37",
    "123456789012345678901234567890", "1.7976931348623157e308", "5e-324",
    "2.2250738585072014e-308", "9007199254740993.0", "9007199254740992", "-9007199254740992",
    "4.35", "1234567.8901234567", "0.000000000000000000000000001", "1e22", "1e23",
    "8.98846567431158e307", "1e400", "-1e400", "1.", ".5", "01", "1e", "+1", "0x10",
    "9007199254740993", "NaN", "Infinity", "true", "\"1\"", "[1]", "1 2"])
def test_numbers_read_as_the_slow_path_reads_them(number: str) -> None:
    """Every spelling of a reading's number: the C path's own float reading (exact for
    short decimals, Python's otherwise) agrees with float() to the last bit, or declines."""
    rec = '{"t":@T,"type":"reading","temperature_c":' + number + ',"humidity_pct":null}'
    same_as_slow_path(TOPIC, envelope_text(rec), T)


@settings(max_examples=600, deadline=None)
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?",
                     fullmatch=True) | st.floats(allow_nan=False, allow_infinity=False).map(repr))
def test_random_number_spellings(number: str) -> None:
    rec = '{"t":@T,"type":"reading","temperature_c":' + number + ',"humidity_pct":null}'
    took = same_as_slow_path(TOPIC, envelope_text(rec), T)
    exact_int = "." not in number and "e" not in number.lower() and abs(int(number)) <= 2**53
    if exact_int or (("." in number or "e" in number.lower()) and math.isfinite(float(number))):
        assert "native" in took, number


@pytest.mark.parametrize("value", ['"on"', "7", "-3", "2.5", "1e16", "-0.0", "true", "false",
                                   "9223372036854775807", "9223372036854775808", "0.1", "1e300"])
def test_event_values_keep_their_json_spelling(value: str) -> None:
    rec = '{"t":@T,"type":"event","event":"setting_changed","name":"m","value":' + value + "}"
    same_as_slow_path(TOPIC, envelope_text(rec), T)


def test_the_c_path_takes_the_plain_forms() -> None:
    """Not declining everything: spaces and newlines anywhere JSON allows them, keys in
    any order, an install id, nulls, every event kind's fields."""
    reading = '{"t":@T,"type":"reading","temperature_c":21.5,"humidity_pct":40}'
    shuffled = ('{ "humidity_pct" : null ,\n "type" : "reading", "t" : @T,'
                ' "rssi_dbm": -61, "temperature_c": 3 }')
    heartbeat = ('{"type":"event","t":@T,"event":"heartbeat","uptime_s":5,"reconnects":0,'
                 '"free_mem":1000,"records_dropped":null,"interval_s":-1,"reset_cause":"x"}')
    error = '{"t":@T,"type":"event","event":"error","code":7,"last_error":"OSError: 5"}'
    for payload in (envelope_text(reading), envelope_text(reading, shuffled, heartbeat, error),
                    envelope_text(reading, iid='"iid":"abcdef12",'),
                    envelope_text(iid='"iid":null,'), b" \n" + envelope_text(reading) + b"\r\n"):
        assert "native" in same_as_slow_path(TOPIC, payload, T), payload


def test_the_c_path_declines_what_it_does_not_read() -> None:
    """Escapes, non-ASCII text and unknown envelope keys are valid, and left to msgspec;
    a required event field that is null, to the slow path."""
    reading = '{"t":@T,"type":"reading","temperature_c":1,"humidity_pct":2}'
    for payload, others in (
            (envelope_text(reading).replace(b'"fw":"1"', b'"fw":"1\\u0031"'), {"msgspec"}),
            (envelope_text(reading).replace(b'"fw":"1"', '"fw":"ü"'.encode()), {"msgspec"}),
            (envelope_text(reading, iid='"note":{"a":[1]},'), {"msgspec"}),
            (envelope_text('{"t":@T,"type":"event","event":"error","code":null}'), set())):
        assert same_as_slow_path(TOPIC, payload, T) == others, payload


VALUES = {"feature": '"eco"', "name": '"mode"', "value": '"on"', "code": '"E1"', "uptime_s": "5",
          "reconnects": "0", "free_mem": "1000"}


@pytest.mark.parametrize("kind", sorted(contract._EVENT_REQUIRED))
def test_each_event_kind_needs_what_the_contract_requires(kind: str) -> None:
    """The C path's table of required fields is the contract's: with every one it takes
    the event; without any one of them, or with it null, it leaves it to the slow path."""
    required = contract._EVENT_REQUIRED[kind]

    def event(fields: dict[str, str]) -> bytes:
        body = "".join(f',"{k}":{v}' for k, v in fields.items())
        return envelope_text('{"t":@T,"type":"event","event":"' + kind + '"' + body + "}")
    whole = {k: VALUES[k] for k in required}
    assert "native" in same_as_slow_path(TOPIC, event(whole), T)
    for k in required:
        assert "native" not in same_as_slow_path(TOPIC, event(
            {f: v for f, v in whole.items() if f != k}), T), k
        assert "native" not in same_as_slow_path(TOPIC, event({**whole, k: "null"}), T), k


def test_undo_and_take_leave_exactly_the_rest() -> None:
    cols = NativeColumns()
    reading = '{"t":@T,"type":"reading","temperature_c":@V,"humidity_pct":null}'
    first = envelope_text(reading.replace("@V", "1"), reading.replace("@V", "2"))
    second = envelope_text(reading.replace("@V", "3")).replace(b'"seq":0', b'"seq":1')
    assert cols.add("dev-1", first, T) == (None, 0, 0, T)
    assert cols.add("dev-1", second, T) == (None, 0, 1, T)
    cols.undo()
    assert len(cols) == 2
    assert cols.add("dev-1", b'{"v":1,"device_id":"dev-1","records":[' + reading.encode()
                    + b']', T) is None
    assert len(cols) == 2
    got = cols.tables()["readings"].to_pylist()
    assert [(r["seq"], r["idx"], r["temperature_c"]) for r in got] == [(0, 0, 1.0), (0, 1, 2.0)]
    assert len(cols) == 0 and cols.tables() == {}


def test_the_c_path_bounds_are_the_contract_s() -> None:
    assert (native_v1.MAX_RECORDS, native_v1.MIN_TIME_MS, native_v1.MAX_CLOCK_AHEAD_MS) == (
        contract.MAX_RECORDS, contract.MIN_TIME_MS, contract.MAX_CLOCK_AHEAD_MS)


PLAIN = envelope_text(
    '{"t":@T,"type":"reading","temperature_c":21.5,"humidity_pct":40,"rssi_dbm":-61}',
    '{"t":@T,"type":"event","event":"setting_changed","name":"mode","value":2.5,"code":7}',
    iid='"iid":"abcdef12",')


def test_every_cut_of_a_plain_envelope() -> None:
    """A message cut short anywhere (or cut from the front): the C path must neither read
    past the end nor take a part as a whole."""
    assert "native" in same_as_slow_path(TOPIC, PLAIN, T)
    for n in range(len(PLAIN)):
        assert "native" not in same_as_slow_path(TOPIC, PLAIN[:n], T), n
        same_as_slow_path(TOPIC, PLAIN[n + 1:], T)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(PLAIN) - 1), st.integers(0, 255)), min_size=1,
                max_size=4))
def test_bytes_of_a_plain_envelope_changed(changes: list[tuple[int, int]]) -> None:
    """Any byte changed to any other (a quote, a digit, a brace, a control byte, UTF-8
    halves): whatever the C path takes, the slow path takes into the same rows."""
    payload = bytearray(PLAIN)
    for at, byte in changes:
        payload[at] = byte
    same_as_slow_path(TOPIC, bytes(payload), T)
