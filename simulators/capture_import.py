"""Captures from what people already record with: `mosquitto_sub -F '%j'` (or '%J')
output, one JSON object per line, and mqtt-recorder's CSV (topic, payload, qos,
retain, time, delta; payloads as text or, recorded with --encode_b64, base64).
`fleetpulse record --from FILE` calls this."""

from __future__ import annotations

import base64
import binascii
import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError

from .capture import CaptureWriter, Message


@dataclass
class Imported:
    messages: int
    skipped: int  # lines whose payload the source did not keep (see below)
    source: str


def _mosquitto_time(tst: str) -> int:
    # "2026-12-02T00:52:31.078280Z+0000": ISO 8601 with microseconds, then the zone
    stamp = tst.split("Z", 1)[0]
    return int(datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp() * 1e9)


def _from_mosquitto_sub(lines: list[str], w: CaptureWriter) -> int:
    skipped = 0
    first_ns = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            received = _mosquitto_time(d["tst"])
            payload = d.get("payload", "")
            # %J writes a JSON payload as JSON: its bytes come back re-serialised
            data = (payload.encode() if isinstance(payload, str)
                    else json.dumps(payload, separators=(",", ":")).encode())
            length = int(d.get("payloadlen", len(data)))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"line {n} is not mosquitto_sub -F '%j' output ({e}): "
                            "record with mosquitto_sub -F '%j' -V mqttv5") from None
        if len(data) != length:
            # %j prints a payload that is not UTF-8 text as "": its bytes are gone
            skipped += 1
            continue
        first_ns = received if first_ns is None else first_ns
        props: dict[str, Any] | None = None
        user = (d.get("properties") or {}).get("user-properties")
        if user:
            props = {"UserProperty": [[k, v] for k, v in user.items()]}
        w.add(Message(w.messages, received, received - first_ns, d["topic"], data,
                      int(d.get("qos", 0)), bool(d.get("retain", 0)), props))
    return skipped


def _from_mqtt_recorder(text: str, w: CaptureWriter, base64_payloads: bool) -> int:
    first_ns = None
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row:
            continue
        try:
            topic, payload, qos, retain, when = row[0], row[1], int(row[2]), row[3], row[4]
            data = base64.b64decode(payload, validate=True) if base64_payloads \
                else payload.encode()
            received = int(float(when) * 1e9)
        except (IndexError, ValueError, binascii.Error) as e:
            hint = ("; without --base64 if it was recorded without --encode_b64"
                    if base64_payloads else "")
            raise UserError(f"row {n} is not mqtt-recorder CSV ({e}){hint}") from None
        first_ns = received if first_ns is None else first_ns
        w.add(Message(w.messages, received, received - first_ns, topic, data, qos,
                      retain == "True"))
    return 0


def import_file(src: Path, out: Path, base64_payloads: bool = False) -> Imported:
    try:
        text = src.read_text()
    except OSError as e:
        raise UserError(f"cannot read {src}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{src} is not text: import reads mosquitto_sub -F '%j' output or "
                        "mqtt-recorder CSV") from None
    w = CaptureWriter(out, {"imported_from": src.name})
    if text.lstrip().startswith("{"):
        skipped, kind = _from_mosquitto_sub(text.splitlines(), w), "mosquitto_sub -F %j"
    else:
        skipped, kind = _from_mqtt_recorder(text, w, base64_payloads), "mqtt-recorder CSV"
    w.flush()
    return Imported(w.messages, skipped, kind)
