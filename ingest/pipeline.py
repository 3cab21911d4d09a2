"""The transport-free core of ingest: message in, validated rows buffered, Parquet out.

The MQTT service feeds it (and replays the write-ahead log into it after a crash);
tests feed it contract vectors directly. It never raises on bad input: every refusal
becomes a quarantine row with its reason, and an exception of our own while handling
one message quarantines that message as `internal` instead of stopping ingest (the
write-ahead log replays through the same path, so a poison message cannot make a
crash loop). A message it has already taken recently is dropped as a duplicate: QoS 1
redelivers after reconnects, and the analytics views deduplicate again across files
and restarts. The write-path key is (device, install id, boot, seq, sent_ms): a
redelivery is the same bytes, while a device that lost its boot counter starts again
at boot 0 with a new install id, or at least a later sent_ms, so old identities can
never swallow its new data.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import Any

import pyarrow as pa

from fleetpulse.errors import one_line

from . import envelope_decoder
from .accepted_columns import AcceptedColumns
from .contract import MAX_PAYLOAD_BYTES, TELEMETRY_TOPIC, Rejected, parse_message
from .learned_columns import LearnedColumns, merge_extra
from .native_columns import NativeColumns
from .schema import TABLES
from .stats import Stats
from .store import Store

DEDUP_WINDOW = 200_000  # message identities remembered, ~30 MB


class Pipeline:
    def __init__(self, data: Store | str | Path, writer_id: str, state_dir: Path | None = None,
                 dedup_window: int = DEDUP_WINDOW) -> None:
        self.store = data if isinstance(data, Store) else Store(data)
        if state_dir is None:
            if not self.store.local:
                raise ValueError("a dataset in object storage needs a local state directory")
            state_dir = Path(self.store.root)
        self.state_dir = state_dir
        self.stats = Stats(client_id=writer_id)
        self.writer_id = writer_id
        self.columns = LearnedColumns(state_dir)
        self._rows: dict[str, list[dict[str, Any]]] = {
            t: [] for t in ("readings", "events", "quarantine")}
        # what the two fast paths took (C, then msgspec); tables a failed write handed back
        self._native = NativeColumns()
        self._accepted = AcceptedColumns()
        self._tables: dict[str, list[pa.Table]] = {t: [] for t in ("readings", "events")}
        self._oldest: float | None = None
        # The window: a set to look keys up, a deque for their order. Evicting the oldest
        # key of an insertion-ordered dict (del d[next(iter(d))]) scans the deleted slots
        # at its front: once the window was full, a 1M-message run spent 106 us of CPU a
        # message instead of 14 (bench/RESULTS.md).
        self._seen: set[tuple[str, str | None, int, int, int]] = set()
        self._seen_order: deque[tuple[str, str | None, int, int, int]] = deque()
        self._window = dedup_window

    @property
    def buffered(self) -> int:
        rows = self._rows
        return (len(rows["readings"]) + len(rows["events"]) + len(rows["quarantine"])
                + len(self._native) + len(self._accepted)
                + sum(t.num_rows for ts in self._tables.values() for t in ts))

    def buffer_age(self) -> float:
        return 0.0 if self._oldest is None else time.monotonic() - self._oldest

    def handle(self, topic: str, payload: bytes, received_ms: int) -> None:
        self.handle_batch(((topic, payload),), received_ms)

    def handle_batch(self, messages: Collection[tuple[str, bytes]], received_ms: int) -> None:
        """Take (topic, payload) messages received at `received_ms`. The C path's common
        case, with its dedup window, runs inline: this loop runs once per message."""
        if self._oldest is None:
            self._oldest = time.monotonic()
        st = self.stats
        st.messages += len(messages)
        native = self._native
        add, undo = native.add, native.undo
        seen, order, window = self._seen, self._seen_order, self._window
        topic_device = envelope_decoder.topic_device  # cached: one string per topic
        for topic, payload in messages:
            try:
                device = topic_device(topic)
                if device is not None and len(payload) <= MAX_PAYLOAD_BYTES:
                    rest = add(device, payload, received_ms)
                    if rest is not None:
                        key = (device, *rest)
                        if key in seen:
                            st.duplicates += 1
                            undo()
                        else:
                            seen.add(key)
                            order.append(key)
                            if len(order) > window:
                                seen.discard(order.popleft())
                        continue
                self._take_declined(topic, payload, received_ms)
            except Rejected as e:
                self._reject_message(topic, payload, received_ms, e.reason, e.detail)
            except Exception as e:  # one message must never stop ingest
                self._reject_message(topic, payload, received_ms, "internal", one_line(e))
        st.buffered_rows = self.buffered

    def _take_declined(self, topic: str, payload: bytes, received_ms: int) -> None:
        """A message the C path declined: the msgspec path, else the validator."""
        env = envelope_decoder.decode(topic, payload, received_ms)
        if env is not None:
            # interned: the window's keys share one string per device, not one each
            key = (intern(env.device_id), env.iid, env.boot, env.seq, env.sent_ms)
            if not self._duplicate(key):
                self._accepted.add(env, received_ms)
                self._remember(key)
            return
        self._take(topic, payload, received_ms)

    def _reject_message(self, topic: str, payload: bytes, received_ms: int, reason: str,
                        detail: str) -> None:
        self.stats.messages_rejected += 1
        self.stats.rejected_by_reason[reason] += 1
        self._rows["quarantine"].append(
            quarantine_row(topic, payload, received_ms, reason, detail))

    def _take(self, topic: str, payload: bytes, received_ms: int) -> None:
        """Validate and buffer one message the fast path declined. Its rows are built
        first and buffered only when all of them are, so a failure part-way leaves
        nothing half-taken."""
        st = self.stats
        parsed = parse_message(topic, payload, received_ms)
        key = (parsed.device_id, parsed.iid, parsed.boot, parsed.seq, parsed.sent_ms)
        if self._duplicate(key):
            return
        conflicts = 0
        for table, rows in (("readings", parsed.readings), ("events", parsed.events)):
            for row in rows:
                conflicts += self._learn(table, row)
        quarantined = [
            quarantine_row(topic, payload, received_ms, r.reason, r.detail,
                           device_id=parsed.device_id, boot=parsed.boot, seq=parsed.seq,
                           idx=r.idx)
            for r in parsed.rejects]
        self._rows["readings"] += parsed.readings
        self._rows["events"] += parsed.events
        self._rows["quarantine"] += quarantined
        for r in parsed.rejects:
            st.records_rejected += 1
            st.rejected_by_reason[r.reason] += 1
        st.type_conflicts += conflicts
        self._remember(key)

    def _duplicate(self, key: tuple[str, str | None, int, int, int]) -> bool:
        """Taken recently already (counted as a duplicate)?"""
        if key in self._seen:
            self.stats.duplicates += 1
            return True
        return False

    def _remember(self, key: tuple[str, str | None, int, int, int]) -> None:
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > self._window:
            self._seen.discard(self._seen_order.popleft())

    def _learn(self, table: str, row: dict[str, Any]) -> int:
        """Make a record's new fields learned columns; a value whose type conflicts with
        its learned column goes into `extra` instead (the record is kept, the column
        stays typed). Returns the number of such conflicts."""
        new = row.pop("_new", None)
        if new is None:
            return 0
        conflicting = self.columns.add(table, row, new)
        if not conflicting:
            return 0
        row["extra"] = merge_extra(row.get("extra"), conflicting)
        return len(conflicting)

    def detach(self, name: str | None = None) -> Batch:
        """Hand everything buffered over as a Batch and start an empty buffer, so that
        messages can go on being taken while the batch is written elsewhere."""
        batch = Batch(name or f"{self.writer_id}-{uuid.uuid4().hex[:12]}")
        self.columns.save()
        accepted: list[NativeColumns | AcceptedColumns] = [self._native, self._accepted]
        self._native, self._accepted = NativeColumns(), AcceptedColumns()
        # Their Arrow tables are assembled by write(), in the writer's thread: on the event
        # loop that took 5% of its busy time (profile in bench/RESULTS.md).
        sealed = [(a, a.seal()) for a in accepted]
        batch.accepted = [a for a, tables in sealed if tables]
        with_accepted = set().union(*(tables for _, tables in sealed))
        for table, rows in self._rows.items():
            tables = self._tables.get(table)
            if rows or tables or table in with_accepted:
                batch.rows[table] = rows
                batch.tables[table] = tables or []
                batch.schemas[table] = self.columns.schema(table)
                self._rows[table] = []
                if tables:
                    self._tables[table] = []
                self.columns.written(table)
        self._oldest = None
        self.stats.buffered_rows = self.buffered
        return batch

    def write(self, batch: Batch) -> None:
        """Write a detached batch as files named `part-<name>.parquet` (one per table and
        date). Touches nothing but the store and the batch, so it may run in a thread;
        raises OSError, with the tables written so far recorded in the batch."""
        started = time.monotonic()
        for table in TABLES:  # quarantine after the tables whose rows may be set aside
            if table not in batch.rows or table in batch.done:
                continue
            try:
                data = batch.table(table)
            except Exception as e:  # a row no check foresaw: isolate it
                self._set_aside(batch, table, e)
                data = batch.table(table)
            batch.files += self.store.write_table_by_date(table, data, batch.name)
            batch.done.add(table)
            del data
        batch.release()
        batch.seconds = time.monotonic() - started

    def _set_aside(self, batch: Batch, table: str, error: Exception) -> None:
        """Last line of defence: rows that Arrow cannot store (validation should have
        refused them) go to quarantine as `internal`, so one bad value never stops every
        flush. The quarantine table of the batch is written after readings and events."""
        schema = batch.schemas[table]
        good, bad = [], []
        for row in batch.rows[table]:
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except Exception:
                bad.append(row)
        if table == "quarantine" or not bad:
            raise error
        batch.rows[table] = good
        detail = one_line(error)
        q = batch.rows.setdefault("quarantine", [])
        batch.schemas.setdefault("quarantine", TABLES["quarantine"])
        for row in bad:
            # the original payload is not kept with its rows: the row itself stands in
            q.append(quarantine_row(
                TELEMETRY_TOPIC.format(device_id=row["device_id"]),
                json.dumps(row, default=str).encode("utf-8", "backslashreplace"),
                row["received_at"], "internal", detail, device_id=row["device_id"],
                boot=row["boot"], seq=row["seq"], idx=row["idx"]))
        batch.set_aside += len(bad)

    def written(self, batch: Batch) -> None:
        """Count a batch that write() completed."""
        st = self.stats
        for table in ("readings", "events"):
            setattr(st, table, getattr(st, table) + batch.counts.get(table, 0))
        if batch.set_aside:
            st.records_rejected += batch.set_aside
            st.rejected_by_reason["internal"] += batch.set_aside
        st.files_written += len(batch.files)
        st.flushes += 1
        st.last_flush_seconds = round(batch.seconds, 4)

    def restore(self, batch: Batch) -> None:
        """Put the tables a failed write did not finish back in front of the buffer."""
        batch.materialize()
        for table, rows in batch.rows.items():
            if table not in batch.done:
                self._rows[table][:0] = rows
                if table in self._tables:
                    self._tables[table][:0] = batch.tables.get(table, [])
                self.columns.present(table, batch.schemas[table])
        if self.buffered and self._oldest is None:
            self._oldest = time.monotonic()
        self.stats.buffered_rows = self.buffered

    def flush(self, name: str | None = None) -> list[str]:
        """Write everything buffered now; a table's rows stay buffered if its write
        fails."""
        batch = self.detach(name)
        try:
            self.write(batch)
        except BaseException:
            self.restore(batch)
            raise
        self.written(batch)
        return batch.files


def quarantine_row(topic: str, payload: bytes, received_ms: int, reason: str, detail: str,
                   **ident: Any) -> dict[str, Any]:
    """A row of the quarantine table; `ident` is the record's identity when one record,
    not the whole message, was refused."""
    return {"received_at": received_ms, "topic": topic, "reason": reason, "detail": detail,
            "payload": payload, **ident}


@dataclass
class Batch:
    """What one flush writes: per table the slow path's rows (dicts) and the fast
    path's Arrow tables (declared columns only)."""
    name: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    set_aside: int = 0  # rows moved to quarantine by write()
    # the fast paths' rows not yet in `tables`
    accepted: list[NativeColumns | AcceptedColumns] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows per table, once written

    def release(self) -> None:
        """Count the rows of a written batch and let go of them. Called by write(), in the
        writer's thread: freeing a batch's Arrow tables on the event loop took 6% of its
        time at 32 records a message (perf profile in bench/RESULTS.md)."""
        self.counts = {t: self.row_count(t) for t in self.rows}
        self.rows, self.tables = {}, {}

    def materialize(self) -> None:
        """Move the fast paths' columns into `tables` (after what was there already)."""
        for accepted in self.accepted:
            for table, t in accepted.tables().items():
                self.tables[table].append(t)
        self.accepted = []

    def row_count(self, table: str) -> int:
        self.materialize()
        return len(self.rows.get(table, ())) + sum(t.num_rows for t in self.tables.get(table, ()))

    def table(self, table: str) -> pa.Table:
        """The table's rows as one Arrow table of its schema (raises on a row Arrow
        cannot store)."""
        self.materialize()
        schema = self.schemas[table]
        parts = [conform(t, schema) for t in self.tables.get(table, ())]
        if self.rows.get(table) or not parts:
            parts.insert(0, pa.Table.from_pylist(self.rows.get(table, []), schema=schema))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """A fast-path table with the batch's schema: learned columns its rows lack are null."""
    if t.schema.equals(schema):
        return t
    return pa.Table.from_arrays(
        [t.column(f.name) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
         for f in schema], schema=schema)
