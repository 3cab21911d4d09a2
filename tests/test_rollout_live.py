"""Rollouts over the live simulator: 300 devices, each its own MQTT connection taking the
updates `rollout run`'s sender publishes, their telemetry through a real ingest into
Parquet, and the guard reading it back, at every look, through the analytics' SQL.

The fleet's clock runs 7200 times real time; the rollout looks at the fleet's time (the
newest record in the dataset), as the service looks at the wall clock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.gateway.rollout import Plan, RolloutStore
from fleetpulse.gateway.rollout_service import MqttSender, look
from fleetpulse.ingest.process import IngestProcess

DEVICES = 300
SPEED = 7200  # a virtual day in 12 s
OLD = "1.4.0"  # what the live simulator's devices run


def fleet_now(data: Path) -> datetime | None:
    """The fleet's virtual time: its newest record stored."""
    try:
        con = connect(data)
    except Exception:  # no files yet
        return None
    try:
        (ts,) = con.execute("SELECT max(ts) FROM readings").fetchone()
    finally:
        con.close()
    return None if ts is None else ts.astimezone(UTC)


@pytest.fixture
def live_setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    broker = Broker(free_port(), tmp_path / "broker")
    with broker:
        cred = broker.credentials("fleetpulse-ingest")
        ingest = IngestProcess(broker.address, tmp_path / "data", client_id="ingest-live",
                               extra_args=["--flush-seconds", "0.3"],
                               credentials=(cred.username, cred.password)).start()
        ingest.wait_subscribed()
        try:
            yield broker, ingest
        finally:
            ingest.kill()


def run_live_rollout(broker: Broker, data: Path, tmp_path: Path, new: str, crash_loop: bool,
                     stages: list[float], settled: Callable[[], bool]
                     ) -> tuple[RolloutStore, str]:
    """Run the live fleet and the rollout's looks until the rollout ends and `settled()`
    says its end reached the devices; then the fleet is stopped as Ctrl-C stops it."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(f'[crash_loop]\nfw = "{new}"\n' if crash_loop else "")
    sim = subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "simulate", "--live", "--provision",
         "--broker", broker.address, "--registry", str(broker.registry.dir),
         "--devices", str(DEVICES), "--seed", "3", "--speed", str(SPEED),
         "--duration", "90",
         "--scenario", str(scenario), "--truth", str(tmp_path / "truth.json"),
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    gw = broker.credentials("fleetpulse-gateway")
    sender = MqttSender(broker.host, broker.port, gw.username, gw.password)
    store = RolloutStore(tmp_path / "rollouts")
    try:
        start = wait_until("the fleet's first records stored", lambda: fleet_now(data), 60)
        plan = Plan(version=new, previous=OLD, release={"files": []}, stages=stages,
                    soak_s=86400.0, model="sim-live", auto_rollback=True)
        rollout = store.start(plan, int(start.timestamp() * 1000))
        # a look every real second: every 2 virtual hours
        while sim.poll() is None and rollout.state == "running":
            now = fleet_now(data)
            assert now is not None
            (rollout,) = look(store, broker.registry, str(data), sender, now=now) or [rollout]
            time.sleep(1)
        wait_until("the rollout's end reached the devices", settled, 60)
        sim.send_signal(signal.SIGINT)
        out, _ = sim.communicate(timeout=120)
    finally:
        sender.close()
        if sim.poll() is None:
            sim.kill()
    assert sim.returncode == 0, out
    return store, out


def versions_at_the_end(data: Path) -> Counter:
    con = connect(data)
    rows = con.execute("SELECT device_id, arg_max(fw, ts) FROM readings GROUP BY 1").fetchall()
    return Counter(fw for _, fw in rows)


def test_live_fleet_bad_release_halts_at_the_first_stage_and_rolls_back(
        live_setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker, ingest = live_setup

    def back_on_old() -> bool:
        return versions_at_the_end(ingest.data_dir) == {OLD: DEVICES}

    store, _ = run_live_rollout(broker, ingest.data_dir, tmp_path, "1.7.0", crash_loop=True,
                                stages=[0.1, 0.5, 1.0], settled=back_on_old)
    r = store.load("1.7.0")
    assert r.state == "halted" and r.stage == 0, r.history
    # crash-free days 1.0 against 0.0: every updated device crashed on every day
    assert "halted at stage 1 (10%): crash_free 1.0000 on the old version vs 0.0000 on the " \
           "new" in r.history[-2]["what"]
    stage1 = {f"sim-{i:05d}" for i in range(DEVICES) if r.in_stage(f"sim-{i:05d}", 0)}
    assert set(r.sent) == stage1 == set(r.rolled_back) and 10 <= len(stage1) < 60
    # what the devices reported: only the first stage took 1.7.0, and all of them went back
    con = connect(ingest.data_dir)
    took = {d for (d,) in con.execute(
        "SELECT DISTINCT device_id FROM events WHERE fw = '1.7.0'").fetchall()}
    assert took == stage1
    n = len(stage1)
    assert con.execute("FROM rollout_progress()").fetchall() == [("1.7.0", n, n, n, n)]


def test_live_fleet_same_code_under_a_new_version_goes_to_every_device(
        live_setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A/A: the release is the same code, so it is also the good release."""
    broker, ingest = live_setup

    def all_on_new() -> bool:
        return versions_at_the_end(ingest.data_dir) == {"1.7.1": DEVICES}

    store, _ = run_live_rollout(broker, ingest.data_dir, tmp_path, "1.7.1", crash_loop=False,
                                stages=[0.1, 1.0], settled=all_on_new)
    r = store.load("1.7.1")
    assert r.state == "completed", r.history
    assert [h["what"].split(":")[0] for h in r.history] == [
        "started", "stage 2 (100%) started", "completed"]
    assert len(r.sent) == DEVICES and not r.rolled_back
    con = connect(ingest.data_dir)
    assert con.execute("FROM rollout_progress()").fetchall() == [
        ("1.7.1", DEVICES, DEVICES, DEVICES, 0)]
