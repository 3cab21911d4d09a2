"""`fleetpulse explain` on fleets with nothing planted (A/A) and with planted causes.

    .venv/bin/python bench/explain_bench.py [--aa-runs 100] [--planted-runs 10]
        [--devices 200] [--days 24]

Each run writes a stationary fleet (simulators/offline.py: every device there from day
0, half on 1.5.0, one crash rate) of its own seed into a fresh dataset and asks explain
about every metric, baseline days 1-11 against days 12-23:
- A/A: nothing planted. Counted: runs where explain ranks an explanation for a metric
  (issue 20: none in at least 95 of 100), and runs where it calls the whole change real.
- planted: the four causes of tests/test_explain_planted.py on fleets of other seeds;
  counted: runs where the cause is ranked first, and the largest distance between its
  explanatory power and the share of the change the truth's counterfactual gives it.

    .venv/bin/python bench/explain_bench.py --full-scale DIR [--runs 5]

At fleet scale instead: analytics_bench.py's dataset (100M readings, 10M events, 10K
devices, 90 days, compacted with rollups; generated into DIR once, reused after),
`fleetpulse explain METRIC` as a process for every metric, two weeks against two weeks
(and the period-level shares two weeks against four: a real change, so the whole
ranking runs), wall time as the user waits for it (interpreter start and connect
included), median of --runs; the baseline in the same run is a hand-written plain-DuckDB
query over the raw files giving each device's active days in both periods, the least
explain reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.explain import METRICS, explain
from fleetpulse.simulators.offline import write_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_explain_planted import FLEETS, planted_share

START = date(2026, 1, 5)


def periods(days: int) -> tuple[tuple[date, date], tuple[date, date]]:
    cut = days // 2
    return ((START + timedelta(1), START + timedelta(cut - 1)),
            (START + timedelta(cut), START + timedelta(days - 1)))


def aa(runs: int, devices: int, days: int) -> None:
    baseline, compare = periods(days)
    explained = dict.fromkeys(METRICS, 0)
    real = dict.fromkeys(METRICS, 0)
    any_explained = 0
    for seed in range(1, runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            write_dataset(Path(tmp), devices, days, 1000 + seed, START, stationary=True)
            con = connect(tmp)
            hit = False
            for metric in METRICS:
                r = explain(con, metric, baseline, compare)
                real[metric] += r.real
                if r.rows:
                    explained[metric] += 1
                    hit = True
                    print(f"seed {1000 + seed}: {r.summary}", file=sys.stderr)
            any_explained += hit
        print(f"A/A run {seed}/{runs}", file=sys.stderr)
    print(f"\n### A/A: {runs} fleets of {devices} devices x {days} days, nothing planted\n")
    print("| metric | runs with an explanation | runs where the change is called real |")
    print("| --- | --- | --- |")
    for m in METRICS:
        print(f"| {m} | {explained[m]} of {runs} | {real[m]} of {runs} |")
    print(f"| any metric | {any_explained} of {runs} | |")


def planted(runs: int) -> None:
    from test_explain_planted import BASELINE as BASE
    from test_explain_planted import COMPARE, DAYS, DEVICES

    cases = [("mixed", "crash_free", ["fw=1.5.0", "hw=purifier-esp32"]),
             ("mixed", "active_devices", ["attr:region=us-east"]),
             ("mixed", "connectivity", ["attr:region=eu-north"]),
             ("humid", "crash_free", ["humidity=60-70 %"])]
    first = {c[1] + " " + c[2][0]: 0 for c in cases}
    worst = dict.fromkeys(first, 0.0)
    for run in range(runs):
        for name, (seed, causes) in FLEETS.items():
            with tempfile.TemporaryDirectory() as tmp:
                truth = write_dataset(Path(tmp), DEVICES, DAYS, seed + 100 * (run + 1), START,
                                      stationary=True, causes=causes)
                con = connect(tmp)
                for fleet, metric, cause in cases:
                    if fleet != name:
                        continue
                    key = metric + " " + cause[0]
                    r = explain(con, metric, BASE, COMPARE)
                    top = dict(zip(r.columns, r.rows[0], strict=True)) if r.rows else None
                    if top is not None and top["element"] == cause:
                        first[key] += 1
                        share = planted_share(con, metric, truth, r.before, r.after)
                        worst[key] = max(worst[key], abs(top["explanatory_power"] - share))
                    else:
                        print(f"run {run}: {key}: {r.summary}", file=sys.stderr)
        print(f"planted run {run + 1}/{runs}", file=sys.stderr)
    print(f"\n### Planted causes: {runs} fleets per cause, {DEVICES} devices x {DAYS} days\n")
    print("| cause (metric, element) | ranked first | largest distance EP - planted share |")
    print("| --- | --- | --- |")
    for (_, metric, cause) in cases:
        key = metric + " " + cause[0]
        print(f"| {metric}: {' & '.join(cause)} | {first[key]} of {runs} | {worst[key]:.3f} |")


def full_scale(root: Path, runs: int) -> None:
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from analytics_bench import T0, generate

    from fleetpulse.analytics.rollups import write_rollups
    from fleetpulse.analytics.sqltext import sql_list
    from fleetpulse.ingest.contract import USAGE_EVENTS
    from fleetpulse.ingest.store import Store

    data = root / "compacted"
    if not (root / "stamp").exists() or (root / "stamp").read_text() != repr((1.0, 0)):
        t = time.perf_counter()
        generate(root, 1.0, 0)
        write_rollups(Store(data))
        (root / "stamp").write_text(repr((1.0, 0)))
        print(f"generated and rolled up in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    day0 = date(1970, 1, 1) + timedelta(T0 // 86_400_000)
    base = (day0 + timedelta(30), day0 + timedelta(43))
    comp = (day0 + timedelta(60), day0 + timedelta(73))
    exe = str(Path(sys.executable).with_name("fleetpulse"))

    def wall(cmd: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    files = f"'{data}/events/date=*/*.parquet'"
    plain = (f"SELECT device_id, count(DISTINCT date) FILTER (WHERE date BETWEEN '{base[0]}' "
             f"AND '{base[1]}') AS f, count(DISTINCT date) FILTER (WHERE date BETWEEN "
             f"'{comp[0]}' AND '{comp[1]}') AS a FROM read_parquet({files}, "
             f"hive_partitioning = true) WHERE event IN ({sql_list(USAGE_EVENTS)}) "
             "GROUP BY device_id")

    def plain_once() -> float:
        t = time.perf_counter()
        duckdb.connect().sql(plain).fetchall()
        return time.perf_counter() - t

    baseline = statistics.median(plain_once() for _ in range(runs))
    longer = (comp[0], comp[0] + timedelta(27))
    # every metric over two weeks against two weeks; and the period-level shares over two
    # weeks against four, a change that is real (more time to crash or adopt), so that
    # the whole ranking runs
    cases = [(m, base, comp) for m in METRICS] + [
        (m, base, longer) for m in ("crash_free", "feature_adoption")]
    print(f"\n### explain at full scale, median of {runs}\n")
    print("| metric | baseline | compare | real change | explanations | `fleetpulse explain` "
          "process, wall s | vs plain DuckDB query |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| (plain DuckDB: devices' active days in both periods, in-process) | "
          f"{base[0]}..{base[1]} | {comp[0]}..{comp[1]} | | | {baseline:.2f} | 1.00 |")
    for metric, b, c in cases:
        cmd = [exe, "explain", metric, "--data", str(data), "--baseline", f"{b[0]}..{b[1]}",
               "--compare", f"{c[0]}..{c[1]}", "--format", "json"]
        doc = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
        secs = statistics.median(wall(cmd) for _ in range(runs))
        print(f"| {metric} | {b[0]}..{b[1]} | {c[0]}..{c[1]} | {'yes' if doc['real'] else 'no'} "
              f"| {len(doc['explanations'])} | {secs:.2f} | {secs / baseline:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aa-runs", type=int, default=100)
    ap.add_argument("--planted-runs", type=int, default=10)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--days", type=int, default=24)
    ap.add_argument("--full-scale", type=Path, metavar="DIR",
                    help="time explain at fleet scale on analytics_bench.py's dataset in DIR")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"duckdb {duckdb.__version__}")
    if args.full_scale:
        full_scale(args.full_scale, args.runs)
        return
    if args.aa_runs:
        aa(args.aa_runs, args.devices, args.days)
    if args.planted_runs:
        planted(args.planted_runs)


if __name__ == "__main__":
    main()
