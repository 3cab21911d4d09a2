"""The pipeline's dedup window: a redelivery within the window is dropped, the oldest
identity is forgotten first once the window is full, and the window keeps its size over
many times its length (its eviction once degraded past the first window's worth)."""

from __future__ import annotations

import json
from pathlib import Path

from fleetpulse.ingest.pipeline import Pipeline

T0 = 1767268800000


def message(seq: int) -> tuple[str, bytes]:
    env = {"v": 1, "device_id": "win-1", "boot": 1, "seq": seq, "fw": "1.0.0", "hw": "t",
           "sent_ms": T0 + seq, "records": [{"t": T0 + seq, "type": "reading",
                                              "temperature_c": 20.0, "humidity_pct": 40.0}]}
    return "devices/win-1/telemetry", json.dumps(env).encode()


def test_the_window_drops_recent_redeliveries_and_forgets_the_oldest_first(
        tmp_path: Path) -> None:
    p = Pipeline(tmp_path, "w", dedup_window=3)
    for seq in range(3):
        p.handle(*message(seq), T0 + 10_000)
    p.handle(*message(1), T0 + 10_000)  # redelivered within the window
    assert p.stats.duplicates == 1
    p.handle(*message(3), T0 + 10_000)  # seq 0 leaves the window
    p.handle(*message(0), T0 + 10_000)
    assert p.stats.duplicates == 1  # taken again: beyond the window
    p.handle(*message(2), T0 + 10_000)
    assert p.stats.duplicates == 2  # still remembered
    assert p.flush() and p.stats.readings == 5


def test_the_window_keeps_its_size_over_many_windows(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, "w", dedup_window=100)
    for seq in range(1000):
        p.handle(*message(seq), T0 + 10_000)
    assert len(p._seen) == len(p._seen_order) == 100
    p.handle(*message(900), T0 + 10_000)  # the oldest key still in the window
    p.handle(*message(899), T0 + 10_000)  # the newest one past it
    assert p.stats.duplicates == 1
