"""One message that breaks ingest's own code is quarantined as `internal`; it never
stops the messages after it, nor a flush."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from fleetpulse.ingest import envelope_decoder
from fleetpulse.ingest import pipeline as pipeline_module
from fleetpulse.ingest.contract import parse_message
from fleetpulse.ingest.native_columns import NativeColumns
from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000
TOPIC = "devices/dev-1/telemetry"


def envelope(seq: int, feature: str = "eco_mode", **record: object) -> bytes:
    return json.dumps({"v": 1, "device_id": "dev-1", "boot": 1, "seq": seq, "fw": "1.0",
                       "hw": "h", "sent_ms": T, "records": [
                           {"t": T, "type": "event", "event": "feature_used",
                            "feature": feature, **record}]}).encode()


def stored(data: Path, table: str, cols: str) -> list[tuple]:
    return duckdb.sql(f"SELECT {cols} FROM read_parquet('{data}/{table}/*/*.parquet') "
                      "ORDER BY ALL").fetchall()


@pytest.fixture
def slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message through contract.parse_message, where these faults are planted."""
    monkeypatch.setattr(NativeColumns, "add", lambda *_: None)
    monkeypatch.setattr(envelope_decoder, "decode", lambda *_: None)


@pytest.mark.parametrize("path", ["c", "msgspec", "slow"])
def test_an_exception_while_handling_quarantines_only_that_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    fast_decode = envelope_decoder.decode
    native_add = NativeColumns.add

    def flaky_native(self: NativeColumns, device: str, payload: bytes, received_ms: int):
        if b'"seq":2' in payload.replace(b" ", b""):
            raise KeyError("a bug of ours\nwith a second line")
        return native_add(self, device, payload, received_ms)

    def flaky_fast(topic: str, payload: bytes, received_ms: int):
        if b'"seq":2' in payload.replace(b" ", b""):
            raise KeyError("a bug of ours\nwith a second line")
        return fast_decode(topic, payload, received_ms)

    def flaky(topic: str, payload: bytes, received_ms: int):
        if b'"seq":2' in payload.replace(b" ", b""):
            raise KeyError("a bug of ours\nwith a second line")
        return parse_message(topic, payload, received_ms)

    if path == "c":
        monkeypatch.setattr(NativeColumns, "add", flaky_native)
    elif path == "msgspec":
        monkeypatch.setattr(NativeColumns, "add", lambda *_: None)
        monkeypatch.setattr(envelope_decoder, "decode", flaky_fast)
    else:
        monkeypatch.setattr(NativeColumns, "add", lambda *_: None)
        monkeypatch.setattr(envelope_decoder, "decode", lambda *_: None)
        monkeypatch.setattr(pipeline_module, "parse_message", flaky)
    pipe = Pipeline(tmp_path, "t")
    for seq in range(4):
        pipe.handle(TOPIC, envelope(seq), T)
    pipe.flush()
    assert pipe.stats.rejected_by_reason == {"internal": 1}
    assert stored(tmp_path, "events", "seq") == [(0,), (1,), (3,)]
    [(reason, detail, payload)] = stored(tmp_path, "quarantine", "reason, detail, payload")
    assert reason == "internal" and detail == "KeyError: 'a bug of ours\\nwith a second line'"
    assert payload == envelope(2)


def test_half_a_surrogate_pair_is_refused_not_a_stuck_flush(tmp_path: Path) -> None:
    """json.loads accepts "\\ud800" but no UTF-8 column can hold it: every flush (and
    every replay of the log) used to fail on it."""
    pipe = Pipeline(tmp_path, "t")
    pipe.handle(TOPIC, envelope(0, feature="\\ud800").replace(b"\\\\", b"\\"), T)
    pipe.handle(TOPIC, envelope(1), T)
    pipe.flush()
    assert pipe.stats.rejected_by_reason == {"bad_encoding": 1}
    assert stored(tmp_path, "events", "seq") == [(1,)]


def test_a_row_arrow_cannot_store_is_set_aside_at_the_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_path: None) -> None:
    def unstorable(topic: str, payload: bytes, received_ms: int):
        parsed = parse_message(topic, payload, received_ms)
        if parsed.seq == 1:
            parsed.events[0]["feature"] = "\udcff"  # what no validation should let through
        return parsed

    monkeypatch.setattr(pipeline_module, "parse_message", unstorable)
    pipe = Pipeline(tmp_path, "t")
    for seq in range(3):
        pipe.handle(TOPIC, envelope(seq), T)
    pipe.flush()
    assert stored(tmp_path, "events", "seq") == [(0,), (2,)]
    assert stored(tmp_path, "quarantine", "reason, seq") == [("internal", 1)]
    assert pipe.stats.events == 2 and pipe.stats.rejected_by_reason == {"internal": 1}


def test_a_type_conflict_keeps_the_record_and_is_counted(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, "t")
    pipe.handle(TOPIC, envelope(0, level=3), T)
    pipe.handle(TOPIC, envelope(1, level="high"), T)
    pipe.flush()
    assert pipe.stats.type_conflicts == 1 and not pipe.stats.rejected_by_reason
    assert stored(tmp_path, "events", "seq, level, extra") == [
        (0, 3.0, None), (1, None, '{"level":"high"}')]
    assert pipe.stats.events == 2


def test_counters_count_rows_on_disk_not_buffered(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, "t")
    pipe.handle(TOPIC, envelope(0), T)
    assert pipe.stats.events == 0 and pipe.stats.buffered_rows == 1
    pipe.flush()
    assert pipe.stats.events == 1 and pipe.stats.buffered_rows == 0


def test_start_up_cleanup_takes_only_this_writers_temporary_files(tmp_path: Path) -> None:
    from fleetpulse.ingest.parquet_writer import remove_leftovers

    day = tmp_path / "readings" / "date=2026-01-01"
    day.mkdir(parents=True)
    names = ["part-ing-1-000000000001-0a1b2c3d.parquet.tmp",  # ing-1, a log segment's flush
             "part-ing-1-0123456789ab.parquet.tmp",  # ing-1, a random flush name
             "part-ing-10-000000000001-0a1b2c3d.parquet.tmp",  # a sibling worker's
             "part-ing-1-x-000000000001-0a1b2c3d.parquet.tmp"]  # writer "ing-1-x"
    for n in names:
        (day / n).write_bytes(b"")
    assert remove_leftovers(tmp_path, "ing-1") == 2
    assert sorted(p.name for p in day.iterdir()) == sorted(names[2:])
