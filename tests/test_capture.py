"""`fleetpulse record` and `fleetpulse replay`: captures recorded from a real broker,
replayed offline through ingest's pipeline, and checked against golden metrics."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
from conftest import wait_until
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetpulse.analytics import dataset
from fleetpulse.gateway.broker import Broker
from fleetpulse.simulators import capture
from fleetpulse.simulators.record import record
from fleetpulse.simulators.replay import golden, replay_offline

T = 1767268800000


def _envelope(device: str, seq: int) -> bytes:
    return json.dumps({"v": 1, "device_id": device, "boot": 1, "seq": seq, "fw": "1.0",
                       "hw": "h", "sent_ms": T + seq * 1000, "records": [
                           {"t": T + seq * 1000, "type": "event", "event": "feature_used",
                            "feature": "eco"},
                           {"t": T + seq * 1000, "type": "reading", "temperature_c": 21.5,
                            "humidity_pct": 40}]}).encode()


def _publisher(broker: Broker) -> mqtt.Client:
    cred = broker.credentials("fleetpulse-simulator")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="capture-test-pub",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(cred.username, cred.password)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


# (topic, payload, qos, retain, user properties)
TRAFFIC = [
    ("devices/cap-1/telemetry", _envelope("cap-1", 0), 1, False, [("src", "test")]),
    ("devices/cap-1/telemetry", bytes(range(256)), 1, False, None),  # every byte value
    ("devices/cap-1/telemetry", _envelope("cap-1", 1), 0, False, None),
    ("devices/cap-2/status", b"online", 1, True, [("a", "1"), ("b", "2")]),
    ("devices/cap-2/telemetry", b"{not json", 1, False, None),
    ("devices/cap-2/telemetry", _envelope("cap-2", 0), 1, False, None),
]


def test_record_is_lossless_and_duckdb_reads_it(broker: Broker, tmp_path: Path) -> None:
    out = _traffic_capture(broker, tmp_path)

    got = list(capture.read(out))
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        (topic, payload, qos, retain) for topic, payload, qos, retain, _ in TRAFFIC]
    assert [(m.properties or {}).get("UserProperty") for m in got] == [
        [list(kv) for kv in user] if user else None for *_, user in TRAFFIC]
    assert [m.seq for m in got] == list(range(len(TRAFFIC)))
    assert all(b.offset_ns >= a.offset_ns for a, b in itertools.pairwise(got))
    # DuckDB reads a capture as it is, without fleetpulse
    assert duckdb.sql(f"SELECT topic, count(*) FROM '{out}/*.parquet' GROUP BY ALL "
                      "ORDER BY 1").fetchall() == [
        ("devices/cap-1/telemetry", 3), ("devices/cap-2/status", 1),
        ("devices/cap-2/telemetry", 2)]
    assert capture.manifest(out)["version"] == capture.VERSION

    # offline replay: what ingest subscribes to (telemetry, not the status message), with
    # the same validation and quarantine as from a broker
    r = replay_offline(out, tmp_path / "data")
    assert r.messages == len(TRAFFIC) - 1 and r.records == 6
    con = dataset.connect(tmp_path / "data")
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] >= 2


async def test_a_finished_recording_ends_its_broker_session(broker: Broker,
                                                            tmp_path: Path) -> None:
    """Otherwise the broker would go on queueing every message for a recorder that left."""
    import asyncio

    from fleetpulse.ingest.mqtt_subscriber import Subscriber

    t, _ = _record_in_thread(broker, tmp_path / "cap", 1, "ends-session")
    pub = _publisher(broker)
    pub.publish("devices/s-1/telemetry", b"x", qos=1).wait_for_publish(5)
    await asyncio.to_thread(t.join, 30)
    cred = broker.credentials("fleetpulse-recorder")
    again = Subscriber(broker.host, broker.port, "ends-session", clean_start=False,
                       username=cred.username, password=cred.password)
    await again.connect()
    try:
        assert not again.session_present
    finally:
        await again.close()
        pub.loop_stop()
        pub.disconnect()


def _capture_of(tmp_path: Path, n: int = 40) -> Path:
    w = capture.CaptureWriter(tmp_path / "cap")
    for i in range(n):
        dev = f"g-{i % 4}"
        w.add(capture.Message(i, (T + i * 1000) * 1_000_000, i * 1_000_000_000,
                              f"devices/{dev}/telemetry", _envelope(dev, i), 1, False))
    w.flush()
    return tmp_path / "cap"


def test_golden_passes_and_a_changed_definition_fails_naming_it(tmp_path: Path,
                                                                monkeypatch) -> None:
    cap = _capture_of(tmp_path)
    gold = tmp_path / "golden.json"
    assert golden(cap, gold, update=True) == []
    assert golden(cap, gold) == []
    argv = [sys.executable, "-m", "fleetpulse", "replay", str(cap), "--golden",
            str(gold)]
    ok = subprocess.run(argv, capture_output=True, text=True)
    assert ok.returncode == 0 and "metrics equal" in ok.stdout, ok.stderr
    ok = subprocess.run([*argv, "--format", "json"], capture_output=True, text=True)
    assert (ok.returncode, json.loads(ok.stdout)) == (0, []), ok.stderr  # for CI
    assert "metrics equal" in ok.stderr

    # for CI, the differences as JSON: a golden file with one count changed
    doc = json.loads(gold.read_text())
    doc["metrics"]["active_days_per_week"][0]["devices"] += 1
    (tmp_path / "off.json").write_text(json.dumps(doc))
    off = subprocess.run([*argv[:-1], str(tmp_path / "off.json"), "--format", "json"],
                         capture_output=True, text=True)
    assert off.returncode == 1, off.stderr
    assert [(d["metric"], d["got"] + 1 == d["expected"]) for d in json.loads(off.stdout)] \
        == [("active_days_per_week", True)]

    # a test's copy of the metric library with one definition changed
    changed = tmp_path / "metrics.sql"
    changed.write_text(dataset.METRICS_SQL.read_text().replace(
        "round(count(*) / any_value(a.n), 4) AS share_of_active",
        "round(count(*) / any_value(a.n), 3) * 2 AS share_of_active"))
    monkeypatch.setattr(dataset, "METRICS_SQL", changed)
    dataset._metrics_sql.cache_clear()  # read once per process
    try:
        diff = golden(cap, gold)
    finally:
        monkeypatch.undo()
        dataset._metrics_sql.cache_clear()
    assert diff and {c.metric for c in diff} == {"feature_adoption"}
    assert any("share_of_active" in c.key for c in diff)


def test_replay_says_what_to_do(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "fleetpulse", "replay", str(tmp_path)]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 2 and "--data DIR (offline" in r.stderr
    r = subprocess.run([*argv, "--data", str(tmp_path / "d")], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a capture" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_sigkill_while_recording_loses_at_most_the_last_second(broker: Broker,
                                                               tmp_path: Path) -> None:
    import signal
    import time

    cred = broker.credentials("fleetpulse-recorder")
    (tmp_path / "pw").write_text(cred.password + "\n")
    out = tmp_path / "cap"
    proc = subprocess.Popen([sys.executable, "-m", "fleetpulse", "record",
                             "--broker", broker.address, "--out", str(out), "--username",
                             cred.username, "--password-file", str(tmp_path / "pw")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pub = _publisher(broker)
    try:
        # the manifest is written once the recorder is subscribed
        wait_until("the recorder subscribed", (out / capture.MANIFEST).exists, timeout=20)
        sent_at: list[float] = []
        for i in range(300):  # 3 s of messages, one every 10 ms
            pub.publish("devices/kill-1/telemetry", _envelope("kill-1", i), qos=1)
            sent_at.append(time.monotonic())
            time.sleep(0.01)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        pub.loop_stop()
        pub.disconnect()
    got = {json.loads(m.payload)["seq"] for m in capture.read(out)}
    older = {i for i, t in enumerate(sent_at) if t < killed_at - 1.2}
    assert older and older <= got, f"lost {sorted(older - got)[:5]}"
    assert got <= set(range(300))  # and what is on disk is whole


def _record_in_thread(broker: Broker, out: Path, count: int, name: str):
    cred = broker.credentials("fleetpulse-recorder")
    ready, result = threading.Event(), {}

    def run() -> None:
        result["r"] = record(broker.host, broker.port, out, "devices/#", count=count,
                             duration=60, username=cred.username, password=cred.password,
                             client_id=name, progress=False, ready=ready)

    t = threading.Thread(target=run)
    t.start()
    assert ready.wait(10)
    return t, result


def _traffic_capture(broker: Broker, tmp_path: Path) -> Path:
    out = tmp_path / "first"
    t, _ = _record_in_thread(broker, out, len(TRAFFIC), "roundtrip-rec-1")
    pub = _publisher(broker)
    for topic, payload, qos, retain, user in TRAFFIC:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/octet-stream"
        if user:
            props.UserProperty = user
        pub.publish(topic, payload, qos=qos, retain=retain, properties=props).wait_for_publish(5)
    t.join(30)
    pub.publish("devices/cap-2/status", b"", qos=1, retain=True).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    return out


def test_round_trip_through_a_second_broker_is_byte_for_byte(broker: Broker,
                                                             tmp_path: Path) -> None:
    from fleetpulse.gateway.broker import free_port
    from fleetpulse.simulators.replay import replay_broker

    first = _traffic_capture(broker, tmp_path)
    with Broker(free_port(), tmp_path / "broker2") as second:
        t, _ = _record_in_thread(second, tmp_path / "second", len(TRAFFIC), "roundtrip-rec-2")
        cred = second.credentials("fleetpulse-simulator")
        r = replay_broker(first, second.host, second.port, fast=True,
                          username=cred.username, password=cred.password)
        t.join(30)
        assert r.messages == len(TRAFFIC)

    def key(m: capture.Message) -> tuple:
        return (m.topic, m.payload, m.qos, m.retain, m.properties)

    a, b = list(capture.read(first)), list(capture.read(tmp_path / "second"))
    assert [key(m) for m in b] == [key(m) for m in a]
    assert all((m.properties or {}).get("ContentType") == "application/octet-stream" for m in a)


def test_replay_completes_qos_2_and_reports_refused_messages(broker: Broker,
                                                            tmp_path: Path) -> None:
    import pytest

    from fleetpulse.errors import UserError
    from fleetpulse.simulators.replay import replay_broker

    def one(name: str, topic: str, qos: int) -> Path:
        w = capture.CaptureWriter(tmp_path / name)
        w.add(capture.Message(0, T * 1_000_000, 0, topic, b"\x00\xff payload", qos))
        w.flush()
        return tmp_path / name

    cred = broker.credentials("fleetpulse-simulator")
    t, _ = _record_in_thread(broker, tmp_path / "got", 1, "qos2-rec")
    r = replay_broker(one("two", "devices/q-1/telemetry", 2), broker.host, broker.port,
                      fast=True, username=cred.username, password=cred.password)
    t.join(30)
    assert r.messages == 1  # returned only once the broker completed the QoS 2 handshake
    [m] = capture.read(tmp_path / "got")
    assert (m.topic, m.payload) == ("devices/q-1/telemetry", b"\x00\xff payload")
    # the simulator account may not publish configuration: the broker says so per message
    with pytest.raises(UserError, match=r"refused 1 messages .*0x87"):
        replay_broker(one("config", "devices/q-1/config", 1), broker.host, broker.port,
                      fast=True, username=cred.username, password=cred.password)


def _received_at(broker: Broker, cap: Path, n: int, speed: float, tmp_path: Path):
    """`fleetpulse replay --broker` of `cap` at `speed` while an independent subscriber,
    the C mosquitto_sub in a process of its own, notes when each message (payload: its
    index) arrives; returns (arrival times in s, replay's printed line)."""
    import time

    sub_cred = broker.credentials("fleetpulse-recorder")
    sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                            "-u", sub_cred.username, "-P", sub_cred.password,
                            "-t", "devices/tick-1/telemetry", "-q", "1", "-F", "%U %p"],
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    cred = broker.credentials("fleetpulse-simulator")
    (tmp_path / "pw").write_text(cred.password + "\n")
    got: dict[int, float] = {}
    try:
        # subscribed once a probe comes back (retained: it waits for the subscription)
        probe = _publisher(broker)
        probe.publish("devices/tick-1/telemetry", b"probe", qos=1, retain=True).wait_for_publish(5)
        assert sub.stdout.readline().split(" ", 1)[1].strip() == "probe"
        probe.publish("devices/tick-1/telemetry", b"", qos=1, retain=True).wait_for_publish(5)
        probe.loop_stop()
        probe.disconnect()
        r = subprocess.run([sys.executable, "-m", "fleetpulse", "replay", str(cap),
                            "--broker", broker.address, "--speed", str(speed), "--username",
                            cred.username, "--password-file", str(tmp_path / "pw")],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            stamp, _, payload = sub.stdout.readline().strip().partition(" ")
            if payload.isdigit():
                got[int(payload)] = float(stamp)
    finally:
        sub.kill()
        sub.wait()
    assert len(got) == n
    return got, r.stdout


def test_publish_properties_read_as_paho_writes_them() -> None:
    """Captures recorded through paho (and the capture format's names) read the same as
    the recorder's own decoding, and encoding gives back the bytes."""
    from fleetpulse.ingest.mqtt_subscriber import read_body_varint
    from fleetpulse.simulators import publish_properties

    p = Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    p.MessageExpiryInterval = 3600
    p.ContentType = "application/json"
    p.ResponseTopic = "devices/d-1/reply"
    p.CorrelationData = bytes(range(0, 256, 17))
    p.UserProperty = [("fw", "1.2"), ("fw", "again"), ("ünï", "côdé")]
    packed = p.pack()
    length, start = read_body_varint(packed, 0, len(packed))
    raw = packed[start:start + length]
    got = publish_properties.decode(raw)
    want = p.json()
    want["UserProperty"] = [list(kv) for kv in want["UserProperty"]]
    assert got == want
    assert publish_properties.encode(got) == raw
    assert publish_properties.decode(b"") is None and publish_properties.encode(None) == b""


def test_replay_keeps_to_its_schedule(tmp_path: Path) -> None:
    """A 30 s capture replayed at speed 1 and 10: each message reaches an independent
    subscriber on time, p99 lag under 20 ms against the capture's schedule, no drift.
    (30 s, not 60: the suite's budget; a schedule that slips shows within seconds.)"""
    w = capture.CaptureWriter(tmp_path / "timed")
    n = 150
    for i in range(n):  # 30 s at 5 messages a second
        w.add(capture.Message(i, 0, i * 200_000_000, "devices/tick-1/telemetry",
                              str(i).encode(), 1, False))
    w.flush()
    from fleetpulse.gateway.broker import free_port

    # A broker of its own: the session broker queues every telemetry message for the
    # offline ingest sessions of earlier tests, and its autosave of that backlog would
    # be timed here too.
    def measured(own: Broker, speed: float) -> tuple[float, float, list[float], str]:
        got, line = _received_at(own, tmp_path / "timed", n, speed, tmp_path)
        # the schedule's origin as the subscriber sees it: the earliest (arrival - due)
        offsets = [got[i] - i * 0.2 / speed for i in range(n)]
        lag_ms = sorted((o - min(offsets)) * 1000 for o in offsets)
        said = re.search(r"lag p50 ([0-9.]+) ms, p99 ([0-9.]+) ms", line)
        assert said, line
        return lag_ms[int(0.99 * n) - 1], float(said.group(2)), offsets, line

    with Broker(free_port(), tmp_path / "broker") as own:
        for speed in (1.0, 10.0):
            p99, own_p99, offsets, line = measured(own, speed)
            if p99 >= 20 and own_p99 < 20:
                # The replayer kept its schedule and the lag arose after it (broker or
                # subscriber stalled: seen once as 1.8 s on a loaded 2-core VM); such a
                # stall is not the replayer's, so that speed is measured once more.
                print(f"speed {speed}: subscriber p99 {p99:.1f} ms with the replayer on "
                      "time; measuring again")
                p99, own_p99, offsets, line = measured(own, speed)
            print(f"speed {speed}: subscriber p99 lag {p99:.1f} ms; {line.strip()}")
            assert own_p99 < 20, line
            assert p99 < 20
            # No drift: the last messages are as late as the first. Medians of 30 at each
            # end, since one message held up by the VM (the first, 25 ms, seen in CI) is
            # jitter, already bounded by the p99 above; a schedule that slips accumulates
            # and moves every message of the tail.
            head, tail = sorted(offsets[:30]), sorted(offsets[-30:])
            assert abs(tail[15] - head[15]) * 1000 < 20


def test_retime_and_clone(tmp_path: Path) -> None:
    from fleetpulse.simulators.replay import messages_of

    cap = _capture_of(tmp_path, n=8)
    stream, offset = messages_of(cap, retime="2027-03-01")
    moved = list(stream)
    midnight = 1803859200000  # 2027-03-01T00:00Z
    assert offset == midnight - T
    first = json.loads(moved[0].payload)
    assert first["records"][0]["t"] == midnight and first["sent_ms"] == midnight
    assert moved[0].received_ns == (T + offset) * 1_000_000
    again = list(messages_of(cap, retime="2027-03-01")[0])
    assert [m.payload for m in again] == [m.payload for m in moved]  # deterministic
    cloned = list(messages_of(cap, clones=3)[0])
    assert len(cloned) == 24
    assert [m.topic for m in cloned[:3]] == ["devices/g-0/telemetry", "devices/g-0-c1/telemetry",
                                             "devices/g-0-c2/telemetry"]
    assert [json.loads(m.payload)["device_id"] for m in cloned[:3]] == ["g-0", "g-0-c1", "g-0-c2"]
    assert cloned[0].payload == next(capture.read(cap)).payload  # clone 0 as recorded
    r = replay_offline(cap, tmp_path / "data", clones=3, retime="2027-03-01")
    con = dataset.connect(tmp_path / "data")
    assert con.execute("SELECT count(DISTINCT device_id), min(ts)::DATE FROM events"
                       ).fetchone() == (12, datetime.date(2027, 3, 1))
    assert r.rejected == 0 and r.offset_ms == offset


CHECKED_IN = Path(__file__).parent / "captures" / "fleet"
GOLDEN_FILE = Path(__file__).parent / "captures" / "fleet.golden.json"


def test_the_checked_in_capture_passes_its_golden_file() -> None:
    """The capture tests/captures/make_capture.py recorded from the simulator, the
    firmware in MicroPython and a hostile client, replayed offline: every metric and
    every quarantine reason as approved."""
    assert sum(p.stat().st_size for p in CHECKED_IN.iterdir()) < 2_000_000
    assert golden(CHECKED_IN, GOLDEN_FILE) == []
    reasons = {r["reason"] for r in json.loads(GOLDEN_FILE.read_text())["metrics"][
        "quarantine_reasons"]}
    assert {"bad_json", "topic_mismatch", "bad_type"} <= reasons
    devices = {m.topic.split("/")[1] for m in capture.read(CHECKED_IN)}
    assert "fw-capture-01" in devices  # the firmware's own traffic is in it


def test_the_checked_in_capture_through_a_real_broker(broker: Broker, start_ingest) -> None:
    """The same capture replayed through mosquitto into a running ingest gives the
    golden numbers too."""
    from paho.mqtt.client import topic_matches_sub

    from fleetpulse.ingest.contract import TELEMETRY_FILTER
    from fleetpulse.simulators.replay import compare, metric_values, replay_broker

    ingest = start_ingest()
    ingest.wait_subscribed()
    telemetry = sum(1 for m in capture.read(CHECKED_IN)
                    if topic_matches_sub(TELEMETRY_FILTER, m.topic))
    cred = broker.credentials("fleetpulse-simulator")
    replay_broker(CHECKED_IN, broker.host, broker.port, fast=True, username=cred.username,
                  password=cred.password, client_id="golden-replay")
    wait_until("ingest took every message", lambda: ingest.stats()["messages"] >= telemetry,
               timeout=60)
    ingest.stop()
    expected = json.loads(GOLDEN_FILE.read_text())["metrics"]
    assert compare(expected, metric_values(ingest.data_dir)) == []


def test_the_pytest_plugin_replays_a_capture_into_a_connection(fleetpulse_replay,
                                                               request) -> None:
    """The fixture users' CI gets from the `pytest11` entry point (not from conftest)."""
    assert request.config.pluginmanager.has_plugin("fleetpulse")
    con = fleetpulse_replay(CHECKED_IN)
    got = con.execute("SELECT count(DISTINCT device_id) FROM devices").fetchone()[0]
    expected = json.loads(GOLDEN_FILE.read_text())["metrics"]["fleet_health"]
    assert got >= 12 and sum(r["devices"] for r in expected) >= 12
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == sum(
        r["messages"] for r in json.loads(GOLDEN_FILE.read_text())["metrics"][
            "quarantine_reasons"])


def test_import_from_mosquitto_sub_and_mqtt_recorder(broker: Broker, tmp_path: Path) -> None:
    import base64
    import csv

    # retained, so mosquitto_sub gets them the moment it subscribes: no race
    pub = _publisher(broker)
    sent = [("devices/imp-1/status", b"online"), ("devices/imp-2/status", b'{"a":1}'),
            ("devices/imp-3/status", b"\x00\xff\x80")]
    for topic, payload in sent:
        pub.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    cred = broker.credentials("fleetpulse-recorder")
    out = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u",
                          cred.username, "-P", cred.password,
                          *(arg for topic, _ in sent for arg in ("-t", topic)),
                          "-F", "%j", "-V", "mqttv5", "-C", "3", "-W", "10"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    for topic, _ in sent:
        pub.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    (tmp_path / "sub.jsonl").write_text(out)
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "record", "--from",
                        str(tmp_path / "sub.jsonl"), "--out", str(tmp_path / "a")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 left out" in r.stderr  # the binary payload: mosquitto_sub printed ""
    got = sorted((m.topic, m.payload, m.retain) for m in capture.read(tmp_path / "a"))
    assert got == [("devices/imp-1/status", b"online", True),
                   ("devices/imp-2/status", b'{"a":1}', True)]

    # mqtt-recorder's CSV: topic, payload, qos, retain, time, delta
    for b64 in (False, True):
        path = tmp_path / f"rec-{b64}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            for i, (topic, payload) in enumerate(sent[:2]):
                text = base64.b64encode(payload).decode() if b64 else payload.decode()
                w.writerow([topic, text, 1, "False", 1767268800.25 + i, 0.5])
        argv = [sys.executable, "-m", "fleetpulse", "record", "--from", str(path),
                "--out", str(tmp_path / f"b-{b64}"), *(["--base64"] if b64 else [])]
        assert subprocess.run(argv, capture_output=True, text=True).returncode == 0
        msgs = list(capture.read(tmp_path / f"b-{b64}"))
        assert [(m.topic, m.payload, m.qos) for m in msgs] == [(t, p, 1) for t, p in sent[:2]]
        assert msgs[1].offset_ns - msgs[0].offset_ns == 1_000_000_000
