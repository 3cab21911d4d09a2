"""`fleetpulse compact` merges small files atomically while queries keep running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fleetpulse.analytics.dataset import connect, query
from fleetpulse.ingest.compact import compact
from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000
DAY = 86_400_000


def _fill(data: Path, flushes: int, per_flush: int, duplicate_every: int = 0) -> int:
    """Many small files over two days, with some messages written twice (as a replay
    or redelivery would). Returns the number of distinct readings."""
    seq = 0
    for f in range(flushes):
        pipe = Pipeline(data, f"w{f}")  # a new process each time: no in-memory dedup
        for _ in range(per_flush):
            env = {"v": 1, "device_id": f"d{seq % 7}", "boot": 1, "seq": seq, "fw": "1",
                   "hw": "h", "sent_ms": T, "records": [
                       {"t": T + (seq % 2) * DAY + seq, "type": "reading",
                        "temperature_c": 20.0, "humidity_pct": 50.0, "co2_ppm": seq}]}
            payload = json.dumps(env).encode()
            pipe.handle(f"devices/d{seq % 7}/telemetry", payload, T + 2 * DAY)
            if duplicate_every and seq % duplicate_every == 0:
                Pipeline(data, "dup").handle(f"devices/d{seq % 7}/telemetry", payload, T)
                dup = Pipeline(data, f"dup{seq}")
                dup.handle(f"devices/d{seq % 7}/telemetry", payload, T + 2 * DAY)
                dup.flush()
            seq += 1
        pipe.handle("devices/x/telemetry", b"not json", T + 2 * DAY)
        pipe.flush()
    return seq


def test_compaction_merges_dedups_and_keeps_every_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    n = _fill(data, flushes=12, per_flush=50, duplicate_every=10)
    before = connect(data).execute(
        "SELECT count(*), sum(co2_ppm), (SELECT count(*) FROM readings_raw), "
        "(SELECT count(*) FROM quarantine) FROM readings").fetchone()
    assert before[0] == n and before[2] > n  # duplicates on disk, not in the view
    done = compact(data, grace_s=0, row_group_rows=100)
    assert {(c.table, c.partition) for c in done} == {
        ("readings", "date=2026-01-01"), ("readings", "date=2026-01-02"),
        ("quarantine", "date=2026-01-03")}
    for table in ("readings", "quarantine"):
        for part in (data / table).iterdir():
            assert len(list(part.glob("*.parquet"))) == 1
    con = connect(data)
    after = con.execute(
        "SELECT count(*), sum(co2_ppm), (SELECT count(*) FROM readings_raw), "
        "(SELECT count(*) FROM quarantine) FROM readings").fetchone()
    assert after == (n, before[1], n, before[3])  # raw duplicates gone, nothing else changed
    f = next((data / "readings" / "date=2026-01-01").glob("*.parquet"))
    meta = pq.ParquetFile(f).metadata
    assert meta.num_row_groups == -(-meta.num_rows // 100)


def test_queries_during_compaction_always_see_each_record_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    n = _fill(data, flushes=40, per_flush=25, duplicate_every=7)
    reads: list[tuple[float, float, int]] = []  # (start, end, count) of every read
    errors: list[str] = []
    stop = threading.Event()
    warm = threading.Barrier(3)

    def query_forever() -> None:
        first = True
        while not stop.is_set():
            try:
                start = time.monotonic()
                con = connect(data)  # a new reader each time: it lists the files afresh
                reads.append((start, time.monotonic(),
                              query(con, "SELECT count(*) FROM readings").rows[0][0]))
                con.close()
            except Exception as e:
                errors.append(repr(e))
            if first:
                first = False
                warm.wait()

    readers = [threading.Thread(target=query_forever) for _ in range(2)]
    for r in readers:
        r.start()
    # Both readers have read once and are reading again: whatever the machine's speed,
    # each is inside a read when compaction starts and keeps reading until it ends.
    warm.wait()
    began = time.monotonic()
    try:
        compact(data, grace_s=1.0)
    finally:
        ended = time.monotonic()
        stop.set()
        for r in readers:
            r.join()
    assert errors == []
    during = [c for start, end, c in reads if start < ended and end > began]
    assert len(during) >= 2
    assert {c for _, _, c in reads} == {n}


def test_compact_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data, flushes=3, per_flush=5)
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "compact", "--data",
                        str(data), "--grace", "0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert re.search(r"readings .*date=2026-01-01 .* 3 .* 8 .* 8", r.stdout), r.stdout
    assert "rolled up 2 day(s): 2026-01-01 .. 2026-01-02" in r.stderr
    assert "per-device states over 2026-01-01 .. 2026-01-02" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "compact", "--data",
                        str(data), "--grace", "0", "--format", "json"],
                       capture_output=True, text=True)
    assert json.loads(r.stdout) == []  # for a script: nothing compacted, still JSON
    assert "nothing to compact" in r.stderr
    assert "rolled up" not in r.stderr  # the rollups still match their days' files


def test_a_stopped_compaction_leaves_nothing_the_next_one_does_not_resolve(
        tmp_path: Path, monkeypatch) -> None:
    """Stopped between moving the old files aside and deleting them, a compaction leaves
    *.parquet.superseded files: the days they are in never used their rollups again.
    The next compaction removes them (their rows are in the merged file) and rolls the
    days up."""
    from fleetpulse.ingest.store import Store

    data = tmp_path / "data"
    n = _fill(data, flushes=3, per_flush=20)
    real_delete = Store.delete

    def stopped(self: Store, paths: list[str]) -> None:
        if any(p.endswith(".superseded") for p in paths):
            raise KeyboardInterrupt  # the process stopped here
        real_delete(self, paths)

    monkeypatch.setattr(Store, "delete", stopped)
    with pytest.raises(KeyboardInterrupt):
        compact(data, grace_s=0)
    monkeypatch.setattr(Store, "delete", real_delete)
    left = sorted(data.rglob("*.superseded"))
    assert left
    con = connect(data)
    assert query(con, "SELECT count(*) FROM readings").rows == [(n,)]
    # a compaction in its grace period is not disturbed: fresh leftovers are kept
    assert Store(data).leftover_superseded() == []
    compact(data, grace_s=0, leftover_age_s=0)
    assert list(data.rglob("*.superseded")) == []
    con = connect(data)
    assert query(con, "SELECT count(*) FROM readings").rows == [(n,)]
    assert query(con, "SELECT count(*) FROM rollup_raw_days").rows == [(0,)]
