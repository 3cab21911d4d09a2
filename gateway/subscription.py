"""One subscription kept alive: the gateway services' shared loop of connect, subscribe,
handle every message, and reconnect with backoff when the broker goes away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt

from fleetpulse.mqtt import REFUSED_LOGIN, refused_login, say_up

Handler = Callable[[aiomqtt.Client, aiomqtt.Message], Awaitable[None]]


async def serve(host: str, port: int, client_id: str, username: str | None,
                password: str | None, topic: str, handle: Handler,
                log: logging.Logger, name: str) -> None:
    """Until cancelled. Says once on stderr, as `name`, that it is taking messages; a
    login the broker refuses before the first connection is a UserError."""
    backoff = 0.5
    connected = False
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier=client_id, username=username,
                                      password=password) as c:
                await c.subscribe(topic, qos=1)
                log.info("subscribed to %s on %s:%d", topic, host, port)
                if not connected:
                    say_up(name, topic, host, port)
                    connected = True
                backoff = 0.5
                async for msg in c.messages:
                    await handle(c, msg)
        except aiomqtt.MqttError as e:
            code = getattr(getattr(e, "rc", None), "value", getattr(e, "rc", None))
            if code in REFUSED_LOGIN and not connected:
                raise refused_login(host, port, username, e) from None
            log.warning("broker %s:%d: %s; reconnecting in %.1fs", host, port, e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


async def until_stopped(stop: asyncio.Event, *work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until `stop` is set, or until one of them fails (its error raised
    here rather than left in a task nobody awaits while the service looks alive)."""
    tasks = [asyncio.create_task(w) for w in work]
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in [*tasks, stopping]:
            t.cancel()
        outcomes = await asyncio.gather(*tasks, stopping, return_exceptions=True)
    for outcome in outcomes:  # CancelledError is no Exception: a cancelled task is fine
        if isinstance(outcome, Exception):
            raise outcome
