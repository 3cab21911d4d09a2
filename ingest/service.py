"""The ingest service: subscribe to device telemetry over MQTT and feed the pipeline.

It keeps a persistent MQTT 5 session (fixed client id, clean start off, a session
expiry), so messages published while it is down or reconnecting wait in the broker.
Rows are flushed when the buffer reaches `flush_rows` or its oldest row is
`flush_seconds` old; SIGINT/SIGTERM flush what is buffered and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import parquet_writer, stats
from .contract import TELEMETRY_FILTER
from .pipeline import Pipeline

log = logging.getLogger("fleetpulse.ingest")


@dataclass
class IngestConfig:
    host: str
    port: int
    data_dir: Path
    client_id: str = "fleetpulse-ingest"
    flush_rows: int = 50_000
    flush_seconds: float = 5.0
    session_expiry_s: int = 7 * 24 * 3600
    username: str | None = None
    password: str | None = None


async def run(cfg: IngestConfig, stop: asyncio.Event | None = None) -> stats.Stats:
    """Run until `stop` is set (or SIGINT/SIGTERM when no event is given)."""
    stop = stop or _stop_on_signals()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    removed = parquet_writer.remove_leftovers(cfg.data_dir)
    if removed:
        log.info("removed %d partial files left by an earlier crash", removed)
    pipeline = Pipeline(cfg.data_dir, cfg.client_id)
    consumer = asyncio.create_task(_consume(cfg, pipeline))
    ticker = asyncio.create_task(_tick(cfg, pipeline))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (consumer, ticker, stopper):
        task.cancel()
    for task in (consumer, ticker, stopper):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    pipeline.flush()
    pipeline.stats.subscribed = False
    stats.publish(pipeline.stats, cfg.data_dir)
    log.info("stopped: %s", pipeline.stats.to_json().replace("\n", ""))
    return pipeline.stats


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _client(cfg: IngestConfig) -> aiomqtt.Client:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = cfg.session_expiry_s
    return aiomqtt.Client(
        cfg.host,
        cfg.port,
        identifier=cfg.client_id,
        username=cfg.username,
        password=cfg.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
        keepalive=30,
    )


async def _consume(cfg: IngestConfig, pipeline: Pipeline) -> None:
    backoff = 0.5
    while True:
        try:
            async with _client(cfg) as client:
                await client.subscribe(TELEMETRY_FILTER, qos=1)
                pipeline.stats.connects += 1
                pipeline.stats.subscribed = True
                stats.publish(pipeline.stats, cfg.data_dir)
                log.info("subscribed to %s on %s:%d", TELEMETRY_FILTER, cfg.host, cfg.port)
                backoff = 0.5
                async for msg in client.messages:
                    payload = msg.payload if isinstance(msg.payload, bytes) else b""
                    pipeline.handle(str(msg.topic), payload, time.time_ns() // 1_000_000)
                    if pipeline.buffered >= cfg.flush_rows:
                        _flush(pipeline, cfg)
        except aiomqtt.MqttError as e:
            pipeline.stats.subscribed = False
            log.warning(
                "broker %s:%d unreachable (%s); retrying in %.1fs", cfg.host, cfg.port, e, backoff
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


def _flush(pipeline: Pipeline, cfg: IngestConfig) -> None:
    try:
        pipeline.flush()
    except OSError as e:
        # Rows stay buffered and the next tick retries; say so once per failure.
        log.error("cannot write to %s (%s); keeping %d rows buffered", cfg.data_dir, e,
                  pipeline.buffered)
    stats.publish(pipeline.stats, cfg.data_dir)


async def _tick(cfg: IngestConfig, pipeline: Pipeline) -> None:
    last = ""
    while True:
        await asyncio.sleep(0.2)
        if pipeline.buffered and pipeline.buffer_age() >= cfg.flush_seconds:
            _flush(pipeline, cfg)
        snapshot = pipeline.stats.to_json()
        if snapshot != last:
            stats.publish(pipeline.stats, cfg.data_dir)
            last = snapshot
