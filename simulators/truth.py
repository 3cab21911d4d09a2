"""Ground truth of what a simulated fleet published, counted from the envelopes sent.

It is computed from the very records that went out, not from the fleet's intentions,
and by plain Python rather than SQL, so a test comparing it with the analytics views
checks the pipeline and the metric definitions, not the model. The definitions
mirror analytics/metrics.sql: a device-day's firmware is that of its last record that
day; a device is active on a day with a usage event; weeks start on Monday; a device
is activated on the first day it sent anything.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fleetpulse.ingest.contract import CRASH_RESET_CAUSES, USAGE_EVENTS

_USAGE = frozenset(USAGE_EVENTS)
_CRASH_CAUSES = frozenset(CRASH_RESET_CAUSES)


_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000


def _day(ms: int) -> date:
    """The UTC day of epoch milliseconds. Once per record of the whole fleet: a date per
    day number from a cache, not a datetime per record."""
    return _date_of_day(ms // _DAY_MS)


@functools.lru_cache(maxsize=1 << 12)
def _date_of_day(n: int) -> date:
    return _EPOCH + timedelta(days=n)


def _week(d: date) -> date:
    return d - timedelta(days=d.weekday())


def _sets() -> defaultdict[str, set[str]]:
    # a named function, not a lambda: a Truth is pickled from worker to parent
    return defaultdict(set)


class Truth:
    def __init__(self) -> None:
        self.messages = 0
        self.records = 0
        self.readings = 0
        self.events: Counter[str] = Counter()
        self._active: dict[date, set[str]] = defaultdict(set)
        self._feature_devices: dict[date, dict[str, set[str]]] = defaultdict(_sets)
        self._feature_events: dict[date, Counter[str]] = defaultdict(Counter)
        self._temps: dict[date, list[float]] = defaultdict(list)
        self._day_fw: dict[tuple[str, date], tuple[int, str]] = {}
        self._crashed: dict[str, set[str]] = defaultdict(set)  # fw -> devices
        self._ran: dict[str, set[str]] = defaultdict(set)  # fw -> devices that sent on it
        self._crash_days: set[tuple[str, date]] = set()
        # what planted causes changed (simulators/causes.py): device-days active only
        # without them, crashes they took away or added, heartbeats they lost
        self._extra_active: Counter[date] = Counter()
        self._crash_without: set[tuple[str, date]] = set()
        self._crash_by_causes: set[tuple[str, date]] = set()
        self._heartbeats_lost: Counter[date] = Counter()

    def add(self, env: dict[str, Any]) -> None:
        self.messages += 1
        dev = env["device_id"]
        fw = env["fw"]
        if env["records"]:
            self._ran[fw].add(dev)
        for r in env["records"]:
            self.records += 1
            day = _day(r["t"])
            last = self._day_fw.get((dev, day))
            if last is None or r["t"] >= last[0]:
                self._day_fw[(dev, day)] = (r["t"], fw)
            if r["type"] == "reading":
                self.readings += 1
                self._temps[day].append(r["temperature_c"])
                continue
            name = r["event"]
            self.events[name] += 1
            if name in _USAGE:
                self._active[day].add(dev)
            if name == "feature_used":
                self._feature_devices[day][r["feature"]].add(dev)
                self._feature_events[day][r["feature"]] += 1
            if name == "error" or (name == "power_on"
                                   and r.get("reset_cause") in _CRASH_CAUSES):
                self._crashed[fw].add(dev)
                self._crash_days.add((dev, day))

    def note_without_causes(self, notes: list[tuple[str, str, int]], start: date) -> None:
        """Take in what the fleet's devices did only because of the planted causes
        (kind, device, day number from `start`)."""
        for kind, dev, n in notes:
            day = start + timedelta(days=n)
            if kind == "active_without_causes":
                self._extra_active[day] += 1
            elif kind == "crash_without_causes":
                self._crash_without.add((dev, day))
            elif kind == "crash_by_causes":
                self._crash_by_causes.add((dev, day))
            elif kind == "heartbeat_lost":
                self._heartbeats_lost[day] += 1

    def _without_causes(self) -> dict[str, Any]:
        """The fleet as it would have been without the planted causes, as far as explain's
        metrics see it: device-days active besides those sent, each device's crash days,
        heartbeats besides those sent."""
        crashes: dict[str, list[str]] = defaultdict(list)
        for dev, day in sorted((self._crash_days | self._crash_without) - self._crash_by_causes):
            crashes[dev].append(day.isoformat())
        return {"extra_active_device_days": {d.isoformat(): n for d, n in
                                             sorted(self._extra_active.items())},
                "crash_days": dict(crashes),
                "extra_heartbeats": {d.isoformat(): n for d, n in
                                     sorted(self._heartbeats_lost.items())}}

    def merge(self, other: Truth) -> None:
        """Add what another part of the fleet sent (parts never share a device)."""
        self.messages += other.messages
        self.records += other.records
        self.readings += other.readings
        self.events.update(other.events)
        for day, devs in other._active.items():
            self._active[day] |= devs
        for day, features in other._feature_devices.items():
            for f, devs in features.items():
                self._feature_devices[day][f] |= devs
        for day, counts in other._feature_events.items():
            self._feature_events[day].update(counts)
        for day, temps in other._temps.items():
            self._temps[day] += temps  # only their median is used: order does not matter
        self._day_fw.update(other._day_fw)
        for fw, devs in other._crashed.items():
            self._crashed[fw] |= devs
        for fw, devs in other._ran.items():
            self._ran[fw] |= devs
        self._crash_days |= other._crash_days
        self._extra_active.update(other._extra_active)
        self._crash_without |= other._crash_without
        self._crash_by_causes |= other._crash_by_causes
        self._heartbeats_lost.update(other._heartbeats_lost)

    # -- derived ------------------------------------------------------------------------

    def _days_dict(self) -> dict[str, Any]:
        days = sorted({d for _, d in self._day_fw})
        fw_of = {k: v[1] for k, v in self._day_fw.items()}
        out = {}
        for d in days:
            window7 = set().union(*(self._active.get(d - timedelta(i), set()) for i in range(7)))
            window30 = set().union(*(self._active.get(d - timedelta(i), set())
                                     for i in range(30)))
            active = self._active.get(d, set())
            out[d.isoformat()] = {
                "active_devices": len(active),
                "wau": len(window7),
                "mau": len(window30),
                "active_by_fw": dict(sorted(Counter(fw_of[(dev, d)] for dev in active).items())),
                "devices_per_feature": {
                    f: len(s) for f, s in sorted(self._feature_devices.get(d, {}).items())
                },
                "events_per_feature": dict(sorted(self._feature_events.get(d, {}).items())),
                "readings": len(self._temps.get(d, ())),
                "median_temperature_c": (
                    statistics.median(self._temps[d]) if self._temps.get(d) else None
                ),
            }
        return out

    def _weeks_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(lifecycle per week, retention per cohort week)."""
        all_weeks = sorted({_week(d) for _, d in self._day_fw})
        active_weeks: dict[str, set[date]] = defaultdict(set)
        for d, devs in self._active.items():
            for dev in devs:
                active_weeks[dev].add(_week(d))
        first_day: dict[str, date] = {}
        for dev, d in self._day_fw:
            if dev not in first_day or d < first_day[dev]:
                first_day[dev] = d
        lifecycle = {}
        for w in all_weeks:
            counts = Counter()  # type: Counter[str]
            for dev, activated in first_day.items():
                # new: activated that week (the retention cohort), active or not
                first = _week(activated)
                if w < first:
                    continue
                weeks = active_weeks.get(dev, set())
                now, before = w in weeks, (w - timedelta(7)) in weeks
                if w == first:
                    counts["new"] += 1
                if now and before:
                    counts["returning"] += 1
                if now and not before and w > first:
                    counts["resurrecting"] += 1
                if not now and before:
                    counts["dormant"] += 1
            lifecycle[w.isoformat()] = {k: counts[k] for k in
                                        ("new", "returning", "resurrecting", "dormant")}
        cohorts: dict[date, list[str]] = defaultdict(list)
        for dev, d in first_day.items():
            cohorts[_week(d)].append(dev)
        last = all_weeks[-1] if all_weeks else None
        retention = {}
        for c, members in sorted(cohorts.items()):
            in_week, in_or_after = [], []
            n = 0
            while last is not None and c + timedelta(7 * n) <= last:
                w = c + timedelta(7 * n)
                in_week.append(sum(1 for dev in members if w in active_weeks.get(dev, ())))
                in_or_after.append(sum(1 for dev in members
                                       if any(x >= w for x in active_weeks.get(dev, ()))))
                n += 1
            retention[c.isoformat()] = {"size": len(members), "active_in_week": in_week,
                                        "active_in_or_after": in_or_after}
        return lifecycle, retention

    def _health_dict(self) -> dict[str, Any]:
        # a device counts under every firmware it sent records on, each crash under the
        # firmware that reported it (the health attribution rule, analytics/metrics.sql)
        return {fw: {"devices": len(devs),
                     "crash_free_devices": len(devs - self._crashed.get(fw, set()))}
                for fw, devs in sorted(self._ran.items())}

    def to_dict(self, meta: dict[str, Any]) -> dict[str, Any]:
        lifecycle, retention = self._weeks_dict()
        adopters: dict[str, set[str]] = defaultdict(set)
        for per_feature in self._feature_devices.values():
            for f, devs in per_feature.items():
                adopters[f] |= devs
        return {
            **meta,
            "messages": self.messages,
            "records": self.records,
            "readings": self.readings,
            "events": sum(self.events.values()),
            "events_by_name": dict(sorted(self.events.items())),
            "days": self._days_dict(),
            "lifecycle": lifecycle,
            "retention": retention,
            "fleet_health": self._health_dict(),
            "feature_devices": {f: len(d) for f, d in sorted(adopters.items())},
            # per variant of the planted experiment, as the simulator assigned devices
            "feature_devices_by_variant": self._by_variant(adopters, meta.get("plan", {})),
            **({"without_causes": self._without_causes()}
               if meta.get("planted", {}).get("causes") else {}),
        }

    @staticmethod
    def _by_variant(adopters: dict[str, set[str]],
                    plan: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for f, devs in sorted(adopters.items()):
            for v, n in sorted(Counter(plan[d]["variant"] for d in devs).items()):
                out[v][f] = n
        return dict(sorted(out.items()))

    def write(self, path: Path, meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(meta), indent=1, sort_keys=True))
