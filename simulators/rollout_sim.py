"""A staged rollout run against a simulated fleet, in virtual time: the fleet's devices
take the updates the rollout sends, the versions crash as often as planted, their
telemetry goes through ingest's pipeline into Parquet, and the rollout's guard reads it
back through the analytics' SQL at every look, as the rollout service does.

For tests and bench/rollout_bench.py: many rollouts quickly, each with the truth of
which devices were sent what."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.rollout_guard import guard_rows
from fleetpulse.gateway.rollout import Plan, Rollout, RolloutStore, step
from fleetpulse.ingest.pipeline import Pipeline

from .fleet import HOUR_MS, Fleet, day_start_ms
from .offline import take


@dataclass
class RolloutRun:
    rollout: Rollout
    fleet: Fleet
    halted_hour: int | None  # virtual hours from the start to the halt
    sends: list[tuple[int, str, dict[str, Any]]]  # (hour, device, message)

    def versions(self) -> dict[str, str]:
        return {d.device_id: d.fw for d in self.fleet.devices}


def run_rollout(data: Path, state: Path, plan: Plan, crashes_per_hour: dict[str, float],
                devices: int, days: int, seed: int, start: date, look_every_h: int = 6,
                on_look: Callable[[int, Rollout], None] | None = None) -> RolloutRun:
    """Run `plan` over a stationary fleet of `devices` on plan.previous for `days`,
    looking every `look_every_h` virtual hours until the rollout ends; the fleet then runs
    on to the last day (a rollback's devices take it at their next hour)."""
    fleet = Fleet(devices, days, seed, start, stationary=True)
    for d in fleet.devices:
        d.upgrade_day = None  # the fleet's own 1.5.0 upgrade is not this rollout's
        d.fw = plan.previous
        d.crash_rates = crashes_per_hour
    by_id = {d.device_id: d for d in fleet.devices}
    scope = sorted(by_id)
    pipe = Pipeline(data, f"rollout-{seed}")
    store = RolloutStore(state)
    rollout = store.start(plan, day_start_ms(start, 0))
    sends: list[tuple[int, str, dict[str, Any]]] = []
    halted: int | None = None
    hour_now = 0

    def send(device_id: str, message: dict[str, Any]) -> None:
        by_id[device_id].update = (message["version"], bool(message.get("rollback")))
        sends.append((hour_now, device_id, message))

    for day in range(days):
        for hour in range(24):
            for device_id, env in fleet.hour(day, hour):
                take(pipe, device_id, env)
            hour_now = day * 24 + hour + 1
            if rollout.state != "running" or hour_now % look_every_h:
                continue
            pipe.flush()
            now_ms = day_start_ms(start, day) + (hour + 1) * HOUR_MS
            con = connect(data)
            try:
                rows = guard_rows(con, plan.version, plan.previous, start,
                                  datetime.fromtimestamp(now_ms / 1000, UTC))
            finally:
                con.close()
            step(rollout, now_ms, scope, rows, send)
            store.save(rollout)
            if rollout.state == "halted":
                halted = hour_now
            if on_look is not None:
                on_look(hour_now, rollout)
    pipe.flush()
    return RolloutRun(rollout, fleet, halted, sends)
