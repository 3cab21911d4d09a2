"""Every contract vector through ingest's validator and its write path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fleetpulse.ingest.contract import REASONS, Rejected, parse_message
from fleetpulse.ingest.pipeline import Pipeline
from vectorlib import load_vectors, payload_bytes

VECTORS = load_vectors()


def _ids(v: dict[str, Any]) -> str:
    return v["name"]


def test_vector_set_covers_every_reason() -> None:
    named = {v["expect"].get("reject") for v in VECTORS}
    named |= {r["reason"] for v in VECTORS for r in v["expect"].get("record_rejects", [])}
    assert set(REASONS) - {"bad_value"} <= named, set(REASONS) - named


def _check_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            assert g.get(key) == value, (key, g.get(key), value)


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_validator_follows_vector(vector: dict[str, Any]) -> None:
    payload = payload_bytes(vector)
    expect = vector["expect"]
    if "reject" in expect:
        with pytest.raises(Rejected) as e:
            parse_message(vector["topic"], payload, vector["received_ms"])
        assert e.value.reason == expect["reject"]
        assert e.value.detail and "\n" not in e.value.detail
        return
    parsed = parse_message(vector["topic"], payload, vector["received_ms"])
    _check_rows(parsed.readings, expect["readings"])
    if "events_count" in expect:
        assert len(parsed.events) == expect["events_count"]
    else:
        _check_rows(parsed.events, expect["events"])
    got_rejects = [{"idx": r.idx, "reason": r.reason} for r in parsed.rejects]
    assert got_rejects == expect.get("record_rejects", [])


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_ingest_stores_or_quarantines_vector(vector: dict[str, Any], tmp_path: Path) -> None:
    """Through the pipeline to Parquet and back through DuckDB."""
    pipe = Pipeline(tmp_path, "t")
    payload = payload_bytes(vector)
    pipe.handle(vector["topic"], payload, vector["received_ms"])
    pipe.flush()
    expect = vector["expect"]
    con = duckdb.connect()

    def rows(table: str) -> list[tuple]:
        files = list(tmp_path.glob(f"{table}/date=*/*.parquet"))
        if not files:
            return []
        return con.execute(
            f"SELECT * FROM read_parquet('{tmp_path}/{table}/*/*.parquet', hive_partitioning=1)"
        ).fetchall()

    quarantined = con.execute(
        f"SELECT reason, idx, payload, topic FROM read_parquet('{tmp_path}/quarantine/*/*.parquet')"
    ).fetchall() if list(tmp_path.glob("quarantine/*/*.parquet")) else []
    if "reject" in expect:
        assert rows("readings") == [] and rows("events") == []
        assert quarantined == [(expect["reject"], None, payload, vector["topic"])]
        assert pipe.stats.rejected_by_reason == {expect["reject"]: 1}
        return
    assert len(rows("readings")) == len(expect["readings"])
    assert len(rows("events")) == expect.get("events_count", len(expect.get("events", [])))
    want_q = sorted((r["reason"], r["idx"]) for r in expect.get("record_rejects", []))
    assert sorted((q[0], q[1]) for q in quarantined) == want_q
    assert all(q[2] == payload for q in quarantined)


def test_partition_is_utc_date_of_record_time(tmp_path: Path) -> None:
    v = next(v for v in VECTORS if v["name"] == "reading_minimal")
    pipe = Pipeline(tmp_path, "t")
    pipe.handle(v["topic"], payload_bytes(v), v["received_ms"])
    [path] = pipe.flush()
    day = dt.datetime.fromtimestamp(v["payload"]["records"][0]["t"] / 1000, dt.UTC).date()
    assert path.parent.name == f"date={day.isoformat()}"
    assert not list(tmp_path.rglob("*.tmp"))
