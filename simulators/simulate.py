"""Run a virtual fleet against a broker and write the ground truth of what it sent."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleetpulse.errors import UserError
from fleetpulse.ingest.contract import TELEMETRY_TOPIC

from .faults import Faults, Message, Planted, Scenario
from .fleet import (
    AA_KEY,
    CRASHES_PER_HOUR,
    DEFAULT_START,
    EXPERIMENT,
    FIRMWARE_NEW,
    FIRMWARE_OLD,
    STATIONARY_CRASHES_PER_HOUR,
    Fleet,
)
from .mqtt_publisher import MqttError, Publisher
from .truth import Truth

ACK_TIMEOUT_S = 120
PACE_EVERY = 200  # messages between checks of --rate: small bursts, few clock reads


DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


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
    workers: int = DEFAULT_WORKERS,
    rate: float | None = None,
    scenario: Scenario | None = None,
) -> dict[str, Any]:
    """Publish the whole fleet at QoS 1, wait for every ack, return (and write) the truth.

    `workers` processes each generate, encode and publish an interleaved part of the
    fleet over a connection of their own; what is sent, and so the truth, is the same for
    any number of them. Two by default (one on a single core): 55-73K msg/s acknowledged
    against one process's 36-40K, and faster through ingest too (bench/RESULTS.md,
    "Cheaper readings"). `rate` caps the messages per second of all of them together, so a
    fleet can be held to what its consumer drains."""
    n = max(1, min(workers, devices))
    model = _model(scenario)
    fleet = Fleet(devices, days, seed, start, **model)
    ctx = mp.get_context("fork")  # before the progress bar starts its thread
    days_done: Any = ctx.Array("i", n)  # per process, what the progress bar shows
    sent: Any = ctx.Array("q", n)
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, daemon=True, name=f"simulate-{k}",
                         args=(host, port, username, password, devices, days, seed, start,
                               (k, n), rate / n if rate else None, scenario, days_done, sent,
                               results))
             for k in range(n)]
    for proc in procs:
        proc.start()
    bar = Progress(
        TextColumn("simulating {task.fields[devices]} devices"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days  {task.fields[msgs]:,} messages, {task.fields[rate]:,.0f} msg/s"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
        console=Console(stderr=True),  # progress on stderr; the summary is the result
    )
    truth = Truth()
    planted = Planted()
    errors: list[str] = []
    try:
        with bar:
            task = bar.add_task("", total=days, devices=devices, msgs=0, rate=0.0)
            began = time.monotonic()
            pending = n
            while pending:
                if results.empty():
                    if not any(p.is_alive() for p in procs) and results.empty():
                        break
                    time.sleep(0.1)
                else:
                    kind, value = results.get()
                    pending -= 1
                    if kind == "truth":
                        truth.merge(value[0])
                        planted.merge(value[1])
                    else:
                        errors.append(value)
                bar.update(task, completed=min(days_done), msgs=sum(sent),
                           rate=sum(sent) / max(time.monotonic() - began, 1e-3))
            bar.update(task, completed=min(days_done), msgs=sum(sent))
    finally:
        for proc in procs:
            if errors:
                proc.terminate()
            proc.join()
    if errors:
        raise UserError(errors[0])
    if pending:
        raise UserError(f"a simulating process stopped without a word (exit codes "
                        f"{[p.exitcode for p in procs]})")
    planted_causes: dict[str, Any] = (
        {"causes": [c.describe() for c in scenario.causes]} if scenario and scenario.causes
        else {})
    meta = {
        "seed": seed, "devices": devices, "days_simulated": days, "start": start.isoformat(),
        "planted": {
            "experiment": {**asdict(EXPERIMENT), "effect": EXPERIMENT.effect},
            "aa_key": AA_KEY,
            "crashes_per_hour": (STATIONARY_CRASHES_PER_HOUR if model["stationary"]
                                 else CRASHES_PER_HOUR),
            **planted_causes,
            "firmware_rollout": [FIRMWARE_OLD, FIRMWARE_NEW],
            **({"faults": planted.to_dict(scenario)} if scenario else {}),
        },
        "plan": {d.device_id: d.plan() for d in fleet.devices},
    }
    if truth_path is not None:
        truth.write(truth_path, meta)
    return truth.to_dict(meta)


def _worker(host: str, port: int, username: str | None, password: str | None, devices: int,
            days: int, seed: int, start: date, part: tuple[int, int], rate: float | None,
            scenario: Scenario | None, days_done: Any, sent: Any, results: Any) -> None:
    """One part of the fleet, published; its truth (or the error) put on `results`."""
    k = part[0]
    truth = Truth()
    faults = Faults(scenario or Scenario(), seed)

    def shown(day: int, acked: int, day_done: bool) -> None:
        days_done[k] = day + day_done
        sent[k] = acked

    try:
        asyncio.run(_publish(host, port, username, password,
                             Fleet(devices, days, seed, start, part, **_model(scenario)), truth,
                             shown, rate, faults))
    except UserError as e:
        results.put(("error", str(e)))
        return
    except BaseException as e:  # a bug: said, not left as a hang of the parent
        results.put(("error", f"simulating process {k} failed: {e!r}"))
        raise
    results.put(("truth", (truth, faults.planted)))


async def _publish(host: str, port: int, username: str | None, password: str | None,
                   fleet: Fleet, truth: Truth, shown: Callable[[int, int, bool], None],
                   rate: float | None, faults: Faults) -> None:
    """Every envelope at QoS 1 through one MQTT 5 connection, as many in flight as the
    broker allows; returns when the broker acknowledged all of them. The replay
    publisher rather than paho: paho's per-message Python and its network thread
    contending for the GIL held the simulator to about 3K msg/s."""
    pub = Publisher(host, port, f"fleetpulse-sim-{uuid.uuid4().hex[:8]}",
                    username=username, password=password)
    await pub.connect_or_explain()
    count = 0
    began = time.monotonic()
    held: list[Message] = []  # what devices journal while the broker is away

    async def pace() -> None:
        """Keep to `rate`, checked every PACE_EVERY messages."""
        ahead = count / rate - (time.monotonic() - began) if rate else 0.0
        if ahead > 0:
            await pub.drain()
            await asyncio.sleep(ahead)

    async def send(messages: list[Message]) -> None:
        nonlocal count
        for topic, payload, counted in messages:
            await pub.publish(topic, payload, 1)
            if counted is not None:
                truth.add(counted)
            count += 1
            if rate and count % PACE_EVERY == 0:
                await pace()

    try:
        for hour_index, (day, envelopes) in enumerate(fleet.hours()):
            if faults.idle:
                # the loop without faults, as tight as it can be: each envelope encoded
                # and sent at once (a layer building an hour's messages first cost 10-25%
                # of the rate: bench/RESULTS.md, "Bulk simulation", 19add66)
                for device_id, env in envelopes:
                    await pub.publish(TELEMETRY_TOPIC.format(device_id=device_id),
                                      orjson.dumps(env), 1)
                    truth.add(env)
                    count += 1
                    if rate and count % PACE_EVERY == 0:
                        await pace()
            elif faults.in_outage(hour_index):
                for device_id, env in envelopes:
                    journaled = faults.messages(TELEMETRY_TOPIC.format(device_id=device_id), env)
                    held += journaled
                    faults.planted.held_by_outage += len(journaled)
            else:
                await send(held)  # the burst a reconnecting fleet sends first
                held = []
                for device_id, env in envelopes:
                    await send(faults.messages(TELEMETRY_TOPIC.format(device_id=device_id),
                                               env))
            if fleet.notes:
                truth.note_without_causes(fleet.notes, fleet.start)
                fleet.notes.clear()
            await pub.drain()  # an hour of the fleet at most in the socket's buffer
            shown(day, count, _last_hour(envelopes))
        await send(held)
        await pub.finish(ACK_TIMEOUT_S)
        shown(fleet.days - 1, count, True)
    except MqttError as e:
        raise UserError(f"simulate published {count:,} messages, but {e}") from None
    finally:
        await pub.close()


def _model(scenario: Scenario | None) -> dict[str, Any]:
    """What a scenario says of the fleet itself, as Fleet takes it."""
    s = scenario or Scenario()
    return {"stationary": s.stationary, "causes": s.causes}


def _last_hour(envelopes: list[tuple[str, dict[str, Any]]]) -> bool:
    return bool(envelopes) and envelopes[0][1]["sent_ms"] % 86_400_000 == 86_400_000 - 1
