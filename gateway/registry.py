"""The device registry: who may connect to the broker, and as what.

Files in the registry directory:
  registry.json   devices (model, added/revoked/rotated time, last seen)
  services.json   service accounts with their secrets (mode 0600: services read them)
  passwd          mosquitto's password file, in the format mosquitto_passwd writes
  acl             mosquitto's ACL file, generated from the registry
  broker.pid      the running broker, which is sent SIGHUP after every change

A device's MQTT username is its device id. The ACL lets it publish only to
devices/<its id>/telemetry and devices/<its id>/status and subscribe only to
devices/<its id>/config; service accounts get what their job needs and no more.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError
from fleetpulse.files import write_replacing
from fleetpulse.ingest.contract import is_device_id

from .attributes import parse_at, record_changes

# mosquitto_passwd (2.x) format: $7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>.
# Written here because no maintained Python package produces it; it is a few lines of
# hashlib, and tests check it against the mosquitto_passwd binary.
_ITERATIONS = 101
_SALT_BYTES = 12

# Service account -> ACL lines. Shared subscriptions are checked by mosquitto against
# the topic filter after the $share/<group>/ prefix.
SERVICES: dict[str, list[str]] = {
    "fleetpulse-ingest": ["topic read devices/+/telemetry"],
    "fleetpulse-gateway": [
        "topic read devices/+/status",
        # the serial bridge speaks for wired devices; `firmware flash` waits for a new
        # device's first envelope
        "topic readwrite devices/+/telemetry",
        "topic readwrite devices/+/config",
        # `fleetpulse rollout run` sends each device its update and serves its files
        # chunk by chunk (docs/ota.md)
        "topic readwrite devices/+/update",
        "topic read devices/+/ota/req",
        "topic write devices/+/ota/chunk",
    ],
    # `fleetpulse record`: reads what it records, publishes nothing.
    "fleetpulse-recorder": ["topic read devices/#"],
    # `fleetpulse gateway provision`: hears claims' requests, answers with accounts.
    "fleetpulse-provisioner": ["topic read provision/+/request",
                               "topic write provision/+/response"],
    # For the simulator and tests only: one client publishing as a whole virtual fleet.
    "fleetpulse-simulator": ["topic write devices/+/telemetry", "topic write devices/+/status"],
}

_DEVICE_ACL = [
    "pattern write devices/%u/telemetry",
    "pattern write devices/%u/status",
    "pattern read devices/%u/config",
    "pattern read devices/%u/update",
    "pattern write devices/%u/ota/req",
    "pattern read devices/%u/ota/chunk",
]
# A claim account (username claim-<id>) may only ask for a device account and hear the
# answer, each on topics named by its own client id. Patterns apply to every user, so the
# claim's own section denies the device topics the patterns above would give it.
CLAIM_PREFIX = "claim-"
_CLAIM_ACL = [
    "pattern write provision/%c/request",
    "pattern read provision/%c/response",
]


class ClaimRefused(Exception):
    """A provisioning request the claim does not allow; the message goes to the device."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    _, seven, iterations, salt, digest = hashed.split("$")
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                              int(iterations))
    return seven == "7" and secrets.compare_digest(base64.b64encode(got).decode(), digest)


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Credentials:
    username: str
    password: str


class Registry:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()

    # -- files --------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """Whether init() made a registry here (its service accounts are written first)."""
        return (self.dir / "services.json").exists()

    @property
    def passwd_path(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.dir / "acl"

    @property
    def pid_path(self) -> Path:
        return self.dir / "broker.pid"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Every read-modify-write of the registry's files runs under one lock: the CLI,
        the presence service and the broker launcher change them from separate processes,
        and an unlocked writer would put back a stale copy (a revoked device re-enabled)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.dir / name).read_text())
        except FileNotFoundError:
            return {}

    def _write(self, name: str, data: object, mode: int = 0o644) -> None:
        write_replacing(self.dir / name, data if isinstance(data, str)
                        else json.dumps(data, indent=1, sort_keys=True), mode)

    def init(self) -> Registry:
        """Create the registry with service accounts, once; safe to call again."""
        with self._locked():
            self._init()
        return self

    def _init(self) -> None:
        services = self._read("services.json")
        changed = False
        for name in SERVICES:
            if name not in services:
                services[name] = new_secret()
                changed = True
        if changed:
            self._write("services.json", services, mode=0o600)
        if changed or not self.passwd_path.exists():
            self._render()

    def service(self, name: str) -> Credentials:
        secret = self._read("services.json").get(name)
        if secret is None:
            raise UserError(f"no service account {name!r} in {self.dir}: run "
                            "`fleetpulse devices list --registry DIR` to create the registry")
        return Credentials(name, secret)

    def devices(self) -> dict[str, dict[str, Any]]:
        return self._read("registry.json")

    # -- changes ------------------------------------------------------------------------

    def add(self, device_id: str, model: str | None = None,
            attributes: dict[str, str] | None = None) -> Credentials:
        if not is_device_id(device_id):
            raise UserError(f"{device_id!r} is not a valid device id (letters, digits, _ . -)")
        if device_id in SERVICES:
            raise UserError(f"{device_id!r} is the name of a service account")
        if device_id.startswith(CLAIM_PREFIX):
            raise UserError(f"{device_id!r}: ids starting with {CLAIM_PREFIX!r} are claim "
                            "accounts")
        with self._locked():
            self._init()  # only now: a refused id leaves even an empty directory alone
            devices = self.devices()
            if device_id in devices and not devices[device_id].get("revoked_at"):
                raise UserError(f"device {device_id} exists: use `devices rotate {device_id}` "
                                "for new credentials")
            secret = new_secret()
            now = _now()
            entry: dict[str, Any] = {"model": model, "attributes": {}, "added_at": now,
                                     "revoked_at": None, "rotated_at": None,
                                     "last_seen": None, "password_hash": hash_password(secret)}
            record_changes(entry, dict(attributes or {}), now)
            devices[device_id] = entry
            self._save(devices)
        return Credentials(device_id, secret)

    def enroll(self, models: dict[str, str]) -> dict[str, Credentials]:
        """Credentials for many devices (id -> model) in one write and one broker reload:
        new devices are added, devices already there (revoked or not) get new passwords.
        For simulated fleets, whose thousands of devices one add() each would rewrite the
        registry and reload the broker thousands of times."""
        bad = [d for d in models if not is_device_id(d) or d in SERVICES
               or d.startswith(CLAIM_PREFIX)]
        if bad:
            raise UserError(f"{bad[0]!r} cannot be a device id")
        out = {}
        with self._locked():
            self._init()
            devices = self.devices()
            now = _now()
            for device_id, model in models.items():
                secret = new_secret()
                entry = devices.get(device_id) or {"attributes": {}, "added_at": now,
                                                   "rotated_at": None, "last_seen": None}
                entry.update(model=model, revoked_at=None, password_hash=hash_password(secret))
                if device_id in devices:
                    entry["rotated_at"] = now
                devices[device_id] = entry
                out[device_id] = Credentials(device_id, secret)
            self._save(devices)
        return out

    def set_attributes(self, changes: dict[str, dict[str, str | None]],
                       at: str | None = None) -> int:
        """Change attributes of known devices (device -> name -> value, None removes) as
        of `at` (ISO time, default now), keeping the history; one write for all. Returns
        how many devices changed. Attributes are not credentials: the broker is left
        alone."""
        when = parse_at(at)
        with self._locked():
            devices = self.devices()
            unknown = sorted(set(changes) - set(devices))
            if unknown:
                more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
                raise UserError(f"no device {unknown[0]}{more} in {self.dir}: add it first "
                                "(`fleetpulse devices add ID`)")
            changed = sum(record_changes(devices[dev], attrs, when)
                          for dev, attrs in changes.items())
            if changed:
                self._write("registry.json", devices, mode=0o600)
        return changed

    def rotate(self, device_id: str) -> Credentials:
        with self._locked():
            devices = self._existing(device_id)
            secret = new_secret()
            devices[device_id].update(password_hash=hash_password(secret), rotated_at=_now())
            self._save(devices)
        return Credentials(device_id, secret)

    def verify(self, device_id: str, password: str) -> bool:
        """Whether `password` is the active device's current one (a board's config.json
        can be reused only while it still lets the device in)."""
        d = self.devices().get(device_id)
        return bool(d and not d.get("revoked_at") and check_password(password, d["password_hash"]))

    def entry(self, device_id: str) -> dict[str, Any] | None:
        """The device's record as stored, for put_entry to bring back."""
        return self.devices().get(device_id)

    def put_entry(self, device_id: str, entry: dict[str, Any] | None) -> None:
        """Put back a record taken with entry() (None: the device was not there), so a
        step that failed after registering leaves the registry as it found it."""
        with self._locked():
            devices = self.devices()
            if entry is None:
                devices.pop(device_id, None)
            else:
                devices[device_id] = entry
            self._save(devices)

    def revoke(self, device_id: str) -> None:
        with self._locked():
            devices = self._existing(device_id)
            devices[device_id]["revoked_at"] = _now()
            self._save(devices)

    # -- claims -------------------------------------------------------------------------

    def claims(self) -> dict[str, dict[str, Any]]:
        return self._read("claims.json")

    def create_claim(self, model: str | None, count: int, allow: list[str] | None = None,
                     prefix: str | None = None,
                     attributes: dict[str, str] | None = None) -> Credentials:
        """A claim for `count` devices (optionally only these serial numbers); its
        credentials, shown once, go into every board of the batch."""
        if count < 1:
            raise UserError("--count must be at least 1")
        prefix = prefix or model or "device"
        if not is_device_id(f"{prefix}-x"):
            raise UserError(f"--prefix {prefix!r} does not make valid device ids")
        with self._locked():
            self._init()
            claims = self.claims()
            claim_id = secrets.token_hex(4)
            secret = new_secret()
            claims[claim_id] = {"model": model, "count": count, "allow": allow,
                                "prefix": prefix, "attributes": dict(attributes or {}),
                                "created_at": _now(), "revoked_at": None,
                                "secret_hash": hash_password(secret), "devices": {}}
            self._write("claims.json", claims, mode=0o600)
            self._render()
            self.reload_broker()
        return Credentials(claim_id, secret)

    def revoke_claim(self, claim_id: str) -> None:
        """No new devices from this claim; the ones it provisioned keep their accounts."""
        with self._locked():
            claims = self.claims()
            if claim_id not in claims or claims[claim_id].get("revoked_at"):
                raise UserError(f"no active claim {claim_id} in {self.dir}")
            claims[claim_id]["revoked_at"] = _now()
            self._write("claims.json", claims, mode=0o600)
            self._render()
            self.reload_broker()

    def provision(self, claim_id: str, secret: str, serial: str) -> Credentials:
        """The account of the device with this serial number under the claim: created
        while the claim has room, or given a new password if the device asks again (its
        first answer was lost). ClaimRefused says why not."""
        with self._locked():
            claims = self.claims()
            c = claims.get(claim_id)
            if c is None or c.get("revoked_at") or not check_password(secret, c["secret_hash"]):
                raise ClaimRefused("unknown or revoked claim")
            if not isinstance(serial, str) or not is_device_id(f"{c['prefix']}-{serial}"):
                raise ClaimRefused("the serial number is not usable in a device id")
            if c.get("allow") is not None and serial not in c["allow"]:
                raise ClaimRefused(f"serial {serial} is not on the claim's allow-list")
            devices = self.devices()
            device_id = c["devices"].get(serial)
            if device_id is None and len(c["devices"]) >= c["count"]:
                raise ClaimRefused(f"the claim's {c['count']} devices are all provisioned")
            if device_id is None:
                device_id = f"{c['prefix']}-{serial}"
                known = devices.get(device_id)
                if known is not None and not known.get("revoked_at"):
                    raise ClaimRefused(f"device {device_id} exists outside this claim")
            elif devices.get(device_id, {}).get("revoked_at"):
                raise ClaimRefused(f"device {device_id} is revoked")
            password = new_secret()
            if device_id in devices:
                devices[device_id].update(password_hash=hash_password(password),
                                          rotated_at=_now())
            else:
                devices[device_id] = {"model": c.get("model"),
                                      "attributes": {**c.get("attributes", {}),
                                                     "claim": claim_id, "serial": serial},
                                      "added_at": _now(), "revoked_at": None,
                                      "rotated_at": None, "last_seen": None,
                                      "password_hash": hash_password(password)}
            c["devices"][serial] = device_id
            self._write("claims.json", claims, mode=0o600)
            self._save(devices)
        return Credentials(device_id, password)

    def touch(self, seen: dict[str, float]) -> None:
        """Record when devices were last seen (from presence, in batches). Only last_seen
        changes, on a copy read under the lock, so this never undoes a revoke."""
        with self._locked():
            devices = self.devices()
            changed = False
            for device_id, at in seen.items():
                if device_id in devices:
                    devices[device_id]["last_seen"] = _iso(at)
                    changed = True
            if changed:
                self._write("registry.json", devices, mode=0o600)

    def _existing(self, device_id: str) -> dict[str, dict[str, Any]]:
        devices = self.devices()
        self.require_active(device_id, devices)
        return devices

    def require_active(self, device_id: str,
                       devices: dict[str, dict[str, Any]] | None = None) -> None:
        """UserError unless `device_id` is registered and not revoked, saying what to do."""
        d = (self.devices() if devices is None else devices).get(device_id)
        if d is None:
            raise UserError(f"no device {device_id} in the registry at {self.dir}: add it "
                            f"with `fleetpulse devices add {device_id}` (`fleetpulse devices "
                            "list` shows them)")
        if d.get("revoked_at"):
            raise UserError(f"device {device_id} was revoked at {d['revoked_at']}, so the "
                            f"broker refuses it: `fleetpulse devices add {device_id}` lets it "
                            "in again with new credentials")

    def _save(self, devices: dict[str, dict[str, Any]]) -> None:
        # password hashes: readable by the gateway's own user only
        self._write("registry.json", devices, mode=0o600)
        self._render()
        self.reload_broker()

    def _render(self) -> None:
        """Regenerate mosquitto's password and ACL files from the registry."""
        services = self._read("services.json")
        lines = [f"{name}:{hash_password(secret)}" for name, secret in sorted(services.items())]
        lines += [f"{d}:{info['password_hash']}" for d, info in sorted(self.devices().items())
                  if not info.get("revoked_at")]
        claims = {c: info for c, info in sorted(self.claims().items())
                  if not info.get("revoked_at")}
        lines += [f"{CLAIM_PREFIX}{c}:{info['secret_hash']}" for c, info in claims.items()]
        self._write("passwd", "\n".join(lines) + "\n", mode=0o600)
        acl = ["# Generated by fleetpulse from registry.json: do not edit.", ""]
        for name, rules in SERVICES.items():
            acl += [f"user {name}", *rules, ""]
        for c in claims:
            acl += [f"user {CLAIM_PREFIX}{c}", "topic deny devices/#", ""]
        acl += ["# Every device: its own topics only (the username is the device id).",
                *_DEVICE_ACL, "",
                "# Claims: ask for an account, hear the answer (the client id names both).",
                *_CLAIM_ACL, ""]
        self._write("acl", "\n".join(acl))

    def reload_broker(self) -> bool:
        """SIGHUP the running broker: it rereads the password and ACL files."""
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, signal.SIGHUP)
            return True
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False


def _now() -> str:
    return _iso(time.time())


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
