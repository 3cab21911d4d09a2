"""Device attributes over time: what the registry keeps and what the dataset gets.

A device's attributes (region, customer, installer, ...) change: a device moves, is
resold, is re-assigned. The registry keeps every change as (name, value or None for
removed, from); the dataset gets them as intervals in `_registry/device_attributes.parquet`
(device_id, name, value, valid_from, valid_to NULL while current), so a metric counts a
device where it was on the day it counts, not where it is now.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetpulse.errors import UserError
from fleetpulse.ingest.contract import is_device_id

if TYPE_CHECKING:
    import pyarrow as pa

ATTRIBUTES_FILE = "_registry/device_attributes.parquet"
# Attribute names become SQL identifiers nowhere (they are values of `name`), but they
# appear in `attr:NAME` segmentations and CSV headers: kept plain.
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


def check_name(name: str) -> str:
    if not name or not set(name) <= NAME_CHARS:
        raise UserError(f"attribute name {name!r}: use lower-case letters, digits and _ "
                        "(e.g. region, customer_tier)")
    return name


def parse_at(value: str | None) -> str:
    """--at DATE|TIMESTAMP as the ISO time a change takes effect (default now)."""
    if value is None:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        at = (datetime.fromisoformat(value) if "T" in value or " " in value
              else datetime.combine(date.fromisoformat(value), datetime.min.time()))
    except ValueError:
        raise UserError(f"--at {value!r} is not a date or time, e.g. 2026-03-01 or "
                        "2026-03-01T12:00") from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def record_changes(entry: dict[str, Any], changes: dict[str, str | None], at: str) -> bool:
    """Record `changes` (None or "" removes) as of `at` in a registry entry's history,
    and keep its current attributes those of the latest change of each; True if anything
    changed. A change may be dated before others (a backfill from a customer list): the
    history is a set of dated changes, read in time order."""
    current: dict[str, str] = entry.setdefault("attributes", {})
    history = entry["attribute_history"] = _history(entry, at)
    changed = False
    for name, value in sorted(changes.items()):
        check_name(name)
        value = value or None
        before = [h for h in history if h["name"] == name and h["from"] <= at]
        in_effect = max(before, key=lambda h: h["from"])["value"] if before else None
        if in_effect == value:
            continue
        history.append({"name": name, "value": value, "from": at})
        changed = True
    history.sort(key=lambda h: (h["from"], h["name"]))
    current.clear()
    for h in history:  # in time order: the latest change of each name stays
        if h["value"] is None:
            current.pop(h["name"], None)
        else:
            current[h["name"]] = h["value"]
    return changed


def read_csv(path: Path) -> dict[str, dict[str, str | None]]:
    """attrs.csv: a device_id column and one column per attribute; an empty cell leaves
    that attribute as it is, the cell '-' removes it."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
            header = [h.strip() for h in reader.fieldnames or []]
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a CSV file ({e})") from None
    if "device_id" not in header:
        raise UserError(f"{path} has no device_id column: the first line names the columns, "
                        "e.g. device_id,region,customer")
    names = [check_name(h) for h in header if h != "device_id"]
    out: dict[str, dict[str, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        dev = (row.get("device_id") or "").strip()
        if not is_device_id(dev):
            raise UserError(f"{path}:{line}: {dev!r} is not a device id")
        cells = {n: (row.get(n) or "").strip() for n in names}
        out[dev] = {n: (None if v == "-" else v) for n, v in cells.items() if v}
    return out


def _history(entry: dict[str, Any], default_from: str | None = None) -> list[dict[str, Any]]:
    """A registry entry's dated changes; an entry from before history was kept has its
    current attributes, dated when it was added."""
    return entry.get("attribute_history") or [
        {"name": k, "value": v, "from": entry.get("added_at") or default_from}
        for k, v in sorted((entry.get("attributes") or {}).items())]


def schema() -> pa.Schema:
    """The columns of the dataset's device_attributes."""
    import pyarrow as pa  # here: the registry is read by commands that never need Arrow

    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema([
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("valid_from", ts, nullable=False),
        pa.field("valid_to", ts)])


def intervals(devices: dict[str, dict[str, Any]]) -> pa.Table:
    """Every attribute value each device had, with when it began and ended."""
    import pyarrow as pa

    cols = schema()
    rows: dict[str, list[Any]] = {name: [] for name in cols.names}
    for dev, entry in sorted(devices.items()):
        history = _history(entry)
        by_name: dict[str, list[dict[str, Any]]] = {}
        for h in history:
            by_name.setdefault(h["name"], []).append(h)
        for name, changes in sorted(by_name.items()):
            changes.sort(key=lambda h: h["from"] or "")
            for i, h in enumerate(changes):
                if h["value"] is None:
                    continue
                end = changes[i + 1]["from"] if i + 1 < len(changes) else None
                rows["device_id"].append(dev)
                rows["name"].append(name)
                rows["value"].append(h["value"])
                rows["valid_from"].append(_time(h["from"]))
                rows["valid_to"].append(_time(end) if end else None)
    return pa.table(rows, schema=cols)


def _time(iso: str | None) -> datetime:
    if not iso:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))
