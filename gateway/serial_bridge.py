"""The serial bridge: wired devices speak contract-v1 envelopes as JSON lines over USB
serial, and the gateway publishes them at QoS 1 on their behalf.

Every line is validated against the contract before it is published; a bad line is
counted by reason and logged, never fatal. When the cable is pulled the bridge waits
for the port to come back (a stable path such as /dev/serial/by-id/... survives
replugging) and carries on. Messages for the broker queue in paho while it is away.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import serial

from fleetpulse.files import write_replacing
from fleetpulse.ingest.contract import MAX_PAYLOAD_BYTES, TELEMETRY_TOPIC, Rejected, parse_message

from .registry import Registry

log = logging.getLogger("fleetpulse.gateway.serial")


@dataclass
class BridgeStats:
    lines: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    port_opened: int = 0
    port_lost: int = 0
    connected: bool = False


class SerialBridge:
    def __init__(self, port_path: str, host: str, port: int, username: str | None,
                 password: str | None, registry: Registry | None = None, baudrate: int = 115200,
                 stats_file: Path | None = None) -> None:
        self.port_path = port_path
        self.baudrate = baudrate
        self.registry = registry
        self.stats = BridgeStats()
        self.stats_file = stats_file
        self._devices: dict[str, dict] = {}
        self._registry_stamp = -1
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"fleetpulse-serial-{os.getpid()}")
        if username:
            self._client.username_pw_set(username, password)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.connect_async(host, port, keepalive=30)

    def _on_publish(self, *_: object) -> None:
        with self._lock:
            self.stats.acked += 1

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                    props: object) -> None:
        self.stats.connected = not getattr(rc, "is_failure", False)
        if not self.stats.connected:
            log.error("broker refused the gateway account (%s): check --registry or "
                      "--username/--password", rc)

    def _on_disconnect(self, *_: object) -> None:
        self.stats.connected = False

    def run(self, stop: threading.Event) -> None:
        self._client.loop_start()
        waiting_said = False
        try:
            while not stop.is_set():
                try:
                    port = serial.Serial(self.port_path, self.baudrate, timeout=0.2)
                except (serial.SerialException, OSError) as e:
                    if not waiting_said:
                        log.warning("serial port %s not available (%s); waiting for it",
                                    self.port_path, e)
                        waiting_said = True
                    stop.wait(0.3)
                    self._write_stats()
                    continue
                waiting_said = False
                self.stats.port_opened += 1
                log.info("reading envelopes from %s", self.port_path)
                try:
                    self._read(port, stop)
                except (serial.SerialException, OSError) as e:
                    self.stats.port_lost += 1
                    log.warning("serial port %s lost (%s); waiting for it to come back",
                                self.port_path, e)
                finally:
                    port.close()
        finally:
            self._write_stats()
            self._client.disconnect()
            self._client.loop_stop()

    def _read(self, port: serial.Serial, stop: threading.Event) -> None:
        pending = b""
        last_stats = 0.0
        while not stop.is_set():
            chunk = port.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    self.handle_line(pending)
                    pending = b""
                elif len(pending) > 2 * MAX_PAYLOAD_BYTES:
                    self.handle_line(pending)  # no newline in sight: refuse it as oversize
                    pending = b""
            if time.monotonic() - last_stats > 0.2:
                self._write_stats()
                last_stats = time.monotonic()

    def handle_line(self, raw: bytes) -> None:
        line = raw.strip()
        if not line:
            return
        self.stats.lines += 1
        now = time.time_ns() // 1_000_000
        device_id = _device_id(line)
        topic = TELEMETRY_TOPIC.format(device_id=device_id or "unknown")
        try:
            parse_message(topic, line, now)
            if self.registry is not None and not self._active(device_id):
                raise Rejected("unknown_device", f"{device_id!r} is not an active device in "
                                                 "the registry")
        except Rejected as e:
            self.stats.rejected += 1
            self.stats.rejected_by_reason[e.reason] += 1
            log.warning("bad line from %s: %s: %s", self.port_path, e.reason, e.detail)
            return
        self._client.publish(topic, line, qos=1)
        self.stats.published += 1

    def _active(self, device_id: str | None) -> bool:
        """Is the device registered and not revoked? The registry file is read again only
        when it changed (a revoke takes effect at the next line), not for every line."""
        assert self.registry is not None
        path = self.registry.dir / "registry.json"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = 0
        if stamp != self._registry_stamp:
            self._devices = self.registry.devices()
            self._registry_stamp = stamp
        info = self._devices.get(device_id or "")
        return info is not None and not info.get("revoked_at")

    def _write_stats(self) -> None:
        if self.stats_file is None:
            return
        d = asdict(self.stats)
        d["rejected_by_reason"] = dict(self.stats.rejected_by_reason)
        write_replacing(self.stats_file, json.dumps(d, sort_keys=True))


def _device_id(line: bytes) -> str | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    d = doc.get("device_id") if isinstance(doc, dict) else None
    return d if isinstance(d, str) and d else None



