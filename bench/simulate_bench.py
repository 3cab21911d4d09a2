"""Bulk simulation against the C client, on one broker, one run.

    .venv/bin/python bench/simulate_bench.py [--devices 1000] [--days 30] [--runs 3]
        [--baseline-fleetpulse PATH]

A broker from the repository's mosquitto.conf (authentication and ACL on) on a free
port, nothing subscribed. Timed as the user waits for it, the whole process:
- `fleetpulse simulate --workers N` for N = 1, 2 and 4: its wall time to every message
  acknowledged, msg/s = messages / wall;
- --baseline-fleetpulse: another checkout's `fleetpulse simulate` (today's release, for
  example a `git worktree` of an older commit with its own .venv), timed the same way;
- the C limit: the same envelopes, pre-encoded one per line, published at QoS 1 by
  `mosquitto_pub -l` in P = 1, 2 and 4 processes at once (each its own part of the
  lines); msg/s = lines / wall from the first start to the last exit. A single
  mosquitto_pub -l holds one message in flight at a time, so several are needed to
  load the broker; the fastest P is the baseline.
Medians of --runs.
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
import time
from datetime import date
from pathlib import Path

import orjson

from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.simulators.fleet import Fleet

SEED = 7
START = date(2026, 1, 1)


def _fleetpulse() -> str:
    return str(Path(sys.executable).with_name("fleetpulse"))


def time_simulate(cmd: str, broker: Broker, registry: Path, devices: int, days: int,
                  workers: int | None) -> tuple[float, int]:
    argv = [cmd, "simulate", "--broker", broker.address, "--registry", str(registry),
            "--devices", str(devices), "--days", str(days), "--seed", str(SEED),
            "--no-progress"] + ([] if workers is None else ["--workers", str(workers)])
    began = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - began
    published = int(re.search(r"published ([\d,]+) messages", r.stdout).group(1)
                    .replace(",", ""))
    return wall, published


def encode_fleet(devices: int, days: int, out: Path) -> int:
    n = 0
    with out.open("wb") as f:
        for _, hour in Fleet(devices, days, SEED, START).hours():
            for _, env in hour:
                f.write(orjson.dumps(env) + b"\n")
                n += 1
    return n


def time_c(lines: Path, n: int, processes: int, broker: Broker, password: str,
           tmp: Path) -> float:
    parts = []
    with lines.open("rb") as f:
        data = f.readlines()
    for k in range(processes):
        part = tmp / f"part-{k}"
        part.write_bytes(b"".join(data[k::processes]))
        parts.append(part)
    began = time.perf_counter()
    procs = [subprocess.Popen(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                               "-u", "fleetpulse-simulator", "-P", password, "-q", "1",
                               "-t", f"devices/sim-{k:05d}/telemetry", "-l"],
                              stdin=part.open("rb")) for k, part in enumerate(parts)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - began
    if any(codes):
        raise SystemExit(f"mosquitto_pub failed: exit codes {codes}")
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline-fleetpulse", help="another checkout's fleetpulse script")
    args = ap.parse_args()
    if not shutil.which("mosquitto_pub"):
        raise SystemExit("mosquitto_pub is not installed (Debian: mosquitto-clients)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = Broker(free_port(), tmp / "broker").start()
        try:
            registry = broker.registry.dir
            password = broker.credentials("fleetpulse-simulator").password
            lines = tmp / "payloads.txt"
            n = encode_fleet(args.devices, args.days, lines)
            rows: list[tuple[str, float]] = []
            candidates: list[tuple[str, str, int | None]] = [
                (f"fleetpulse simulate --workers {w}", _fleetpulse(), w) for w in (1, 2, 4)]
            if args.baseline_fleetpulse:
                candidates.insert(0, ("baseline checkout's fleetpulse simulate",
                                      args.baseline_fleetpulse, None))
            for name, cmd, workers in candidates:
                rates = []
                for _ in range(args.runs):
                    wall, published = time_simulate(cmd, broker, registry, args.devices,
                                                    args.days, workers)
                    assert published == n, (published, n)
                    rates.append(published / wall)
                rows.append((name, statistics.median(rates)))
            c_rates = {p: statistics.median(time_c(lines, n, p, broker, password, tmp)
                                            for _ in range(args.runs)) for p in (1, 2, 4)}
        finally:
            broker.stop()
    c_best = max(c_rates.values())
    c_version = subprocess.run(["mosquitto_pub", "--help"], capture_output=True,
                               text=True).stdout.splitlines()[0]
    print(f"# {args.devices} devices x {args.days} days = {n:,} messages at QoS 1, medians "
          f"of {args.runs}; {platform.node()} {platform.machine()}, "
          f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
          f"Python {platform.python_version()}, {c_version}")
    print("| publisher | msg/s | vs C best |")
    print("| --- | --- | --- |")
    for p, rate in c_rates.items():
        print(f"| C mosquitto_pub -l -q 1, {p} process(es) | {rate:,.0f} | "
              f"{rate / c_best:.2f}x |")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / c_best:.2f}x |")


if __name__ == "__main__":
    main()
