"""Learned columns with several ingest workers on one dataset: the shared schema files
merge instead of the last writer winning, and compaction reconciles a column that two
workers typed differently."""

from __future__ import annotations

import json
from pathlib import Path

from fleetpulse.analytics.dataset import connect
from fleetpulse.ingest.compact import compact
from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000
TOPIC = "devices/dev-1/telemetry"


def envelope(seq: int, **fields: object) -> bytes:
    return json.dumps({"v": 1, "device_id": "dev-1", "boot": 1, "seq": seq, "fw": "1",
                       "hw": "h", "sent_ms": T, "records": [
                           {"t": T + seq, "type": "reading", "temperature_c": 20,
                            "humidity_pct": 40, **fields}]}).encode()


def test_two_workers_merge_their_learned_columns_and_compaction_reconciles(
        tmp_path: Path) -> None:
    a, b = Pipeline(tmp_path, "worker-0"), Pipeline(tmp_path, "worker-1")  # both start empty
    a.handle(TOPIC, envelope(0, level=3, only_a=1.5), T)
    b.handle(TOPIC, envelope(1, level="high", only_b="x"), T)
    a.flush()
    b.flush()
    learned = json.loads((tmp_path / "_schema" / "readings.json").read_text())
    assert learned == {"level": "double", "only_a": "double", "only_b": "string"}
    # worker-1 adopted the agreed type: its next string value is a conflict, kept in extra
    b.handle(TOPIC, envelope(2, level="low"), T)
    b.flush()
    assert b.stats.type_conflicts == 1

    done = compact(tmp_path, grace_s=0, min_files=2)
    assert [c.table for c in done] == ["readings"]
    con = connect(tmp_path)
    rows = con.execute("SELECT seq, level, only_a, only_b, extra FROM readings ORDER BY seq"
                       ).fetchall()
    assert rows == [(0, 3.0, 1.5, None, None),
                    (1, None, None, "x", '{"level":"high"}'),
                    (2, None, None, None, '{"level":"low"}')]
    assert con.execute("SELECT typeof(level) FROM readings LIMIT 1").fetchone() == ("DOUBLE",)
