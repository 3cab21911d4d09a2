"""What the dashboard shows: the view a PM chose (date range, breakdown, experiment
feature) and, per panel, the SQL over the metric macros and the chart that draws it.
report.py runs them; dashboard.py reads a view from the page's URL."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb

from fleetpulse.gateway.attributes import NAME_CHARS

from . import DEFAULT_FEATURE
from .dataset import Result, query, snapshot_views, timed_query
from .sqltext import sql_str


def check_breakdown(value: str) -> str:
    """A metric's segment_by: all, fw, hw, variant:KEY with an optional :SHARE_B, or
    attr:NAME; ValueError with what to write instead."""
    if value in ("all", "fw", "hw"):
        return value
    kind, _, rest = value.partition(":")
    if kind == "attr" and rest and set(rest) <= NAME_CHARS:
        return value
    key, _, share = rest.partition(":")
    if kind == "variant" and key:
        try:
            ok = not share or 0 < float(share) < 1
        except ValueError:
            ok = False
        if ok:
            return value
    raise ValueError(f"{value!r}: use fw, hw, variant:KEY (variant:KEY:0.2 when B's share "
                     "is 0.2) or attr:NAME (a device attribute, e.g. attr:region)")


@dataclass(frozen=True)
class View:
    """The dashboard's state, all of it in the page's URL."""
    since: date | None = None
    until: date | None = None
    by: str = "all"
    feature: str = DEFAULT_FEATURE

    def __post_init__(self) -> None:
        check_breakdown(self.by)
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"since {self.since} is after until {self.until}")

    @property
    def segmented(self) -> bool:
        return self.by != "all"

    def range_args(self) -> list[str]:
        return ([f"since := DATE '{self.since}'"] if self.since else []) + \
               ([f"until := DATE '{self.until}'"] if self.until else [])

    def args(self, segment: bool = False, by: str | None = None) -> str:
        """The macro arguments of this view; the breakdown too when `segment`."""
        seg = [f"segment_by := {sql_str(by or self.by)}"] if segment else []
        return ", ".join(self.range_args() + seg)

    def query_string(self) -> dict[str, str]:
        """The URL parameters that restore this view (defaults left out)."""
        q = {"since": str(self.since or ""), "until": str(self.until or ""),
             "by": "" if self.by == "all" else self.by,
             "feature": "" if self.feature == DEFAULT_FEATURE else self.feature}
        return {k: v for k, v in q.items() if v}


@dataclass
class Panel:
    key: str
    title: str
    chart: str  # a builder in charts.py
    sql: Callable[[View], str]
    follows_breakdown: bool = False
    # counted per firmware and model in its rollup: no breakdown per device (variant,
    # attribute), which the panel then shows for the whole fleet
    firmware_and_model_only: bool = False

    def follows(self, view: View) -> bool:
        """Whether this panel breaks down by the view's breakdown."""
        return (self.follows_breakdown and view.segmented
                and not (self.firmware_and_model_only and not _by_firmware_or_model(view)))


def _health_weekly(v: View) -> str:
    # fleet_health's crash-free share, per firmware and week (tests/test_dashboard.py
    # checks each week against fleet_health over that week)
    return ("SELECT week, fw, devices, crash_free_devices, "
            "round(crash_free_devices / devices, 4) AS crash_free_share "
            f"FROM crash_free_weeks({v.args()}) ORDER BY week, fw")


def _seg(v: View, follows: bool | None = None) -> str:
    return "segment, " if (v.segmented if follows is None else follows) else ""


def _by_firmware_or_model(v: View) -> bool:
    return v.by in ("fw", "hw")


def _sessions(v: View) -> str:
    seg = _by_firmware_or_model(v)  # rolled up per firmware and model: see Panel.follows
    return (f"SELECT day, {_seg(v, seg)}devices, sessions, sessions_per_device_day, "
            f"median_minutes, mean_minutes FROM sessions({v.args(seg)})")


PANELS = [
    Panel("activity", "Daily, weekly and monthly active devices", "activity",
          lambda v: f"SELECT day, {_seg(v)}dau, wau, mau, stickiness "
                    f"FROM active_devices({v.args(v.segmented)})", True),
    Panel("lifecycle", "Lifecycle: new, returning, resurrecting and dormant devices per week",
          "lifecycle", lambda v: f"SELECT * FROM lifecycle({v.args()})"),
    Panel("retention", "Retention: share of each weekly cohort active N weeks later",
          "retention", lambda v: f"SELECT * FROM retention({v.args()})"),
    Panel("features", "Feature adoption: share of active devices that used each feature",
          "features", lambda v: f"SELECT feature, {_seg(v)}devices, share_of_active, "
                                "median_days_to_first_use, uses_per_device, uses_per_day_used "
                                f"FROM feature_adoption({v.args(v.segmented)})", True),
    Panel("funnel", "Funnel: power_on, then session_start, then feature_used within 14 days",
          "funnel", lambda v: f"SELECT * FROM funnel({v.args()})"),
    Panel("sessions", "Usage sessions per active device-day", "sessions", _sessions, True,
          firmware_and_model_only=True),
    Panel("firmware", "Firmware rollout: share of active devices on each version", "firmware",
          lambda v: f"SELECT * FROM firmware_rollout({v.args()})"),
    Panel("health_weekly", "Fleet health over time: crash-free devices per firmware and week",
          "health_weekly", _health_weekly),
    Panel("health", "Fleet health: crash-free devices, reboots and connectivity", "health",
          lambda v: f"SELECT * FROM fleet_health({v.args(True, by=v.by if v.segmented else 'fw')})",
          True),
    Panel("updates", "Firmware updates: devices that started, applied, confirmed and rolled "
                     "back each version", "updates",
          lambda v: f"SELECT * FROM rollout_progress({v.args()})"),
    Panel("environment", "Usage per device-hour by temperature band", "environment",
          lambda v: "SELECT temp_from_c, sum(device_hours) AS device_hours, sum(usage_events) "
                    "AS usage_events, round(sum(usage_events) / sum(device_hours), 4) AS "
                    f"usage_per_device_hour FROM usage_by_environment({v.args()}) "
                    "GROUP BY 1 ORDER BY 1"),
    Panel("models", "Temperature by hardware model", "models",
          lambda v: f"SELECT * FROM readings_by_model({v.args()})"),
]


# Views several panels aggregate the same way. They are materialised once per refresh as
# TEMP tables, which the metric macros then read in place of the views of the same name
# (DuckDB looks in temp first): aggregated once instead of once per panel. The firmware
# rollup and device_days are not among them since device_days became a filter over the
# rollup: reading the rollup's files again costs less than copying them (bench/RESULTS.md,
# "What a PM waits for at full scale, third measurement").
SHARED_VIEWS = ("activations", "active_weeks")

Timer = Callable[[str, float], None]


def shared_views(con: duckdb.DuckDBPyConnection,
                 timer: Timer | None = None) -> AbstractContextManager[None]:
    """SHARED_VIEWS snapshotted for what runs inside: one refresh of the page."""
    return snapshot_views(con, SHARED_VIEWS, timer)


def run_panels(con: duckdb.DuckDBPyConnection, view: View | None = None, *,
               timer: Timer | None = None) -> list[Result]:
    """Every panel's query, in PANELS order; `timer(step, seconds)` is told how long each
    took. Inside shared_views, they read its snapshot."""
    return [timed_query(con, p.sql(view or View()), p.key, timer) for p in PANELS]


def run_groups(con: duckdb.DuckDBPyConnection, view: View | None = None, *,
               timer: Timer | None = None) -> list[Result]:
    """Every panel's query, in PANELS order, over one snapshot of the shared views."""
    with shared_views(con, timer):
        return run_panels(con, view, timer=timer)


@dataclass
class Coverage:
    """What the dataset holds: shown in the page's header, bounds of its date inputs."""
    first_day: date | None
    last_day: date | None
    devices: int
    experiments: list[str]
    features: list[str]
    attributes: list[str]  # device attribute names, for the breakdown choices

    def as_json(self) -> dict[str, Any]:
        return {"first_day": str(self.first_day or ""), "last_day": str(self.last_day or ""),
                "devices": self.devices, "experiments": self.experiments,
                "features": self.features, "attributes": self.attributes}


def coverage(con: duckdb.DuckDBPyConnection) -> Coverage:
    """What the dataset holds; from the snapshot of `activations` inside shared_views."""
    lo, hi, n = query(con, "SELECT min(activation_day), max(last_day), count(*) "
                           "FROM activations").rows[0]
    experiments = [r[0] for r in query(con, "SELECT DISTINCT experiment FROM "
                                            "experiment_reports ORDER BY 1").rows]
    # the covered days' features from their state (analytics/states.sql)
    features = [r[0] for r in query(con, "SELECT DISTINCT feature FROM ("
                                         "SELECT feature FROM state_features UNION ALL "
                                         "SELECT feature FROM rollup_feature_days "
                                         "WHERE date > state_through()) ORDER BY 1").rows]
    attributes = [r[0] for r in query(con, "SELECT DISTINCT name FROM device_attributes "
                                           "ORDER BY 1").rows]
    return Coverage(lo, hi, n, experiments, features, attributes)
