"""Arrow schemas of the three tables ingest writes: readings, events, quarantine.

This is the single declared schema of the dataset. Ingest writes files with it and
analytics falls back to it when a table has no files yet, so a fresh dataset can be
queried with the same column names and types as a full one.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

# A record's identity is (device_id, iid, boot, seq, idx); every row carries it. `iid`
# (install id) is optional in contract v1: null for firmware that does not send one.
RECORD_KEY = ("device_id", "iid", "boot", "seq", "idx")
_IDENTITY = [
    pa.field("device_id", pa.string(), nullable=False),
    pa.field("iid", pa.string()),
    pa.field("boot", pa.int64(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("idx", pa.int32(), nullable=False),
    pa.field("fw", pa.string()),
    pa.field("hw", pa.string()),
    pa.field("ts", TS, nullable=False),
    pa.field("received_at", TS, nullable=False),
]

READING_FIELDS = {
    "temperature_c": pa.float64(),
    "humidity_pct": pa.float64(),
    "pressure_hpa": pa.float64(),
    "light_lux": pa.float64(),
    "battery_pct": pa.float64(),
    "rssi_dbm": pa.float64(),
}

EVENT_FIELDS = {
    "event": pa.string(),
    "feature": pa.string(),
    "name": pa.string(),
    "value": pa.string(),
    "button": pa.string(),
    "code": pa.string(),
    "uptime_s": pa.int64(),
    "reconnects": pa.int64(),
    "free_mem": pa.int64(),
    "records_dropped": pa.int64(),
    "reset_cause": pa.string(),
    "last_error": pa.string(),
    "interval_s": pa.int64(),
}

# Fields a record carries that the contract does not name are kept, as one JSON
# object per row, so newer firmware never loses data on an older ingest.
_EXTRA = pa.field("extra", pa.string())

READINGS = pa.schema(
    [*_IDENTITY, *(pa.field(k, t) for k, t in READING_FIELDS.items()), _EXTRA]
)
EVENTS = pa.schema([*_IDENTITY, *(pa.field(k, t) for k, t in EVENT_FIELDS.items()), _EXTRA])
QUARANTINE = pa.schema(
    [
        pa.field("received_at", TS, nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("device_id", pa.string()),
        pa.field("boot", pa.int64()),
        pa.field("seq", pa.int64()),
        pa.field("idx", pa.int32()),
        pa.field("payload", pa.binary(), nullable=False),
    ]
)

# Device connection state, written by the gateway's presence service from the retained
# devices/<id>/status messages (the broker publishes "offline" as the last will).
# `retained` marks a state the gateway learned at subscribe time: its `seen_at` is when the
# gateway heard it, not when it changed.
PRESENCE = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("seen_at", TS, nullable=False),
        pa.field("retained", pa.bool_(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {"readings": READINGS, "events": EVENTS,
                                "quarantine": QUARANTINE, "presence": PRESENCE}

# Column whose UTC date names the hive partition (date=YYYY-MM-DD) a row lands in.
PARTITION_TIME = {"readings": "ts", "events": "ts", "quarantine": "received_at",
                  "presence": "seen_at"}
