"""Counters of one ingest process, published as a small JSON file next to the data.

Other processes (the demo, tests, an operator with `cat`) read it to see what ingest
has taken in without talking to it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleetpulse.files import write_replacing


@dataclass
class Stats:
    client_id: str
    state: str = "starting"  # starting (replaying its log), running, stopped
    subscribed: bool = False
    messages: int = 0
    messages_rejected: int = 0
    # rows written to Parquet (not merely buffered)
    readings: int = 0
    events: int = 0
    # learned-column values of another type, kept in `extra` instead
    type_conflicts: int = 0
    records_rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    buffered_rows: int = 0
    last_flush_seconds: float = 0.0
    wal_segments: int = 0
    store_errors: int = 0
    store_ok: bool = True
    files_written: int = 0
    flushes: int = 0
    connects: int = 0
    # reconnects that found the broker had dropped our persistent session
    sessions_lost: int = 0
    # Wall-clock seconds of the first message taken and of the last one made durable.
    first_message_at: float = 0.0
    last_durable_at: float = 0.0

    def to_json(self) -> str:
        d = asdict(self)
        d["rejected_by_reason"] = dict(sorted(self.rejected_by_reason.items()))
        return json.dumps(d, indent=2, sort_keys=True)


def stats_path(data_dir: Path, client_id: str) -> Path:
    return data_dir / "_ingest" / f"{client_id}.json"


def publish(stats: Stats, data_dir: Path) -> None:
    path = stats_path(data_dir, stats.client_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_replacing(path, stats.to_json())


def read(data_dir: Path, client_id: str) -> dict | None:
    try:
        return json.loads(stats_path(data_dir, client_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
