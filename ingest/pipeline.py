"""The transport-free core of ingest: message in, validated rows buffered, Parquet out.

The MQTT service feeds it; tests feed it contract vectors directly. It never raises
on bad input: every refusal becomes a quarantine row with its reason.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import parquet_writer
from .contract import Rejected, parse_message
from .schema import TABLES
from .stats import Stats


class Pipeline:
    def __init__(self, data_dir: Path, client_id: str) -> None:
        self.data_dir = data_dir
        self.stats = Stats(client_id=client_id)
        self._writer_id = client_id
        self._rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self._oldest: float | None = None

    @property
    def buffered(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def buffer_age(self) -> float:
        return 0.0 if self._oldest is None else time.monotonic() - self._oldest

    def handle(self, topic: str, payload: bytes, received_ms: int) -> None:
        if self._oldest is None:
            self._oldest = time.monotonic()
        self.stats.messages += 1
        try:
            parsed = parse_message(topic, payload, received_ms)
        except Rejected as e:
            self.stats.messages_rejected += 1
            self.stats.rejected_by_reason[e.reason] += 1
            self._quarantine(topic, payload, received_ms, e.reason, e.detail)
            return
        self._rows["readings"].extend(parsed.readings)
        self._rows["events"].extend(parsed.events)
        self.stats.readings += len(parsed.readings)
        self.stats.events += len(parsed.events)
        for r in parsed.rejects:
            self.stats.records_rejected += 1
            self.stats.rejected_by_reason[r.reason] += 1
            self._quarantine(
                topic, payload, received_ms, r.reason, r.detail,
                device_id=parsed.device_id, boot=parsed.boot, seq=parsed.seq, idx=r.idx,
            )
        self.stats.buffered_rows = self.buffered

    def _quarantine(
        self, topic: str, payload: bytes, received_ms: int, reason: str, detail: str, **ident: Any
    ) -> None:
        self._rows["quarantine"].append(
            {"received_at": received_ms, "topic": topic, "reason": reason, "detail": detail,
             "payload": payload, **ident}
        )

    def flush(self) -> list[Path]:
        """Write everything buffered; rows stay buffered if the write fails."""
        written: list[Path] = []
        for table, rows in self._rows.items():
            if rows:
                written += parquet_writer.write_rows(self.data_dir, table, rows, self._writer_id)
                self._rows[table] = []
        self._oldest = None
        self.stats.files_written += len(written)
        self.stats.flushes += 1
        self.stats.buffered_rows = 0
        return written
