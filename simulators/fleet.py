"""A deterministic virtual fleet that produces contract-v1 envelopes hour by hour.

Every device draws its whole life (hardware, activation day, how often it is used,
which features it adopts and when, churn, firmware upgrade) from its own RNG seeded by
(seed, device index), so the fleet is the same on every run with the same arguments,
whatever order or speed it is published in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from statistics import NormalDist
from typing import Any

from fleetpulse.analytics.assignment import variant

from .causes import Cause

DEFAULT_START = date(2026, 1, 1)  # fixed, so a seed gives the same fleet on every run
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

HARDWARE = {"thermostat-esp32": 0.5, "purifier-esp32": 0.3, "plug-picow": 0.2}
# Where a device is (a registry attribute, not something it reports): region -> share.
REGIONS = {"eu-west": 0.4, "eu-north": 0.3, "us-east": 0.3}
# Feature -> share of devices that ever adopt it.
FEATURES = {
    "eco_mode": 0.7,
    "schedule": 0.5,
    "boost": 0.3,
    "night_mode": 0.2,
    "voice_control": 0.06,
}
FIRMWARE_OLD, FIRMWARE_NEW = "1.4.0", "1.5.0"
# Planted truths the analytics tests look for:
# - an experiment whose variant B raises eco_mode adoption by a known amount,


@dataclass(frozen=True)
class Experiment:
    key: str = "eco_nudge"
    feature: str = "eco_mode"
    share_b: float = 0.5
    adoption_a: float = 0.70
    adoption_b: float = 0.85

    @property
    def effect(self) -> float:
        return round(self.adoption_b - self.adoption_a, 6)


EXPERIMENT = Experiment()
# - an experiment key nothing depends on (A/A),
AA_KEY = "aa_check"
# - a firmware that crashes (an unhandled exception or a watchdog timeout, reported by
#   the next boot's power_on as real boards do) twenty times as often as the old one.
CRASHES_PER_HOUR = {FIRMWARE_OLD: 0.0005, FIRMWARE_NEW: 0.01}
# A stationary fleet (an A/A fleet, or one whose only change is a planted cause) has
# both versions crash alike, and rarely (2.6% of devices in 11 days): the chance part
# of a crash-free share's change is then small beside a planted cause's.
STATIONARY_CRASHES_PER_HOUR = {FIRMWARE_OLD: 0.0001, FIRMWARE_NEW: 0.0001}
# Relative chance that a usage session starts in each hour of the (UTC) day:
# a morning and an evening peak, little at night.
HOURLY_RHYTHM = [1, 1, 1, 1, 1, 2, 5, 9, 8, 4, 3, 3, 4, 3, 3, 3, 4, 6, 9, 10, 9, 6, 3, 2]
CRASH_ERRORS = ("MemoryError: memory allocation failed, allocating 4096 bytes",
                "OSError: [Errno 12] ENOMEM", "KeyError: 'target_temp_c'")


@dataclass
class Device:
    device_id: str
    hw: str
    activation_day: int
    use_probability: float
    base_temp_c: float
    features: dict[str, int]  # feature -> first day it may be used
    variant: str  # in the EXPERIMENT
    churn_day: int | None
    churn_mode: str | None  # "idle" (still reports, unused) or "unplugged" (silent)
    upgrade_day: int | None
    rng: random.Random = field(repr=False)
    region: str = "eu-west"
    humidity_pct: float = 45.0  # the room's mean relative humidity
    crash_rates: dict[str, float] = field(default_factory=lambda: CRASHES_PER_HOUR)
    causes: tuple[Cause, ...] = ()  # the planted causes that name this device
    # (kind, device, day) where it did what it would not have done without the causes,
    # shared by the fleet's devices; None without causes
    notes: list[tuple[str, str, int]] | None = None
    boot: int = 1
    seq: int = 0
    fw: str = FIRMWARE_OLD
    uptime_s: int = 0
    session_hours: set[int] = field(default_factory=set)
    used: set[str] = field(default_factory=set)  # features used at least once
    # an update sent to the device (version, is a rollback), applied at its next hour
    update: tuple[str, bool] | None = None

    @property
    def aa_variant(self) -> str:
        return variant(AA_KEY, self.device_id)

    def plan(self) -> dict[str, Any]:
        return {
            "hw": self.hw,
            "activation_day": self.activation_day,
            "features": dict(sorted(self.features.items())),
            "churn_day": self.churn_day,
            "churn_mode": self.churn_mode,
            "upgrade_day": self.upgrade_day,
            "variant": self.variant,
            "attributes": {"region": self.region},
            "humidity_pct": round(self.humidity_pct, 2),
        }


def make_device(seed: int, index: int, days: int, stationary: bool = False) -> Device:
    rng = random.Random(f"fleetpulse:{seed}:{index}")
    device_id = f"sim-{index:05d}"
    group = variant(EXPERIMENT.key, device_id, EXPERIMENT.share_b)
    shares = dict(FEATURES)
    shares[EXPERIMENT.feature] = EXPERIMENT.adoption_b if group == "B" else EXPERIMENT.adoption_a
    hw = rng.choices(list(HARDWARE), weights=list(HARDWARE.values()))[0]
    activation = min(days - 1, int(rng.random() ** 1.6 * days * 0.8))
    features = {
        f: activation + rng.randint(0, 7) for f, share in shares.items() if rng.random() < share
    }
    churn_day = activation + rng.randint(3, max(3, 2 * days)) if rng.random() < 0.3 else None
    churn_mode = rng.choice(("idle", "unplugged")) if churn_day is not None else None
    upgrade_day: int | None = rng.randint(days // 3, days + days // 2)
    # drawn after everything above, so that they leave a seed's devices as they were
    region = rng.choices(list(REGIONS), weights=list(REGIONS.values()))[0]
    humidity = rng.uniform(30.0, 70.0)
    if stationary:
        # all there from day 0 and staying; half on the new firmware from its first hour
        activation, churn_day, churn_mode = 0, None, None
        features = {f: 0 for f in features}
        upgrade_day = 0 if rng.random() < 0.5 else None
    return Device(
        device_id=device_id,
        variant=group,
        hw=hw,
        activation_day=activation,
        use_probability=rng.uniform(0.45, 0.95),
        base_temp_c=rng.uniform(19.0, 24.0),
        features=features,
        churn_day=churn_day,
        churn_mode=churn_mode,
        upgrade_day=upgrade_day,
        rng=rng,
        region=region,
        humidity_pct=humidity,
        crash_rates=STATIONARY_CRASHES_PER_HOUR if stationary else CRASHES_PER_HOUR,
    )


def day_start_ms(start: date, day: int) -> int:
    return int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000) + (
        day * DAY_MS
    )


class Fleet:
    """The fleet, or with `part=(k, n)` its k-th of n interleaved parts (devices k, k+n,
    ...): each device draws from its own RNG, so the parts together send exactly what
    the whole fleet sends, and can be generated in parallel."""

    def __init__(self, devices: int, days: int, seed: int, start: date,
                 part: tuple[int, int] = (0, 1), stationary: bool = False,
                 causes: tuple[Cause, ...] = ()) -> None:
        self.days = days
        self.start = start
        k, n = part
        self.devices = [make_device(seed, i, days, stationary) for i in range(k, devices, n)]
        # what the devices did only because of the causes (or did not do), for the truth
        self.notes: list[tuple[str, str, int]] = []
        for d in self.devices:
            d.causes = tuple(c for c in causes if c.fits(d.hw, d.region, d.humidity_pct))
            if causes:
                d.notes = self.notes

    def hours(self) -> Iterator[tuple[int, list[tuple[str, dict[str, Any]]]]]:
        """Yield (day, [(device_id, envelope), ...]) for every virtual hour in order."""
        for day in range(self.days):
            for hour in range(24):
                yield day, self.hour(day, hour)

    def hour(self, day: int, hour: int) -> list[tuple[str, dict[str, Any]]]:
        """[(device_id, envelope), ...] of one virtual hour; hours go in order."""
        t0 = day_start_ms(self.start, day)
        if hour == 0:
            for d in self.devices:
                _plan_day(d, day)
        out = []
        for d in self.devices:
            env = _device_hour(d, day, hour, t0 + hour * HOUR_MS)
            if env is not None:
                out.append((d.device_id, env))
        return out


# The daily temperature wave (peak at 15:00 UTC) at each quarter hour: the same for every
# device, so computed once rather than twice per reading.
_DAILY_WAVE = [[math.sin(2 * math.pi * ((hour + quarter / 4) - 9) / 24) for quarter in range(4)]
               for hour in range(24)]


# Standard-normal noise as 1024 equally likely quantiles, drawn with one getrandbits:
# the readings' noise costs a list index instead of random.gauss and a randint per
# reading (the bulk simulator's rate before and after: bench/RESULTS.md, "Cheaper
# readings").
_NOISE_BITS = 10
_NOISE = [NormalDist().inv_cdf((i + 0.5) / (1 << _NOISE_BITS)) for i in range(1 << _NOISE_BITS)]


def reading(rng: random.Random, t: int, base_temp_c: float, wave: float,
            humidity_pct: float = 45.0) -> dict[str, Any]:
    """One reading of a room following the daily `wave` (-1..1): temperature and
    humidity around the room's means with sensor noise, WiFi signal between -82 and -48
    dBm."""
    bits = rng.getrandbits(3 * _NOISE_BITS)
    return {
        "t": t,
        "type": "reading",
        # round(x * 100) / 100: two decimals as round(x, 2) gives (but for exact halves),
        # at half its cost
        "temperature_c": round((base_temp_c + 2.5 * wave + 0.3 * _NOISE[bits & 1023]) * 100) / 100,
        "humidity_pct": round((humidity_pct - 8 * wave + 1.5 * _NOISE[bits >> 10 & 1023]) * 10)
        / 10,
        "rssi_dbm": -82 + (bits >> 20) * 35 // 1024,
    }


def _caused(d: Device, kind: str, day: int) -> float | None:
    """The factor of the planted cause of this kind acting on the device now, if any."""
    for c in d.causes:
        if c.kind == kind and c.applies(d.fw, day):
            return c.factor
    return None


def _note(d: Device, kind: str, day: int) -> None:
    if d.notes is not None:
        d.notes.append((kind, d.device_id, day))


def _plan_day(d: Device, day: int) -> None:
    d.session_hours = set()
    if day < d.activation_day or (d.churn_day is not None and day >= d.churn_day):
        return
    p = d.use_probability
    r = d.rng.random()
    if d.causes and (cut := _caused(d, "usage", day)) is not None:
        # the same draw decides the day with and without the cause
        if p * cut <= r < p:
            _note(d, "active_without_causes", day)
        p *= cut
    if r < p:
        n = d.rng.choice((1, 1, 2, 2, 3))
        d.session_hours = set(d.rng.choices(range(24), weights=HOURLY_RHYTHM, k=n))


def _device_hour(d: Device, day: int, hour: int, t0: int) -> dict[str, Any] | None:
    if day < d.activation_day:
        return None
    if d.churn_mode == "unplugged" and d.churn_day is not None and day >= d.churn_day:
        if day == d.churn_day and hour == 0:
            return _envelope(d, t0, [{"t": t0 + 1000, "type": "event", "event": "power_off"}])
        return None
    rng = d.rng
    records: list[dict[str, Any]] = []
    if day == d.activation_day and hour == 0:
        records.append({"t": t0, "type": "event", "event": "power_on"})
        # The fleet's config carries both experiments; the firmware reports the variant
        # it applied for each (docs/experiments.md), before the device is ever used.
        for i, (key, var) in enumerate(((EXPERIMENT.key, d.variant), (AA_KEY, d.aa_variant))):
            records.append({"t": t0 + 1 + i, "type": "event", "event": "setting_changed",
                            "name": f"experiment.{key}", "value": var})
        d.uptime_s = 0
    if day == d.upgrade_day and hour == 3:
        d.update = (FIRMWARE_NEW, False)  # an over-the-air update, as the firmware takes it
    if d.update is not None:
        records += _apply_update(d, t0)
    extra = bool(records)  # events before the readings: the records need sorting
    base, humidity = d.base_temp_c, d.humidity_pct
    records += [reading(rng, t0 + quarter * 900_000, base, wave, humidity)
                for quarter, wave in enumerate(_DAILY_WAVE[hour])]
    if hour in d.session_hours:
        extra = True
        records.extend(_session(d, day, t0))
    rate = d.crash_rates[d.fw]
    u = rng.random()
    if d.causes and (times := _caused(d, "crashes", day)) is not None:
        # the same draw decides the hour with and without the cause
        if (u < rate) != (u < rate * times):
            _note(d, "crash_without_causes" if u < rate else "crash_by_causes", day)
        rate *= times
    if u < rate:
        extra = True
        # A crash: the reboot it causes reports it (a new boot, seq from 0), as the
        # firmware's power_on after an exception it noted or a watchdog timeout.
        at = t0 + rng.randint(0, 58) * 60_000
        if rng.random() < 0.75:
            records.append({"t": at + 30_000, "type": "event", "event": "power_on",
                            "reset_cause": "exception", "last_error": rng.choice(CRASH_ERRORS)})
        else:
            records.append({"t": at + 30_000, "type": "event", "event": "power_on",
                            "reset_cause": "watchdog"})
        d.boot += 1
        d.seq = 0
        d.uptime_s = 0
    d.uptime_s += 3600
    if d.causes and (lose := _caused(d, "connectivity", day)) is not None \
            and rng.random() < lose:
        _note(d, "heartbeat_lost", day)  # made, never received
    else:
        records.append({
            "t": t0 + 59 * 60_000 + 30_000, "type": "event", "event": "heartbeat",
            "uptime_s": d.uptime_s, "reconnects": 0,
            "free_mem": 80_000 + rng.getrandbits(15) * 40_000 // 32_768, "interval_s": 3600,
        })
    if extra:  # readings then the heartbeat are in time order already
        records.sort(key=_time)
    return _envelope(d, t0 + HOUR_MS - 1, records)


def _apply_update(d: Device, t0: int) -> list[dict[str, Any]]:
    """The update a rollout sent, as the firmware reports it (docs/ota.md): started and
    staged on the old version, the boot into the new one, applied, and confirmed once it
    is up; a rollback only boots the old version and says so. In the firmware the events
    before the reboot go in the old boot's envelopes; here they share the hour's envelope,
    under the new version."""
    assert d.update is not None
    version, rolled_back = d.update
    d.update = None
    old = d.fw
    # a rollback boots the version kept in the other slot: nothing to stage
    records = [] if rolled_back else [{"t": t0 + 1000, "type": "event",
                                       "event": "update_started", "name": version,
                                       "value": old}]
    d.boot += 1
    d.seq = 0
    d.fw = version
    d.uptime_s = 0
    return records + update_boot(t0 + 6000, version, old, rolled_back)


def update_boot(t: int, version: str, old: str, rolled_back: bool) -> list[dict[str, Any]]:
    """The records of a boot into `version` by an update (or a rollback from `old`), as
    the firmware makes them: power_on with reset cause update, then applied (or rolled
    back), and for an update its confirmation once it is up."""
    records = [{"t": t, "type": "event", "event": "power_on", "reset_cause": "update"},
               {"t": t + 1, "type": "event",
                "event": "update_rolled_back" if rolled_back else "update_applied",
                "name": version, "value": old}]
    if not rolled_back:
        records.append({"t": t + 54_000, "type": "event", "event": "update_confirmed",
                        "name": version, "value": old})
    return records


def _time(record: dict[str, Any]) -> int:
    return record["t"]


def _session(d: Device, day: int, t0: int) -> list[dict[str, Any]]:
    rng = d.rng
    minute = rng.randint(0, 30)
    out: list[dict[str, Any]] = [
        {"t": t0 + minute * 60_000, "type": "event", "event": "session_start"}
    ]
    for feature, first_day in d.features.items():
        # an adopted feature is used in the first session it is available, then often
        if day >= first_day and (feature not in d.used or rng.random() < 0.6):
            d.used.add(feature)
            for _ in range(rng.randint(1, 3)):
                minute = min(58, minute + rng.randint(0, 4))
                out.append({"t": t0 + minute * 60_000 + 1, "type": "event",
                            "event": "feature_used", "feature": feature})
    if rng.random() < 0.5:
        minute = min(58, minute + 1)
        out.append({"t": t0 + minute * 60_000 + 2, "type": "event", "event": "button_press",
                    "button": "main"})
    if rng.random() < 0.3:
        minute = min(58, minute + 1)
        out.append({"t": t0 + minute * 60_000 + 3, "type": "event", "event": "setting_changed",
                    "name": "target_temp_c", "value": round(rng.uniform(18, 24), 1)})
    out.append({"t": t0 + min(59, minute + 1) * 60_000, "type": "event", "event": "session_end"})
    return out


def _envelope(d: Device, sent_ms: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    env = {
        "v": 1, "device_id": d.device_id, "boot": d.boot, "seq": d.seq, "fw": d.fw, "hw": d.hw,
        "sent_ms": sent_ms, "records": records,
    }
    d.seq += 1
    return env
