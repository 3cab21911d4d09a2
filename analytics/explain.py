"""Why a metric changed between two periods: the explain macros (explain.sql) as a result
with a one-line summary, for `fleetpulse explain` and for Python callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from fleetpulse.errors import UserError

from .sqltext import sql_list, sql_str

if TYPE_CHECKING:
    import duckdb

# metric -> how a person names it (the summary line); the macros define them
METRICS = {
    "active_devices": "daily active devices",
    "crash_free": "crash-free share",
    "reboots": "reboots per device-day",
    "connectivity": "connectivity",
    "uses_per_device": "usage events a day per active device",
    "feature_adoption": "adoption of {feature}",
}
# what --dims may name: each dimension, or attr / variant for all of their kind
DIMENSIONS = ("fw", "hw", "age", "temperature", "humidity", "connectivity", "variant", "attr")


@dataclass
class Explanation:
    metric: str
    label: str
    before: float
    after: float
    z: float | None
    real: bool
    devices: int
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line a person reads first."""
        move = f"{self.label} {_fmt(self.before)} -> {_fmt(self.after)}"
        if not self.real:
            return (f"no real change in {move} (z = {_fmt(self.z)}, within chance or under "
                    "1%): nothing to explain")
        if not self.rows:
            return (f"{move} is a real change (z = {_fmt(self.z)}), but no group of devices "
                    "accounts for it more than the rest: it is fleet-wide")
        top = dict(zip(self.columns, self.rows[0], strict=True))
        way = "rise" if self.after > self.before else "drop"
        ep = top["explanatory_power"]
        # over 100%: the element alone moved the metric further than it went, the rest
        # of the fleet moved it back part of the way
        share = f"{ep:.0%} of" if ep <= 1 else f"all of (and more: {ep:.0%})"
        return (f"{share} the {way} in {self.label} ({_fmt(self.before)} -> "
                f"{_fmt(self.after)}) is {' on '.join(top['element'])}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "summary": self.summary, "before": self.before,
                "after": self.after, "z": self.z, "real": self.real, "devices": self.devices,
                "explanations": [dict(zip(self.columns, r, strict=True)) for r in self.rows]}


def _check_dims_exist(con: duckdb.DuckDBPyConnection, dims: list[str]) -> None:
    """An attribute or experiment named in --dims that no device has would explain
    nothing, and the answer would read as "fleet-wide": say so instead."""
    from .dataset import query

    known = {"attr": "SELECT DISTINCT name FROM device_attributes",
             "variant": "SELECT DISTINCT experiment FROM experiment_reports"}
    for d in dims:
        kind, _, name = d.partition(":")
        if name and kind in known:
            names = sorted(r[0] for r in query(con, known[kind]).rows)
            if name not in names:
                what = "attribute" if kind == "attr" else "experiment"
                raise UserError(f"--dims {d}: no device has the {what} {name!r} (known: "
                                f"{', '.join(names) or 'none; see `fleetpulse devices export`'})")


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.3g}"


def explain(con: duckdb.DuckDBPyConnection, metric: str, baseline: tuple[date, date],
            compare: tuple[date, date], *, feature: str = "eco_mode",
            dims: list[str] | None = None, max_dims: int = 3, min_ep: float = 0.1,
            min_z: float = 3.0, min_devices: int = 0) -> Explanation:
    """The change of `metric` from `baseline` to `compare` (inclusive UTC days) and the
    elements that explain it, best first; none when the change is not real."""
    from .dataset import query

    if metric not in METRICS:
        raise UserError(f"explain knows no metric {metric!r}: use one of {', '.join(METRICS)}")
    for d in dims or []:
        if d not in DIMENSIONS and not d.startswith(("attr:", "variant:")):
            raise UserError(f"no dimension {d!r}: use {', '.join(DIMENSIONS)}, attr:NAME or "
                            "variant:KEY")
    if not 1 <= max_dims <= 3:
        raise UserError("--max-dims is 1, 2 or 3")
    for name, (lo, hi) in (("--baseline", baseline), ("--compare", compare)):
        if lo > hi:
            raise UserError(f"{name} {lo}..{hi} ends before it begins")
    _check_dims_exist(con, dims or [])
    periods = (f"DATE '{baseline[0]}', DATE '{baseline[1]}', DATE '{compare[0]}', "
               f"DATE '{compare[1]}'")
    feat = f"feature_name := {sql_str(feature)}"
    devices, before, after, z, real = query(
        con, f"SELECT devices, before, after, z, real FROM explain_change({sql_str(metric)}, "
             f"{periods}, {feat}, min_z := {min_z})").rows[0]
    label = METRICS[metric].format(feature=feature)
    if before is None or after is None:
        # a period without data is a mistyped date far more often than a silent fleet
        lo, hi = query(con, "SELECT min(date), max(date) FROM rollup_firmware_days").rows[0]
        empty = "--baseline" if before is None else "--compare"
        held = f"the dataset holds {lo}..{hi}" if lo else "the dataset holds no records"
        raise UserError(f"no {label} in {empty}: no device reported then ({held})")
    out = Explanation(metric, label, before, after, z, real, devices or 0)
    if not real:
        return out
    dim_arg = f", dimensions := [{sql_list(dims)}]" if dims else ""
    result = query(con, f"SELECT * FROM explain({sql_str(metric)}, {periods}, {feat}, "
                        f"max_dims := {max_dims}{dim_arg}, min_ep := {min_ep}, "
                        f"min_z := {min_z}, min_devices := {min_devices})")
    out.columns, out.rows = result.columns, result.rows
    return out
