"""Replay transforms: move a capture in time (--retime) and multiply it into several
fleets (--clone), touching only contract-v1 envelopes; other payloads go as recorded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from fleetpulse.errors import UserError

from .capture import Message


def _envelope(m: Message) -> dict[str, Any] | None:
    if not m.topic.endswith("/telemetry"):
        return None
    try:
        env = json.loads(m.payload)
    except ValueError:
        return None
    if not (isinstance(env, dict) and env.get("v") == 1
            and isinstance(env.get("records"), list)):
        return None
    return env


def first_record_ms(messages: Iterable[Message]) -> int | None:
    """The earliest record time `t` of the capture's envelopes."""
    first = None
    for m in messages:
        env = _envelope(m)
        for r in (env or {}).get("records", []):
            t = r.get("t") if isinstance(r, dict) else None
            if isinstance(t, int) and (first is None or t < first):
                first = t
    return first


def retime_offset(messages: Iterable[Message], when: str, now_ms: int) -> int:
    """ms to add so the first record lands at `when`: "now", a YYYY-MM-DD (its UTC
    midnight) or "none" (0)."""
    if when == "none":
        return 0
    if when == "now":
        target = now_ms
    else:
        try:
            target = int(datetime.combine(date.fromisoformat(when), datetime.min.time(),
                                          UTC).timestamp() * 1000)
        except ValueError:
            raise UserError(f"--retime {when!r}: use now, none or a date YYYY-MM-DD") from None
    first = first_record_ms(messages)
    return 0 if first is None else target - first


def _device(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "devices" else None


def transform(messages: Iterable[Message], offset_ms: int = 0, clones: int = 1
              ) -> Iterator[Message]:
    """Each message shifted by offset_ms (envelope sent_ms and every record's t, and the
    receive time), then once per clone: clone 0 as recorded, clone k with every device
    id suffixed "-c<k>" in topic and envelope alike. Clones of one message are adjacent,
    so the schedule stays the capture's."""
    if clones < 1:
        raise UserError("--clone must be at least 1")
    if not offset_ms and clones == 1:
        yield from messages
        return
    for m in messages:
        env = _envelope(m) if offset_ms or clones > 1 else None
        if env is not None and offset_ms:
            if isinstance(env.get("sent_ms"), int):
                env["sent_ms"] += offset_ms
            for r in env["records"]:
                if isinstance(r, dict) and isinstance(r.get("t"), int):
                    r["t"] += offset_ms
        shifted = m.received_ns + offset_ms * 1_000_000
        device = _device(m.topic)
        for k in range(clones):
            if k == 0 or device is None:
                payload = m.payload if env is None or not offset_ms else json.dumps(
                    env, separators=(",", ":")).encode()
                if k and device is None:
                    continue  # not a device's topic: sent once
                yield replace(m, payload=payload, received_ns=shifted)
                continue
            clone_id = f"{device}-c{k}"
            payload = m.payload
            if env is not None:
                payload = json.dumps({**env, "device_id": clone_id}
                                     if env.get("device_id") == device else env,
                                     separators=(",", ":")).encode()
            yield replace(m, topic=m.topic.replace(f"devices/{device}/",
                                                   f"devices/{clone_id}/", 1),
                          payload=payload, received_ns=shifted)
