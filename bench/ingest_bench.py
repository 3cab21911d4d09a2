"""Ingest throughput against the C client, in one run on one broker.

    .venv/bin/python bench/ingest_bench.py [--records 200000]

For each consumer the broker first holds the whole load for the consumer's persistent
session (published at QoS 1 while it is offline); then the consumer starts and drains
it. Measured from the first message it takes to the last one it has stored:
  (a) mosquitto_sub -c -q 1 writing payloads to a file (fsynced at the end): the limit
      of this machine and broker, durable only at the very end;
  (b) a naive aiomqtt consumer writing Parquet every 10K rows (bench/naive_aiomqtt.py),
      acks on receipt, not durable;
  (c) fleetpulse ingest: every message in the fsynced write-ahead log before its ack;
with 1 and with 10 records per message, plus each consumer's peak RSS.
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest import stats as ingest_stats
from fleetpulse.simulators.publisher import Publisher

T0 = 1767268800000
FILTER = "devices/+/telemetry"


def envelope(i: int, per_message: int, devices: int = 500) -> tuple[str, bytes]:
    dev = f"bench-{i % devices:04d}"
    seq = i // devices
    recs = [{"t": T0 + seq * 1000 + k, "type": "reading", "temperature_c": 21.5,
             "humidity_pct": 40.0} for k in range(per_message)]
    env = {"v": 1, "device_id": dev, "boot": 1, "seq": seq, "fw": "1.4.0", "hw": "bench",
           "sent_ms": T0, "records": recs}
    return f"devices/{dev}/telemetry", json.dumps(env, separators=(",", ":")).encode()


def preload(b: Broker, messages: int, per_message: int) -> None:
    """Publish the load at QoS 1 and wait until the broker acknowledged all of it."""
    pub = Publisher(b.host, b.port, *_creds(b, "fleetpulse-simulator"))
    try:
        for i in range(messages):
            pub.publish(*envelope(i, per_message))
        pub.drain(timeout=300)
    finally:
        pub.close()


def _creds(b: Broker, account: str) -> tuple[str, str]:
    c = b.credentials(account)
    return c.username, c.password


def drop_session(b: Broker, client_id: str) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(*_creds(b, "fleetpulse-ingest"))
    c.connect(b.host, b.port, clean_start=True, properties=props)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


class PeakRss:
    """Highest VmHWM seen for a process while it runs, polled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.kb = 0
        self._pid = pid
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.kb = max(self.kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.kb / 1024


def run_mosquitto_sub(b: Broker, messages: int, per: int, work: Path) -> tuple[float, float]:
    cid = "bench-c"
    user, password = _creds(b, "fleetpulse-ingest")
    auth = ["-u", user, "-P", password]
    subprocess.run(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-c", "-i", cid, "-q",
                    "1", "-t", FILTER, "-W", "1", *auth], capture_output=True)
    preload(b, messages, per)
    out = work / "mosquitto_sub.out"
    with open(out, "wb") as f:
        p = subprocess.Popen(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-c", "-i", cid,
                              "-q", "1", "-t", FILTER, "-C", str(messages), "-F", "%U %p",
                              *auth],
                             stdout=f)
        rss = PeakRss(p.pid)
        p.wait()
        f.flush()
        os.fsync(f.fileno())
        end = time.time()
    peak = rss.stop()
    with open(out, "rb") as f:
        first = float(f.readline().split(b" ", 1)[0])
    drop_session(b, cid)
    return end - first, peak


def run_naive(b: Broker, messages: int, per: int, work: Path) -> tuple[float, float]:
    cid = "bench-naive"
    out = work / "naive"
    out.mkdir()
    # A first run with 0 messages to wait for creates the persistent session.
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    c.username_pw_set(*_creds(b, "fleetpulse-ingest"))
    c.connect(b.host, b.port)
    c.subscribe(FILTER, qos=1)
    c.loop_start()
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()
    preload(b, messages, per)
    p = subprocess.Popen([sys.executable, str(Path(__file__).with_name("naive_aiomqtt.py")),
                          b.host, str(b.port), cid, str(messages), str(out)],
                         stdout=subprocess.PIPE, text=True, env=_env(b))
    rss = PeakRss(p.pid)
    line, _ = p.communicate()
    peak = rss.stop()
    r = json.loads(line)
    drop_session(b, cid)
    return r["last"] - r["first"], peak


def run_fleetpulse(b: Broker, messages: int, per: int, work: Path) -> tuple[float, float]:
    cid = "bench-fleetpulse"
    data = work / "fleetpulse"
    cmd = [sys.executable, "-m", "fleetpulse.gateway.cli", "ingest", "--broker", b.address,
           "--data", str(data), "--client-id", cid, "--flush-seconds", "1"]
    first_run = subprocess.Popen(cmd, env=_env(b))
    _wait(lambda: (ingest_stats.read(data, cid) or {}).get("subscribed"), 30)
    first_run.terminate()
    first_run.wait()
    preload(b, messages, per)
    ingest_stats.stats_path(data, cid).unlink()
    p = subprocess.Popen(cmd, env=_env(b))
    rss = PeakRss(p.pid)
    s = _wait(lambda: (lambda s: s if s.get("messages", 0) >= messages else None)(
        ingest_stats.read(data, cid) or {}), 600)
    p.terminate()
    assert p.wait() == 0
    peak = rss.stop()
    final = ingest_stats.read(data, cid) or {}
    assert final["readings"] == messages * per, final
    drop_session(b, cid)
    return s["last_durable_at"] - s["first_message_at"], peak


def _env(b: Broker) -> dict[str, str]:
    user, password = _creds(b, "fleetpulse-ingest")
    return {**os.environ, "FLEETPULSE_MQTT_USERNAME": user, "FLEETPULSE_MQTT_PASSWORD": password}


def _wait(cond, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cond()
        if r:
            return r
        time.sleep(0.02)
    raise SystemExit("timed out")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    if not shutil.which("mosquitto_sub"):
        raise SystemExit("mosquitto_sub not found: apt-get install mosquitto-clients")
    work = Path(tempfile.mkdtemp(prefix="fleetpulse-bench-"))
    rows = []
    with Broker(free_port(), work / "broker") as b:
        for per in (1, 10):
            messages = args.records // per
            results = {}
            for name, fn in (("mosquitto_sub -> file", run_mosquitto_sub),
                             ("naive aiomqtt -> Parquet/10K", run_naive),
                             ("fleetpulse ingest (WAL+fsync)", run_fleetpulse)):
                w = work / f"{per}-{name.split()[0]}"
                w.mkdir()
                seconds, rss = fn(b, messages, per, w)
                results[name] = (seconds, rss)
                print(f"{per} rec/msg  {name:32s} {messages / seconds:9,.0f} msg/s "
                      f"{args.records / seconds:9,.0f} rec/s  peak RSS {rss:6.1f} MB",
                      file=sys.stderr)
            base = args.records / results["mosquitto_sub -> file"][0]
            for name, (seconds, rss) in results.items():
                rate = args.records / seconds
                rows.append(f"| {per} | {name} | {messages:,} | {rate:,.0f} | "
                            f"{rate / base:.2f} | {rss:.0f} |")
    shutil.rmtree(work, ignore_errors=True)
    print("| records/msg | consumer | messages | records/s | vs mosquitto_sub | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
