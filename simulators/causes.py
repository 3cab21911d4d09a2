"""Causes a simulated fleet plants for `fleetpulse explain` to find, from a scenario file:

    stationary = true        # every device active from day 0, none churns, half on 1.5.0
                             # from the start, one crash rate for both: nothing changes
                             # between two periods unless a cause says so (an A/A fleet)

    [[cause]]                # from day 14, purifiers on 1.5.0 are used 20% as often
    kind = "usage"           # usage: the share of days with use kept
    factor = 0.2             # crashes: the crash rate multiplied
    from_day = 14            # connectivity: the share of heartbeats lost
    where = {hw = "purifier-esp32", fw = "1.5.0"}   # hw, fw, region, humidity ("60-70 %")

A cause changes what the devices it names do and nothing else, and every draw it makes
is paired with the one the device would have made without it, so the truth file also
says what the metrics would have been without the causes: the planted share of a change
is measured, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetpulse.errors import UserError

KINDS = ("usage", "crashes", "connectivity")
WHERE_KEYS = ("hw", "fw", "region", "humidity")


@dataclass(frozen=True)
class Cause:
    kind: str
    factor: float
    from_day: int = 0
    hw: str | None = None
    fw: str | None = None
    region: str | None = None
    humidity: str | None = None  # a 10 % band of the device's room, e.g. "60-70 %"

    @classmethod
    def parse(cls, raw: Any, where_from: str) -> Cause:
        if not isinstance(raw, dict) or set(raw) - {"kind", "factor", "from_day", "where"}:
            raise UserError(f"{where_from}: a [[cause]] takes kind, factor, from_day and where")
        kind, factor = raw.get("kind"), raw.get("factor")
        if kind not in KINDS:
            raise UserError(f"{where_from}: cause kind must be one of {', '.join(KINDS)}")
        if not isinstance(factor, int | float) or factor < 0 or (
                kind != "crashes" and factor > 1):
            raise UserError(f"{where_from}: cause factor must be a number >= 0 (at most 1 "
                            "for usage and connectivity)")
        from_day = raw.get("from_day", 0)
        if not isinstance(from_day, int) or from_day < 0:
            raise UserError(f"{where_from}: cause from_day must be a whole number >= 0")
        where = raw.get("where", {})
        if (not isinstance(where, dict) or not where or set(where) - set(WHERE_KEYS)
                or not all(isinstance(v, str) for v in where.values())):
            raise UserError(f"{where_from}: cause where names devices by "
                            f"{', '.join(WHERE_KEYS)}, e.g. where = {{hw = \"plug-picow\"}}")
        if "humidity" in where and humidity_band_bounds(where["humidity"]) is None:
            raise UserError(f"{where_from}: humidity is a 10 % band like \"60-70 %\"")
        return cls(kind=kind, factor=float(factor), from_day=from_day, **where)

    def fits(self, hw: str, region: str, humidity_pct: float) -> bool:
        """Whether a device's fixed traits are those named (fw and the day are checked
        as it runs)."""
        if self.hw is not None and hw != self.hw:
            return False
        if self.region is not None and region != self.region:
            return False
        if self.humidity is not None:
            lo, hi = humidity_band_bounds(self.humidity) or (0, 0)
            return lo <= humidity_pct < hi
        return True

    def applies(self, fw: str, day: int) -> bool:
        return day >= self.from_day and (self.fw is None or fw == self.fw)

    def describe(self) -> dict[str, Any]:
        where = {k: getattr(self, k) for k in WHERE_KEYS if getattr(self, k) is not None}
        return {"kind": self.kind, "factor": self.factor, "from_day": self.from_day,
                "where": where}


def humidity_band_bounds(band: str) -> tuple[int, int] | None:
    """"60-70 %" -> (60, 70): the bands explain's humidity dimension names."""
    try:
        lo, hi = band.removesuffix("%").strip().split("-")
        bounds = int(lo), int(hi)
    except ValueError:
        return None
    return bounds if bounds[1] - bounds[0] == 10 and bounds[0] % 10 == 0 else None
