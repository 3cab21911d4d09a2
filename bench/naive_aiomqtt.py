"""Baseline (b) of bench/ingest_bench.py: the consumer most people write first.

aiomqtt `async for`, json.loads per message, rows appended to lists, a Parquet file
every 10,000 rows. Acks on receipt (aiomqtt's default), so not durable: it is here to
show the cost of the obvious design, not as something to run.
Prints one JSON line: first message time, last durable time, rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiomqtt
import pyarrow as pa
import pyarrow.parquet as pq


async def main(host: str, port: int, client_id: str, messages: int, out: Path) -> None:
    rows: list[dict] = []
    files = taken = 0
    first = 0.0

    def write() -> None:
        nonlocal rows, files
        if rows:
            pq.write_table(pa.Table.from_pylist(rows), out / f"part-{files}.parquet")
            files += 1
            rows = []

    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=False,
                              username=os.environ.get("FLEETPULSE_MQTT_USERNAME"),
                              password=os.environ.get("FLEETPULSE_MQTT_PASSWORD")) as c:
        await c.subscribe("devices/+/telemetry", qos=1)
        async for msg in c.messages:
            if not first:
                first = time.time()
            env = json.loads(msg.payload)
            for i, r in enumerate(env["records"]):
                rows.append({"device_id": env["device_id"], "boot": env["boot"],
                             "seq": env["seq"], "idx": i, **r})
            taken += 1
            if len(rows) >= 10_000:
                write()
            if taken >= messages:
                break
    write()
    print(json.dumps({"first": first, "last": time.time(), "messages": taken}))


if __name__ == "__main__":
    h, p, cid, n, o = sys.argv[1:6]
    asyncio.run(main(h, int(p), cid, int(n), Path(o)))
