"""Waiting at the broker, as the gateway service, for a freshly flashed device to say it
is up: its retained `online` status, then its first telemetry envelope."""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from fleetpulse.errors import UserError


@dataclass
class Report:
    online_s: float | None = None  # from the reset to the live `online`
    telemetry_s: float | None = None  # from the reset to the first envelope
    fw: str | None = None  # the firmware version that envelope names


class ReportWatcher:
    """Subscribed before the reset, so nothing the device says after it is missed.
    Retained messages (an `online` or `offline` left by the last boot) are told apart by
    their retain flag: a broker sets it only on what it replays to a new subscription."""

    def __init__(self, broker: tuple[str, int], auth: tuple[str | None, str | None],
                 device_id: str) -> None:
        self.device_id = device_id
        self._status = f"devices/{device_id}/status"
        self._telemetry = f"devices/{device_id}/telemetry"
        self._q: queue.Queue[tuple[float, str, bytes]] = queue.Queue()
        self._subscribed = queue.Queue[bool]()
        self._t0 = time.monotonic()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if auth[0]:
            c.username_pw_set(auth[0], auth[1])
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_: self._subscribed.put(True)
        c.on_message = self._on_message
        self._c = c
        self._broker = broker

    def start(self, timeout: float = 10) -> ReportWatcher:
        host, port = self._broker
        try:
            self._c.connect(host, port)
        except OSError as e:
            raise UserError(f"cannot reach the broker at {host}:{port} ({e}) to watch the "
                            "device come up: start it with `fleetpulse broker`, or pass "
                            "--broker HOST:PORT") from None
        self._c.loop_start()
        try:
            ok = self._subscribed.get(timeout=timeout)
        except queue.Empty:
            ok = False
        if not ok:
            self.close()
            raise UserError(f"the broker at {host}:{port} did not let the gateway account "
                            "subscribe to device status: check --registry (its "
                            "fleetpulse-gateway account) or --username/--password")
        return self

    def start_clock(self) -> None:
        """Called just before the reset: the times reported are from here."""
        self._t0 = time.monotonic()

    def wait(self, timeout: float) -> Report:
        """Until the live `online` and then an envelope arrive, or `timeout` seconds."""
        report = Report()
        end = self._t0 + timeout
        while report.telemetry_s is None:
            try:
                at, topic, payload = self._q.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            if topic == self._status and payload == b"online":
                report.online_s = report.online_s or at - self._t0
            elif topic == self._telemetry:
                if report.online_s is None:
                    report.online_s = at - self._t0  # publishing: it is online
                report.telemetry_s = at - self._t0
                try:
                    fw = json.loads(payload).get("fw")
                except (ValueError, AttributeError):
                    fw = None
                report.fw = fw if isinstance(fw, str) else None
        return report

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object,
                    reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            self._subscribed.put(False)
            return
        client.subscribe([(self._status, 1), (self._telemetry, 1)])

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return  # left from before this boot
        self._q.put((time.monotonic(), msg.topic, bytes(msg.payload)))
