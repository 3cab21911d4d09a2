"""Revoking a device while presence is busy writing last-seen times: the device stays
out, also after later changes to the registry regenerate mosquitto's files."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from fleetpulse.gateway.registry import Registry


def _presence_like(directory: str, until: float) -> int:
    """What the presence service does every second, as fast as it can."""
    reg = Registry(Path(directory))
    n = 0
    while time.time() < until:
        reg.touch({"victim": time.time(), "bystander": time.time()})
        n += 1
    return n


def test_revoke_while_presence_touches_stays_revoked(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg").init()
    reg.add("victim")
    reg.add("bystander")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        until = time.time() + 3.0
        touching = [pool.apply_async(_presence_like, (str(reg.dir), until)) for _ in range(2)]
        time.sleep(0.5)
        for _ in range(20):  # revoke, re-add and revoke again, racing the touches
            reg.revoke("victim")
            reg.add("victim")
        reg.revoke("victim")
        assert all(t.get(10) > 10 for t in touching), "presence did not run concurrently"
    reg.rotate("bystander")  # regenerates passwd from registry.json
    devices = reg.devices()
    assert devices["victim"]["revoked_at"] and devices["victim"]["last_seen"]
    users = [line.split(":")[0] for line in reg.passwd_path.read_text().splitlines()]
    assert "victim" not in users and "bystander" in users
