"""The analysis' input: one exposed device of an experiment, as the SQL macros return it
(analytics/experiment_query.py builds them). Apart from the statistics in experiments.py,
which import scipy, so that building them does not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass
class DailyUses:
    """A device's uses per UTC day, as arrays (days since 1970-01-01, uses): a fleet's
    experiment has about as many of these pairs as device-days, and a dict entry per
    pair was most of the work of `fleetpulse metrics experiment` before its queries."""
    days: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    uses: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, by_day: dict[date, int]) -> DailyUses:
        return cls(np.array([day_number(d) for d in by_day], dtype=np.int64),
                   np.array(list(by_day.values()), dtype=float))

    def __len__(self) -> int:
        return len(self.days)


def day_number(d: date) -> int:
    return d.toordinal() - EPOCH_ORDINAL


@dataclass
class Device:
    """One exposed device: what the SQL macros return per device."""
    variant: str
    uses: float  # uses of the feature from exposure on
    pre_uses: float = 0.0  # in the pre-period: the CUPED covariate
    exposed_day: date | None = None
    daily: DailyUses = field(default_factory=DailyUses)  # uses per UTC day, for looks
    device_days: int = 0
    crashes: int = 0
    reboots: int = 0
    heartbeats: float = 0.0
    expected_heartbeats: float = 0.0
