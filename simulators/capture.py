"""Telemetry captures: what `fleetpulse record` writes and `fleetpulse replay` reads
(docs/capture-format.md).

A capture is a directory of Parquet segments plus a small manifest:

    CAPTURE/capture.json             {"format": "fleetpulse-capture", "version": 1, ...}
    CAPTURE/seg-000001.parquet       messages in receive order, one row each
    CAPTURE/seg-000002.parquet       ...

Each segment is written whole (temporary name, fsync, rename) about once a second, so
a killed recorder loses at most its last second and every file on disk is complete.
Parquet because it is compressed, columnar and read by DuckDB as it is:
`SELECT topic, count(*) FROM 'CAPTURE/*.parquet' GROUP BY ALL`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from paho.mqtt.client import topic_matches_sub

from fleetpulse.errors import UserError
from fleetpulse.files import fsync_dir, write_replacing

FORMAT = "fleetpulse-capture"
VERSION = 1
MANIFEST = "capture.json"

SCHEMA = pa.schema([
    pa.field("seq", pa.int64(), nullable=False),  # 0, 1, 2 ... in receive order
    pa.field("received_ns", pa.int64(), nullable=False),  # wall clock, Unix epoch ns
    pa.field("offset_ns", pa.int64(), nullable=False),  # monotonic, from the first message
    pa.field("topic", pa.string(), nullable=False),
    pa.field("payload", pa.binary(), nullable=False),  # the bytes as they came
    pa.field("qos", pa.int8(), nullable=False),
    pa.field("retain", pa.bool_(), nullable=False),
    # MQTT 5 properties as JSON (paho's names: UserProperty as [[k, v], ...],
    # ContentType, ...); NULL when the message had none
    pa.field("properties", pa.string()),
])


@dataclass
class Message:
    seq: int
    received_ns: int
    offset_ns: int
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: dict[str, Any] | None = None


class CaptureWriter:
    """Appends messages; `flush()` (about once a second) writes the next segment.

    Rows are kept as one list per column, so a batch of messages costs a few list
    extends rather than an object per message (the recorder's hot path)."""

    def __init__(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        self.path = path
        self.meta = meta or {}
        self.messages = 0
        self.payload_bytes = 0
        self._segment = 0
        self._columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self.path.mkdir(parents=True, exist_ok=True)
        if any(self.path.glob("seg-*.parquet")):
            raise UserError(f"{self.path} already holds a capture: choose another --out")
        write_replacing(self.path / MANIFEST, json.dumps(
            {"format": FORMAT, "version": VERSION, **self.meta}, indent=1).encode(), durable=True)

    def add(self, m: Message) -> None:
        for name, value in (("seq", m.seq), ("received_ns", m.received_ns),
                            ("offset_ns", m.offset_ns), ("topic", m.topic),
                            ("payload", m.payload), ("qos", m.qos), ("retain", m.retain),
                            ("properties", json.dumps(m.properties) if m.properties else None)):
            self._columns[name].append(value)
        self.messages += 1
        self.payload_bytes += len(m.payload)

    def add_batch(self, received_ns: int, offset_ns: int, topics: list[str],
                  payloads: list[bytes], qos: list[int], retain: list[bool],
                  properties: list[str | None]) -> None:
        """Messages that arrived together (one socket read): one receive time for all."""
        n = len(topics)
        c = self._columns
        c["seq"].extend(range(self.messages, self.messages + n))
        c["received_ns"].extend([received_ns] * n)
        c["offset_ns"].extend([offset_ns] * n)
        c["topic"].extend(topics)
        c["payload"].extend(payloads)
        c["qos"].extend(qos)
        c["retain"].extend(retain)
        c["properties"].extend(properties)
        self.messages += n
        self.payload_bytes += sum(map(len, payloads))

    def take(self) -> pa.Table | None:
        """What was added since the last take, as a segment's table (None: nothing)."""
        if not self._columns["seq"]:
            return None
        columns, self._columns = self._columns, {name: [] for name in SCHEMA.names}
        return pa.Table.from_pydict(columns, schema=SCHEMA)

    def write(self, table: pa.Table) -> None:
        """The next segment: written whole (temporary name, fsync, rename)."""
        self._segment += 1
        target = self.path / f"seg-{self._segment:06d}.parquet"
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(target)
        fsync_dir(self.path)

    def flush(self) -> None:
        table = self.take()
        if table is not None:
            self.write(table)


def manifest(path: Path) -> dict[str, Any]:
    """The capture's manifest, checked: a later release reads version 1 or says why not."""
    try:
        doc = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is not a capture (no {MANIFEST}): record one with "
                        "`fleetpulse record --out DIR`") from None
    except ValueError:
        raise UserError(f"{path / MANIFEST} is not JSON: the capture is damaged") from None
    if doc.get("format") != FORMAT or not isinstance(doc.get("version"), int):
        raise UserError(f"{path / MANIFEST} is not a fleetpulse capture manifest")
    if doc["version"] > VERSION:
        raise UserError(f"{path} is capture format version {doc['version']}; this release "
                        f"reads up to {VERSION}: upgrade fleetpulse")
    return doc


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.parquet"))


def read(path: Path, topic_filter: str | None = None) -> Iterator[Message]:
    """Every message of the capture in receive order (segments never overlap), one
    segment in memory at a time."""
    manifest(path)
    matches = TopicMatcher(topic_filter)
    for seg in segments(path):
        t = pq.read_table(seg, schema=SCHEMA)
        for seq, received, offset, topic, payload, qos, retain, props in zip(
                *(t.column(name).to_pylist() for name in SCHEMA.names), strict=True):
            if matches(topic):
                yield Message(seq, received, offset, topic, payload, qos, retain,
                              json.loads(props) if props else None)


def deliveries(path: Path, topic_filter: str | None = None
               ) -> Iterator[tuple[str, bytes, int]]:
    """(topic, payload, received_ns) of every message in receive order, without building
    a Message each: the offline replay's hot path."""
    manifest(path)
    matches = TopicMatcher(topic_filter)
    for seg in segments(path):
        t = pq.read_table(seg, columns=["topic", "payload", "received_ns"], schema=SCHEMA)
        for topic, payload, received in zip(*(c.to_pylist() for c in t.columns), strict=True):
            if matches(topic):
                yield topic, payload, received


class TopicMatcher:
    """Does a topic match the filter (None: every topic)? Remembered per topic, since a
    capture names the same few thousand topics over and over."""

    def __init__(self, topic_filter: str | None) -> None:
        self.filter = topic_filter
        self._seen: dict[str, bool] = {}

    def __call__(self, topic: str) -> bool:
        if self.filter is None:
            return True
        hit = self._seen.get(topic)
        if hit is None:
            if len(self._seen) > 100_000:
                self._seen.clear()
            hit = self._seen[topic] = topic_matches_sub(self.filter, topic)
        return hit
