"""A connection's views and macros come bound from a file in the dataset (_catalog/),
named after the statements: the same files give the same file, a changed dataset a new
one, and a dataset that cannot hold one is bound in memory with the same answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fleetpulse.analytics import view_cache
from fleetpulse.analytics.dataset import connect, query, refresh
from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000  # 2026-01-01T12:00Z


@pytest.fixture(autouse=True)
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Datasets here are written and read at once: count them as settled (the test of a
    dataset being written sets this back)."""
    monkeypatch.setattr(view_cache, "SETTLED_S", 0.0)


def _write(data: Path, writer: str, device: str, events: int) -> None:
    pipe = Pipeline(data, writer)
    env = {"v": 1, "device_id": device, "boot": 1, "seq": 0, "fw": "1.0", "hw": "h",
           "sent_ms": T, "records": [{"t": T + i, "type": "event", "event": "feature_used",
                                      "feature": "eco_mode"} for i in range(events)]}
    pipe.handle(f"devices/{device}/telemetry", json.dumps(env).encode(), T)
    pipe.flush()


def _answer(data: Path) -> list[tuple]:
    con = connect(data)
    try:
        return query(con, "SELECT devices, uses_per_device FROM feature_adoption()").rows
    finally:
        con.close()


def _bound_files(data: Path) -> list[Path]:
    return sorted((data / view_cache.CACHE_DIR).glob("*.duckdb"))


def test_bound_once_per_listing_and_new_files_are_seen(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data, "w1", "d1", 3)
    assert _answer(data) == [(1, 3.0)]
    first = _bound_files(data)
    assert len(first) == 1
    mtime = first[0].stat().st_mtime_ns
    assert _answer(data) == [(1, 3.0)]  # the same listing: the same file, not rewritten
    assert _bound_files(data) == first and first[0].stat().st_mtime_ns == mtime

    _write(data, "w2", "d2", 1)  # a new data file: new statements, a new bound file
    assert _answer(data) == [(2, 2.0)]
    assert len(_bound_files(data)) == 2


def test_refresh_moves_an_open_connection_to_the_new_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data, "w1", "d1", 2)
    con = connect(data)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (2,)
    _write(data, "w2", "d2", 5)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (2,)  # its listing
    refresh(con)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (7,)
    assert con.execute("SELECT devices FROM feature_adoption()").fetchone() == (2,)
    attached = con.execute("SELECT count(*) FROM duckdb_databases() "
                           "WHERE database_name LIKE 'fleetpulse_views_%'").fetchone()
    assert attached == (1,)  # the old listing's file let go
    # what the caller creates goes into the connection, not the read-only file
    con.execute("CREATE TABLE mine AS SELECT count(*) AS n FROM readings")
    assert con.execute("SELECT n FROM mine").fetchone() == (0,)


def test_a_dataset_that_cannot_hold_the_file_is_bound_in_memory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data, "w1", "d1", 4)
    (data / view_cache.CACHE_DIR).write_text("not a folder")  # as a read-only dataset
    assert _answer(data) == [(1, 4.0)]
    con = connect(data)
    _write(data, "w2", "d2", 2)
    refresh(con)
    assert con.sql("SELECT devices, uses_per_device FROM feature_adoption()").fetchall() == [
        (2, 3.0)]
    # writable again: the views bound in memory give way to the file's, none left behind
    (data / view_cache.CACHE_DIR).unlink()
    _write(data, "w3", "d3", 3)
    refresh(con)
    assert con.sql("SELECT devices, uses_per_device FROM feature_adoption()").fetchall() == [
        (3, 3.0)]
    assert len(_bound_files(data)) == 1
    assert con.execute("SELECT count(*) FROM duckdb_databases() "
                       "WHERE database_name LIKE 'fleetpulse_views_%'").fetchone() == (1,)


def test_an_empty_dataset_gets_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert _answer(data) == []
    assert not (data / view_cache.CACHE_DIR).exists()  # the folder stays a fresh --data


def test_only_the_newest_files_are_kept(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_cache, "KEEP", 2)
    data = tmp_path / "data"
    for i in range(view_cache.KEEP + 3):
        _write(data, f"w{i}", f"d{i}", 1)
        _answer(data)
    assert len(_bound_files(data)) == view_cache.KEEP + 1
    assert not list((data / view_cache.CACHE_DIR).glob("*.tmp*"))


def test_a_bound_file_cut_short_is_written_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data, "w1", "d1", 2)
    assert _answer(data) == [(1, 2.0)]
    (bound,) = _bound_files(data)
    bound.write_bytes(bound.read_bytes()[:1000])  # as a crash after the rename could
    assert _answer(data) == [(1, 2.0)]
    assert _bound_files(data) == [bound] and bound.stat().st_size > 1000


def test_a_dataset_being_written_is_bound_in_memory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_cache, "SETTLED_S", 30.0)
    data = tmp_path / "data"
    _write(data, "w1", "d1", 2)  # a file that appeared just now: ingest is writing
    assert _answer(data) == [(1, 2.0)]
    assert _bound_files(data) == []
    for part in (data / "events").iterdir():  # quiet since a minute ago
        os.utime(part, (time.time() - 60, time.time() - 60))
    assert _answer(data) == [(1, 2.0)]
    assert len(_bound_files(data)) == 1
