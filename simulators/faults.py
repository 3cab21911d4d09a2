"""Faults a simulated fleet plants on demand, from a scenario file (TOML):

    malformed_every = 200    # after about one envelope in 200, a message ingest must refuse
    duplicate_every = 50     # about one envelope in 50 sent twice, as after a lost PUBACK
    clock_unset_share = 0.05 # devices whose clock was never set (records before 2020)

    [outage]                 # bulk mode: the broker away for every device, in virtual time;
    after_hours = 30         # what they make meanwhile is journaled and sent in one burst
    hours = 6                # when it ends

Every choice is a hash of the device and the envelope's identity, so a seed plants the
same faults whatever the number of worker processes, and the truth file says what was
planted: the refusals ingest must count by reason, the re-sends it must drop, the records
it must refuse. The truth's metrics count only what ingest must accept.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fleetpulse.errors import UserError

# The malformed messages, each with the reason ingest must give (ingest/contract.py).
MALFORMED = ("bad_json", "bad_type", "unsupported_version")
_KEYS = {"malformed_every", "duplicate_every", "clock_unset_share", "outage"}


@dataclass(frozen=True)
class Scenario:
    malformed_every: int = 0
    duplicate_every: int = 0
    clock_unset_share: float = 0.0
    outage_after_hours: int | None = None
    outage_hours: int = 0

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
        outage = raw.get("outage", {})
        if not isinstance(outage, dict) or set(outage) - {"after_hours", "hours"}:
            raise UserError(f"scenario {path}: [outage] takes after_hours and hours")
        s = cls(malformed_every=raw.get("malformed_every", 0),
                duplicate_every=raw.get("duplicate_every", 0),
                clock_unset_share=raw.get("clock_unset_share", 0.0),
                outage_after_hours=outage.get("after_hours"),
                outage_hours=outage.get("hours", 0))
        for name in ("malformed_every", "duplicate_every", "outage_hours"):
            v = getattr(s, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UserError(f"scenario {path}: {name} must be a whole number >= 0")
        if not isinstance(s.clock_unset_share, int | float) or not 0 <= s.clock_unset_share <= 1:
            raise UserError(f"scenario {path}: clock_unset_share must be between 0 and 1")
        if s.outage_after_hours is not None and (not isinstance(s.outage_after_hours, int)
                                                 or s.outage_after_hours < 0):
            raise UserError(f"scenario {path}: outage after_hours must be a whole number >= 0")
        return s


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
    held_by_outage: int = 0

    def merge(self, other: Planted) -> None:
        self.malformed.update(other.malformed)
        self.duplicates += other.duplicates
        self.clock_unset_devices |= other.clock_unset_devices
        self.clock_unset_records += other.clock_unset_records
        self.held_by_outage += other.held_by_outage

    def to_dict(self, scenario: Scenario) -> dict[str, Any]:
        return {"scenario": {k: v for k, v in vars(scenario).items()},
                "malformed": dict(sorted(self.malformed.items())),
                "duplicates": self.duplicates,
                "clock_unset": {"devices": len(self.clock_unset_devices),
                                "records_refused": self.clock_unset_records},
                "held_by_outage": self.held_by_outage}


# (topic, payload, the envelope for the truth or None when ingest must not count it)
Message = tuple[str, bytes, dict[str, Any] | None]


class Faults:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.planted = Planted()

    def clock_unset(self, device_id: str) -> bool:
        share = self.scenario.clock_unset_share
        return share > 0 and _draw(self.seed, "clock", device_id) < share

    def messages(self, topic: str, env: dict[str, Any]) -> list[Message]:
        """What the device sends for this envelope, faults planted."""
        s, dev = self.scenario, env["device_id"]
        counted: dict[str, Any] | None = env
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
