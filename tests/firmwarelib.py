"""Helpers for the firmware-in-the-loop tests: a device on the sim board, booted in the
real MicroPython unix port against the test broker."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetpulse.analytics.dataset import connect
from fleetpulse.firmware.loop import command, prepare_flash
from fleetpulse.gateway.broker import Broker

ENVIRONMENT = {"temperature_c": [21.0, 2.0, 3600], "humidity_pct": [45.0, 5.0, 7200]}


def expected_value(spec: list[float], t_ms: int) -> float:
    """What the sim board's sensor reads at time t (hw/sim.py's formula)."""
    base, amp, period = spec
    return round(base + amp * math.sin(2 * math.pi * (t_ms / 1000) / period), 2)


@dataclass
class SimDevice:
    broker: Broker
    root: Path
    device_id: str
    settings: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    password: str = ""
    tls: bool = False  # connect to the broker's TLS listener, trusting its CA
    romfs: Path | None = None  # run the modules from this ROMFS image, mounted at /rom
    keepalive: int = 30

    def __post_init__(self) -> None:
        self.flash = self.root / "flash"
        self.password = self.broker.registry.add(self.device_id).password
        self.write()

    @property
    def config(self) -> dict[str, Any]:
        mqtt = {"host": self.broker.host, "port": self.broker.port,
                "username": self.device_id, "password": self.password, "keepalive": self.keepalive}
        if self.tls:
            mqtt.update(host="localhost", port=self.broker.tls_port, tls=True, ca="ca.crt")
        return {"device_id": self.device_id, "mqtt": mqtt, "settings": self.settings}

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.json").write_text(json.dumps(self.config))
        sc = {"environment": ENVIRONMENT, **self.scenario}
        (self.root / "scenario.json").write_text(json.dumps(sc))
        prepare_flash(self.flash, self.root / "config.json")
        if self.tls:
            shutil.copyfile(self.broker.certs / "ca.crt", self.flash / "ca.crt")

    def run(self, timeout: float = 120, must_connect: bool = True) -> str:
        """`fleetpulse firmware run` until the scenario ends (deep sleeps included); unless
        told otherwise, a run that never reaches the broker fails."""
        proc = subprocess.run(
            [sys.executable, "-m", "fleetpulse", "firmware", "run",
             "--scenario", str(self.root / "scenario.json"), "--flash", str(self.flash),
             *(["--romfs", str(self.romfs)] if self.romfs else []),
             *(["--timeout", str(timeout / 2)] if must_connect else [])],
            capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def start(self) -> subprocess.Popen:
        """The MicroPython process itself, for tests that kill it."""
        argv, env = command(self.flash, self.root / "scenario.json")
        return subprocess.Popen(argv, cwd=self.flash, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)


def rows(data: Path, table: str, device_id: str) -> list[dict[str, Any]]:
    con = connect(data)
    try:
        cur = con.execute(f"SELECT * FROM {table} WHERE device_id = ? ORDER BY ts, boot, seq, idx",
                          [device_id])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def raw_count(data: Path, table: str, device_id: str) -> tuple[int, int]:
    """(rows stored, distinct record identities) for one device."""
    con = connect(data)
    try:
        return con.execute(
            f"SELECT count(*), count(DISTINCT (boot, seq, idx)) FROM {table}_raw "
            "WHERE device_id = ?", [device_id]).fetchone()
    finally:
        con.close()
