"""`fleetpulse replay`: a capture (simulators/capture.py) back through the pipeline.

Offline (`--data DIR`), the messages go straight into ingest's pipeline, with the same
validation and quarantine as from a broker, at the receive times they were recorded
with. `--golden FILE` replays offline into a temporary dataset, computes every metric
of the metric library and compares them with FILE: the CI job of a team that checks in
its capture and its approved numbers.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetpulse.gateway.errors import UserError

from . import capture

# Floats in a golden file are equal within this (relative, or absolute near zero):
# metrics are rounded to 4 places, but sums over many rows may differ in the last bits
# from run to run.
REL_TOL = 1e-9
ABS_TOL = 1e-9


@dataclass
class OfflineResult:
    messages: int
    records: int
    rejected: int


def replay_offline(path: Path, data: Path, topic_filter: str | None = None) -> OfflineResult:
    """Every message of the capture into the dataset at `data`, as ingest would."""
    from fleetpulse.ingest.pipeline import Pipeline

    pipe = Pipeline(data, "replay")
    n = 0
    for m in capture.read(path, topic_filter):
        pipe.handle(m.topic, m.payload, m.received_ns // 1_000_000)
        n += 1
    pipe.flush()
    s = pipe.stats
    return OfflineResult(n, s.readings + s.events, s.messages_rejected + s.records_rejected)


def metric_values(data: Path) -> dict[str, list[dict[str, Any]]]:
    """Every metric of the library that needs no argument, rows in a stable order."""
    from fleetpulse.analytics.dataset import connect, metric_catalog, query
    from fleetpulse.analytics.show import json_value

    con = connect(data)
    try:
        out = {}
        for m in metric_catalog():
            if "key" in m.parameters:  # an experiment needs its key: not a fleet metric
                continue
            r = query(con, f"SELECT * FROM {m.name}() ORDER BY ALL")
            out[m.name] = [{c: json_value(v) for c, v in zip(r.columns, row, strict=True)}
                           for row in r.rows]
        return out
    finally:
        con.close()


@dataclass
class Change:
    metric: str
    key: str
    expected: Any
    got: Any


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(a == b)


def compare(expected: dict[str, list[dict[str, Any]]],
            got: dict[str, list[dict[str, Any]]]) -> list[Change]:
    """What differs, one Change per cell, row or metric: a row is named by its position
    and its first column's value (a day, a feature, a segment)."""
    changes = []
    for metric in sorted(set(expected) | set(got)):
        if metric not in got:
            changes.append(Change(metric, "(metric)", "present", "missing"))
            continue
        if metric not in expected:
            changes.append(Change(metric, "(metric)", "missing", "present"))
            continue
        want, have = expected[metric], got[metric]
        for i in range(max(len(want), len(have))):
            w = want[i] if i < len(want) else None
            h = have[i] if i < len(have) else None
            first = next(iter((w or h or {}).values()), "")
            where = f"row {i} ({first})"
            if w is None or h is None:
                changes.append(Change(metric, where, "no row" if w is None else "a row",
                                      "no row" if h is None else "a row"))
                continue
            for col in sorted(set(w) | set(h)):
                if not _same(w.get(col), h.get(col)):
                    changes.append(Change(metric, f"{where} {col}", w.get(col), h.get(col)))
    return changes


def golden(path: Path, golden_file: Path, update: bool = False,
           topic_filter: str | None = None) -> list[Change]:
    """Replay offline into a temporary dataset and compare its metrics with the golden
    file (or write it, when `update`). Returns what changed."""
    with tempfile.TemporaryDirectory(prefix="fleetpulse-replay-") as tmp:
        replay_offline(path, Path(tmp) / "data", topic_filter)
        values = metric_values(Path(tmp) / "data")
    if update:
        golden_file.write_text(json.dumps({"format": "fleetpulse-golden", "version": 1,
                                           "metrics": values}, indent=1, sort_keys=True)
                               + "\n")
        return []
    try:
        doc = json.loads(golden_file.read_text())
    except FileNotFoundError:
        raise UserError(f"no golden file {golden_file}: write it with --update-golden "
                        "once the numbers are approved") from None
    except ValueError:
        raise UserError(f"{golden_file} is not JSON: write it again with --update-golden"
                        ) from None
    return compare(doc.get("metrics", {}), values)
