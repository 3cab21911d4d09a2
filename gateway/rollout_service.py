"""What runs rollouts for real: the devices in a rollout's scope from the registry, the
guard's rows from the dataset, the updates sent over MQTT, and one look at a time.

An update goes to a device as a retained message on devices/<id>/update (docs/ota.md),
not on its config topic: that topic holds the device's settings whole, so a manifest
there would either replace them or need a read-modify-write racing `devices config`.
Retained, a device that is offline gets it when it connects, and sending it twice (a
service restarted between sending and saving) changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from fleetpulse.analytics.dataset import connect, query
from fleetpulse.analytics.rollout_guard import guard_rows
from fleetpulse.analytics.sqltext import sql_list
from fleetpulse.errors import UserError
from fleetpulse.mqtt import unreachable_broker

from .ota_chunks import ChunkServer, Release
from .registry import Registry
from .rollout import Plan, Rollout, RolloutStore, step

log = logging.getLogger("fleetpulse.rollout")
UPDATE_TOPIC = "devices/{device_id}/update"
PUBLISH_TIMEOUT_S = 30.0


def scope_of(registry: Registry, plan: Plan) -> list[str]:
    """The registered, not revoked devices of the plan's model and attributes."""
    out = []
    for device_id, entry in registry.devices().items():
        if entry.get("revoked_at"):
            continue
        if plan.model is not None and entry.get("model") != plan.model:
            continue
        attrs = entry.get("attributes") or {}
        if any(attrs.get(k) != v for k, v in plan.attrs.items()):
            continue
        out.append(device_id)
    return sorted(out)


def running_version(data: str, devices: list[str]) -> str | None:
    """The version most of `devices` last reported (the dataset's devices view)."""
    con = connect(data)
    try:
        got = query(con, f"SELECT fw FROM devices WHERE device_id IN ({sql_list(devices)}) "
                         "GROUP BY fw ORDER BY count(*) DESC, fw LIMIT 1")
    finally:
        con.close()
    return str(got.rows[0][0]) if got.rows else None


class MqttSender:
    """Publishes updates retained at QoS 1 and waits until the broker has them all."""

    def __init__(self, host: str, port: int, username: str | None,
                 password: str | None) -> None:
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id="fleetpulse-rollout")
        if username is not None:
            self._client.username_pw_set(username, password)
        try:
            self._client.connect(host, port)
        except OSError as e:
            raise unreachable_broker(f"{host}:{port}", e) from None
        self._client.loop_start()
        self._pending: list[mqtt.MQTTMessageInfo] = []

    def serve(self, releases: Callable[[str], Release | None]) -> ChunkServer:
        """Also answer devices' chunk requests for the releases `releases` names."""
        return ChunkServer(self._client, releases)

    def __call__(self, device_id: str, message: dict[str, Any]) -> None:
        import json

        payload = json.dumps(message, separators=(",", ":")).encode()
        self._pending.append(self._client.publish(UPDATE_TOPIC.format(device_id=device_id),
                                                  payload, qos=1, retain=True))

    def wait(self) -> None:
        """Return once the broker acknowledged every update sent so far."""
        for info in self._pending:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
            if not info.is_published():
                raise UserError("the broker did not acknowledge an update within "
                                f"{PUBLISH_TIMEOUT_S:g}s; the rollout will send it again")
        self._pending = []

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Serving:
    """The releases of the running rollouts, by version, for the chunk server; updated
    at every look (the chunk server reads it from paho's thread)."""

    def __init__(self) -> None:
        self._by_version: dict[str, Release] = {}

    def update(self, rollouts: list[Rollout]) -> None:
        out = {}
        for r in rollouts:
            if r.state == "running" and r.plan.release_dir:
                old = self._by_version.get(r.plan.version)
                out[r.plan.version] = old or Release(Path(r.plan.release_dir))
        self._by_version = out

    def __call__(self, version: str) -> Release | None:
        return self._by_version.get(version)


def look(store: RolloutStore, registry: Registry, data: str, sender: MqttSender,
         now: datetime | None = None) -> list[Rollout]:
    """One look at every running rollout; returns them as saved."""
    now = now or datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    looked = []
    for r in store.active():
        if r.state != "running":
            continue
        scope = scope_of(registry, r.plan)
        started = datetime.fromtimestamp(r.started_ms / 1000, UTC).date()
        con = connect(data)
        try:
            rows = guard_rows(con, r.plan.version, r.plan.previous, started, now)
        finally:
            con.close()
        before = r.state, r.stage
        step(r, now_ms, scope, rows, sender)
        sender.wait()  # what the state records as sent, the broker has
        store.save(r)
        if (r.state, r.stage) != before:
            for line in r.history[-2 if r.state == "halted" and r.plan.auto_rollback else -1:]:
                log.log(logging.WARNING if r.state == "halted" else logging.INFO,
                        "rollout %s: %s", r.plan.version, line["what"])
        looked.append(r)
    return looked
