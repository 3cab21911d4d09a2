"""A simulated fleet written straight into a dataset through ingest's pipeline (contract
checks, deduplication, the Parquet writer), without a broker: for the analytics' tests
and benches, which need many fleets quickly and test the metrics, not the transport.
The truth is kept as `fleetpulse simulate` keeps it, planted causes' notes included."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson

from fleetpulse.gateway.attributes import ATTRIBUTES_FILE, intervals
from fleetpulse.ingest.contract import TELEMETRY_TOPIC
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.ingest.store import Store

from .causes import Cause
from .fleet import Fleet
from .truth import Truth


def write_dataset(data: Path, devices: int, days: int, seed: int, start: date, *,
                  stationary: bool = False, causes: tuple[Cause, ...] = ()) -> dict[str, Any]:
    """Write the fleet's records and its devices' attributes (their regions, as `devices
    import` and `devices export` would) into `data`; return the truth."""
    fleet = Fleet(devices, days, seed, start, stationary=stationary, causes=causes)
    pipe = Pipeline(data, f"offline-{seed}")
    truth = Truth()
    for _, envelopes in fleet.hours():
        for device_id, env in envelopes:
            take(pipe, device_id, env)
            truth.add(env)
        if fleet.notes:
            truth.note_without_causes(fleet.notes, start)
            fleet.notes.clear()
    pipe.flush()
    registry = {d.device_id: {"attribute_history": [
        {"name": name, "value": value, "from": f"{start.isoformat()}T00:00:00Z"}
        for name, value in d.plan()["attributes"].items()]} for d in fleet.devices}
    Store(data).write_table(ATTRIBUTES_FILE, intervals(registry))
    return truth.to_dict({"seed": seed, "devices": devices, "days_simulated": days,
                          "start": start.isoformat(),
                          "planted": {"causes": [c.describe() for c in causes]},
                          "plan": {d.device_id: d.plan() for d in fleet.devices}})


def take(pipe: Pipeline, device_id: str, env: dict[str, Any]) -> None:
    """An envelope as ingest takes it off the broker, received when it was sent."""
    pipe.handle(TELEMETRY_TOPIC.format(device_id=device_id), orjson.dumps(env), env["sent_ms"])
