"""The per-device rows an experiment analysis needs, from the dataset's macros
(experiment_exposed, exposure_feature_days, exposure_uses, daily_uses and
exposure_guardrails in metrics.sql)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from .dataset import query, query_arrow, snapshot_views
from .exposed import DailyUses, Device
from .sqltext import sql_str

if TYPE_CHECKING:
    import duckdb


_EXPOSED = "fleetpulse_experiment_exposed"
_USES = "fleetpulse_experiment_uses"


def experiment_devices(con: duckdb.DuckDBPyConnection, key: str, feature: str,
                       share_b: float = 0.5, since: date | None = None,
                       until: date | None = None) -> list[Device]:
    """Every exposed device with its uses, pre-period uses, daily uses and health: the
    rows of experiment_exposure, with the uses counted once per device and day for both
    the totals and the daily looks (the metric macro counts them, and the daily uses
    would count them again)."""
    # the devices and their first days, which the exposure and the health both read,
    # aggregated once
    with snapshot_views(con, ["activations"]):
        return _devices(con, key, feature, share_b, since, until)


def _devices(con: duckdb.DuckDBPyConnection, key: str, feature: str, share_b: float,
             since: date | None, until: date | None) -> list[Device]:
    since_sql = f"DATE '{since or date(1970, 1, 1)}'"
    until_sql = f"DATE '{until or date(2999, 12, 31)}'"
    query(con, f"CREATE OR REPLACE TEMP TABLE {_EXPOSED} AS SELECT * FROM experiment_exposed("
               f"{sql_str(key)}, share_b := {share_b}, since := {since_sql}, "
               f"until := {until_sql})")
    try:
        query(con, f"CREATE OR REPLACE TEMP TABLE {_USES} AS SELECT * FROM "
                   f"exposure_feature_days('{_EXPOSED}', {sql_str(feature)}, {until_sql})")
        daily = _daily_uses(con, f"FROM daily_uses('{_USES}')")
        health = {r[0]: r[1:] for r in query(
            con, "SELECT device_id, device_days, crashes, reboots, heartbeats, "
                 f"expected_heartbeats FROM exposure_guardrails('{_EXPOSED}', {since_sql}, "
                 f"{until_sql})").rows}
        exposed = query(con, "SELECT device_id, variant, exposed_day, uses, pre_uses FROM "
                             f"exposure_uses('{_EXPOSED}', '{_USES}') ORDER BY device_id").rows
    finally:
        for table in (_EXPOSED, _USES):
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")
    out = []
    for device_id, variant, exposed_day, uses, pre_uses in exposed:
        days, crashes, reboots, hb, expected = health.get(device_id, (0, 0, 0, 0.0, 0.0))
        out.append(Device(variant, float(uses), float(pre_uses), exposed_day,
                          daily.get(device_id, DailyUses()), int(days), int(crashes),
                          int(reboots), float(hb), float(expected)))
    return out


def _daily_uses(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, DailyUses]:
    """Per device, its days and uses from `source` (rows device_id, day, uses), in no
    particular order of days (the analysis places each by its day). One row per device
    with its days and uses as two lists built from the same rows, read as Arrow: the
    lists' values stay numbers in two flat arrays, sliced per device, where fetching
    them as Python lists made an object per device-day."""
    table = query_arrow(
        con, "SELECT device_id, list((day - DATE '1970-01-01')::BIGINT) AS days, "
             f"list(uses::DOUBLE) AS uses {source} GROUP BY device_id")
    days, uses = (table.column(c).combine_chunks() for c in ("days", "uses"))
    offsets = days.offsets.to_numpy()
    all_days, all_uses = days.values.to_numpy(), uses.values.to_numpy()
    return {device_id: DailyUses(all_days[a:b], all_uses[a:b])
            for device_id, a, b in zip(table.column("device_id").to_pylist(),
                                       offsets[:-1], offsets[1:], strict=True)}
