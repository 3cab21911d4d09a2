"""Every contract vector through ingest's validator and its write path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest
from vectorlib import load_vectors, payload_bytes, preceding_payloads

from fleetpulse.ingest.contract import REASONS, Rejected, parse_message
from fleetpulse.ingest.pipeline import Pipeline

VECTORS = load_vectors()


def _ids(v: dict[str, Any]) -> str:
    return v["name"]


def test_vector_set_covers_every_reason() -> None:
    named = {v["expect"].get("reject") for v in VECTORS}
    named |= {r["reason"] for v in VECTORS for r in v["expect"].get("record_rejects", [])}
    # `internal` is ingest's own failure, which no input is meant to cause; it has a test
    # of its own (test_pipeline_faults.py)
    assert set(REASONS) - {"internal"} <= named, set(REASONS) - named


def _check_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    # Fields the validator set aside as new columns count as the row's own columns.
    got = [{**g, **g.get("_new", {})} for g in got]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            assert g.get(key) == value, (key, g.get(key), value)


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_validator_follows_vector(vector: dict[str, Any]) -> None:
    if "preceded_by" in vector:
        pytest.skip("depends on earlier messages: checked through the pipeline below")
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
    con = duckdb.connect()

    def rows(table: str) -> list[dict[str, Any]]:
        if not list(tmp_path.glob(f"{table}/date=*/*.parquet")):
            return []
        # timestamps back as epoch ms, to compare with the vector's `t` exactly
        rel = con.sql(f"SELECT * REPLACE (epoch_ms(ts) AS ts, epoch_ms(received_at) AS "
                      f"received_at) FROM read_parquet('{tmp_path}/{table}/*/*.parquet', "
                      "hive_partitioning=1, union_by_name=1) ORDER BY seq, idx, ts")
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]

    pipe = Pipeline(tmp_path, "t")
    for earlier in preceding_payloads(vector):
        pipe.handle(vector["topic"], earlier, vector["received_ms"])
    pipe.flush()
    before = {t: len(rows(t)) for t in ("readings", "events")}
    payload = payload_bytes(vector)
    pipe.handle(vector["topic"], payload, vector["received_ms"])
    pipe.flush()
    expect = vector["expect"]

    quarantined = con.execute(
        f"SELECT reason, idx, payload, topic FROM read_parquet('{tmp_path}/quarantine/*/*.parquet')"
    ).fetchall() if list(tmp_path.glob("quarantine/*/*.parquet")) else []
    if "reject" in expect:
        assert rows("readings") == [] and rows("events") == []
        assert quarantined == [(expect["reject"], None, payload, vector["topic"])]
        assert pipe.stats.rejected_by_reason == {expect["reject"]: 1}
        return
    stored = {t: rows(t)[before[t]:] for t in ("readings", "events")}
    _check_rows(stored["readings"], expect["readings"])
    if "events_count" in expect:
        assert len(stored["events"]) == expect["events_count"]
    else:
        _check_rows(stored["events"], expect["events"])
    want_q = sorted((r["reason"], r["idx"]) for r in expect.get("record_rejects", []))
    assert sorted((q[0], q[1]) for q in quarantined) == want_q
    assert all(q[2] == payload for q in quarantined)


def test_partition_is_utc_date_of_record_time(tmp_path: Path) -> None:
    v = next(v for v in VECTORS if v["name"] == "reading_minimal")
    pipe = Pipeline(tmp_path, "t")
    pipe.handle(v["topic"], payload_bytes(v), v["received_ms"])
    [path] = map(Path, pipe.flush())
    day = dt.datetime.fromtimestamp(v["payload"]["records"][0]["t"] / 1000, dt.UTC).date()
    assert path.parent.name == f"date={day.isoformat()}"
    assert not list(tmp_path.rglob("*.tmp"))
