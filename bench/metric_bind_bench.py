"""What a metric question costs on a small dataset, where binding and planning dominate.

    .venv/bin/python bench/metric_bind_bench.py [--devices 24] [--days 9] [--runs 3]

Fills a dataset from the simulated fleet through the ingest pipeline, flushed every six
hours (several files per day, as ingest leaves them), and times connect() and every
metric of the library with its default parameters on each segmentation it has (what
tests/test_rollups.py asks), before and after compaction. Medians of --runs. The
baseline in the same run: a hand-written plain-DuckDB DAU (distinct devices with a usage
event per UTC day) over the raw files on a fresh connection, per question.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from fleetpulse.analytics.dataset import connect, metric_catalog
from fleetpulse.ingest.compact import compact
from fleetpulse.ingest.contract import TELEMETRY_TOPIC, USAGE_EVENTS
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.simulators.fleet import Fleet

USAGE = ", ".join(f"'{e}'" for e in USAGE_EVENTS)


def fill(data: Path, devices: int, days: int) -> None:
    pipe = None
    for n, (day, hour) in enumerate(Fleet(devices, days, 5, date(2026, 3, 2)).hours()):
        pipe = pipe or Pipeline(data, f"fill-{day}-{n}")
        for device_id, env in hour:
            pipe.handle(TELEMETRY_TOPIC.format(device_id=device_id),
                        json.dumps(env).encode(), env["sent_ms"])
        if n % 6 == 5:
            pipe.flush()
            pipe = None
    if pipe is not None:
        pipe.flush()


def questions() -> list[str]:
    out = []
    for m in metric_catalog():
        args = ["key := 'bench'"] if "key" in m.parameters else []
        segments = ["all", "fw", "hw", "variant:bench"] if "segment_by" in m.parameters else [None]
        for seg in segments:
            a = args + ([f"segment_by := '{seg}'"] if seg else [])
            out.append(f"SELECT * FROM {m.name}({', '.join(a)})")
    return out


def time_once(data: Path) -> tuple[float, float]:
    t = time.perf_counter()
    con = connect(data)
    connected = time.perf_counter() - t
    t = time.perf_counter()
    for q in questions():
        # no breakdown by variant for some metrics: an error, asked all the same
        with contextlib.suppress(duckdb.InvalidInputException):
            con.sql(q).fetchall()
    con.close()
    return connected, time.perf_counter() - t


def plain_dau(data: Path) -> float:
    t = time.perf_counter()
    con = duckdb.connect()
    con.sql(f"SELECT date, count(DISTINCT device_id) FROM read_parquet("
            f"'{data}/events/*/*.parquet', hive_partitioning = true, union_by_name = true) "
            f"WHERE event IN ({USAGE}) "
            "GROUP BY date").fetchall()
    con.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=24)
    ap.add_argument("--days", type=int, default=9)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="fleetpulse-bind-")) / "data"
    fill(data, args.devices, args.days)
    print(f"duckdb {duckdb.__version__}; {len(questions())} questions")
    print("| layout | connect() s | all questions s | per question ms | plain-DuckDB DAU ms |\n"
          "| --- | --- | --- | --- | --- |")
    for layout in ("as ingest wrote it", "compacted"):
        if layout == "compacted":
            compact(data, grace_s=0)
        runs = [time_once(data) for _ in range(args.runs)]
        each = statistics.median(r[1] for r in runs)
        plain = statistics.median(plain_dau(data) for _ in range(args.runs))
        print(f"| {layout} | {statistics.median(r[0] for r in runs):.2f} | {each:.2f} | "
              f"{each / len(questions()) * 1000:.0f} | {plain * 1000:.0f} |")


if __name__ == "__main__":
    main()
