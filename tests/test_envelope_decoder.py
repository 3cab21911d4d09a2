"""The fast path (ingest/envelope_decoder.py + accepted_columns.py) takes only what the
slow path (contract.parse_message) takes, into the same rows; everything else it
declines, and the slow path names the reason."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectorlib import load_vectors, payload_bytes

from fleetpulse.ingest import envelope_decoder
from fleetpulse.ingest.accepted_columns import AcceptedColumns
from fleetpulse.ingest.contract import Rejected, parse_message
from fleetpulse.ingest.schema import TABLES

T = 1767268800000
TOPIC = "devices/dev-1/telemetry"


def same_as_slow_path(topic: str, payload: bytes, received_ms: int) -> bool:
    """Check the fast path against the slow one; True when the fast path took it."""
    env = envelope_decoder.decode(topic, payload, received_ms)
    if env is None:
        return False
    try:
        parsed = parse_message(topic, payload, received_ms)
    except Rejected as e:
        raise AssertionError(f"the fast path took what the slow path refuses: {e}") from None
    assert not parsed.rejects, parsed.rejects
    assert (env.device_id, env.iid, env.boot, env.seq, env.sent_ms) == (
        parsed.device_id, parsed.iid, parsed.boot, parsed.seq, parsed.sent_ms)
    cols = AcceptedColumns()
    cols.add(env, received_ms)
    got = cols.tables()
    for table, rows in (("readings", parsed.readings), ("events", parsed.events)):
        assert all("_new" not in r for r in rows), "a learned column on the fast path"
        want = pa.Table.from_pylist(rows, schema=TABLES[table]).to_pylist()
        have = got[table].to_pylist() if table in got else []
        assert have == want, table
    return True


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_every_vector(vector: dict[str, Any]) -> None:
    took = same_as_slow_path(vector["topic"], payload_bytes(vector), vector["received_ms"])
    expect = vector["expect"]
    if "reject" in expect or expect.get("record_rejects"):
        assert not took
    plain = ("reading_minimal", "reading_all_fields", "every_event_kind", "max_records")
    if vector["name"] in plain:
        assert took, "the fast path declined a plain envelope"


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


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(envelopes, mostly(st.just(TOPIC), st.sampled_from(["devices/dev-2/telemetry",
                                                         "devices/x/y", "devices/dev-1"])))
def test_random_envelopes_fast_equals_slow(doc: dict[str, Any], topic: str) -> None:
    same_as_slow_path(topic, json.dumps(doc).encode(), T)


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
    assert same_as_slow_path(TOPIC, env.encode(), T)
