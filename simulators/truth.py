"""Ground truth of what a simulated fleet published, counted from the envelopes sent.

It is computed from the very records that went out, not from the fleet's intentions,
so a test comparing it with analytics checks the pipeline, not the model.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetpulse.ingest.contract import USAGE_EVENTS

_USAGE = frozenset(USAGE_EVENTS)


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


class Truth:
    def __init__(self) -> None:
        self.messages = 0
        self.records = 0
        self.readings = 0
        self.events: Counter[str] = Counter()
        self._active: dict[str, set[str]] = defaultdict(set)
        self._feature_devices: dict[str, dict[str, set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._feature_events: dict[str, Counter[str]] = defaultdict(Counter)
        self._temps: dict[str, list[float]] = defaultdict(list)

    def add(self, env: dict[str, Any]) -> None:
        self.messages += 1
        dev = env["device_id"]
        for r in env["records"]:
            self.records += 1
            day = _date(r["t"])
            if r["type"] == "reading":
                self.readings += 1
                self._temps[day].append(r["temperature_c"])
                continue
            self.events[r["event"]] += 1
            if r["event"] in _USAGE:
                self._active[day].add(dev)
            if r["event"] == "feature_used":
                self._feature_devices[day][r["feature"]].add(dev)
                self._feature_events[day][r["feature"]] += 1

    def to_dict(self, meta: dict[str, Any]) -> dict[str, Any]:
        days = sorted(set(self._temps) | set(self._active))
        return {
            **meta,
            "messages": self.messages,
            "records": self.records,
            "readings": self.readings,
            "events": sum(self.events.values()),
            "events_by_name": dict(sorted(self.events.items())),
            "days": {
                d: {
                    "active_devices": len(self._active.get(d, ())),
                    "devices_per_feature": {
                        f: len(s) for f, s in sorted(self._feature_devices.get(d, {}).items())
                    },
                    "events_per_feature": dict(sorted(self._feature_events.get(d, {}).items())),
                    "readings": len(self._temps.get(d, ())),
                    "median_temperature_c": (
                        statistics.median(self._temps[d]) if self._temps.get(d) else None
                    ),
                }
                for d in days
            },
        }

    def write(self, path: Path, meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(meta), indent=1, sort_keys=True))
