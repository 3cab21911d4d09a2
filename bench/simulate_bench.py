"""Bulk simulation against the C client, on one broker, one run.

    .venv/bin/python bench/simulate_bench.py [--devices 1000] [--days 30] [--runs 3]
        [--workers 1,2,4] [--baseline-fleetpulse PATH] [--no-c] [--through-ingest]

A broker from the repository's mosquitto.conf (authentication and ACL on) on a free
port. Timed as the user waits for it, the whole process:
- `fleetpulse simulate --workers N` for N = 1, 2 and 4: its wall time to every message
  acknowledged, msg/s = messages / wall;
- --baseline-fleetpulse: another checkout's `fleetpulse simulate` (today's release, for
  example a `git worktree` of an older commit with its own .venv), timed the same way;
- the C limit: the same envelopes, pre-encoded one per line, published at QoS 1 by
  `mosquitto_pub -l` in P = 1, 2 and 4 processes at once (each its own part of the
  lines); the fastest P is the baseline.
Every publisher is also timed to the moment a C subscriber (mosquitto_sub -C) has
received every message: the one finish line the C client can be held to (see Delivered).
--through-ingest: also the time from the start of `fleetpulse simulate` until a running
`fleetpulse ingest` (fresh dataset, default flags) has counted every message, and that
dataset checked against the simulator's truth file: rows, events by name, and DAU, WAU,
MAU, devices and uses per feature on every day. Medians of --runs.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import orjson

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess
from fleetpulse.simulators.fleet import Fleet

SEED = 7
START = date(2026, 1, 1)


def _fleetpulse() -> str:
    return str(Path(sys.executable).with_name("fleetpulse"))


class Delivered:
    """A C subscriber (mosquitto_sub -C) that exits once the broker has delivered n
    messages: the same finish line for every publisher. (mosquitto_pub -l exits 0 at the
    end of its input with messages still unsent, 34,507 of 493,248 delivered in one try,
    so its own exit says nothing.) It is known to be subscribed when it has printed the
    retained probe message the broker gives every new subscription."""

    PROBE_TOPIC = "devices/bench-probe/telemetry"

    def __init__(self, broker: Broker, n: int, out: Path) -> None:
        c = broker.credentials("fleetpulse-ingest")
        out.write_bytes(b"")
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u", c.username,
             "-P", c.password, "-q", "1", "-t", "devices/+/telemetry", "-C", str(n + 1),
             "-N", "-F", "x"], stdout=out.open("wb"))
        deadline = time.monotonic() + 10
        while out.stat().st_size == 0:  # one "x": the probe, so the subscription is on
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("mosquitto_sub did not subscribe within 10 s")
            time.sleep(0.01)

    @staticmethod
    def plant_probe(broker: Broker) -> None:
        c = broker.credentials("fleetpulse-simulator")
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u",
                        c.username, "-P", c.password, "-q", "1", "-r", "-t",
                        Delivered.PROBE_TOPIC, "-m", "{}"], check=True)

    def wait(self, timeout: float = 600) -> None:
        if self.proc.wait(timeout):
            raise SystemExit(f"mosquitto_sub failed: exit code {self.proc.returncode}")


def time_simulate(cmd: str, broker: Broker, registry: Path, devices: int, days: int,
                  workers: int | None, n: int | None, out: Path) -> tuple[float, float, int]:
    """(msg/s to every message acknowledged, alone; msg/s to every message delivered to
    the C subscriber; the messages, which the run alone tells when n is not known)."""
    argv = simulate_argv(cmd, broker, registry, devices, days, workers)
    rates = []
    for watched in (False, True):
        sub = Delivered(broker, n, out) if watched and n is not None else None
        began = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, check=True)
        if sub is not None:
            sub.wait()
        wall = time.perf_counter() - began
        published = int(re.search(r"published ([\d,]+) messages", r.stdout).group(1)
                        .replace(",", ""))
        n = n or published
        assert published == n, (published, n)
        rates.append(n / wall)
    assert n is not None
    return rates[0], rates[1], n


def simulate_argv(cmd: str, broker: Broker, registry: Path, devices: int, days: int,
                  workers: int | None) -> list[str]:
    return [cmd, "simulate", "--broker", broker.address, "--registry", str(registry),
            "--devices", str(devices), "--days", str(days), "--seed", str(SEED),
            "--no-progress"] + ([] if workers is None else ["--workers", str(workers)])


def time_through_ingest(cmd: str, broker: Broker, registry: Path, devices: int, days: int,
                        workers: int | None, n: int, work: Path) -> float:
    """msg/s from the start of simulate until ingest has counted every message; the
    dataset then checked against the truth file (SystemExit when it differs)."""
    shutil.rmtree(work, ignore_errors=True)
    c = broker.credentials("fleetpulse-ingest")
    # the session ends with the process: no stopped ingest's queue slows the next run
    ingest = IngestProcess(broker.address, work / "data", client_id=f"bench-{work.name}",
                           extra_args=["--session-expiry", "0"], log_path=work / "ingest.log",
                           credentials=(c.username, c.password)).start()
    try:
        ingest.wait_subscribed()
        began = time.perf_counter()
        subprocess.run([*simulate_argv(cmd, broker, registry, devices, days, workers),
                        "--truth", str(work / "truth.json")], capture_output=True, check=True)
        ingest.wait_messages(n, timeout=3600)
        wall = time.perf_counter() - began
        if ingest.stop() != 0:
            raise SystemExit(f"ingest failed: see {ingest.log_path}")
    finally:
        ingest.kill()
    check_truth(work / "data", orjson.loads((work / "truth.json").read_bytes()))
    return n / wall


def check_truth(data: Path, truth: dict) -> None:
    """The dataset's counts and daily metrics equal the simulator's ground truth."""
    con = connect(data)
    try:
        q = con.execute
        # the retained probe that Delivered plants is quarantined, rightly: it is not a fleet's
        got = {"rows": q("SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events),"
                         " (SELECT count(*) FROM quarantine WHERE topic <> ?)",
                         [Delivered.PROBE_TOPIC]).fetchone(),
               "events_by_name": dict(q("SELECT event, count(*) FROM events GROUP BY 1")
                                      .fetchall()),
               "active": {str(d): r for d, *r in q(
                   "SELECT day, dau, wau, mau FROM active_devices()").fetchall()}}
        per_feature: dict[str, dict[str, list[int]]] = {}
        for day, feature, n_dev, n_use in q(
                "SELECT day, feature, devices, uses FROM feature_usage_daily()").fetchall():
            per_feature.setdefault(str(day), {})[feature] = [n_dev, n_use]
    finally:
        con.close()
    days = truth["days"]
    want = {"rows": (truth["readings"], truth["events"], 0),
            "events_by_name": truth["events_by_name"],
            "active": {d: [v["active_devices"], v["wau"], v["mau"]] for d, v in days.items()}}
    want_feature = {d: {f: [n, v["events_per_feature"][f]]
                        for f, n in v["devices_per_feature"].items()}
                    for d, v in days.items() if v["devices_per_feature"]}
    for key, value in want.items():
        if got[key] != value:
            raise SystemExit(f"the dataset differs from the truth file in {key}: "
                             f"{str(got[key])[:200]} != {str(value)[:200]}")
    if per_feature != want_feature:
        raise SystemExit("the dataset differs from the truth file in feature_usage_daily")


def encode_fleet(devices: int, days: int, out: Path) -> int:
    n = 0
    with out.open("wb") as f:
        for _, hour in Fleet(devices, days, SEED, START).hours():
            for _, env in hour:
                f.write(orjson.dumps(env) + b"\n")
                n += 1
    return n


def time_c(lines: Path, n: int, processes: int, broker: Broker, out: Path) -> float:
    """msg/s to every message delivered, published by `processes` mosquitto_pub -l."""
    c = broker.credentials("fleetpulse-simulator")
    data = lines.read_bytes().splitlines(keepends=True)
    parts = [b"".join(data[k::processes]) for k in range(processes)]
    sub = Delivered(broker, n, out)
    began = time.perf_counter()
    procs = [subprocess.Popen(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                               "-u", c.username, "-P", c.password, "-q", "1",
                               "-t", f"devices/sim-{k:05d}/telemetry", "-l"],
                              stdin=subprocess.PIPE) for k in range(processes)]
    # input written but left open: each client keeps running until its messages are out
    writers = [threading.Thread(target=p.stdin.write, args=(part,))
               for p, part in zip(procs, parts, strict=True)]
    for w in writers:
        w.start()
    sub.wait()
    wall = time.perf_counter() - began
    for w, p in zip(writers, procs, strict=True):
        w.join()
        p.stdin.close()
        p.wait()
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", default="1,2,4", help="fleetpulse simulate --workers to time")
    ap.add_argument("--baseline-fleetpulse", help="another checkout's fleetpulse script")
    ap.add_argument("--no-c", action="store_true", help="leave out the C publishers")
    ap.add_argument("--through-ingest", action="store_true",
                    help="also time each fleetpulse simulate through a running ingest")
    args = ap.parse_args()
    if not shutil.which("mosquitto_pub"):
        raise SystemExit("mosquitto_pub is not installed (Debian: mosquitto-clients)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = Broker(free_port(), tmp / "broker").start()
        try:
            registry = broker.registry.dir
            Delivered.plant_probe(broker)
            lines = tmp / "payloads.txt"
            # without the C runs, the first run alone tells the number of messages
            n: int | None = None if args.no_c else encode_fleet(args.devices, args.days, lines)
            rows: list[tuple[str, float, float, float | None]] = []
            candidates: list[tuple[str, str, int | None]] = [
                (f"fleetpulse simulate --workers {w}", _fleetpulse(), int(w))
                for w in args.workers.split(",")]
            if args.baseline_fleetpulse:
                candidates.insert(0, ("baseline checkout's fleetpulse simulate",
                                      args.baseline_fleetpulse, None))
            for name, cmd, workers in candidates:
                runs = []
                for _ in range(args.runs):
                    *rates, n = time_simulate(cmd, broker, registry, args.devices, args.days,
                                              workers, n, tmp / "sub.out")
                    runs.append(rates)
                assert n is not None
                ingest_rate = statistics.median(
                    time_through_ingest(cmd, broker, registry, args.devices, args.days, workers,
                                        n, tmp / f"ingest-{k}") for k in range(args.runs)
                ) if args.through_ingest else None
                rows.append((name, statistics.median(r[0] for r in runs),
                             statistics.median(r[1] for r in runs), ingest_rate))
            c_rates = {} if args.no_c else {
                p: statistics.median(time_c(lines, n, p, broker, tmp / "sub.out")
                                     for _ in range(args.runs)) for p in (1, 2, 4)}
        finally:
            broker.stop()
    c_best = max(c_rates.values(), default=float("nan"))
    c_version = next(ln for ln in subprocess.run(
        ["mosquitto_pub", "--help"], capture_output=True, text=True).stdout.splitlines()
        if "version" in ln).rstrip(".")
    print(f"# {args.devices} devices x {args.days} days = {n:,} messages at QoS 1, medians "
          f"of {args.runs}; {platform.node()} {platform.machine()}, "
          f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
          f"Python {platform.python_version()}, {c_version}")
    print("| publisher | msg/s, all acked (alone) | msg/s, all delivered to the C subscriber "
          "| delivered vs C best | msg/s, all counted by ingest (dataset equal to truth) |")
    print("| --- | --- | --- | --- | --- |")
    for p, rate in c_rates.items():
        print(f"| C mosquitto_pub -l -q 1, {p} process(es) | | {rate:,.0f} | "
              f"{rate / c_best:.2f}x | |")
    for name, alone, delivered, through in rows:
        vs_c = f"{delivered / c_best:.2f}x" if c_rates else ""
        print(f"| {name} | {alone:,.0f} | {delivered:,.0f} | {vs_c} | "
              f"{'' if through is None else f'{through:,.0f}'} |")


if __name__ == "__main__":
    main()
