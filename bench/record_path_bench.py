"""Ingest's record path, stage by stage, on one core without a broker.

    .venv/bin/python bench/record_path_bench.py [--per 1,10,32] [--records 200000]

For contract-v1 envelopes of K readings (four values each, as the shared peers harness
sends), the CPU time per record of: msgspec decode into the fast path's typed structs;
Arrow columns from those structs (ingest/accepted_columns.py); the zstd Parquet encode
of the resulting table (to memory, as ingest's writer does before its fsync). Best of 3.
The floor a live run cannot go under: what one core spends per record before MQTT, the
write-ahead log and the event loop. Also what a buffered message holds until its flush:
Python's allocations (tracemalloc) plus Arrow's after every message was decoded and
added, before the flush builds the tables.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

from fleetpulse.ingest.accepted_columns import AcceptedColumns
from fleetpulse.ingest.envelope_decoder import decode

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
    args = ap.parse_args()
    print("| records/msg | decode us/record | columns us/record | Parquet encode us/row "
          "| sum us/record | sum us/message | buffered bytes/message |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for per in map(int, args.per.split(",")):
        d, c, e = measure(per, args.records)
        held = buffered_bytes(per, args.records)
        print(f"| {per} | {d:.2f} | {c:.2f} | {e:.2f} | {d + c + e:.2f} | "
              f"{(d + c + e) * per:.1f} | {held:.0f} |")


def buffered_bytes(per: int, records: int) -> float:
    """Bytes a message holds while buffered: decoded one at a time, as ingest does, so
    only what the buffer keeps is still allocated when counted."""
    received = T0 + 10**9
    msgs = envelopes(records // per, per)
    arrow = pa.total_allocated_bytes()  # Arrow's buffers are not Python allocations
    tracemalloc.start()
    cols = AcceptedColumns()
    for t, p in msgs:
        cols.add(decode(t, p, received), received)  # type: ignore[arg-type]
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (held + pa.total_allocated_bytes() - arrow) / len(msgs)


def measure(per: int, records: int) -> tuple[float, float, float]:
    """Microseconds per record to decode, to build columns, to encode Parquet."""
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

    d, c, e = (best(f) / n * 1e6 for f in (decode_all, lambda: columns().tables(), encode))
    return d, c, e

if __name__ == "__main__":
    main()
