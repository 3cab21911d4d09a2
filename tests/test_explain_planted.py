"""Causes planted by the simulator are what `explain` ranks first, with explanatory power
within 10 points of the share of the change the cause made, measured from the truth
file's record of what the metric would have been without it; a cause that only a
combination names (purifiers on 1.5.0, neither alone) is found as that combination.

The fleets are stationary (every device there from day 0, half on 1.5.0, one crash
rate): apart from the causes, the two periods differ by chance only. Each fleet goes
through ingest's pipeline (validation, the Parquet writer) into a dataset, its truth
kept as `fleetpulse simulate` keeps it (simulators/offline.py).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.explain import explain
from fleetpulse.simulators.causes import Cause
from fleetpulse.simulators.offline import write_dataset

START = date(2026, 1, 5)
DEVICES, DAYS, CAUSE_DAY = 200, 24, 12
# day 0 is left out: every device's first power_on and upgrade fall on it
BASELINE = (START + timedelta(1), START + timedelta(CAUSE_DAY - 1))
COMPARE = (START + timedelta(CAUSE_DAY), START + timedelta(DAYS - 1))


def build(data: Path, seed: int, causes: tuple[Cause, ...]) -> dict[str, Any]:
    """The fleet's dataset (its devices' regions as attributes) and its truth."""
    return write_dataset(data, DEVICES, DAYS, seed, START, stationary=True, causes=causes)


def _days(period: tuple[date, date]) -> list[str]:
    return [(period[0] + timedelta(i)).isoformat()
            for i in range((period[1] - period[0]).days + 1)]


def planted_share(con: Any, metric: str, truth: dict[str, Any], before: float,
                  after: float) -> float:
    """(after - after without the causes) / (after - before): the share of the change the
    causes made, from the truth file's counterfactual."""
    without = truth["without_causes"]
    days = _days(COMPARE)
    lo, hi = f"DATE '{COMPARE[0]}'", f"DATE '{COMPARE[1]}'"
    if metric == "active_devices":
        extra = sum(without["extra_active_device_days"].get(d, 0) for d in days)
        counterfactual = after + extra / len(days)
    elif metric == "crash_free":
        reporting = con.sql(f"SELECT count(DISTINCT device_id) FROM device_days "
                            f"WHERE day BETWEEN {lo} AND {hi}").fetchall()[0][0]
        crashed = sum(1 for ds in without["crash_days"].values() if any(d in days for d in ds))
        counterfactual = (reporting - crashed) / reporting
    elif metric == "connectivity":
        received, expected = con.sql(
            f"SELECT sum(heartbeats), sum(expected_heartbeats) FROM device_health_days("
            f"since := {lo}, until := {hi}, segment_by := 'all')").fetchall()[0]
        extra = sum(without["extra_heartbeats"].get(d, 0) for d in days)
        counterfactual = (received + extra) / expected
    else:
        raise AssertionError(metric)
    return (after - counterfactual) / (after - before)


FLEETS = {
    # three causes on one fleet, each moving a metric of its own
    "mixed": (11, (
        Cause("crashes", 100, CAUSE_DAY, hw="purifier-esp32", fw="1.5.0"),
        Cause("usage", 0.3, CAUSE_DAY, region="us-east"),
        Cause("connectivity", 0.5, CAUSE_DAY, region="eu-north"),
    )),
    "humid": (12, (Cause("crashes", 100, CAUSE_DAY, humidity="60-70 %"),)),
}


@pytest.fixture(scope="module")
def fleets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, dict[str, Any]]]:
    out = {}
    for name, (seed, causes) in FLEETS.items():
        data = tmp_path_factory.mktemp(name)
        truth = build(data, seed, causes)
        con = connect(data)
        stored = con.sql("SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM events)"
                         ).fetchall()[0][0]
        assert stored == truth["records"]  # every record sent is in the dataset, once
        out[name] = (con, truth)
    return out


@pytest.mark.parametrize("fleet, metric, cause", [
    # firmware x model, where neither alone is the cause
    ("mixed", "crash_free", ["fw=1.5.0", "hw=purifier-esp32"]),
    # an attribute from the registry
    ("mixed", "active_devices", ["attr:region=us-east"]),
    # connectivity lost in one region
    ("mixed", "connectivity", ["attr:region=eu-north"]),
    # an environment band
    ("humid", "crash_free", ["humidity=60-70 %"]),
])
def test_the_planted_cause_is_ranked_first(fleets, fleet: str, metric: str,
                                           cause: list[str]) -> None:
    con, truth = fleets[fleet]
    result = explain(con, metric, BASELINE, COMPARE)
    assert result.real, result.summary
    top = dict(zip(result.columns, result.rows[0], strict=True))
    assert top["element"] == cause, result.rows[:3]
    share = planted_share(con, metric, truth, result.before, result.after)
    assert abs(top["explanatory_power"] - share) <= 0.10, (top, share)
    # the summary says it in one line
    assert " on ".join(cause) in result.summary


def test_the_metrics_no_cause_touched_are_not_explained(fleets) -> None:
    # on the humid fleet only crashes changed: activity and connectivity did not
    con, _ = fleets["humid"]
    for metric in ("active_devices", "connectivity"):
        result = explain(con, metric, BASELINE, COMPARE)
        assert not result.real and result.rows == [], result.summary
