"""Random bytes and random JSON at the validator and the write path: never a crash."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetpulse.ingest.contract import Rejected, parse_message
from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000
TOPIC = "devices/dev-1/telemetry"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
field_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from([T, T + 5, 0, -1, 2**63, "feature_used", "reading", "event"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers()),
)
record_keys = st.sampled_from([
    "t", "type", "event", "feature", "name", "value", "code", "button", "temperature_c",
    "humidity_pct", "rssi_dbm", "uptime_s", "reconnects", "free_mem", "records_dropped", "zz",
])
records = st.dictionaries(record_keys, field_values, max_size=8) | json_values
envelopes = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", True]), "device_id": st.sampled_from(["dev-1", "x"]),
     "boot": field_values, "seq": st.integers(0, 10), "fw": st.sampled_from(["1.0", "", 3]),
     "hw": st.just("hw"), "sent_ms": st.just(T), "records": st.lists(records, max_size=6)},
)


def _must_not_crash(payload: bytes, topic: str = TOPIC) -> None:
    try:
        parse_message(topic, payload, T)
    except Rejected as e:
        assert e.reason and e.detail


@given(st.binary(max_size=300), st.text(max_size=40))
def test_random_bytes_and_topics(payload: bytes, topic: str) -> None:
    _must_not_crash(payload, topic)


@given(json_values)
def test_random_json(doc: object) -> None:
    _must_not_crash(json.dumps(doc).encode())


# no deadline: the first example pays pyarrow's lazy imports (over 200 ms on a loaded
# machine); this test is about what gets stored, not how fast
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(envelopes, min_size=1, max_size=5))
def test_random_envelopes_flush_to_parquet(docs: list[dict]) -> None:
    """Whatever the validator accepts, Arrow and Parquet must be able to store."""
    with tempfile.TemporaryDirectory() as d:
        pipe = Pipeline(Path(d), "fuzz")
        for doc in docs:
            pipe.handle(TOPIC, json.dumps(doc).encode(), T)
        pipe.flush()
        s = pipe.stats
        assert s.messages == len(docs)
        total = s.readings + s.events + s.records_rejected
        accepted = s.messages - s.messages_rejected
        assert accepted == 0 or total >= 0
