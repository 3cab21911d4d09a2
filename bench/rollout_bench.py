"""The rollout guard over many simulated rollouts: how often it halts a release that is no
worse (A/A), and how soon it halts one that crashes more.

    .venv/bin/python bench/rollout_bench.py [--model-runs 1000] [--fleet-runs 10]

Two fleets:
- model: per device and day, crashes ~ Binomial(24 hours, p) for the version it runs,
  heartbeats lost at 0.2% each; the rows the guard reads built from those counts and
  judged by the real `step` (gateway/rollout.py) at the end of every day, which is what an
  hourly look sees (the guard reads complete days). Fast enough for thousands of runs.
- fleet: simulators/rollout_sim.py, the simulated fleet's telemetry through ingest's
  pipeline into Parquet and the guard's SQL, looking every 6 virtual hours: slower, the
  whole path.
Old version: 0.0005 crashes per device-hour (1.2% of device-days). Planted: the new
version crashing 1x (A/A), 2x, 5x, 20x as often. Stages 1%,5%,25%,50%,100%, soak 2 days
(model; 1000 devices) or 5%,25%,50%,100%, soak 1 day (fleet; 400 devices).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from fleetpulse.gateway.rollout import Plan, Rollout, step
from fleetpulse.simulators.rollout_sim import run_rollout

OLD = 0.0005
FACTORS = (1, 2, 5, 20)
HEARTBEAT_LOSS = 0.002
DAY_MS = 86_400_000


def model_rollout(rng: np.random.Generator, devices: int, p_new: float,
                  stages: list[float], soak_days: int, days: int) -> tuple[int | None, int, int]:
    """(day of the halt or None, stage reached, devices sent) of one rollout."""
    r = Rollout(Plan("1.6.0", "1.4.0", {}, stages, soak_days * 86400.0), started_ms=0)
    ids = [f"d{i}" for i in range(devices)]
    index = {d: i for i, d in enumerate(ids)}
    updated = np.zeros(devices, dtype=bool)
    n = {k: np.zeros(devices, dtype=np.int64) for k in ("days", "crash_days", "crashes",
                                                        "heartbeats")}

    def send(device_id: str, message: dict[str, Any]) -> None:
        i = index[device_id]
        if not message.get("rollback") and not updated[i]:
            updated[i] = True
            for v in n.values():  # an updated device counts its days on the new version
                v[i] = 0

    step(r, 0, ids, [], send)
    for day in range(days):
        p = np.where(updated, p_new, OLD)
        crashes = rng.binomial(24, p)
        n["days"] += 1
        n["crashes"] += crashes
        n["crash_days"] += crashes > 0
        n["heartbeats"] += 24 - rng.binomial(24, HEARTBEAT_LOSS, devices)
        rows = [{"device_id": d, "arm": "updated" if updated[i] else "control",
                 "device_days": int(n["days"][i]), "crash_days": int(n["crash_days"][i]),
                 "reboots": int(n["crashes"][i]), "heartbeats": int(n["heartbeats"][i]),
                 "expected_heartbeats": 24 * int(n["days"][i])} for i, d in enumerate(ids)]
        step(r, (day + 1) * DAY_MS, ids, rows, send)
        if r.state == "halted":
            return day + 1, r.stage, len(r.sent)
        if r.state == "completed":
            break
    return None, r.stage, len(r.sent)


def summarize(label: str, runs: int, results: list[tuple[int | None, int, int]],
              devices: int, stages: list[float]) -> str:
    halts = [x for x in results if x[0] is not None]
    days = sorted(x[0] for x in halts if x[0] is not None)
    by_stage = [sum(1 for x in halts if x[1] == s) for s in range(len(stages))]
    sent = [x[2] for x in halts]
    median = f"{np.median(days):g}" if days else "-"
    p90 = f"{np.percentile(days, 90):g}" if days else "-"
    return (f"| {label} | {runs} | {len(halts)} ({len(halts) / runs:.1%}) | {median} | {p90} "
            f"| {' / '.join(map(str, by_stage))} | "
            f"{np.median(sent) / devices:.1%} |" if sent else
            f"| {label} | {runs} | 0 (0.0%) | - | - | {' / '.join(map(str, by_stage))} | - |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-runs", type=int, default=1000)
    ap.add_argument("--fleet-runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    header = ("| new version's crash rate | rollouts | halted | median days to the halt "
              "| 90th percentile | halts at stage 1 / 2 / ... | devices sent before the halt "
              "(median, share of scope) |\n| --- | --- | --- | --- | --- | --- | --- |")
    if args.model_runs:
        stages, devices = [0.01, 0.05, 0.25, 0.5, 1.0], 1000
        print(f"model fleet: {devices} devices, stages 1%,5%,25%,50%,100%, soak 2 days")
        print(header)
        rng = np.random.default_rng(args.seed)
        for factor in FACTORS:
            started = time.monotonic()
            results = [model_rollout(rng, devices, OLD * factor, stages, 2, 12)
                       for _ in range(args.model_runs)]
            print(summarize(f"{factor}x", args.model_runs, results, devices, stages)
                  + f" <!-- {time.monotonic() - started:.0f} s -->", flush=True)
    if args.fleet_runs:
        stages, devices = [0.05, 0.25, 0.5, 1.0], 400
        print(f"\nsimulated fleet through ingest and SQL: {devices} devices, stages "
              "5%,25%,50%,100%, soak 1 day, a look every 6 hours")
        print(header)
        for factor in FACTORS:
            started = time.monotonic()
            results = []
            for run in range(args.fleet_runs):
                with tempfile.TemporaryDirectory() as tmp:
                    plan = Plan("1.6.0", "1.4.0", {}, stages, 86400.0)
                    out = run_rollout(Path(tmp) / "data", Path(tmp) / "state", plan,
                                      {"1.4.0": OLD, "1.6.0": OLD * factor}, devices, 5,
                                      seed=args.seed * 1000 + run, start=date(2026, 11, 2))
                    halted = out.halted_hour
                    results.append((None if halted is None else halted / 24,
                                    out.rollout.stage, len(out.rollout.sent)))
            print(summarize(f"{factor}x", args.fleet_runs, results, devices, stages)
                  + f" <!-- {time.monotonic() - started:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
