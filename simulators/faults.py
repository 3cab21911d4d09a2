"""Faults a simulated fleet plants on demand, from a scenario file (TOML):

    malformed_every = 200    # after about one envelope in 200, a message ingest must refuse
    duplicate_every = 50     # about one envelope in 50 sent twice, as after a lost PUBACK
    clock_unset_share = 0.05 # devices whose clock was never set (records before 2020)

    [clock_skew]             # devices whose clock is off by this many hours (negative:
    share = 0.05             # behind); ingest keeps their records at the times they say,
    hours = 3                # so the truth counts them there

    [crash_loop]             # devices on this firmware crash and reboot before every
    fw = "1.5.0"             # envelope (power_on with reset_cause exception, boot + 1)

    [outage]                 # bulk mode: the broker away for every device, in virtual time;
    after_hours = 30         # what they make meanwhile is journaled and sent in one burst
    hours = 6                # when it ends

    stationary = true        # and [[cause]] tables: what the fleet itself does, for
                             # `fleetpulse explain` to find (simulators/causes.py)

Every choice is a hash of the device and the envelope's identity, so a seed plants the
same faults whatever the number of worker processes, and the truth file says what was
planted: the refusals ingest must count by reason, the re-sends it must drop, the records
it must refuse. The truth's metrics count only what ingest must accept.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fleetpulse.errors import UserError

from .causes import Cause

# The malformed messages, each with the reason ingest must give (ingest/contract.py).
MALFORMED = ("bad_json", "bad_type", "unsupported_version")
_KEYS = {"malformed_every", "duplicate_every", "clock_unset_share", "clock_skew", "crash_loop",
         "outage", "stationary", "cause"}
_TABLES = {"outage": {"after_hours", "hours"}, "clock_skew": {"share", "hours"},
           "crash_loop": {"fw"}}
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Scenario:
    malformed_every: int = 0
    duplicate_every: int = 0
    clock_unset_share: float = 0.0
    clock_skew_share: float = 0.0
    clock_skew_hours: float = 0.0
    crash_loop_fw: str | None = None
    outage_after_hours: int | None = None
    outage_hours: int = 0
    # what the fleet does, for explain to find (simulators/causes.py)
    stationary: bool = False
    causes: tuple[Cause, ...] = ()

    @classmethod
    def load(cls, path: Path) -> Scenario:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the scenario {path}: {e}") from None
        unknown = set(raw) - _KEYS
        if unknown:
            raise UserError(f"scenario {path}: unknown fault {sorted(unknown)[0]!r} (known: "
                            f"{', '.join(sorted(_KEYS))})")
        tables = {}
        for name, keys in _TABLES.items():
            t = raw.get(name, {})
            if not isinstance(t, dict) or set(t) - keys:
                raise UserError(f"scenario {path}: [{name}] takes {' and '.join(sorted(keys))}")
            tables[name] = t
        skew, loop, outage = tables["clock_skew"], tables["crash_loop"], tables["outage"]
        s = cls(malformed_every=raw.get("malformed_every", 0),
                duplicate_every=raw.get("duplicate_every", 0),
                clock_unset_share=raw.get("clock_unset_share", 0.0),
                clock_skew_share=skew.get("share", 0.0), clock_skew_hours=skew.get("hours", 0),
                crash_loop_fw=loop.get("fw"),
                outage_after_hours=outage.get("after_hours"),
                outage_hours=outage.get("hours", 0),
                stationary=raw.get("stationary", False),
                causes=tuple(Cause.parse(c, f"scenario {path}") for c in _list(raw, "cause")))
        if not isinstance(s.stationary, bool):
            raise UserError(f"scenario {path}: stationary is true or false")
        if not isinstance(s.clock_skew_hours, int | float) or not -720 <= s.clock_skew_hours < 23:
            # a day ahead ingest refuses a record, and near that, whether it does depends on
            # the second it arrives: refused times are clock_unset's fault
            raise UserError(f"scenario {path}: clock_skew hours must be from -720 to under 23")
        if s.crash_loop_fw is not None and not isinstance(s.crash_loop_fw, str):
            raise UserError(f"scenario {path}: crash_loop fw must be a firmware version")
        for name in ("malformed_every", "duplicate_every", "outage_hours"):
            v = getattr(s, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UserError(f"scenario {path}: {name} must be a whole number >= 0")
        for name, shown in (("clock_unset_share", "clock_unset_share"),
                            ("clock_skew_share", "[clock_skew] share")):
            v = getattr(s, name)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise UserError(f"scenario {path}: {shown} must be between 0 and 1")
        if s.outage_after_hours is not None and (not isinstance(s.outage_after_hours, int)
                                                 or s.outage_after_hours < 0):
            raise UserError(f"scenario {path}: outage after_hours must be a whole number >= 0")
        return s


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    v = raw.get(key, [])
    return v if isinstance(v, list) else [v]


def _draw(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class Planted:
    """What the faults planted: the truth file's `planted.faults`."""
    malformed: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    clock_unset_devices: set[str] = field(default_factory=set)
    clock_unset_records: int = 0
    skewed_devices: set[str] = field(default_factory=set)
    crash_loops: int = 0
    held_by_outage: int = 0

    def merge(self, other: Planted) -> None:
        self.malformed.update(other.malformed)
        self.duplicates += other.duplicates
        self.clock_unset_devices |= other.clock_unset_devices
        self.clock_unset_records += other.clock_unset_records
        self.skewed_devices |= other.skewed_devices
        self.crash_loops += other.crash_loops
        self.held_by_outage += other.held_by_outage

    def to_dict(self, scenario: Scenario) -> dict[str, Any]:
        return {"scenario": asdict(scenario),
                "malformed": dict(sorted(self.malformed.items())),
                "duplicates": self.duplicates,
                "clock_unset": {"devices": len(self.clock_unset_devices),
                                "records_refused": self.clock_unset_records},
                "clock_skew_devices": len(self.skewed_devices),
                "crash_loop_reboots": self.crash_loops,
                "held_by_outage": self.held_by_outage}


# (topic, payload, the envelope for the truth or None when ingest must not count it)
Message = tuple[str, bytes, dict[str, Any] | None]


class Faults:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.planted = Planted()
        self._loops: Counter[str] = Counter()  # device -> reboots its crash loop added
        # nothing to plant: the bulk rate's fast path (causes shape the fleet itself, but
        # their notes of what would have been are collected on the slower path)
        self.idle = scenario == Scenario()

    def skewed(self, device_id: str) -> bool:
        share = self.scenario.clock_skew_share
        return share > 0 and _draw(self.seed, "skew", device_id) < share

    def clock_unset(self, device_id: str) -> bool:
        share = self.scenario.clock_unset_share
        return share > 0 and _draw(self.seed, "clock", device_id) < share

    def messages(self, topic: str, env: dict[str, Any]) -> list[Message]:
        """What the device sends for this envelope, faults planted."""
        s, dev = self.scenario, env["device_id"]
        counted: dict[str, Any] | None = env
        if s.crash_loop_fw is not None and env["fw"] == s.crash_loop_fw and env["records"]:
            # crashed and rebooted before this envelope: a new boot, reported as real
            # boards report it, by the next boot's power_on
            self._loops[dev] += 1
            first = min(r["t"] for r in env["records"])
            env = {**env, "records": [
                {"t": first, "type": "event", "event": "power_on", "reset_cause": "exception",
                 "last_error": "MemoryError: memory allocation failed"}, *env["records"]]}
            self.planted.crash_loops += 1
        if self._loops[dev]:
            # every boot the loop added shifts the device's later boots, so that no two
            # envelopes share a (boot, seq)
            env = {**env, "boot": env["boot"] + self._loops[dev]}
            counted = env
        if self.skewed(dev):
            shift = int(s.clock_skew_hours * HOUR_MS)
            env = {**env, "records": [{**r, "t": r["t"] + shift} for r in env["records"]]}
            counted = env
            self.planted.skewed_devices.add(dev)
        if self.clock_unset(dev):
            # the clock never set: times count from the epoch, and ingest refuses each record
            env = {**env, "records": [{**r, "t": r["t"] % 86_400_000} for r in env["records"]]}
            counted = None
            self.planted.clock_unset_devices.add(dev)
            self.planted.clock_unset_records += len(env["records"])
        payload = orjson.dumps(env)
        out: list[Message] = [(topic, payload, counted)]
        if not (s.duplicate_every or s.malformed_every):
            return out
        ident = (self.seed, dev, env.get("iid"), env["boot"], env["seq"])
        if s.duplicate_every and _draw(*ident, "dup") < 1 / s.duplicate_every:
            out.append((topic, payload, None))  # the same bytes: a redelivery to drop
            self.planted.duplicates += 1
        if s.malformed_every and _draw(*ident, "bad") < 1 / s.malformed_every:
            kind = MALFORMED[int(_draw(*ident, "kind") * len(MALFORMED))]
            out.append((topic, _malformed(kind, env), None))
            self.planted.malformed[kind] += 1
        return out

    def in_outage(self, hour_index: int) -> bool:
        """Whether the broker is away in this virtual hour (hours from the fleet's start)."""
        after = self.scenario.outage_after_hours
        return after is not None and after <= hour_index < after + self.scenario.outage_hours


def _malformed(kind: str, env: dict[str, Any]) -> bytes:
    if kind == "bad_json":
        return orjson.dumps(env)[:-7]  # cut short, as a broken write would leave it
    if kind == "bad_type":
        return orjson.dumps({**env, "boot": str(env["boot"])})
    return orjson.dumps({**env, "v": 2})  # unsupported_version
