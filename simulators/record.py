"""`fleetpulse record`: subscribe to a broker and write everything that arrives into a
capture (simulators/capture.py), losslessly: payload bytes as they came, QoS, retain,
MQTT 5 properties, receive times.

It reads with ingest's own MQTT 5 subscriber (ingest/mqtt_subscriber.py), not paho:
paho builds a Properties object and makes a callback for every message, which held a
recorder to about half of what the C mosquitto_sub drains here; this one takes every
PUBLISH of a socket read as one batch, with one receive time, and keeps properties as
the bytes they came in until they are decoded, only when present. A segment is written
about once a second, in a thread, so a SIGKILL loses at most that second. The session
is persistent (cleaned at the first connect only), so after a reconnect the broker
redelivers what was queued meanwhile; a recording that ends ends the session too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError
from fleetpulse.ingest.mqtt_subscriber import MqttConnectError, MqttError, Publish, Subscriber

from . import publish_properties
from .capture import CaptureWriter

FLUSH_S = 1.0
SESSION_EXPIRY_S = 3600
log = logging.getLogger("fleetpulse.record")


@dataclass
class RecordResult:
    messages: int
    payload_bytes: int
    seconds: float


def record(host: str, port: int, out: Path, topic_filter: str = "devices/#",
           count: int | None = None, duration: float | None = None,
           username: str | None = None, password: str | None = None,
           client_id: str = "fleetpulse-recorder", progress: bool | None = None,
           ready: threading.Event | None = None, stop: threading.Event | None = None
           ) -> RecordResult:
    """Record until `count` messages, `duration` seconds, SIGINT/SIGTERM or `stop`."""
    stop = stop or threading.Event()
    handlers = _on_signals(stop)
    rec = _Recorder(host, port, out, topic_filter, count, duration, username, password,
                    client_id, sys.stderr.isatty() if progress is None else progress, stop)
    try:
        return asyncio.run(rec.run(ready))
    finally:
        _restore(handlers)


class _Recorder:
    def __init__(self, host: str, port: int, out: Path, topic_filter: str, count: int | None,
                 duration: float | None, username: str | None, password: str | None,
                 client_id: str, progress: bool, stop: threading.Event) -> None:
        self.host, self.port, self.out, self.filter = host, port, out, topic_filter
        self.count, self.duration = count, duration
        self.username, self.password, self.client_id = username, password, client_id
        self.progress, self.stop = progress, stop
        self.writer: CaptureWriter | None = None
        self.t0_mono: int | None = None
        self.started = 0.0

    async def run(self, ready: threading.Event | None) -> RecordResult:
        first, backoff = True, 0.2
        try:
            while not self._finished():
                sub = Subscriber(self.host, self.port, self.client_id, clean_start=first,
                                 session_expiry=SESSION_EXPIRY_S, username=self.username,
                                 password=self.password)
                ended = False
                try:
                    await self._connect(sub)
                    first = False
                    if self.writer is None:
                        # the manifest appears once subscribed: from then on nothing
                        # published is missed
                        self.writer = CaptureWriter(self.out, {
                            "broker": f"{self.host}:{self.port}", "filter": self.filter,
                            "started_ns": time.time_ns()})
                        self.started = time.monotonic()
                        if ready is not None:
                            ready.set()
                    backoff = 0.2
                    await self._drain(sub)
                    ended = True
                except (OSError, MqttError, TimeoutError) as e:
                    log.warning("broker %s:%d: %s; reconnecting in %.1fs", self.host,
                                self.port, e or type(e).__name__, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                finally:
                    # done: the broker need not queue for this recorder any more
                    await sub.close(end_session=ended)
        finally:
            if self.writer is not None:
                await asyncio.to_thread(self.writer.flush)
                if self.progress:
                    sys.stderr.write("\n")
        w = self.writer
        if w is None:  # stopped (a signal) before the broker granted the subscription
            raise UserError(f"stopped before subscribing to {self.filter} on "
                            f"{self.host}:{self.port}: nothing recorded")
        return RecordResult(w.messages, w.payload_bytes, time.monotonic() - self.started)

    async def _connect(self, sub: Subscriber) -> None:
        try:
            await sub.connect()
            await sub.subscribe(self.filter, qos=1, retain_as_published=True)
        except OSError as e:
            if self.writer is not None:
                raise
            raise UserError(f"cannot reach the broker at {self.host}:{self.port} "
                            f"({e.strerror or e}): start it or pass --broker HOST:PORT"
                            ) from None
        except MqttConnectError as e:
            raise UserError(f"recording failed: {e} (is the account allowed to read "
                            f"{self.filter}?)") from None

    def _finished(self) -> bool:
        if self.stop.is_set():
            return True
        w = self.writer
        if w is not None and self.count is not None and w.messages >= self.count:
            return True
        return (self.writer is not None and self.duration is not None
                and time.monotonic() - self.started >= self.duration)

    async def _drain(self, sub: Subscriber) -> None:
        """Take batches until finished; a segment about once a second."""
        w = self.writer
        assert w is not None
        next_flush = time.monotonic() + FLUSH_S
        flushing: asyncio.Future[None] | None = None
        reading: asyncio.Task[list[Publish]] | None = None
        try:
            while not self._finished():
                if reading is None:
                    reading = asyncio.ensure_future(sub.read_batch())
                done, _ = await asyncio.wait({reading}, timeout=0.1)
                if done:
                    batch, reading = reading.result(), None
                    self._add(w, sub, batch)
                    await sub.drain()
                if time.monotonic() >= next_flush:
                    next_flush += FLUSH_S
                    if flushing is None or flushing.done():
                        if flushing is not None:
                            flushing.result()
                        table = w.take()
                        if table is not None:
                            flushing = asyncio.ensure_future(asyncio.to_thread(w.write, table))
                    if self.progress:
                        self._show_progress(w)
        finally:
            if reading is not None:
                reading.cancel()
            if flushing is not None:
                await flushing

    def _add(self, w: CaptureWriter, sub: Subscriber, batch: list[Publish]) -> None:
        now_ns, mono = time.time_ns(), time.monotonic_ns()
        if self.t0_mono is None:
            self.t0_mono = mono
        if self.count is not None:
            # beyond --count: left unacknowledged, for whoever records next
            batch = batch[:max(0, self.count - w.messages)]
        decode = publish_properties.decode
        w.add_batch(now_ns, mono - self.t0_mono, [p.topic for p in batch],
                    [p.payload for p in batch], [p.qos for p in batch],
                    [p.retain for p in batch],
                    [_json(decode(p.properties)) if p.properties else None for p in batch])
        sub.ack([p.packet_id for p in batch if p.packet_id])

    def _show_progress(self, w: CaptureWriter) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        sys.stderr.write(f"\r{w.messages} messages, {w.payload_bytes / 1e6:.1f} MB, "
                         f"{w.messages / elapsed:.0f} msg/s ")
        sys.stderr.flush()


def _json(props: dict[str, Any] | None) -> str | None:
    return json.dumps(props) if props else None


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    old: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda *_: stop.set())
    return old


def _restore(handlers: dict[int, Any]) -> None:
    for sig, h in handlers.items():
        signal.signal(sig, h)
