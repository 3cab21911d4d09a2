"""Run a virtual fleet against a broker and write the ground truth of what it sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleetpulse.errors import UserError
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
from .mqtt_publisher import MqttError, Publisher
from .truth import Truth

ACK_TIMEOUT_S = 120


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
    bar = Progress(
        TextColumn("simulating {task.fields[devices]} devices"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days  {task.fields[msgs]} messages"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
        console=Console(stderr=True),  # progress on stderr; the summary is the result
    )
    with bar:
        task = bar.add_task("", total=days, devices=devices, msgs=0)

        def shown(day: int, sent: int, hour_done: bool) -> None:
            bar.update(task, completed=day + hour_done, msgs=sent)

        asyncio.run(_publish(host, port, username, password, fleet, truth, shown))
        bar.update(task, completed=days)
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


async def _publish(host: str, port: int, username: str | None, password: str | None,
                   fleet: Fleet, truth: Truth, shown: Callable[[int, int, bool], None]) -> None:
    """Every envelope at QoS 1 through one MQTT 5 connection, as many in flight as the
    broker allows; returns when the broker acknowledged all of them. The replay
    publisher rather than paho: paho's per-message Python and its network thread
    contending for the GIL held the simulator to about 3K msg/s."""
    pub = Publisher(host, port, f"fleetpulse-sim-{uuid.uuid4().hex[:8]}",
                    username=username, password=password)
    await pub.connect_or_explain()
    sent = 0
    try:
        for day, envelopes in fleet.hours():
            for device_id, env in envelopes:
                payload = json.dumps(env, separators=(",", ":")).encode()
                await pub.publish(TELEMETRY_TOPIC.format(device_id=device_id), payload, 1)
                truth.add(env)
                sent += 1
            await pub.drain()  # an hour of the fleet at most in the socket's buffer
            shown(day, sent, _last_hour(envelopes))
        await pub.finish(ACK_TIMEOUT_S)
    except MqttError as e:
        raise UserError(f"simulate published {sent:,} messages, but {e}") from None
    finally:
        await pub.close()


def _last_hour(envelopes: list[tuple[str, dict[str, Any]]]) -> bool:
    return bool(envelopes) and envelopes[0][1]["sent_ms"] % 86_400_000 == 86_400_000 - 1
