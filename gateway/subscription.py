"""One subscription kept alive: the gateway services' shared loop of connect, subscribe,
handle every message, and reconnect with backoff when the broker goes away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiomqtt

Handler = Callable[[aiomqtt.Client, aiomqtt.Message], Awaitable[None]]


async def serve(host: str, port: int, client_id: str, username: str | None,
                password: str | None, topic: str, handle: Handler,
                log: logging.Logger) -> None:
    """Until cancelled."""
    backoff = 0.5
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier=client_id, username=username,
                                      password=password) as c:
                await c.subscribe(topic, qos=1)
                log.info("subscribed to %s on %s:%d", topic, host, port)
                backoff = 0.5
                async for msg in c.messages:
                    await handle(c, msg)
        except aiomqtt.MqttError as e:
            log.warning("broker %s:%d: %s; reconnecting in %.1fs", host, port, e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
