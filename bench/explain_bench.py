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
Also the time of one explain per metric (connect excluded), median over the A/A runs.
(Time at fleet scale: analytics_bench.py.)
"""

from __future__ import annotations

import argparse
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
    seconds: dict[str, list[float]] = {m: [] for m in METRICS}
    for seed in range(1, runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            write_dataset(Path(tmp), devices, days, 1000 + seed, START, stationary=True)
            con = connect(tmp)
            hit = False
            for metric in METRICS:
                t = time.perf_counter()
                r = explain(con, metric, baseline, compare)
                seconds[metric].append(time.perf_counter() - t)
                real[metric] += r.real
                if r.rows:
                    explained[metric] += 1
                    hit = True
                    print(f"seed {1000 + seed}: {r.summary}", file=sys.stderr)
            any_explained += hit
        print(f"A/A run {seed}/{runs}", file=sys.stderr)
    print(f"\n### A/A: {runs} fleets of {devices} devices x {days} days, nothing planted\n")
    print("| metric | runs with an explanation | runs where the change is called real "
          "| explain s (median) |")
    print("| --- | --- | --- | --- |")
    for m in METRICS:
        print(f"| {m} | {explained[m]} of {runs} | {real[m]} of {runs} | "
              f"{statistics.median(seconds[m]):.3f} |")
    print(f"| any metric | {any_explained} of {runs} | | |")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aa-runs", type=int, default=100)
    ap.add_argument("--planted-runs", type=int, default=10)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--days", type=int, default=24)
    args = ap.parse_args()
    print(f"# {platform.machine()}, {platform.python_version()}, duckdb {duckdb.__version__}")
    if args.aa_runs:
        aa(args.aa_runs, args.devices, args.days)
    if args.planted_runs:
        planted(args.planted_runs)


if __name__ == "__main__":
    main()
