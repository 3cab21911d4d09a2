"""The provisioning service: answers claims. A board flashed with a batch's claim asks
on provision/<its client id>/request (claim id, claim secret, its serial number); this
service checks the claim in the registry (secret, count left, allow-list), creates the
device's account and answers on provision/<client id>/response with its credentials or
the reason it was refused. The broker's ACL lets each claim client hear only its own
answer (docs/provisioning.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from .registry import ClaimRefused, Registry
from .subscription import serve, until_stopped

log = logging.getLogger("fleetpulse.gateway.provisioning")
REQUEST_FILTER = "provision/+/request"


@dataclass
class ProvisioningConfig:
    host: str
    port: int
    registry: Path
    username: str | None = None
    password: str | None = None
    client_id: str = "fleetpulse-provisioner"


def answer(registry: Registry, topic: str, payload: bytes) -> tuple[str, dict[str, str]] | None:
    """The response topic and message for one request; None for a message that is no
    request at all (nothing to answer to)."""
    parts = topic.split("/")
    if len(parts) != 3 or not parts[1]:
        return None
    reply = f"provision/{parts[1]}/response"
    try:
        req = json.loads(payload)
        claim, secret, serial = req["claim"], req["secret"], req["serial"]
        if not all(isinstance(v, str) for v in (claim, secret, serial)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return reply, {"error": "the request must be JSON with claim, secret and serial"}
    try:
        creds = registry.provision(claim, secret, serial)
    except ClaimRefused as e:
        log.warning("refused serial %r of claim %r: %s", serial[:40], claim[:40], e)
        return reply, {"error": str(e)}
    log.info("provisioned %s (claim %s, serial %s)", creds.username, claim, serial)
    return reply, {"device_id": creds.username, "password": creds.password}


async def run_provisioning(cfg: ProvisioningConfig, stop: asyncio.Event) -> None:
    registry = Registry(cfg.registry)

    async def handle(c: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        payload = msg.payload if isinstance(msg.payload, bytes) else b""
        # the registry's lock and password hashing: off the event loop
        out = await asyncio.to_thread(answer, registry, str(msg.topic), payload)
        if out is not None:
            await c.publish(out[0], json.dumps(out[1]).encode(), qos=1)

    await until_stopped(stop, serve(cfg.host, cfg.port, cfg.client_id, cfg.username,
                                    cfg.password, REQUEST_FILTER, handle, log, "provision"))
