"""Ingest's record path, stage by stage, on one core without a broker.

    .venv/bin/python bench/record_path_bench.py [--per 1,10,32] [--records 200000]

For contract-v1 envelopes of K readings (four values each, as the shared peers harness
sends), the CPU time per record of: msgspec decode into the fast path's typed structs;
Arrow columns from those structs (ingest/accepted_columns.py); the zstd Parquet encode
of the resulting table (to memory, as ingest's writer does before its fsync); and the
C path that ingest tries first, decode and columns in one (ingest/native_v1.c, with
native_columns.py's Arrow arrays at the end). Best of 3.
The floor a live run cannot go under: what one core spends per record before MQTT, the
write-ahead log and the event loop. Also what a buffered message holds until its flush:
Python's allocations (tracemalloc) plus Arrow's after every message was decoded and
added, before the flush builds the tables.

`--native-readers` also times the native JSON-to-columns readers a batch could go
through instead (pyarrow's JSON reader; polars' NDJSON reader when polars is
installed): 256 envelopes joined by newlines per read, as ingest's chunks, read with an
explicit schema and the records flattened into columns, single-threaded, with none of
the contract's checks. A lower bound for those paths, against the first two columns'
sum (decode and columns), which does check.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

from fleetpulse.ingest.accepted_columns import CHUNK_ENVELOPES, AcceptedColumns
from fleetpulse.ingest.envelope_decoder import decode, topic_device
from fleetpulse.ingest.native_columns import NativeColumns

T0 = 1767268800000


def envelopes(n: int, per: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(42)
    out = []
    for i in range(n):
        dev = f"sensor-{i % 1000:04d}"
        recs = [{"t": T0 + i + k * 100, "type": "reading",
                 "temperature_c": round(rnd.uniform(15, 30), 2),
                 "humidity_pct": round(rnd.uniform(20, 70), 1),
                 "battery_pct": rnd.randint(10, 100), "rssi_dbm": rnd.randint(-90, -40)}
                for k in range(per)]
        env = {"v": 1, "device_id": dev, "boot": 1, "seq": i // 1000, "fw": "1.4.0",
               "hw": "bench", "sent_ms": T0, "records": recs}
        out.append((f"devices/{dev}/telemetry", json.dumps(env, separators=(",", ":")).encode()))
    return out


def best(f, runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per", default="1,10,32")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--native-readers", action="store_true",
                    help="also time pyarrow's and polars' JSON readers over the same envelopes")
    args = ap.parse_args()
    if args.native_readers:
        native_readers(args.per, args.records)
        return
    print("| records/msg | decode us/record | columns us/record | Parquet encode us/row "
          "| sum us/record | sum us/message | buffered bytes/message "
          "| C path: decode + columns us/record | C path bytes/message |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for per in map(int, args.per.split(",")):
        d, c, e, native = measure(per, args.records)
        held = buffered_bytes(per, args.records, AcceptedColumns)
        native_held = buffered_bytes(per, args.records, NativeColumns)
        print(f"| {per} | {d:.2f} | {c:.2f} | {e:.2f} | {d + c + e:.2f} | "
              f"{(d + c + e) * per:.1f} | {held:.0f} | {native:.2f} | {native_held:.0f} |")


def buffered_bytes(per: int, records: int,
                   kind: type[AcceptedColumns] | type[NativeColumns]) -> float:
    """Bytes a message holds while buffered: decoded one at a time, as ingest does, so
    only what the buffer keeps is still allocated when counted (the C path's buffers
    are PyMem allocations, which tracemalloc sees)."""
    received = T0 + 10**9
    msgs = envelopes(records // per, per)
    arrow = pa.total_allocated_bytes()  # Arrow's buffers are not Python allocations
    tracemalloc.start()
    if kind is NativeColumns:
        native = NativeColumns()
        for t, p in msgs:
            native.add(topic_device(t), p, received)
    else:
        cols = AcceptedColumns()
        for t, p in msgs:
            cols.add(decode(t, p, received), received)  # type: ignore[arg-type]
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (held + pa.total_allocated_bytes() - arrow) / len(msgs)


def measure(per: int, records: int) -> tuple[float, float, float, float]:
    """Microseconds per record to decode, to build columns, to encode Parquet, and the C
    path's decode and columns."""
    received = T0 + 10**9
    msgs = envelopes(records // per, per)
    n = len(msgs) * per
    decoded = [decode(t, p, received) for t, p in msgs]
    assert all(decoded), "the fast path declined a bench envelope"

    def decode_all() -> None:
        for t, p in msgs:
            decode(t, p, received)

    def columns() -> AcceptedColumns:
        cols = AcceptedColumns()
        for env in decoded:
            cols.add(env, received)  # type: ignore[arg-type]
        return cols

    table = columns().tables()["readings"]

    def encode() -> None:
        pq.write_table(table, io.BytesIO(), compression="zstd")

    devices = [topic_device(t) for t, _ in msgs]

    def native() -> dict[str, pa.Table]:
        cols = NativeColumns()
        for device, (_, p) in zip(devices, msgs, strict=True):
            cols.add(device, p, received)
        return cols.tables()

    assert native()["readings"].equals(table), "the C path's table differs"
    d, c, e, x = (best(f) / n * 1e6
                  for f in (decode_all, lambda: columns().tables(), encode, native))
    return d, c, e, x

_RECORD = {"t": "i", "type": "s", **{k: "f" for k in (
    "temperature_c", "humidity_pct", "pressure_hpa", "light_lux", "battery_pct", "rssi_dbm")}}
_ENVELOPE = {"v": "i", "device_id": "s", "boot": "i", "seq": "i", "fw": "s", "hw": "s",
             "sent_ms": "i", "iid": "s"}


def native_readers(pers: str, records: int) -> None:
    print("| records/msg | msgspec decode + columns us/record | pyarrow.json us/record "
          "| polars.read_ndjson us/record |")
    print("| --- | --- | --- | --- |")
    for per in map(int, pers.split(",")):
        cells = [f"{x:.2f}" if x is not None else "not installed"
                 for x in native_reader_times(per, records)]
        print(f"| {per} | " + " | ".join(cells) + " |")


def native_reader_times(per: int, records: int) -> list[float | None]:
    """Microseconds per record: ours (decode and columns), pyarrow.json, polars."""
    import pyarrow.json as pj

    os.environ["POLARS_MAX_THREADS"] = "1"  # read before polars starts its pool
    try:
        import polars as pl
    except ImportError:
        pl = None
    msgs = envelopes(records // per, per)
    n = len(msgs) * per
    batches = [b"\n".join(p for _, p in msgs[i:i + CHUNK_ENVELOPES])
               for i in range(0, len(msgs), CHUNK_ENVELOPES)]
    received = T0 + 10**9
    arrow = {"i": pa.int64(), "s": pa.string(), "f": pa.float64()}
    schema = pa.schema([*((k, arrow[v]) for k, v in _ENVELOPE.items()), (
        "records", pa.list_(pa.struct([(k, arrow[v]) for k, v in _RECORD.items()])))])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    reads = pj.ReadOptions(use_threads=False, block_size=1 << 24)

    def ours() -> None:
        cols = AcceptedColumns()
        for t, p in msgs:
            cols.add(decode(t, p, received), received)  # type: ignore[arg-type]
        cols.tables()

    def pyarrow_json() -> None:
        for b in batches:
            t = pj.read_json(io.BytesIO(b), read_options=reads, parse_options=options)
            t.column("records").combine_chunks().flatten().flatten()

    times: list[float | None] = [best(ours) / n * 1e6, best(pyarrow_json) / n * 1e6]
    if pl is None:
        return [*times, None]
    kinds = {"i": pl.Int64, "s": pl.String, "f": pl.Float64}
    plschema = {**{k: kinds[v] for k, v in _ENVELOPE.items()}, "records": pl.List(
        pl.Struct({k: kinds[v] for k, v in _RECORD.items()}))}

    def polars_ndjson() -> None:
        for b in batches:
            pl.read_ndjson(io.BytesIO(b), schema=plschema).select(
                "records").explode("records").unnest("records").to_arrow()

    return [*times, best(polars_ndjson) / n * 1e6]


if __name__ == "__main__":
    main()
