"""The presence service: which devices are connected, and since when.

Devices publish a retained `online` on devices/<id>/status when they connect and set
a retained `offline` as their last will, which the broker publishes when the
connection dies. This service subscribes to those messages and writes every change to
the dataset's `presence` table; analytics' `devices` view turns it into a status and
a last-seen time per device. It also records last-seen times in the registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from fleetpulse.ingest.contract import is_device_id
from fleetpulse.ingest.store import Store

from .registry import Registry
from .subscription import serve, until_stopped

log = logging.getLogger("fleetpulse.gateway.presence")
STATUS_FILTER = "devices/+/status"


@dataclass
class PresenceConfig:
    host: str
    port: int
    data: str | Path
    username: str | None = None
    password: str | None = None
    registry: Path | None = None
    flush_seconds: float = 1.0
    client_id: str = "fleetpulse-presence"


async def run_presence(cfg: PresenceConfig, stop: asyncio.Event) -> None:
    store = Store(cfg.data)
    registry = Registry(cfg.registry) if cfg.registry else None
    rows: list[dict[str, Any]] = []
    seen: dict[str, float] = {}

    def flush() -> None:
        if rows:
            store.write_rows("presence", rows, f"presence-{uuid.uuid4().hex[:12]}")
            rows.clear()
        if registry is not None and seen:
            registry.touch(seen)
            seen.clear()

    async def record(_c: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        row = _row(str(msg.topic), msg.payload, msg.retain)
        if row is not None:
            rows.append(row)
            seen[row["device_id"]] = time.time()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(cfg.flush_seconds)
            try:
                flush()
            except OSError as e:
                log.error("cannot write presence to %s (%s); keeping %d changes", store, e,
                          len(rows))

    consume = serve(cfg.host, cfg.port, cfg.client_id, cfg.username, cfg.password,
                    STATUS_FILTER, record, log, "presence")
    try:
        await until_stopped(stop, consume, ticker())
    finally:
        flush()


def _row(topic: str, payload: object, retained: bool) -> dict[str, Any] | None:
    parts = topic.split("/")
    status = payload.decode(errors="replace").strip() if isinstance(payload, bytes) else ""
    if len(parts) != 3 or not is_device_id(parts[1]) or status not in ("online", "offline"):
        log.warning("ignored status message on %s: %r", topic, status[:40])
        return None
    return {"device_id": parts[1], "status": status, "seen_at": time.time_ns() // 1_000_000,
            "retained": bool(retained)}
