"""What a PM waits for over a large fleet: page refreshes, metric commands, and the same
questions written by hand in plain DuckDB and in chdb over the same files.

    .venv/bin/python bench/analytics_bench.py [--scale 1.0] [--dir DIR] [--small-runs 0]
                                              [--keep DIR] [--page-only]

Writes, directly as Parquet in the dataset layout, scale x (100M readings, 10M events)
for scale x 10K devices over 90 days: once as one file per day and table (what
`fleetpulse compact` leaves) with the per-day rollups and per-device states compaction
writes, and (unless
--small-runs 0) once as 40 small files per day and table (what ingest writes between
compactions), with no rollups. Then, medians of --runs (5):
- a full page refresh: an HTTP GET of `fleetpulse dashboard`'s page, served by its own
  process, which connects and queries on every load (the wall time of the request);
- the dashboard's queries one by one (analytics/panels.py: run_groups), after connect();
- every `fleetpulse metrics NAME` as a process (wall time, interpreter start included);
- DAU, adoption, retention and the funnel: through our macros on a fresh connect(), as
  hand-written plain DuckDB on a fresh connection over the raw files, and in chdb
  (bench/analytics_peers.py), their answers checked equal.
--page-only stops after the first two.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from analytics_peers import QUESTIONS, chdb_answers, ours, plain

from fleetpulse.analytics.dataset import connect, metric_catalog
from fleetpulse.analytics.panels import run_groups
from fleetpulse.analytics.rollups import remove_outdated, write_rollups
from fleetpulse.ingest.schema import EVENTS, READINGS
from fleetpulse.ingest.store import Store

DAY_MS = 86_400_000
T0 = 1767225600000  # 2026-01-01
FEATURES = np.array(["eco_mode", "schedule", "boost", "night_mode", "voice_control"])
EVENT_NAMES = np.array(["feature_used", "button_press", "session_start", "session_end",
                        "setting_changed", "heartbeat", "power_on", "error"])
EVENT_P = np.array([0.30, 0.15, 0.12, 0.12, 0.05, 0.24, 0.015, 0.005])


def _day_tables(rng: np.random.Generator, day: int, devices: int, n_read: int, n_ev: int
                ) -> tuple[pa.Table, pa.Table]:
    ids = np.char.add("dev-", np.char.zfill(np.arange(devices).astype(str), 5))
    fw_new = rng.random(devices) < day / 90  # a rollout over the quarter
    hw = np.array(["thermostat-esp32", "purifier-esp32", "plug-picow"])[np.arange(devices) % 3]

    def common(n: int, seq_base: int) -> dict[str, pa.Array]:
        dev = rng.integers(0, devices, n)
        ts = T0 + day * DAY_MS + rng.integers(0, DAY_MS, n)
        return {
            "device_id": pa.array(ids[dev]), "boot": pa.array(np.ones(n, dtype=np.int64)),
            "seq": pa.array(seq_base + np.arange(n, dtype=np.int64)),
            "idx": pa.array(np.zeros(n, dtype=np.int32)),
            "fw": pa.array(np.where(fw_new[dev], "1.5.0", "1.4.0")), "hw": pa.array(hw[dev]),
            "ts": pa.array(ts, type=pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(ts + 1000, type=pa.timestamp("ms", tz="UTC")),
        }

    r = common(n_read, day * 10_000_000)
    hour = ((r["ts"].to_numpy(zero_copy_only=False).astype("int64") % DAY_MS) / 3_600_000)
    temp = 21 + 2.5 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 0.8, n_read)
    readings = pa.table({**r, "temperature_c": pa.array(np.round(temp, 2)),
                         "humidity_pct": pa.array(np.round(45 + rng.normal(0, 6, n_read), 1)),
                         "rssi_dbm": pa.array(rng.integers(-85, -45, n_read).astype(float))})
    e = common(n_ev, day * 10_000_000 + 5_000_000)
    names = EVENT_NAMES[rng.choice(len(EVENT_NAMES), n_ev, p=EVENT_P)]
    feature = np.where(names == "feature_used",
                       FEATURES[rng.choice(5, n_ev, p=[.4, .25, .2, .1, .05])], None)
    events = pa.table({**e, "event": pa.array(names), "feature": pa.array(feature)})
    return (readings.cast(_subset(READINGS, readings.schema.names)),
            events.cast(_subset(EVENTS, events.schema.names)))


def _subset(schema: pa.Schema, names: list[str]) -> pa.Schema:
    return pa.schema([schema.field(n) for n in names])


def generate(root: Path, scale: float, small_files: int) -> tuple[Path, Path | None]:
    devices, days = max(10, int(10_000 * scale)), 90
    n_read, n_ev = int(100_000_000 * scale / days), int(10_000_000 * scale / days)
    big, small = root / "compacted", (root / "small-files" if small_files else None)
    rng = np.random.default_rng(7)
    for day in range(days):
        date = time.strftime("%Y-%m-%d", time.gmtime((T0 + day * DAY_MS) / 1000))
        readings, events = _day_tables(rng, day, devices, n_read, n_ev)
        for table, name in ((readings, "readings"), (events, "events")):
            d = big / name / f"date={date}"
            d.mkdir(parents=True)
            pq.write_table(table, d / "part-0.parquet", compression="zstd",
                           row_group_size=500_000)
            if small is None:
                continue
            d = small / name / f"date={date}"
            d.mkdir(parents=True)
            step = -(-table.num_rows // small_files)
            for i in range(small_files):
                pq.write_table(table.slice(i * step, step), d / f"part-{i}.parquet",
                               compression="zstd")
    return big, small


def median_of(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        action()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_dashboard(data: Path, runs: int = 5) -> tuple[float, float, dict[str, float]]:
    """connect() and the dashboard's queries as a page refresh runs them (report.py)."""
    connects: list[float] = []
    totals: list[float] = []
    per_step: dict[str, list[float]] = {}
    for _ in range(runs):
        t = time.perf_counter()
        con = connect(data)
        connects.append(time.perf_counter() - t)
        start = time.perf_counter()
        run_groups(con, timer=lambda step, secs: per_step.setdefault(step, []).append(secs))
        totals.append(time.perf_counter() - start)
        con.close()
    return (statistics.median(connects), statistics.median(totals),
            {k: statistics.median(v) for k, v in per_step.items()})


def _fleetpulse() -> str:
    return str(Path(sys.executable).with_name("fleetpulse"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_page(data: Path, runs: int) -> tuple[float, float]:
    """(first load, median of the next `runs` loads) of the page `fleetpulse dashboard`
    serves, each a GET answered only when its process has connected and queried."""
    port = _free_port()
    server = subprocess.Popen([_fleetpulse(), "dashboard", "--data", str(data), "--port",
                               str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "healthz", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the dashboard did not start") from None
                time.sleep(0.1)

        def load() -> None:
            with urllib.request.urlopen(url, timeout=600) as r:
                if r.status != 200 or b"cannot read the dataset" in r.read():
                    raise SystemExit("the dashboard answered with an error")

        first = median_of(1, load)
        return first, median_of(runs, load)
    finally:
        server.terminate()
        server.wait()


def metric_commands() -> list[list[str]]:
    out = []
    for m in metric_catalog():
        out.append([m.name] + (["--param", "key=bench"] if "key" in m.parameters else []))
    return [*out, ["experiment", "--key", "bench"]]


def time_commands(data: Path, runs: int) -> dict[str, float]:
    """Wall time of each `fleetpulse metrics NAME` process, output discarded."""
    out = {}
    for cmd in metric_commands():
        argv = [_fleetpulse(), "metrics", *cmd, "--data", str(data)]

        def run(argv: list[str] = argv) -> None:
            r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(argv)}: {r.stderr.strip()}")

        out[" ".join(cmd)] = median_of(runs, run)
    return out


def time_peers(data: Path, runs: int, chdb_python: str | None
               ) -> tuple[str, list[tuple[str, float, float, float | None]]]:
    """chdb's version and (question, ours s, plain DuckDB s, chdb s), every answer checked
    equal to ours."""
    version, chdb = (chdb_answers(chdb_python, data, runs) if chdb_python
                     else ("not run (--chdb-python)", [([], None)] * len(QUESTIONS)))
    out = []
    for q, (other, ch) in zip(QUESTIONS, chdb, strict=True):
        mine, theirs = ours(data, q.ours), plain(data, q.plain)
        for peer, answer in (("plain DuckDB", theirs), ("chdb", other if ch else mine)):
            if answer != mine:
                raise SystemExit(f"{q.name}: {peer}'s answer differs from ours:\n"
                                 f"ours {mine[:5]}\n{peer} {answer[:5]}")
        out.append((q.name, median_of(runs, lambda q=q: ours(data, q.ours)),
                    median_of(runs, lambda q=q: plain(data, q.plain)), ch))
    return version, out


def machine() -> str:
    """The machine and the versions that set the numbers (chdb's come with its answers)."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return (f"{os.cpu_count()} cores {cpu}, Python {platform.python_version()}, DuckDB "
            f"{duckdb.__version__}, pyarrow {pa.__version__}")


def report(title: str, rows: list[list[Any]]) -> None:
    print(f"\n| {' | '.join(title.split(','))} |\n|{' --- |' * len(rows[0])}")
    for r in rows:
        print("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in r)
              + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small-files", type=int, default=40)
    ap.add_argument("--small-runs", type=int, default=5,
                    help="runs over the small-file layout, 0: none (minutes each at full scale)")
    ap.add_argument("--chdb-python", default=None,
                    help="an interpreter with chdb installed, to run the chdb peer in")
    ap.add_argument("--keep", type=Path, default=None,
                    help="generate into (or reuse) this directory and keep it")
    ap.add_argument("--page-only", action="store_true",
                    help="time the page and its steps only, not each metric's process "
                         "and the peers (how the page grows with scale)")
    args = ap.parse_args()
    print(machine())
    root = args.keep or Path(tempfile.mkdtemp(prefix="fleetpulse-analytics-", dir=args.dir))
    small_files = args.small_files if args.small_runs else 0
    try:
        big, small = root / "compacted", root / "small-files" if small_files else None
        if (root / "stamp").exists() and (root / "stamp").read_text() == repr(
                (args.scale, small_files)):
            print(f"reusing {root}", file=sys.stderr)
            # rollups whose definition changed since: written now, as compaction would
            days = write_rollups(Store(big))
            remove_outdated(Store(big))
            if days:
                print(f"rolled up {len(days)} days again (a rollup's definition changed)")
        else:
            shutil.rmtree(root, ignore_errors=True)
            t = time.perf_counter()
            big, small = generate(root, args.scale, small_files)
            print(f"generated in {time.perf_counter() - t:.0f}s at {root}")
            t = time.perf_counter()
            days = write_rollups(Store(big))
            secs = time.perf_counter() - t
            print(f"rolled up {len(days)} days in {secs:.1f}s ({secs / len(days):.2f}s per day)")
            (root / "stamp").write_text(repr((args.scale, small_files)))
        first, page = time_page(big, args.runs)
        connected, total_big, q_big = time_dashboard(big, args.runs)
        layouts = [["compacted (1 file per day and table)", first, page, connected, total_big]]
        q_small: dict[str, float] = {}
        if small is not None:
            first_s, page_s = time_page(small, args.small_runs)
            connected_s, total_small, q_small = time_dashboard(small, args.small_runs)
            layouts.append([f"small files ({small_files} per day and table)", first_s, page_s,
                            connected_s, total_small])
        report(f"layout,first page load s,page refresh s (median of {args.runs}),"
               "connect() s,run_groups s", layouts)
        report("step,compacted s,small files s",
               [[k, *(q.get(k, "-") for q in (q_big, q_small))]
                for k in dict.fromkeys([*q_big, *q_small])])
        if args.page_only:
            return
        report(f"fleetpulse metrics (compacted),wall s (median of {args.runs})",
               [[k, v] for k, v in time_commands(big, args.runs).items()])
        version, peers = time_peers(big, args.runs, args.chdb_python)
        report(f"question (compacted),ours s,plain DuckDB s,ours / plain,chdb {version} s,"
               "ours / chdb", [[n, o, p, f"{o / p:.2f}", "-" if c is None else c,
                                "-" if c is None else f"{o / c:.2f}"] for n, o, p, c in peers])
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
