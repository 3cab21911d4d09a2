"""`fleetpulse simulate --live`: a fleet whose every device is its own MQTT connection.

Each device does what the firmware does (firmware/app.py), at `speed` times real time:
it connects with its own credentials from the registry, sets a retained `online` on
devices/<id>/status with a retained `offline` as its last will, subscribes to its
retained config topic and applies what arrives there with the firmware's own checks
(sample interval, batching, heartbeat, experiments), takes the updates a rollout sends on
devices/<id>/update as the firmware does (staged, booted, confirmed; a rollback boots the
version kept; the update events reported), samples and batches records into
contract-v1 envelopes, keeps them in a bounded journal until the broker acknowledges them,
publishes them at QoS 1 a window at a time, and while the broker is away reconnects with
exponential backoff and jitter and journals.

The truth file counts what the broker acknowledged, each envelope once: an envelope
re-sent after a lost acknowledgement is the same bytes, which ingest stores once.

One asyncio process holds thousands of devices: one aiomqtt client each (its socket,
its keepalive), one ticker for the whole fleet that makes every device's due records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import random
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from fleetpulse.analytics.assignment import variant
from fleetpulse.errors import UserError
from fleetpulse.files import raise_open_files_limit
from fleetpulse.firmware import check_settings, default_settings
from fleetpulse.gateway.registry import Credentials, Registry

from .faults import Faults, Planted, Scenario
from .fleet import EXPERIMENT, FEATURES, FIRMWARE_OLD, make_device, reading, update_boot
from .truth import Truth

# as the firmware (firmware/app.py): real seconds, whatever the speed
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
TICK_S = 0.1  # the ticker's period: how late a record may be made, in real time
DOWNLOAD_MS = 60_000  # virtual time a device takes to stage an update
CONNECTING_AT_ONCE = 100  # handshakes in progress at once: a fleet does not all boot at once
LIVE_MODEL = "sim-live"


class _OnlyWhenDebugging(logging.Filter):
    """A device's lost connection is routine in a live fleet (the progress line counts
    reconnects): paho's error line for each of thousands shows only with -vv."""

    def filter(self, record: logging.LogRecord) -> bool:
        return logging.getLogger("fleetpulse").isEnabledFor(logging.DEBUG)


DEVICE_LOG = logging.getLogger("fleetpulse.simulate.devices")
DEVICE_LOG.addFilter(_OnlyWhenDebugging())


@dataclass
class LiveDevice:
    device_id: str
    hw: str
    iid: str
    base_temp_c: float
    use_probability: float
    features: list[str]
    rng: random.Random
    settings: dict[str, Any] = field(default_factory=default_settings)
    boot: int = 1
    seq: int = 0
    batch: list[dict[str, Any]] = field(default_factory=list)
    batch_began: int = 0  # virtual ms of the batch's first record
    # (payload, the envelope the truth counts once acknowledged, or None)
    journal: deque[tuple[bytes, dict[str, Any] | None]] = field(default_factory=deque)
    journal_bytes: int = 0
    dropped: int = 0  # records the bounded journal had to let go
    next_sample: int = 0
    next_heartbeat: int = 0
    started: int = 0
    connects: int = 0
    sealed_offline: int = 0  # envelopes made while the broker was away
    online: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    fw: str = FIRMWARE_OLD
    previous_fw: str | None = None  # kept in the other slot, what a rollback boots
    update: tuple[str, bool] | None = None  # (version, is a rollback) being installed
    update_at: int = 0  # virtual ms when it boots

    @property
    def telemetry(self) -> str:
        return f"devices/{self.device_id}/telemetry"

    @property
    def status(self) -> str:
        return f"devices/{self.device_id}/status"

    @property
    def config(self) -> str:
        return f"devices/{self.device_id}/config"

    @property
    def update_topic(self) -> str:
        return f"devices/{self.device_id}/update"

    # -- records, as the firmware makes them -----------------------------------------------
    def start(self, now: int) -> None:
        s, rng = self.settings, self.rng
        self.started = now
        # Each device at its own phase of its sampling and batching: a fleet started in
        # one instant would otherwise send in lockstep forever.
        self.next_sample = now + rng.randint(0, s["sample_s"] * 1000)
        self.next_heartbeat = now + rng.randint(1, s["heartbeat_s"] * 1000)
        self.batch.append({"t": now, "type": "event", "event": "power_on"})
        self.batch_began = now - rng.randint(0, s["flush_s"] * 1000)

    def tick(self, now: int, faults: Faults | None = None) -> None:
        """Make the records due by `now` (virtual ms); seal a batch that is full or old."""
        s = self.settings
        if self.update is not None and self.update_at <= now:
            self._boot_update(now, faults)
        while self.next_sample <= now:
            self._sample(self.next_sample)
            self.next_sample += s["sample_s"] * 1000
        while self.next_heartbeat <= now:
            t = self.next_heartbeat
            self._record({"t": t, "type": "event", "event": "heartbeat",
                          "uptime_s": (t - self.started) // 1000,
                          "reconnects": max(0, self.connects - 1),
                          "free_mem": self.rng.randint(80_000, 120_000),
                          "records_dropped": self.dropped, "interval_s": s["heartbeat_s"]})
            self.next_heartbeat += s["heartbeat_s"] * 1000
        if self.batch and (len(self.batch) >= s["batch_records"]
                           or now - self.batch_began >= s["flush_s"] * 1000):
            self.seal(now, faults)

    def _record(self, rec: dict[str, Any]) -> None:
        if not self.batch:
            self.batch_began = rec["t"]
        self.batch.append(rec)

    def _sample(self, t: int) -> None:
        rng = self.rng
        wave = math.sin(2 * math.pi * ((t / 3_600_000) % 24 - 9) / 24)
        self._record(reading(rng, t, self.base_temp_c, wave))
        # about 2 * use_probability usage sessions a day
        if self.features and rng.random() < (self.use_probability * 2
                                             * self.settings["sample_s"] / 86_400):
            self._record({"t": t + 1, "type": "event", "event": "session_start"})
            used = rng.sample(self.features, rng.randint(1, len(self.features)))
            for k, feature in enumerate(used):
                self._record({"t": t + 2 + k, "type": "event", "event": "feature_used",
                              "feature": feature})
            self._record({"t": t + 99, "type": "event", "event": "session_end"})

    def seal(self, now: int, faults: Faults | None = None) -> None:
        """The batch becomes an envelope in the journal (with what a scenario plants
        beside it); the oldest envelopes go when the journal is over its bound (counted in
        records_dropped, as the firmware does)."""
        if not self.batch:
            return
        env = {"v": 1, "device_id": self.device_id, "iid": self.iid, "boot": self.boot,
               "seq": self.seq, "fw": self.fw, "hw": self.hw, "sent_ms": now,
               "records": sorted(self.batch, key=lambda r: r["t"])}
        self.seq += 1
        self.batch = []
        self.sealed_offline += not self.online
        messages = (faults.messages(self.telemetry, env) if faults
                    else [(self.telemetry, orjson.dumps(env), env)])
        for _, payload, counted in messages:
            self.journal.append((payload, counted))
            self.journal_bytes += len(payload)
        while self.journal_bytes > self.settings["journal_kb"] * 1024 and len(self.journal) > 1:
            old, old_env = self.journal.popleft()
            self.journal_bytes -= len(old)
            self.dropped += len(old_env["records"]) if old_env else 0
        self.wake.set()

    def acked(self, item: tuple[bytes, dict[str, Any] | None]) -> None:
        self.journal.remove(item)
        self.journal_bytes -= len(item[0])

    # -- updates, as the firmware takes them (firmware/ota.py, docs/ota.md) ------------
    def take_update(self, payload: bytes, now: int) -> None:
        """A retained update message: a new version is staged (the download takes
        DOWNLOAD_MS of virtual time) and booted; a rollback boots the version kept."""
        try:
            m = json.loads(payload)
            version, rollback = str(m["version"]), bool(m.get("rollback"))
        except (ValueError, KeyError, TypeError):
            return
        if version == self.fw or (self.update and self.update[0] == version):
            return
        if rollback:
            if version == self.previous_fw:
                self.update, self.update_at = (version, True), now
            return
        self._record({"t": now, "type": "event", "event": "update_started", "name": version,
                      "value": self.fw})
        self.update, self.update_at = (version, False), now + DOWNLOAD_MS

    def _boot_update(self, now: int, faults: Faults | None) -> None:
        assert self.update is not None
        version, rollback = self.update
        self.update = None
        self.seal(now, faults)  # what the old version made goes under it
        old, self.fw = self.fw, version
        self.previous_fw = None if rollback else old
        self.boot += 1
        self.seq = 0
        for rec in update_boot(now, version, old, rollback):
            self._record(rec)

    # -- config, as the firmware takes it ------------------------------------------------
    def apply(self, payload: bytes, now: int) -> None:
        """A retained config message: refused whole when the firmware would refuse it;
        each changed setting reported as setting_changed (experiments as their variant)."""
        try:
            new = json.loads(payload)
        except ValueError:
            return
        if check_settings(new) is not None:
            return
        for k, v in new.items():
            if k not in self.settings or self.settings[k] == v:
                continue
            old = self.settings[k]
            self.settings[k] = v
            if k == "experiments":
                for key, share in v.items():
                    if not isinstance(old, dict) or old.get(key) != share:
                        self._record({"t": now, "type": "event", "event": "setting_changed",
                                      "name": f"experiment.{key}",
                                      "value": self.variant(key, share)})
            elif not isinstance(v, dict):
                self._record({"t": now, "type": "event", "event": "setting_changed",
                              "name": k, "value": v})
                if k == "sample_s":  # at once, not after the old interval runs out
                    self.next_sample = min(self.next_sample, now + v * 1000)

    def variant(self, key: str, share: object) -> str:
        if share in ("A", "B"):
            return str(share)
        return variant(key, self.device_id, float(share) if isinstance(share, int | float)
                       else 0.5)


def make_live_device(seed: int, index: int) -> LiveDevice:
    """The bulk fleet's device `index` (hardware, temperature, habits, features), living
    now instead of over days."""
    d = make_device(seed, index, days=1)
    # A live run is a new install (as if its flash were erased: boot 1, seq 0), so that
    # nothing it sends has the identity of an earlier run's records.
    iid = secrets.token_hex(8)
    return LiveDevice(device_id=d.device_id, hw=d.hw, iid=iid, base_temp_c=d.base_temp_c,
                      use_probability=d.use_probability,
                      features=sorted(f for f in d.features if f in FEATURES), rng=d.rng)


class VirtualClock:
    """Epoch ms running `speed` times as fast as the wall clock, started far enough in the
    past that it reaches the present when the run ends: records never lie in the future,
    which ingest refuses."""

    def __init__(self, speed: float, duration: float | None) -> None:
        if speed != 1 and duration is None:
            raise UserError("--speed other than 1 needs --duration SECONDS: the devices' "
                            "clocks must not run ahead of the real one")
        self.speed = speed
        self._wall0 = time.time() - (duration or 0) * (speed - 1)
        self._mono0 = time.monotonic()

    def now(self) -> int:
        return int((self._wall0 + (time.monotonic() - self._mono0) * self.speed) * 1000)


@dataclass
class Counts:
    connected: int = 0
    sent: int = 0
    acked: int = 0
    reconnects: int = 0


class LiveFleet:
    def __init__(self, host: str, port: int, devices: list[LiveDevice],
                 credentials: dict[str, Credentials], clock: VirtualClock,
                 faults: Faults | None = None) -> None:
        self.host, self.port = host, port
        self.devices = devices
        self.credentials = credentials
        self.clock = clock
        self.faults = faults
        self.truth = Truth()
        self.counts = Counts()
        self.stopping = False
        self._connecting = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def run(self, duration: float | None, drain_timeout: float,
                  progress: Callable[[Counts], None] | None = None,
                  stop: asyncio.Event | None = None) -> int:
        """Live until `duration` seconds pass or `stop` is set (Ctrl-C), then seal every
        batch and wait up to `drain_timeout` for the journals to empty, the progress shown
        meanwhile. Returns how many envelopes were never acknowledged."""
        now = self.clock.now()
        for d in self.devices:
            d.start(now)
        links = [asyncio.create_task(self._link(d)) for d in self.devices]
        ends = None if duration is None else time.monotonic() + duration
        stop = stop or asyncio.Event()
        while not stop.is_set() and (ends is None or time.monotonic() < ends):
            now = self.clock.now()
            for d in self.devices:
                d.tick(now, self.faults)
            if progress:
                progress(self.counts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
        self.stopping = True
        now = self.clock.now()
        for d in self.devices:
            d.seal(now, self.faults)
            d.wake.set()
        deadline = time.monotonic() + drain_timeout
        pending = set(links)
        while pending and time.monotonic() < deadline:
            _, pending = await asyncio.wait(pending, timeout=TICK_S)
            if progress:
                progress(self.counts)
        for task in pending:
            task.cancel()
        await asyncio.gather(*links, return_exceptions=True)
        if progress:
            progress(self.counts)
        return sum(len(d.journal) for d in self.devices)

    async def _link(self, d: LiveDevice) -> None:
        """The device's connection, for as long as it has something to send."""
        backoff = BACKOFF_MIN_S
        cred = self.credentials[d.device_id]
        while not (self.stopping and not d.journal):
            client = aiomqtt.Client(
                self.host, self.port, identifier=d.device_id, username=cred.username,
                password=cred.password, keepalive=60, clean_session=True, logger=DEVICE_LOG,
                will=aiomqtt.Will(d.status, b"offline", qos=1, retain=True))
            try:
                async with self._connecting:
                    await client.__aenter__()
            except aiomqtt.MqttError:
                # exponential backoff with jitter, so a fleet does not reconnect in lockstep
                await asyncio.sleep(backoff / 2 + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            d.connects += 1
            self.counts.reconnects += d.connects > 1
            try:
                await self._session(d, client)
            except aiomqtt.MqttError:
                pass  # the broker went away: back to connecting
            finally:
                if d.online:
                    d.online = False
                    self.counts.connected -= 1
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)

    async def _session(self, d: LiveDevice, client: aiomqtt.Client) -> None:
        await client.publish(d.status, b"online", qos=1, retain=True)
        await client.subscribe(d.config, qos=1)
        await client.subscribe(d.update_topic, qos=1)
        d.online = True
        self.counts.connected += 1
        receiving = asyncio.create_task(self._receive(d, client))
        try:
            while not receiving.done():
                if d.journal:
                    # aiomqtt waits for a PUBACK until its timeout even after the connection
                    # died: the end of the receiving task is what tells us at once
                    sending = asyncio.ensure_future(self._send_window(d, client))
                    await asyncio.wait((sending, receiving), return_when=asyncio.FIRST_COMPLETED)
                    if not sending.done():
                        sending.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await sending
                        break
                    sending.result()
                elif self.stopping:
                    await client.publish(d.status, b"offline", qos=1, retain=True)
                    return
                else:
                    d.wake.clear()
                    await d.wake.wait()
            receiving.result()  # the connection's end, as an MqttError
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await receiving

    async def _receive(self, d: LiveDevice, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                if not isinstance(message.payload, bytes):
                    continue
                if str(message.topic) == d.config:
                    d.apply(message.payload, self.clock.now())
                elif str(message.topic) == d.update_topic:
                    d.take_update(message.payload, self.clock.now())
        finally:
            d.wake.set()  # the session loop learns the connection ended

    async def _send_window(self, d: LiveDevice, client: aiomqtt.Client) -> None:
        """Publish the journal's oldest `window` envelopes at once; those acknowledged
        leave the journal and enter the truth."""
        take = [d.journal[i] for i in range(min(d.settings["window"], len(d.journal)))]
        self.counts.sent += len(take)
        results = await asyncio.gather(
            *(client.publish(d.telemetry, payload, qos=1) for payload, _ in take),
            return_exceptions=True)
        for item, result in zip(take, results, strict=True):
            if result is None:
                d.acked(item)
                if item[1] is not None:
                    self.truth.add(item[1])
                self.counts.acked += 1
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed


def provision(registry: Registry, devices: list[LiveDevice]) -> dict[str, Credentials]:
    return registry.enroll({d.device_id: LIVE_MODEL for d in devices})


@dataclass
class PartResult:
    """What one process's part of the fleet did."""
    truth: Truth
    planted: Planted | None
    unsent: int
    devices: dict[str, tuple[int, int]]  # device -> (connects, envelopes sealed offline)


def live(host: str, port: int, devices: int, seed: int, registry: Registry,
         speed: float = 1.0, duration: float | None = None, truth_path: Path | None = None,
         progress: bool = True, drain_timeout: float = 60.0,
         scenario: Scenario | None = None, workers: int = 1) -> dict[str, Any]:
    """Run the live fleet; return (and write) the truth of what the broker acknowledged.
    `workers` processes each hold an interleaved part of the devices (one event loop
    holds thousands; more need more cores). A scenario's malformed messages, duplicates,
    clocks and crash loops are planted as in bulk mode; its outage is bulk mode's (a
    live fleet meets the real broker's outages)."""
    if scenario is not None and scenario.outage_after_hours is not None:
        raise UserError("the scenario's [outage] is for a bulk simulation: to take the "
                        "broker away from a live fleet, stop and start the broker")
    if scenario is not None and (scenario.causes or scenario.stationary):
        raise UserError("the scenario's causes and stationary fleet are for a bulk "
                        "simulation, whose truth file can say what they changed")
    raise_open_files_limit(devices + 256)  # a socket per device, and the rest
    clock = VirtualClock(speed, duration)
    fleet_devices = [make_live_device(seed, i) for i in range(devices)]
    credentials = provision(registry, fleet_devices)
    n = max(1, min(workers, devices))
    began = time.monotonic()
    shared: Any = None

    def show(c: Counts) -> None:
        rate = c.acked / max(time.monotonic() - began, 1e-3)
        print(f"\rlive: {c.connected:,}/{devices:,} devices connected, {c.sent:,} sent, "
              f"{c.acked:,} acked, {rate:,.0f} msg/s, {c.reconnects:,} reconnects ",
              end="", file=sys.stderr, flush=True)

    def run_part(k: int) -> PartResult:
        part = fleet_devices[k::n]
        faults = Faults(scenario, seed) if scenario else None

        def report(c: Counts) -> None:  # a worker's counters, for the parent's line
            shared[4 * k:4 * k + 4] = [c.connected, c.sent, c.acked, c.reconnects]

        async def main() -> PartResult:
            # Ctrl-C or SIGTERM ends the run as --duration does: what is journaled is
            # still sent (asyncio's own Ctrl-C would cancel, and a second one abort that)
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            fleet = LiveFleet(host, port, part, credentials, clock, faults)
            each = report if n > 1 else show if progress else None
            unsent = await fleet.run(duration, drain_timeout, each, stop)
            return PartResult(fleet.truth, faults.planted if faults else None, unsent,
                              {d.device_id: (d.connects, d.sealed_offline) for d in part})

        return asyncio.run(main())

    if n == 1:
        parts = [run_part(0)]
    else:
        ctx = mp.get_context("fork")
        shared = ctx.Array("q", 4 * n, lock=False)
        results = ctx.SimpleQueue()

        def worker(k: int) -> None:
            try:
                results.put(run_part(k))
            except BaseException as e:  # said, not left as a hang of the parent
                results.put(f"live worker {k} failed: {e!r}")

        procs = [ctx.Process(target=worker, args=(k,), daemon=True) for k in range(n)]
        for proc in procs:
            proc.start()

        def stop_workers(_sig: int, _frame: object) -> None:
            # a Ctrl-C at a terminal reaches the workers too, a kill -INT or a SIGTERM of
            # this process does not: passed on, they send what they journaled, then report
            for proc in procs:
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGTERM)

        # set here, not inherited: a shell that starts us in the background ignores SIGINT
        before = {sig: signal.signal(sig, stop_workers) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            parts, errors = _collect(procs, results, n, shared, show if progress else None)
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
        if errors:
            raise UserError(errors[0])
    if progress:
        print(file=sys.stderr)
    truth = parts[0].truth
    planted = parts[0].planted
    for p in parts[1:]:
        truth.merge(p.truth)
        if planted is not None and p.planted is not None:
            planted.merge(p.planted)
    per_device = {d: v for p in parts for d, v in p.devices.items()}
    meta = {"seed": seed, "devices": devices, "live": True, "speed": speed, "workers": n,
            **({"planted": {"faults": planted.to_dict(scenario)}}
               if planted is not None and scenario is not None else {}),
            "sealed_offline": sum(v[1] for v in per_device.values()),
            "plan": {d.device_id: {"hw": d.hw, "iid": d.iid,
                                   "connects": per_device[d.device_id][0],
                                   "variant": d.variant(EXPERIMENT.key, EXPERIMENT.share_b)}
                     for d in fleet_devices}}
    if truth_path is not None:
        truth.write(truth_path, meta)
    unsent = sum(p.unsent for p in parts)
    if unsent:
        raise UserError(f"{unsent:,} envelopes were still unacknowledged {drain_timeout:.0f} s "
                        f"after the end (is the broker at {host}:{port} up?); the truth file "
                        "counts only what was acknowledged")
    return truth.to_dict(meta)


def _collect(procs: list[Any], results: Any, n: int, shared: Any,
             show: Callable[[Counts], None] | None) -> tuple[list[PartResult], list[str]]:
    """Every worker's result (or error), showing their counters together meanwhile."""
    parts: list[PartResult] = []
    errors: list[str] = []
    while len(parts) + len(errors) < n:
        if results.empty():
            if not any(p.is_alive() for p in procs) and results.empty():
                errors.append("a live worker stopped without a word (exit codes "
                              f"{[p.exitcode for p in procs]})")
                break
            if show:
                show(Counts(*(sum(shared[i::4]) for i in range(4))))
            time.sleep(TICK_S)
            continue
        r = results.get()
        (parts if isinstance(r, PartResult) else errors).append(r)
    for proc in procs:
        proc.join(timeout=0 if errors else None)
    return parts, errors
