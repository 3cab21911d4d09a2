"""Staged rollouts of a firmware release that halt themselves when the telemetry says so.

A rollout sends a release to a growing share of the devices in its scope (stages such as
1%, 5%, 25%, 50%, 100%). Which devices a stage holds is decided by the hash experiments
use (analytics/assignment.py) under the key `rollout:<version>`: a device in the 5%
stays in the 25%, so a stage only adds devices. After each stage's soak the rollout moves
on; at every look in between (the service looks every hour, `step` may be called as
often as one likes) the guard (analytics/rollout_guard.py) compares the devices on the
new version with those still on the old one, and a clear loss halts the rollout where it
is, sending the previous version back to the updated devices when auto-rollback is on.

The state of a rollout is one JSON file, replaced whole and fsynced at every change
(core/files.py), so a service restarted at any point carries on from the last change:
sending is repeated for devices whose send was not recorded, which a retained message
makes harmless.

This module knows neither MQTT nor DuckDB: `step` is given the devices in scope, the
guard's rows and a function that sends, so the same code runs the service
(gateway/rollout_service.py) and the simulated fleets of tests and benches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleetpulse.analytics.assignment import BUCKETS, bucket
from fleetpulse.analytics.rollout_guard import GUARDS, Verdict, judge
from fleetpulse.errors import UserError
from fleetpulse.files import write_replacing

STATES = ("running", "paused", "halted", "aborted", "completed")
ACTIVE = ("running", "paused")
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}")


def parse_stages(text: str) -> list[float]:
    """'1%,5%,25%,100%' as increasing shares ending at 1.0."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            share = float(part.removesuffix("%")) / 100
        except ValueError:
            raise UserError(f"stage {part!r} is not a percentage, e.g. --stages "
                            "1%,5%,25%,50%,100%") from None
        if not 0 < share <= 1:
            raise UserError(f"stage {part!r} must be above 0% and at most 100%")
        out.append(share)
    if out != sorted(set(out)):
        raise UserError("--stages must grow, each above the one before, e.g. 5%,25%,100%")
    if out[-1] != 1:
        out.append(1.0)  # a rollout that succeeds reaches every device in scope
    return out


def parse_duration(text: str) -> float:
    """'6h', '30m', '2d', '90s' or plain seconds, as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        raise UserError(f"duration {text!r}: use e.g. 6h, 30m, 2d") from None
    if value < 0:
        raise UserError(f"duration {text!r} must not be negative")
    return value


@dataclass
class Plan:
    version: str
    previous: str  # what the control runs, and what a rollback sends back
    release: dict[str, Any]  # the release's manifest (firmware build's manifest.json)
    stages: list[float]
    soak_s: float
    guards: list[str] = field(default_factory=lambda: list(GUARDS))
    model: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    auto_rollback: bool = False
    release_dir: str = ""  # where the release's files are served from

    def check(self) -> None:
        for v in (self.version, self.previous):
            if not VERSION.fullmatch(v):
                raise UserError(f"version {v!r}: letters, digits and . + _ - only")
        if self.version == self.previous:
            raise UserError(f"--version {self.version} is what the devices run already "
                            "(--previous): nothing to roll out")
        unknown = sorted(set(self.guards) - set(GUARDS))
        if unknown:
            raise UserError(f"unknown guard {', '.join(unknown)}: choose from "
                            f"{', '.join(GUARDS)}")


@dataclass
class Rollout:
    plan: Plan
    started_ms: int
    state: str = "running"
    stage: int = 0  # index into plan.stages
    stage_started_ms: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # device -> when the release was sent
    rolled_back: dict[str, int] = field(default_factory=dict)  # device -> when sent back
    verdict: dict[str, Any] | None = None  # the guard's latest verdict
    looks: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # {ms, what}

    @property
    def key(self) -> str:
        return f"rollout:{self.plan.version}"

    def in_stage(self, device_id: str, stage: int | None = None) -> bool:
        share = self.plan.stages[self.stage if stage is None else stage]
        return bucket(self.key, device_id) < share * BUCKETS

    def note(self, now_ms: int, what: str) -> None:
        self.history.append({"ms": now_ms, "what": what})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        d = json.loads(text)
        d["plan"] = Plan(**d["plan"])
        return cls(**d)


Send = Callable[[str, dict[str, Any]], None]


def update_message(plan: Plan, version: str, rollback: bool = False) -> dict[str, Any]:
    """What a device gets on devices/<id>/update (docs/ota.md)."""
    if rollback:
        return {"version": version, "rollback": True}
    return {"version": version, "files": plan.release.get("files", [])}


def step(r: Rollout, now_ms: int, scope: Sequence[str], rows: Sequence[dict[str, Any]],
         send: Send) -> Verdict | None:
    """One look: send the current stage's release to devices that have not had it, judge
    the guard on `rows` (rollout_guard_devices, for the devices in `scope`), halt on a
    clear loss, else move to the next stage once this one has soaked. Returns the guard's
    verdict (None unless running). The caller saves the rollout afterwards."""
    if r.state != "running":
        return None
    inside = set(scope)
    _send_stage(r, now_ms, inside, send)
    verdict = judge([row for row in rows if row["device_id"] in inside], r.plan.guards,
                    tuning_n=max(len(inside), 2))
    r.looks += 1
    r.verdict = verdict.to_dict()
    if verdict.loss:
        r.state = "halted"
        r.note(now_ms, f"halted at stage {r.stage + 1} ({_pct(r.plan.stages[r.stage])}): "
                       f"{verdict.summary()}")
        if r.plan.auto_rollback:
            rollback(r, now_ms, send)
        return verdict
    if now_ms - r.stage_started_ms >= r.plan.soak_s * 1000:
        if verdict.blind(len(inside & set(r.sent))):
            return verdict  # never move on without data from the devices that took it
        if r.stage + 1 < len(r.plan.stages):
            r.stage += 1
            r.stage_started_ms = now_ms
            r.note(now_ms, f"stage {r.stage + 1} ({_pct(r.plan.stages[r.stage])}) started: "
                           f"{verdict.summary()}")
            _send_stage(r, now_ms, inside, send)  # at once, not at the next look
        else:
            r.state = "completed"
            r.note(now_ms, f"completed: {verdict.summary()}")
    return verdict


def _send_stage(r: Rollout, now_ms: int, scope: set[str], send: Send) -> None:
    """The release to the devices of the current stage that have not had it."""
    for device_id in sorted(scope):
        if device_id not in r.sent and r.in_stage(device_id):
            send(device_id, update_message(r.plan, r.plan.version))
            r.sent[device_id] = now_ms


def rollback(r: Rollout, now_ms: int, send: Send) -> None:
    """Send the previous version back to every device the release went to."""
    for device_id in sorted(r.sent):
        if device_id not in r.rolled_back:
            send(device_id, update_message(r.plan, r.plan.previous, rollback=True))
            r.rolled_back[device_id] = now_ms
    r.note(now_ms, f"sent {r.plan.previous} back to {len(r.rolled_back)} devices")


def _pct(share: float) -> str:
    return f"{share * 100:g}%"


class RolloutStore:
    """Rollouts as JSON files in one directory, one per version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, version: str) -> Path:
        return self.directory / f"{version}.json"

    def save(self, r: Rollout) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_replacing(self.path(r.plan.version), r.to_json() + "\n", durable=True)

    def load(self, version: str) -> Rollout:
        path = self.path(version)
        if not VERSION.fullmatch(version) or not path.exists():
            known = ", ".join(r.plan.version for r in self.all()) or "none"
            raise UserError(f"no rollout of {version} (rollouts: {known}); `fleetpulse "
                            "rollout start` begins one")
        return Rollout.from_json(path.read_text())

    def all(self) -> list[Rollout]:
        if not self.directory.is_dir():
            return []
        return sorted((Rollout.from_json(p.read_text())
                       for p in self.directory.glob("*.json")), key=lambda r: r.started_ms)

    def active(self) -> list[Rollout]:
        return [r for r in self.all() if r.state in ACTIVE]

    def start(self, plan: Plan, now_ms: int) -> Rollout:
        plan.check()
        busy = self.active()
        if busy:
            raise UserError(f"the rollout of {busy[0].plan.version} is {busy[0].state}: "
                            f"`fleetpulse rollout abort {busy[0].plan.version}` it first")
        if self.path(plan.version).exists():
            raise UserError(f"{plan.version} was rolled out before: release it under a new "
                            "version")
        r = Rollout(plan, started_ms=now_ms, stage_started_ms=now_ms)
        r.note(now_ms, f"started: stage 1 ({_pct(plan.stages[0])})")
        self.save(r)
        return r


def change_state(r: Rollout, action: str, now_ms: int, send: Send | None = None) -> None:
    """pause, resume or abort (abort with `send` also sends the previous version back)."""
    allowed = {"pause": ("running",), "resume": ("paused",),
               "abort": ("running", "paused", "halted")}[action]
    if r.state not in allowed:
        raise UserError(f"the rollout of {r.plan.version} is {r.state}: it cannot be "
                        f"{action}d")
    if action == "pause":
        r.state = "paused"
    elif action == "resume":
        # the stage soaks afresh: a pause is time nobody watched for
        r.state = "running"
        r.stage_started_ms = now_ms
    else:
        r.state = "aborted"
        if send is not None:
            rollback(r, now_ms, send)
    r.note(now_ms, f"{action}d")
