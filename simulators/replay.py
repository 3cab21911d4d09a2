"""`fleetpulse replay`: a capture (simulators/capture.py) back through the pipeline.

Offline (`--data DIR`), the messages go straight into ingest's pipeline, with the same
validation and quarantine as from a broker, at the receive times they were recorded
with. `--golden FILE` replays offline into a temporary dataset, computes every metric
of the metric library and compares them with FILE: the CI job of a team that checks in
its capture and its approved numbers.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError

from . import capture
from .retime import retime_offset, transform

# Floats in a golden file are equal within this (relative, or absolute near zero):
# metrics are rounded to 4 places, but sums over many rows may differ in the last bits
# from run to run.
REL_TOL = 1e-9
ABS_TOL = 1e-9


@dataclass
class OfflineResult:
    messages: int
    records: int
    rejected: int
    offset_ms: int = 0  # what --retime added to every time


def messages_of(path: Path, topic_filter: str | None = None, retime: str = "none",
                clones: int = 1) -> tuple[Iterable[capture.Message], int]:
    """The capture's messages after --retime and --clone, read as they are used, and
    the offset applied (ms)."""
    import time

    offset = retime_offset(capture.read(path, topic_filter), retime, int(time.time() * 1000))
    return transform(capture.read(path, topic_filter), offset, clones), offset

# Offline, rows are written every this many, in a thread (pyarrow encodes and compresses
# without the GIL) while the next ones are decoded: memory stays bounded and the write
# costs almost no time.
OFFLINE_FLUSH_ROWS = 50_000


def replay_offline(path: Path, data: Path, topic_filter: str | None = None,
                   retime: str = "none", clones: int = 1) -> OfflineResult:
    """Every message of the capture into the dataset at `data`, as ingest would."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from fleetpulse.ingest.contract import TELEMETRY_FILTER
    from fleetpulse.ingest.pipeline import Batch, Pipeline

    stream: Iterable[tuple[str, bytes, int]]
    if retime == "none" and clones == 1:  # nothing to shift: one segment at a time
        stream, offset = capture.deliveries(path, topic_filter), 0
    else:
        messages, offset = messages_of(path, topic_filter, retime, clones)
        stream = ((m.topic, m.payload, m.received_ns) for m in messages)
    pipe = Pipeline(data, "replay")
    handle = pipe.handle
    # what ingest subscribes to; status and config topics are other services'
    telemetry = capture.TopicMatcher(TELEMETRY_FILTER)
    writing: list[tuple[Batch, Future[None]]] = []

    def finish_write() -> None:
        batch, done = writing.pop(0)
        done.result()
        pipe.written(batch)

    n = 0
    with ThreadPoolExecutor(1) as pool:
        for topic, payload, received_ns in stream:
            if telemetry(topic):
                handle(topic, payload, received_ns // 1_000_000)
                n += 1
                if pipe.stats.buffered_rows >= OFFLINE_FLUSH_ROWS:
                    if len(writing) > 1:  # two batches in the queue bound the memory
                        finish_write()
                    batch = pipe.detach()
                    writing.append((batch, pool.submit(pipe.write, batch)))
        while writing:
            finish_write()
    pipe.flush()
    s = pipe.stats
    return OfflineResult(n, s.readings + s.events, s.messages_rejected + s.records_rejected,
                         offset)


def metric_values(data: Path) -> dict[str, list[dict[str, Any]]]:
    """Every metric of the library that needs no argument, rows in a stable order, and
    the quarantine's count per reason."""
    from fleetpulse.analytics.dataset import connect, metric_catalog, query
    from fleetpulse.output import json_value

    con = connect(data)
    try:
        out = {}
        for m in metric_catalog():
            if "key" in m.parameters:  # an experiment needs its key: not a fleet metric
                continue
            r = query(con, f"SELECT * FROM {m.name}() ORDER BY ALL")
            out[m.name] = [{c: json_value(v) for c, v in zip(r.columns, row, strict=True)}
                           for row in r.rows]
        # what was refused, and why: a change in validation shows as plainly
        r = query(con, "SELECT reason, count(*) AS messages FROM quarantine GROUP BY ALL "
                       "ORDER BY ALL")
        out["quarantine_reasons"] = [dict(zip(r.columns, row, strict=True)) for row in r.rows]
        return out
    finally:
        con.close()


@dataclass
class Change:
    metric: str
    key: str
    expected: Any
    got: Any


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(a == b)


def compare(expected: dict[str, list[dict[str, Any]]],
            got: dict[str, list[dict[str, Any]]]) -> list[Change]:
    """What differs, one Change per cell, row or metric: a row is named by its position
    and its first column's value (a day, a feature, a segment)."""
    changes = []
    for metric in sorted(set(expected) | set(got)):
        if metric not in got:
            changes.append(Change(metric, "(metric)", "present", "missing"))
            continue
        if metric not in expected:
            changes.append(Change(metric, "(metric)", "missing", "present"))
            continue
        want, have = expected[metric], got[metric]
        for i in range(max(len(want), len(have))):
            w = want[i] if i < len(want) else None
            h = have[i] if i < len(have) else None
            first = next(iter((w or h or {}).values()), "")
            where = f"row {i} ({first})"
            if w is None or h is None:
                changes.append(Change(metric, where, "no row" if w is None else "a row",
                                      "no row" if h is None else "a row"))
                continue
            for col in sorted(set(w) | set(h)):
                if not _same(w.get(col), h.get(col)):
                    changes.append(Change(metric, f"{where} {col}", w.get(col), h.get(col)))
    return changes


def golden(path: Path, golden_file: Path, update: bool = False,
           topic_filter: str | None = None) -> list[Change]:
    """Replay offline into a temporary dataset and compare its metrics with the golden
    file (or write it, when `update`). Returns what changed."""
    with tempfile.TemporaryDirectory(prefix="fleetpulse-replay-") as tmp:
        replay_offline(path, Path(tmp) / "data", topic_filter)
        values = metric_values(Path(tmp) / "data")
    if update:
        golden_file.write_text(json.dumps({"format": "fleetpulse-golden", "version": 1,
                                           "metrics": values}, indent=1, sort_keys=True)
                               + "\n")
        return []
    try:
        doc = json.loads(golden_file.read_text())
    except FileNotFoundError:
        raise UserError(f"no golden file {golden_file}: write it with --update-golden "
                        "once the numbers are approved") from None
    except ValueError:
        raise UserError(f"{golden_file} is not JSON: write it again with --update-golden"
                        ) from None
    return compare(doc.get("metrics", {}), values)


@dataclass
class BrokerResult:
    messages: int
    seconds: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    offset_ms: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def replay_broker(path: Path, host: str, port: int, speed: float = 1.0, fast: bool = False,
                  topic_filter: str | None = None, loops: int = 1,
                  username: str | None = None, password: str | None = None,
                  client_id: str = "fleetpulse-replay", ack_timeout: float = 60.0,
                  retime: str = "none", clones: int = 1) -> BrokerResult:
    """Publish the capture to a broker with its QoS, retain flags and properties.

    Timing is an absolute schedule: message i is due at t0 + (offset_i - offset_0) /
    speed, and the wait is for that instant, never for the delta since the previous
    message, so lateness does not accumulate. `fast` publishes as fast as the broker's
    window allows. Every QoS 1 and 2 message is acknowledged before this returns. The
    capture is read a segment at a time, once per lap."""
    import asyncio

    if speed <= 0:
        raise UserError("--speed must be above 0 (use --fast for no waiting)")
    if clones < 1:
        raise UserError("--clone must be at least 1")
    return asyncio.run(_replay_broker(path, host, port, speed, fast, topic_filter, loops,
                                      username, password, client_id, ack_timeout, retime,
                                      clones))


async def _replay_broker(path: Path, host: str, port: int, speed: float, fast: bool,
                         topic_filter: str | None, loops: int, username: str | None,
                         password: str | None, client_id: str, ack_timeout: float,
                         retime: str, clones: int) -> BrokerResult:
    import asyncio
    import time

    from fleetpulse.ingest.mqtt_subscriber import MqttError

    from . import publish_properties
    from .mqtt_publisher import Publisher

    first_ns = last_ns = None
    for m in capture.read(path, topic_filter):
        first_ns = m.offset_ns if first_ns is None else first_ns
        last_ns = m.offset_ns
    offset = retime_offset(capture.read(path, topic_filter), retime, int(time.time() * 1000))
    span_s = ((last_ns or 0) - (first_ns or 0)) / 1e9 / speed
    pub = Publisher(host, port, client_id, username=username, password=password)
    await pub.connect_or_explain()
    lags: list[float] = []
    sent = 0
    encoded: dict[str, bytes] = {}
    start = time.monotonic()
    try:
        for lap in range(loops):
            lap_start = start + lap * (span_s + 0.001)
            for m in transform(capture.read(path, topic_filter), offset, clones):
                if not fast:
                    due = lap_start + (m.offset_ns - (first_ns or 0)) / 1e9 / speed
                    wait = due - time.monotonic()
                    if wait > 0:
                        await pub.drain()  # what is due now leaves before the wait
                        await asyncio.sleep(wait)
                props = b""
                if m.properties:
                    key = json.dumps(m.properties, sort_keys=True)
                    props = encoded.get(key) or encoded.setdefault(
                        key, publish_properties.encode(m.properties))
                await pub.publish(m.topic, m.payload, m.qos, m.retain, props)
                sent += 1
                if not fast:
                    pub.flush()
                    lags.append((time.monotonic() - due) * 1000)
        await pub.finish(ack_timeout)
        seconds = time.monotonic() - start
    except MqttError as e:
        raise UserError(f"replay published {sent:,} messages, but {e}") from None
    finally:
        await pub.close()
    lags.sort()

    def pct(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0.0

    return BrokerResult(sent, seconds, pct(0.5), pct(0.99), lags[-1] if lags else 0.0, offset)
