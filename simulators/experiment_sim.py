"""Experiments with a known answer, for testing the analysis (analytics/experiments.py)
without a fleet: per-device usage with a pre-period that predicts it.

Each device has its own usage rate (gamma-distributed: a few heavy users, many light
ones), so its uses in the 14 days before exposure correlate with its uses after, the
case CUPED is for. Devices are exposed over the first days of the experiment; each day
a device uses the feature Poisson(rate x (1 + lift of its variant)) times. Planted
effects are relative lifts per variant; A is the control.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from fleetpulse.analytics.exposed import DailyUses, Device

START = date(2026, 3, 2)


def simulate(devices: int = 1000, days: int = 14, lifts: dict[str, float] | None = None,
             seed: int = 0, pre_days: int = 14, exposure_days: int = 7,
             mean_rate: float = 0.5, shape: float = 1.5) -> list[Device]:
    """`devices` split evenly over the variants of `lifts` (A added as the control)."""
    lifts = {"A": 0.0, **(lifts or {"B": 0.0})}
    names = sorted(lifts)
    rng = np.random.default_rng(seed)
    rate = rng.gamma(shape, mean_rate / shape, devices)
    variant = rng.integers(0, len(names), devices)
    exposed = rng.integers(0, exposure_days, devices)
    pre = rng.poisson(rate * pre_days)
    out = []
    for i in range(devices):
        v = names[variant[i]]
        n_days = days - int(exposed[i])
        per_day = rng.poisson(rate[i] * (1 + lifts[v]), n_days)
        first = START + timedelta(int(exposed[i]))
        daily = DailyUses.of({first + timedelta(k): int(u) for k, u in enumerate(per_day) if u})
        # health: every device has 1-2 reboots over the period and heartbeats at about
        # 98%, the same in every variant
        out.append(Device(v, float(per_day.sum()), float(pre[i]), first, daily,
                          device_days=n_days, crashes=int(rng.random() < 0.02),
                          reboots=int(rng.integers(1, 3)),
                          heartbeats=float(rng.binomial(24 * n_days, 0.98)),
                          expected_heartbeats=float(24 * n_days)))
    return out
