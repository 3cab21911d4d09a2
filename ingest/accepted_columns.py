"""Records the fast path took, as Arrow columns: one pass per column over a few hundred
envelopes' structs at a time, instead of one dict per row.

An envelope's identity (device, install id, boot, seq, firmware, hardware, receive time)
is stored once per message and repeated to its records' rows by Arrow at the flush, in
native code.
The tables have the declared schema of readings and events (the fast path takes no
field the contract does not name, so no learned column and no `extra`).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .envelope_decoder import Envelope, Event, Reading
from .schema import TABLES

# Records become Arrow columns this many envelopes at a time, while their structs are
# still in the CPU's cache from decoding: built from a whole flush's worth at once, the
# same columns cost about twice as much, every attribute read a cache miss.
CHUNK_ENVELOPES = 256
_ENVELOPE_COLUMNS = {"device_id": pa.string(), "iid": pa.string(), "boot": pa.int64(),
                     "seq": pa.int64(), "fw": pa.string(), "hw": pa.string()}


class AcceptedColumns:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._envelopes: list[Envelope] = []  # not yet turned into columns
        self._received: list[int] = []
        self._records = 0
        # per envelope of the flush, as each chunk's Arrow arrays: kept as Python objects
        # until the flush, a buffered one-record message held 302 bytes instead of 143
        # (bench/record_path_bench.py, bench/RESULTS.md)
        self._env: dict[str, list[pa.Array]] = {k: [] for k in (*_ENVELOPE_COLUMNS, "received")}
        self._env_count = 0
        # per table: each chunk's (owning envelope per row, record columns)
        self._parts: dict[str, list[tuple[np.ndarray, dict[str, pa.Array]]]] = {
            "readings": [], "events": []}

    def __len__(self) -> int:
        return self._records

    def add(self, env: Envelope, received_ms: int) -> None:
        self._envelopes.append(env)
        self._received.append(received_ms)
        self._records += len(env.records)
        if len(self._envelopes) >= CHUNK_ENVELOPES:
            self._build_chunk()

    def seal(self) -> set[str]:
        """Take no more envelopes; return the tables that will have rows."""
        self._build_chunk()
        return {name for name, parts in self._parts.items() if parts}

    def tables(self) -> dict[str, pa.Table]:
        """readings and events as Arrow tables (only those with rows); starts afresh."""
        self._build_chunk()
        env = {k: pa.concat_arrays(v) if v else pa.array([], _ENVELOPE_COLUMNS.get(k, pa.int64()))
               for k, v in self._env.items()}
        parts = {name: (np.concatenate([owner for owner, _ in ps]),
                        {k: pa.concat_arrays([c[k] for _, c in ps]) for k in ps[0][1]})
                 for name, ps in self._parts.items() if ps}
        self._reset()
        return assemble(env, parts)

    def _build_chunk(self) -> None:
        envs = self._envelopes
        if not envs:
            return
        first = self._env_count
        self._env_count += len(envs)
        e = self._env
        s, i64 = pa.string(), pa.int64()
        e["device_id"].append(pa.array([x.device_id for x in envs], s))
        e["iid"].append(pa.array([x.iid for x in envs], s))
        e["boot"].append(pa.array([x.boot for x in envs], i64))
        e["seq"].append(pa.array([x.seq for x in envs], i64))
        e["fw"].append(pa.array([x.fw for x in envs], s))
        e["hw"].append(pa.array([x.hw for x in envs], s))
        e["received"].append(pa.array(self._received, i64))
        self._envelopes, self._received = [], []
        counts = np.fromiter((len(x.records) for x in envs), np.int64, len(envs))
        recs = [r for x in envs for r in x.records]
        if not recs:
            return
        # per record: the envelope it came in and its position there
        owner = np.repeat(np.arange(first, first + len(envs)), counts)
        idx = np.arange(len(recs)) - np.repeat(np.cumsum(counts) - counts, counts)
        is_reading = np.fromiter(map(type, recs), object, len(recs)) == Reading
        if is_reading.all():
            self._parts["readings"].append((owner, _reading_columns(recs, idx)))  # type: ignore[arg-type]
            return
        readings = [r for r in recs if type(r) is Reading]
        events = [r for r in recs if type(r) is Event]
        if readings:
            self._parts["readings"].append(
                (owner[is_reading], _reading_columns(readings, idx[is_reading])))  # type: ignore[arg-type]
        self._parts["events"].append(
            (owner[~is_reading], _event_columns(events, idx[~is_reading])))  # type: ignore[arg-type]


def assemble(env: dict[str, pa.Array],
             parts: dict[str, tuple[np.ndarray, dict[str, pa.Array]]]) -> dict[str, pa.Table]:
    """The tables of a table's record columns (idx, ts, its fields) and, per row, the
    envelope it came in (`owner`, a row of `env`: device_id, iid, boot, seq, fw, hw,
    received)."""
    out = {}
    for name, (owner, rec) in parts.items():
        schema = TABLES[name]
        ts = schema.field("ts").type
        # an envelope's identity repeated to its records' rows, in native code
        take = pa.array(owner)
        cols = {k: env[k].take(take) for k in _ENVELOPE_COLUMNS}
        cols["received_at"] = env["received"].take(take).cast(ts)
        cols.update(rec)
        cols["ts"] = cols["ts"].cast(ts)
        cols["extra"] = pa.nulls(len(take), pa.string())
        out[name] = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return out


# One list comprehension per column, attribute named in the code: about 40 ns a value,
# where getattr(r, name) or operator.attrgetter cost twice that.
def _reading_columns(rs: list[Reading], idx: np.ndarray) -> dict[str, pa.Array]:
    f64 = pa.float64()
    return {"idx": pa.array(idx, pa.int32()), "ts": pa.array([r.t for r in rs], pa.int64()),
            "temperature_c": pa.array([r.temperature_c for r in rs], f64),
            "humidity_pct": pa.array([r.humidity_pct for r in rs], f64),
            "pressure_hpa": pa.array([r.pressure_hpa for r in rs], f64),
            "light_lux": pa.array([r.light_lux for r in rs], f64),
            "battery_pct": pa.array([r.battery_pct for r in rs], f64),
            "rssi_dbm": pa.array([r.rssi_dbm for r in rs], f64)}


def _event_columns(es: list[Event], idx: np.ndarray) -> dict[str, pa.Array]:
    s, i64 = pa.string(), pa.int64()
    return {"idx": pa.array(idx, pa.int32()), "ts": pa.array([e.t for e in es], i64),
            "event": pa.array([e.event for e in es], s),
            "feature": pa.array([e.feature for e in es], s),
            "name": pa.array([e.name for e in es], s),
            # as the slow path stores them: a value's JSON spelling, codes as text
            "value": pa.array([v if v is None or type(v) is str else json.dumps(v)
                               for v in (e.value for e in es)], s),
            "button": pa.array([_text(e.button) for e in es], s),
            "code": pa.array([_text(e.code) for e in es], s),
            "uptime_s": pa.array([e.uptime_s for e in es], i64),
            "reconnects": pa.array([e.reconnects for e in es], i64),
            "free_mem": pa.array([e.free_mem for e in es], i64),
            "records_dropped": pa.array([e.records_dropped for e in es], i64),
            "reset_cause": pa.array([e.reset_cause for e in es], s),
            "last_error": pa.array([e.last_error for e in es], s),
            "interval_s": pa.array([e.interval_s for e in es], i64)}


def _text(v: str | int | None) -> str | None:
    return v if v is None or type(v) is str else str(v)
