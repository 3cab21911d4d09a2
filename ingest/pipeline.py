"""The transport-free core of ingest: message in, validated rows buffered, Parquet out.

The MQTT service feeds it (and replays the write-ahead log into it after a crash);
tests feed it contract vectors directly. It never raises on bad input: every refusal
becomes a quarantine row with its reason. A message whose identity (device, boot, seq)
it has already taken recently is dropped as a duplicate: QoS 1 redelivers after
reconnects, and the analytics views deduplicate again across files and restarts.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from .contract import Rejected, parse_message
from .learned_columns import LearnedColumns
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
        self._oldest: float | None = None
        self._seen: dict[tuple[str, int, int], None] = {}
        self._window = dedup_window

    @property
    def buffered(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def buffer_age(self) -> float:
        return 0.0 if self._oldest is None else time.monotonic() - self._oldest

    def handle(self, topic: str, payload: bytes, received_ms: int) -> None:
        if self._oldest is None:
            self._oldest = time.monotonic()
        st = self.stats
        st.messages += 1
        try:
            parsed = parse_message(topic, payload, received_ms)
        except Rejected as e:
            st.messages_rejected += 1
            st.rejected_by_reason[e.reason] += 1
            self._quarantine(topic, payload, received_ms, e.reason, e.detail)
            return
        key = (parsed.device_id, parsed.boot, parsed.seq)
        if key in self._seen:
            st.duplicates += 1
            return
        self._seen[key] = None
        if len(self._seen) > self._window:
            del self._seen[next(iter(self._seen))]
        ident = {"device_id": parsed.device_id, "boot": parsed.boot, "seq": parsed.seq}
        for table, rows in (("readings", parsed.readings), ("events", parsed.events)):
            out = self._rows[table]
            for row in rows:
                new = row.pop("_new", None)
                if new is not None:
                    conflict = self.columns.add(table, row, new)
                    if conflict is not None:
                        st.records_rejected += 1
                        st.rejected_by_reason["type_conflict"] += 1
                        self._quarantine(topic, payload, received_ms, "type_conflict",
                                         f"record {row['idx']}: {conflict}", idx=row["idx"],
                                         **ident)
                        continue
                out.append(row)
            setattr(st, table, getattr(st, table) + len(rows))
        for r in parsed.rejects:
            st.records_rejected += 1
            st.rejected_by_reason[r.reason] += 1
            self._quarantine(topic, payload, received_ms, r.reason, r.detail, idx=r.idx, **ident)
        st.buffered_rows = self.buffered

    def _quarantine(
        self, topic: str, payload: bytes, received_ms: int, reason: str, detail: str, **ident: Any
    ) -> None:
        self._rows["quarantine"].append(
            {"received_at": received_ms, "topic": topic, "reason": reason, "detail": detail,
             "payload": payload, **ident}
        )

    def flush(self, name: str | None = None) -> list[str]:
        """Write everything buffered as files named `part-<name>.parquet` (one per table
        and date); a table's rows stay buffered if its write fails."""
        started = time.monotonic()
        name = name or f"{self.writer_id}-{uuid.uuid4().hex[:12]}"
        self.columns.save()
        written: list[str] = []
        for table, rows in self._rows.items():
            if rows:
                schema = self.columns.schema(table)
                written += self.store.write_rows(table, rows, name, schema)
                self._rows[table] = []
                self.columns.written(table)
        self._oldest = None
        st = self.stats
        st.files_written += len(written)
        st.flushes += 1
        st.buffered_rows = 0
        st.last_flush_seconds = round(time.monotonic() - started, 4)
        return written
