"""Bad messages between good ones, through the real broker: good ones land, bad ones are
quarantined with their reason, ingest keeps running."""

from __future__ import annotations

import json

from vectorlib import load_vectors, payload_bytes, preceding_payloads

from fleetpulse.analytics.dataset import connect

T = 1767268800000


def _good(device: str, seq: int) -> dict:
    return {"v": 1, "device_id": device, "boot": 1, "seq": seq, "fw": "1.0.0", "hw": "test",
            "sent_ms": T, "records": [
                {"t": T + seq, "type": "reading", "temperature_c": 20.0 + seq, "humidity_pct": 40},
                {"t": T + seq, "type": "event", "event": "feature_used", "feature": "eco_mode"}]}


def test_bad_messages_are_quarantined_and_good_ones_all_land(start_ingest, publisher) -> None:
    ingest = start_ingest()
    ingest.wait_subscribed()
    bad = [
        ("devices/q-dev/telemetry", b"{this is not json", "bad_json"),
        ("devices/q-dev/telemetry", json.dumps({**_good("q-dev", 99), "pad": "x" * 17000}).encode(),
         "oversize"),
        ("devices/q-dev/telemetry", json.dumps(_good("someone-else", 98)).encode(),
         "topic_mismatch"),
        ("devices/q-dev/telemetry", b"\xff\xfe\x00", "bad_encoding"),
        ("devices/q-dev/telemetry", b"[]", "not_an_object"),
        ("devices/q-dev/telemetry", json.dumps({**_good("q-dev", 97), "v": 9}).encode(),
         "unsupported_version"),
    ]
    sent = 0
    for i in range(30):
        publisher.send("devices/q-dev/telemetry", _good("q-dev", i))
        sent += 1
        if i % 5 == 4:
            topic, payload, _ = bad[i // 5]
            publisher.send(topic, payload)
            sent += 1
    ingest.wait_messages(sent, timeout=30)
    assert ingest.stop() == 0
    s = ingest.stats()
    assert s["messages_rejected"] == len(bad)
    assert s["rejected_by_reason"] == {reason: 1 for _, _, reason in bad}
    con = connect(ingest.data_dir)
    assert con.execute("SELECT count(*), count(DISTINCT seq) FROM readings").fetchone() == (30, 30)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (30,)
    q = con.execute("SELECT reason, payload, topic, detail FROM quarantine ORDER BY reason"
                    ).fetchall()
    assert sorted(r[0] for r in q) == sorted(reason for _, _, reason in bad)
    by_reason = {r[0]: r for r in q}
    for topic, payload, reason in bad:
        assert by_reason[reason][1] == payload  # the raw bytes, untouched
        assert by_reason[reason][2] == topic
        assert by_reason[reason][3]


def test_every_vector_through_the_broker(start_ingest, publisher) -> None:
    """The same vectors as the unit tests, now over MQTT (received time is real here, so
    vectors about receive-relative clocks are skipped, and so are topics the broker
    itself refuses)."""
    vectors = [v for v in load_vectors() if "clock_far_ahead" not in v["name"]
               and " " not in v["topic"] and v["topic"].isprintable()]
    ingest = start_ingest()
    ingest.wait_subscribed()
    sent = 0
    for i, v in enumerate(vectors):
        for earlier in preceding_payloads(v):
            publisher.send(v["topic"], earlier)
            sent += 1
        publisher.send(v["topic"], payload_bytes(v, seq=1000 + i))
        sent += 1
    ingest.wait_messages(sent, timeout=30)
    assert ingest.stop() == 0
    s = ingest.stats()
    want_msg_rejects = sum(1 for v in vectors if "reject" in v["expect"])
    want_rec_rejects = sum(len(v["expect"].get("record_rejects", [])) for v in vectors)
    assert s["messages_rejected"] == want_msg_rejects
    assert s["records_rejected"] == want_rec_rejects
    want_events = sum(v["expect"].get("events_count", len(v["expect"].get("events", [])))
                      for v in vectors if "reject" not in v["expect"])
    assert s["events"] == want_events
    assert s["duplicates"] == 0
