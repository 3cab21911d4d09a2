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
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest import stats as ingest_stats

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
    """Publish the load at QoS 1 and wait until the broker acknowledged all of it
    (pre-encoded packets: through paho, a 1M-message backlog took minutes to build)."""
    _publish_live(b, [envelope(i, per_message) for i in range(messages)])


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
    cmd = [sys.executable, "-m", "fleetpulse", "ingest", "--broker", b.address,
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


# --------------------------------------------------------------------------- live stream
# The consumer runs and is subscribed; the publisher (bench/live_publisher.py, every
# packet encoded beforehand) then sends as fast as the broker takes it. The clock runs
# from the first send to the last row stored: mosquitto_sub's output file fsynced after
# its N-th message, and for the Parquet consumers the file that brings the row total to
# the load's size appearing under its final name. fleetpulse also reports when the last
# message was durable (fsynced in its write-ahead log, then acked).

class RowWatcher:
    """Polls a folder tree every 5 ms for *.parquet files and sums their footers' rows;
    `done_at` is the monotonic time the file completing `want` rows was first seen.
    Temporary names (fleetpulse's *.parquet.tmp, mq-bridge's *.parquet#1) never count."""

    def __init__(self, root: Path, want: int) -> None:
        self.root, self.want = root, want
        self.rows = 0
        self.done_at = 0.0
        self._seen: set[Path] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _poll(self) -> None:
        import pyarrow.parquet as pq

        while not self._stop.is_set() and self.rows < self.want:
            for f in self.root.rglob("*.parquet") if self.root.exists() else ():
                if f not in self._seen:
                    self._seen.add(f)
                    self.rows += pq.ParquetFile(f).metadata.num_rows
            if self.rows >= self.want:
                self.done_at = time.monotonic()
                return
            self._stop.wait(0.005)

    def wait(self, timeout: float) -> float:
        self._t.join(timeout)
        self._stop.set()
        if not self.done_at:
            raise SystemExit(f"only {self.rows:,} of {self.want:,} rows reached {self.root}")
        return self.done_at


def _session(b: Broker, cid: str, account: str = "fleetpulse-ingest") -> None:
    """A persistent session subscribed to the telemetry, so that nothing published
    while a consumer is still starting is lost to it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    c.username_pw_set(*_creds(b, account))
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(b.host, b.port)
    c.loop_start()
    c.subscribe(FILTER, qos=1)
    if not subscribed.wait(10):
        raise SystemExit("the broker did not confirm the bench subscription")
    c.disconnect()
    c.loop_stop()


def _drop_v311(b: Broker, cid: str) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
    c.username_pw_set(*_creds(b, "fleetpulse-ingest"))
    c.connect(b.host, b.port)
    c.disconnect()


def _publish_live(b: Broker, load: list[tuple[str, bytes]]) -> float:
    from live_publisher import LivePublisher

    pub = LivePublisher(b.host, b.port, *_creds(b, "fleetpulse-simulator"), load)
    start = pub.run()
    pub.wait_acknowledged(600)
    pub.close()
    return start


def live_mosquitto_sub(b: Broker, load: list[tuple[str, bytes]], per: int,
                       work: Path) -> dict[str, float]:
    cid = "bench-live-c"
    _session(b, cid)
    user, password = _creds(b, "fleetpulse-ingest")
    out = work / "mosquitto_sub.out"
    with open(out, "wb") as f:
        p = subprocess.Popen(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-c", "-i", cid,
                              "-q", "1", "-t", FILTER, "-C", str(len(load)), "-u", user,
                              "-P", password], stdout=f)
        rss = PeakRss(p.pid)
        start = _publish_live(b, load)
        p.wait()
        f.flush()
        os.fsync(f.fileno())
        end = time.monotonic()
    _drop_v311(b, cid)
    return {"seconds": end - start, "rss": rss.stop()}


def live_mq_bridge(b: Broker, load: list[tuple[str, bytes]], per: int, work: Path,
                   python: str) -> dict[str, float]:
    """mq-bridge's Route MQTT -> Parquet files, tuned as its docs advise for throughput
    (batches of 10,000, a queue that holds two of them, each file fsynced before its
    batch is acknowledged); it stores one row per message, records as a nested list."""
    cid = "bench-live-mqbridge"
    _session(b, cid)
    user, password = _creds(b, "fleetpulse-ingest")
    out = work / "mq-bridge"
    out.mkdir()
    route = {"input": {"mqtt": {"url": f"tcp://{b.host}:{b.port}", "topic": FILTER, "qos": 1,
                                "client_id": cid, "clean_session": False,
                                "username": user, "password": password,
                                "queue_capacity": 20000}},
             "output": {"object_store": {"url": f"file://{out}", "format": "parquet",
                                         "date_partition": False, "fsync": "batch"}},
             "batch_size": 10000}
    (work / "route.json").write_text(json.dumps(route))
    ready = work / "route.ready"
    p = subprocess.Popen([python, str(Path(__file__).with_name("mq_bridge_route.py")),
                          str(work / "route.json"), str(ready)])
    _wait(lambda: ready.exists() or p.poll() is not None, 30)
    if p.poll() is not None:
        raise SystemExit(f"mq-bridge's route stopped at start (exit {p.returncode})")
    rss = PeakRss(p.pid)
    watch = RowWatcher(out, len(load))
    start = _publish_live(b, load)
    end = watch.wait(600)
    peak = rss.stop()
    p.terminate()
    p.wait()
    _drop_v311(b, cid)
    return {"seconds": end - start, "rss": peak}


def live_fleetpulse(b: Broker, load: list[tuple[str, bytes]], per: int, work: Path,
                    workers: int = 1) -> dict[str, float]:
    """`fleetpulse ingest` with its default flags, only the broker, folder and id given
    (and `--workers N` when asked: one process per worker in a shared subscription)."""
    cid = "bench-live-fleetpulse"
    data = work / "fleetpulse"
    cmd = [sys.executable, "-m", "fleetpulse", "ingest", "--broker", b.address,
           "--data", str(data), "--client-id", cid]
    ids = [cid]
    if workers > 1:
        cmd += ["--workers", str(workers)]
        ids = [f"{cid}-{i}" for i in range(workers)]

    def counters() -> list[dict[str, Any]]:
        return [ingest_stats.read(data, i) or {} for i in ids]

    p = subprocess.Popen(cmd, env=_env(b))
    rss = PeakRss(p.pid)  # with workers: the supervisor; each worker's is read below
    _wait(lambda: all(s.get("subscribed") for s in counters()), 30)
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    worker_rss = [PeakRss(int(c)) for c in children]
    watch = RowWatcher(data / "readings", len(load) * per)
    # its counters carry wall-clock times: map them onto the monotonic clock
    wall_offset = time.time() - time.monotonic()
    start = _publish_live(b, load)
    end = watch.wait(600)
    peak = max([rss.stop(), *(r.stop() for r in worker_rss)])
    done = _wait(lambda: (lambda ss: ss if sum(s.get("messages", 0) for s in ss) >= len(load)
                          else None)(counters()), 60)
    p.terminate()
    assert p.wait() == 0
    final = counters()
    assert sum(s["readings"] for s in final) == len(load) * per, final
    assert not any(s.get("duplicates") or s.get("messages_rejected") for s in final), final
    for i in ids:
        drop_session(b, i)
    durable = max(s["last_durable_at"] for s in done if s.get("messages"))
    return {"seconds": end - start, "durable": durable - wall_offset - start, "rss": peak}


def run_live(b: Broker, per: int, messages: int, work: Path,
             mq_bridge_python: str | None, workers: list[int]) -> list[str]:
    load = [envelope(i, per, devices=1000) for i in range(messages)]
    consumers: list[tuple[str, Any]] = [("mosquitto_sub -> file (C limit)", live_mosquitto_sub)]
    if mq_bridge_python:
        consumers.append(("mq-bridge (Rust) -> Parquet",
                          functools.partial(live_mq_bridge, python=mq_bridge_python)))
    for n in workers:
        consumers.append(("fleetpulse ingest, default flags" if n == 1 else
                          f"fleetpulse ingest --workers {n}",
                          functools.partial(live_fleetpulse, workers=n)))
    got: dict[str, dict[str, float]] = {}
    for name, fn in consumers:
        w = work / f"live-{per}-{len(got)}"
        w.mkdir()
        got[name] = r = fn(b, load, per, w)
        print(f"live {per} rec/msg  {name:34s} {messages / r['seconds']:9,.0f} msg/s  peak RSS "
              f"{r['rss']:6.1f} MB", file=sys.stderr)
    base = messages / got["mosquitto_sub -> file (C limit)"]["seconds"]
    bridge = got.get("mq-bridge (Rust) -> Parquet")
    rows = []
    for name, r in got.items():
        rate = messages / r["seconds"]
        versus = f"{rate * bridge['seconds'] / messages:.2f}" if bridge else "not installed"
        rows.append(f"| {per} | {name}, to the last row stored | {messages:,} | {rate:,.0f} | "
                    f"{rate * per:,.0f} | {rate / base:.2f} | {versus} | {r['rss']:.0f} |")
        if "durable" in r:
            d = messages / r["durable"]
            versus = f"{d * bridge['seconds'] / messages:.2f}" if bridge else ""
            rows.append(f"| {per} | {name}, to durable (WAL fsynced, acked) | {messages:,} | "
                        f"{d:,.0f} | {d * per:,.0f} | {d / base:.2f} | {versus} | |")
    return rows


def _mq_bridge_python(arg: str | None) -> str | None:
    """The interpreter that has mq-bridge: --mq-bridge-python, or this one if it can."""
    if arg:
        return arg
    import importlib.util

    return sys.executable if importlib.util.find_spec("mq_bridge") else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000,
                    help="drain: records per measurement")
    ap.add_argument("--mode", choices=("drain", "live", "both"), default="both")
    ap.add_argument("--per", default="1,10,32", help="records per message, comma-separated")
    ap.add_argument("--live-messages", default="1:200000,10:100000,32:31250",
                    help="live: messages per measurement, for each records-per-message")
    ap.add_argument("--workers", default="1",
                    help="live: fleetpulse's --workers values to measure, comma-separated "
                         "(1: its default flags)")
    ap.add_argument("--mq-bridge-python", metavar="PYTHON",
                    help="an interpreter with mq-bridge installed (default: this one if it "
                         "has it; else mq-bridge is left out)")
    args = ap.parse_args()
    if not shutil.which("mosquitto_sub"):
        raise SystemExit("mosquitto_sub not found: apt-get install mosquitto-clients")
    sys.path.insert(0, str(Path(__file__).parent))
    pers = [int(k) for k in args.per.split(",")]
    live_n = {int(k): int(v) for k, v in (kv.split(":") for kv in args.live_messages.split(","))}
    bridge = _mq_bridge_python(args.mq_bridge_python)
    work = Path(tempfile.mkdtemp(prefix="fleetpulse-bench-"))
    drain_rows, live_rows = [], []
    with Broker(free_port(), work / "broker") as b:
        for per in pers:
            if args.mode in ("live", "both"):
                live_rows += run_live(b, per, live_n.get(per, 1_000_000 // per), work, bridge,
                                      [int(n) for n in args.workers.split(",")])
            if args.mode in ("drain", "both"):
                drain_rows += run_drain(b, per, args.records, work)
    shutil.rmtree(work, ignore_errors=True)
    if live_rows:
        print("Live stream, QoS 1, 1000 devices:\n")
        print("| records/msg | consumer | messages | msg/s | records/s | vs C limit | "
              "vs mq-bridge | peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(live_rows) + "\n")
    if drain_rows:
        print("Drain of a backlog held by the broker, QoS 1:\n")
        print("| records/msg | consumer | messages | records/s | vs mosquitto_sub | "
              "peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(drain_rows))


def run_drain(b: Broker, per: int, records: int, work: Path) -> list[str]:
    messages = records // per
    results = {}
    for name, fn in (("mosquitto_sub -> file", run_mosquitto_sub),
                     ("naive aiomqtt -> Parquet/10K", run_naive),
                     ("fleetpulse ingest (WAL+fsync)", run_fleetpulse)):
        w = work / f"{per}-{name.split()[0]}"
        w.mkdir()
        seconds, rss = fn(b, messages, per, w)
        results[name] = (seconds, rss)
        print(f"drain {per} rec/msg  {name:32s} {messages / seconds:9,.0f} msg/s "
              f"{records / seconds:9,.0f} rec/s  peak RSS {rss:6.1f} MB", file=sys.stderr)
    base = records / results["mosquitto_sub -> file"][0]
    rows = []
    for name, (seconds, rss) in results.items():
        rate = records / seconds
        rows.append(f"| {per} | {name} | {messages:,} | {rate:,.0f} | "
                    f"{rate / base:.2f} | {rss:.0f} |")
    return rows


if __name__ == "__main__":
    main()
