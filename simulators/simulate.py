"""Run a virtual fleet against a broker and write the ground truth of what it sent."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleetpulse.ingest.contract import TELEMETRY_TOPIC

from .fleet import (
    AA_KEY,
    CRASHES_PER_HOUR,
    DEFAULT_START,
    EXPERIMENT,
    FIRMWARE_NEW,
    FIRMWARE_OLD,
    Fleet,
)
from .publisher import Publisher
from .truth import Truth


def simulate(
    host: str,
    port: int,
    devices: int,
    days: int,
    seed: int,
    truth_path: Path | None = None,
    start: date = DEFAULT_START,
    progress: bool = True,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Publish the whole fleet at QoS 1, wait for every ack, return (and write) the truth."""
    fleet = Fleet(devices, days, seed, start)
    truth = Truth()
    pub = Publisher(host, port, username, password)
    bar = Progress(
        TextColumn("simulating {task.fields[devices]} devices"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days  {task.fields[msgs]} messages"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    )
    try:
        with bar:
            task = bar.add_task("", total=days, devices=devices, msgs=0)
            for day, envelopes in fleet.hours():
                for device_id, env in envelopes:
                    payload = json.dumps(env, separators=(",", ":")).encode()
                    pub.publish(TELEMETRY_TOPIC.format(device_id=device_id), payload)
                    truth.add(env)
                bar.update(task, completed=day + (1 if _last_hour(envelopes) else 0),
                           msgs=pub.sent)
            pub.drain()
            bar.update(task, completed=days, msgs=pub.sent)
    finally:
        pub.close()
    meta = {
        "seed": seed, "devices": devices, "days_simulated": days, "start": start.isoformat(),
        "planted": {
            "experiment": {**asdict(EXPERIMENT), "effect": EXPERIMENT.effect},
            "aa_key": AA_KEY,
            "crashes_per_hour": CRASHES_PER_HOUR,
            "firmware_rollout": [FIRMWARE_OLD, FIRMWARE_NEW],
        },
        "plan": {d.device_id: d.plan() for d in fleet.devices},
    }
    if truth_path is not None:
        truth.write(truth_path, meta)
    return truth.to_dict(meta)


def _last_hour(envelopes: list[tuple[str, dict[str, Any]]]) -> bool:
    return bool(envelopes) and envelopes[0][1]["sent_ms"] % 86_400_000 == 86_400_000 - 1
