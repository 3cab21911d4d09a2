"""The guard of a staged rollout: are the devices on the new version clearly worse off
than the devices still on the old one?

Per device (the `rollout_guard_devices` macro in metrics.sql), one value per guard:
  crash_free    share of its device-days without a crash (higher is better): crash-free
                days rather than crash-free devices, so that a device updated yesterday
                and one watched for a week weigh their exposure alike
  reboots       reboots per device-day, the boot into the new version left out (lower
                is better)
  connectivity  heartbeats received / expected, over whole days on the firmware (its
                first day there is partial, and would count a heartbeat not yet due
                as missed) (higher is better)
For each guard, the difference updated - control of the per-device means, with the
asymptotic confidence sequence experiments use (analytics/experiments.py): valid at
every look, however often the rollout's service looks (every hour), so looking often
does not inflate false alarms. Each guard gets alpha / (number of guards) (Bonferroni).
The rollout halts when a guard's sequence lies wholly on the worse side of zero: a
clear loss, not a point estimate that happens to be lower. Below MIN_DEVICES in either
arm the guard says so and does not judge: a canary of three devices cannot show a loss
at any confidence worth acting on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from .sqltext import sql_str

if TYPE_CHECKING:
    import duckdb

    from .dataset import Result

GUARDS = ("crash_free", "reboots", "connectivity")
HIGHER_IS_BETTER = {"crash_free": True, "reboots": False, "connectivity": True}
ALPHA = 0.05
MIN_DEVICES = 10  # per arm, before a guard may judge


@dataclass
class GuardResult:
    guard: str
    control: float | None  # mean of the control devices' values
    updated: float | None
    low: float | None  # confidence sequence of updated - control
    high: float | None
    n_control: int
    n_updated: int
    loss: bool  # the sequence lies wholly on the worse side of zero

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 5)

        return {"guard": self.guard, "control": r(self.control), "updated": r(self.updated),
                "low": r(self.low), "high": r(self.high), "n_control": self.n_control,
                "n_updated": self.n_updated, "loss": self.loss}


@dataclass
class Verdict:
    results: list[GuardResult]

    @property
    def loss(self) -> bool:
        return any(r.loss for r in self.results)

    @property
    def judged(self) -> bool:
        return any(r.low is not None for r in self.results)

    def blind(self, sent: int) -> bool:
        """Whether this could not judge for want of updated devices' data although `sent`
        devices took the release, enough to judge it: their telemetry has not reached the
        dataset yet (or they stopped reporting). A canary smaller than the guard needs
        is not blind: it can never be judged."""
        updated = max((g.n_updated for g in self.results), default=0)
        return not self.judged and updated < MIN_DEVICES <= sent

    def summary(self) -> str:
        """One line: which guard lost and by how much, or that none did."""
        lost = [r for r in self.results if r.loss]
        if lost:
            return "; ".join(f"{r.guard} {r.control:.4f} on the old version vs "
                             f"{r.updated:.4f} on the new ({r.n_updated} devices), "
                             f"difference in [{r.low:.4f}, {r.high:.4f}]"
                             for r in lost)
        if not self.judged:
            if self.results and all(r.n_control == 0 and r.n_updated for r in self.results):
                return "no control left: every device in scope is on the new version"
            n = min((min(r.n_control, r.n_updated) for r in self.results), default=0)
            if n >= MIN_DEVICES:
                return "no clear loss: every device alike in both arms"
            return f"not judged yet: {n} devices in the smaller arm, {MIN_DEVICES} needed"
        return "no clear loss"

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "summary": self.summary(),
                "guards": [r.to_dict() for r in self.results]}


def device_values(rows: Sequence[dict[str, Any]], guard: str) -> tuple[np.ndarray, np.ndarray]:
    """(control values, updated values) of one guard, one per device."""
    out: dict[str, list[float]] = {"control": [], "updated": []}
    for row in rows:
        days = row["device_days"]
        if not days:
            continue
        if guard == "crash_free":
            value = 1 - row["crash_days"] / days
        elif guard == "reboots":
            value = row["reboots"] / days
        elif guard == "connectivity":
            if not row["expected_heartbeats"]:
                continue
            value = min(1.0, row["heartbeats"] / row["expected_heartbeats"])
        else:
            raise ValueError(f"unknown guard {guard!r}")
        out[row["arm"]].append(value)
    return np.array(out["control"]), np.array(out["updated"])


def judge(rows: Sequence[dict[str, Any]], guards: Sequence[str] = GUARDS,
          alpha: float = ALPHA, tuning_n: int = 1000) -> Verdict:
    """The guard's verdict over per-device rows (device_id, arm, device_days, crash_days,
    reboots, heartbeats, expected_heartbeats). `tuning_n`: the devices at which the
    sequences are tightest (the rollout's scope)."""
    # Imported here, not with the module, as the dataset in guard_rows: `fleetpulse
    # rollout`'s parser imports the plan, which names the guards, and experiments brings
    # scipy and the dataset duckdb: 0.2 s of every fleetpulse command's start
    # (bench/RESULTS.md, "What every command pays to start, again").
    from .experiments import confidence_sequence

    results = []
    for guard in guards:
        control, updated = device_values(rows, guard)
        nc, nu = len(control), len(updated)
        if min(nc, nu) < MIN_DEVICES:
            results.append(GuardResult(guard, _mean(control), _mean(updated), None, None,
                                       nc, nu, False))
            continue
        diff = float(updated.mean() - control.mean())
        se = math.sqrt(float(np.var(control, ddof=1)) / nc + float(np.var(updated, ddof=1)) / nu)
        # Without noise (every device of an arm alike) the sequence is the difference
        # itself: every updated device crashing every day against none of the others is
        # a loss; no difference at all leaves nothing to judge.
        low, high, _ = confidence_sequence(diff, se, nc + nu, alpha / len(guards),
                                           tuning_n=max(tuning_n, 2))
        judged = se > 0 or diff != 0
        worse = high < 0 if HIGHER_IS_BETTER[guard] else low > 0
        results.append(GuardResult(guard, float(control.mean()), float(updated.mean()),
                                   low if judged else None, high if judged else None,
                                   nc, nu, worse))
    return Verdict(results)


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def guard_rows(con: duckdb.DuckDBPyConnection, version: str, previous: str,
               since: date, now: datetime) -> list[dict[str, Any]]:
    """The per-device rows of `rollout_guard_devices` over the UTC days from `since` that
    ended before `now`: whole days, so that every look weighs each device-day the same
    (`now` is the look's time, virtual in simulations, not the clock that bounds a day
    in progress's expected heartbeats)."""
    from .dataset import query

    until = now.astimezone(UTC).date() - timedelta(days=1)
    return rows_of(query(con, f"SELECT * FROM rollout_guard_devices({sql_str(version)}, "
                              f"{sql_str(previous)}, since := DATE '{since}', "
                              f"until := DATE '{until}')"))


def rows_of(result: Result) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]
