"""Dashboard query time over a large fleet, compacted vs un-compacted.

    .venv/bin/python bench/analytics_bench.py [--scale 1.0] [--dir DIR]

Writes, directly as Parquet in the dataset layout, scale x (100M readings, 10M events)
for scale x 10K devices over 90 days: once as one file per day and table (what
`fleetpulse compact` leaves), once as 40 small files per day and table (what ingest
writes between compactions). The compacted layout then gets the per-day rollups
compaction writes for days left with one file per table (analytics/rollups.py); the
small-file layout has none, so its views compute every day from raw rows. Then runs
every query of the dashboard as a page refresh does (analytics/report.py: run_groups)
five times on each layout and reports the median of the total.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.report import run_groups
from fleetpulse.analytics.rollups import write_rollups
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


def generate(root: Path, scale: float, small_files: int) -> tuple[Path, Path]:
    devices, days = max(10, int(10_000 * scale)), 90
    n_read, n_ev = int(100_000_000 * scale / days), int(10_000_000 * scale / days)
    big, small = root / "compacted", root / "small-files"
    rng = np.random.default_rng(7)
    for day in range(days):
        date = time.strftime("%Y-%m-%d", time.gmtime((T0 + day * DAY_MS) / 1000))
        readings, events = _day_tables(rng, day, devices, n_read, n_ev)
        for table, name in ((readings, "readings"), (events, "events")):
            d = big / name / f"date={date}"
            d.mkdir(parents=True)
            pq.write_table(table, d / "part-0.parquet", compression="zstd",
                           row_group_size=500_000)
            d = small / name / f"date={date}"
            d.mkdir(parents=True)
            step = -(-table.num_rows // small_files)
            for i in range(small_files):
                pq.write_table(table.slice(i * step, step), d / f"part-{i}.parquet",
                               compression="zstd")
    return big, small


def time_dashboard(data: Path, runs: int = 5) -> tuple[float, dict[str, float]]:
    """The dashboard's queries as a page refresh runs them (analytics/report.py)."""
    totals: list[float] = []
    per_step: dict[str, list[float]] = {}
    for _ in range(runs):
        con = connect(data)
        start = time.perf_counter()
        run_groups(con, lambda step, secs: per_step.setdefault(step, []).append(secs))
        totals.append(time.perf_counter() - start)
        con.close()
    return statistics.median(totals), {k: statistics.median(v) for k, v in per_step.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--small-files", type=int, default=40)
    ap.add_argument("--small-runs", type=int, default=5,
                    help="runs over the small-file layout (fewer at full scale: minutes each)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fleetpulse-analytics-", dir=args.dir))
    try:
        t = time.perf_counter()
        big, small = generate(root, args.scale, args.small_files)
        print(f"generated in {time.perf_counter() - t:.0f}s at {root}")
        t = time.perf_counter()
        days = write_rollups(Store(big))
        secs = time.perf_counter() - t
        print(f"rolled up {len(days)} days in {secs:.1f}s ({secs / len(days):.2f}s per day)")
        total_big, q_big = time_dashboard(big)
        print(f"compacted (1 file per day and table), median of 5: {total_big:.2f} s", flush=True)
        total_small, q_small = time_dashboard(small, args.small_runs)
        print(f"| layout | dashboard total |\n| --- | --- |\n"
              f"| compacted (1 file per day and table), median of 5 | {total_big:.2f} s |\n"
              f"| small files ({args.small_files} per day and table), median of "
              f"{args.small_runs} | {total_small:.2f} s |")
        print("| step | compacted s | small files s |\n| --- | --- | --- |")
        # The small files have no rollups, so no rollup snapshot steps.
        for k in dict.fromkeys([*q_big, *q_small]):
            cells = [f"{q[k]:.2f}" if k in q else "-" for q in (q_big, q_small)]
            print(f"| {k} | {' | '.join(cells)} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
