"""`fleetpulse record`: subscribe to a broker and write everything that arrives into a
capture (simulators/capture.py), losslessly: payload bytes as they came, QoS, retain,
MQTT 5 properties, receive times.

paho-mqtt's network thread hands each message over; the main thread writes a segment
about once a second, so a SIGKILL loses at most that second. The client speaks MQTT 5
(properties arrive only then) with a persistent session, so a reconnect does not lose
the QoS 1 messages queued meanwhile.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleetpulse.gateway.errors import UserError

from .capture import CaptureWriter, Message

FLUSH_S = 1.0


@dataclass
class RecordResult:
    messages: int
    payload_bytes: int
    seconds: float


def properties_dict(props: Properties | None) -> dict[str, Any] | None:
    if props is None:
        return None
    d = props.json()
    if not d:
        return None
    if "UserProperty" in d:
        d["UserProperty"] = [list(kv) for kv in d["UserProperty"]]
    if "CorrelationData" in d and isinstance(d["CorrelationData"], bytes | bytearray):
        d["CorrelationData"] = d["CorrelationData"].hex()
    return d


def record(host: str, port: int, out: Path, topic_filter: str = "devices/#",
           count: int | None = None, duration: float | None = None,
           username: str | None = None, password: str | None = None,
           client_id: str = "fleetpulse-recorder", progress: bool | None = None,
           ready: threading.Event | None = None, stop: threading.Event | None = None
           ) -> RecordResult:
    """Record until `count` messages, `duration` seconds, SIGINT/SIGTERM or `stop`."""
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
    subscribed = threading.Event()
    failed: list[str] = []
    seq = [0]
    t0_mono: list[int] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now_ns, mono = time.time_ns(), time.monotonic_ns()
        if not t0_mono:
            t0_mono.append(mono)
        inbox.put(Message(seq[0], now_ns, mono - t0_mono[0], msg.topic, bytes(msg.payload),
                          msg.qos, bool(msg.retain),
                          properties_dict(getattr(msg, "properties", None))))
        seq[0] += 1

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if rc.is_failure:
            failed.append(str(rc))
            return
        # retain as published: a retained message forwarded live keeps its flag, so a
        # replay retains exactly what was retained
        c.subscribe(topic_filter, options=SubscribeOptions(qos=1, retainAsPublished=True))

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: Any, _p: object) -> None:
        if any(getattr(rc, "is_failure", False) for rc in codes):
            failed.append(f"the broker refused the subscription to {topic_filter}")
        subscribed.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    if username:
        c.username_pw_set(username, password)
    c.on_message = on_message
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    connect_props = Properties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 3600  # a reconnect keeps the queued messages
    try:
        c.connect(host, port, keepalive=30, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                  properties=connect_props)
    except OSError as e:
        raise UserError(f"cannot reach the broker at {host}:{port} ({e.strerror or e}): "
                        "start it or pass --broker HOST:PORT") from None
    stop = stop or threading.Event()
    handlers = _on_signals(stop)
    c.loop_start()
    progress = sys.stderr.isatty() if progress is None else progress
    if not subscribed.wait(10) or failed:
        c.loop_stop()
        _restore(handlers)
        raise UserError(f"recording failed: {failed[0] if failed else 'no SUBACK'} "
                        "(is the account allowed to read that topic?)")
    # the manifest appears once subscribed: from then on nothing published is missed
    writer = CaptureWriter(out, {"broker": f"{host}:{port}", "filter": topic_filter,
                                 "started_ns": time.time_ns()})
    started = time.monotonic()
    try:
        if ready is not None:
            ready.set()
        next_flush = time.monotonic() + FLUSH_S
        while not stop.is_set():
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                writer.add(inbox.get(timeout=min(timeout, 0.2)))
                while True:
                    writer.add(inbox.get_nowait())
            except queue.Empty:
                pass
            if count is not None and writer.messages >= count:
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            if time.monotonic() >= next_flush:
                writer.flush()
                next_flush += FLUSH_S
                if progress:
                    _progress(writer, time.monotonic() - started)
    finally:
        c.disconnect()
        c.loop_stop()
        while True:  # what arrived before the disconnect
            try:
                writer.add(inbox.get_nowait())
            except queue.Empty:
                break
        writer.flush()
        _restore(handlers)
        if progress:
            sys.stderr.write("\n")
    return RecordResult(writer.messages, writer.payload_bytes, time.monotonic() - started)


def _progress(w: CaptureWriter, elapsed: float) -> None:
    sys.stderr.write(f"\r{w.messages} messages, {w.payload_bytes / 1e6:.1f} MB, "
                     f"{w.messages / max(elapsed, 1e-9):.0f} msg/s ")
    sys.stderr.flush()


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
