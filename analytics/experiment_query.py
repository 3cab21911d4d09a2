"""The per-device rows an experiment analysis needs, from the dataset's macros
(experiment_exposure, experiment_daily_uses, experiment_guardrails in metrics.sql)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from .dataset import query
from .experiments import Device
from .sqltext import sql_str

if TYPE_CHECKING:
    import duckdb


def experiment_devices(con: duckdb.DuckDBPyConnection, key: str, feature: str,
                       share_b: float = 0.5, since: date | None = None,
                       until: date | None = None) -> list[Device]:
    """Every exposed device with its uses, pre-period uses, daily uses and health."""
    params = [sql_str(key), f"feature_name := {sql_str(feature)}", f"share_b := {share_b}"]
    if since:
        params.append(f"since := DATE '{since}'")
    if until:
        params.append(f"until := DATE '{until}'")
    args = ", ".join(params)
    daily: dict[str, dict[date, int]] = {}
    for device_id, day, uses in query(
            con, f"SELECT device_id, day, uses FROM experiment_daily_uses({args})").rows:
        daily.setdefault(device_id, {})[day] = int(uses)
    health = {r[0]: r[1:] for r in query(
        con, "SELECT device_id, device_days, crashes, reboots, heartbeats, "
             f"expected_heartbeats FROM experiment_guardrails({args})").rows}
    out = []
    for device_id, variant, exposed_day, uses, pre_uses in query(
            con, "SELECT device_id, variant, exposed_day, uses, pre_uses "
                 f"FROM experiment_exposure({args}) ORDER BY device_id").rows:
        days, crashes, reboots, hb, expected = health.get(device_id, (0, 0, 0, 0.0, 0.0))
        out.append(Device(variant, float(uses), float(pre_uses), exposed_day,
                          daily.get(device_id, {}), int(days), int(crashes), int(reboots),
                          float(hb), float(expected)))
    return out
