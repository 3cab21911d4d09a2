"""`fleetpulse simulate --live`: 500 devices, each its own connection with its own
credentials, through the repository's mosquitto.conf (authentication and ACL on), ingest
and the presence service, all real processes.

One fleet run answers three questions in turn: do all devices come online (presence), do
they all show offline when their connections die without a goodbye (last wills), and
after a broker restart in the middle of a run does every journaled envelope arrive, with
the dataset's distinct records equal to the truth file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import ingest_credentials, wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess

DEVICES = 500


@pytest.fixture(scope="module")
def fleet_site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("live")
    broker = Broker(free_port(), root / "broker").start()
    data = root / "data"
    ingest = IngestProcess(broker.address, data, client_id="live-ingest",
                           extra_args=["--flush-seconds", "0.5", "--session-expiry", "300"],
                           log_path=root / "ingest.log", credentials=ingest_credentials(broker))
    gw = broker.credentials("fleetpulse-gateway")
    presence = subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "gateway", "presence", "--broker", broker.address,
         "--data", str(data), "--registry", str(broker.registry.dir)],
        env={**os.environ, "FLEETPULSE_MQTT_USERNAME": gw.username,
             "FLEETPULSE_MQTT_PASSWORD": gw.password},
        stdout=subprocess.DEVNULL, stderr=(root / "presence.log").open("w"))
    try:
        ingest.start().wait_subscribed()
        yield broker, data, root, ingest
    finally:
        presence.terminate()
        presence.wait(10)
        ingest.kill()
        broker.stop()


def live_fleet(broker: Broker, root: Path, duration: float, name: str,
               *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "simulate", "--live", "--provision",
         "--broker", broker.address, "--registry", str(broker.registry.dir),
         "--devices", str(DEVICES), "--speed", "120", "--duration", str(duration),
         "--truth", str(root / f"{name}.json"), "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=(root / f"{name}.log").open("w"), text=True)


def test_live_fleet_presence_wills_and_a_broker_restart(fleet_site) -> None:
    broker, data, root, ingest = fleet_site

    # 1. all online, then the process dies: no DISCONNECT, so the broker sends every will
    first = live_fleet(broker, root, duration=600, name="killed")
    try:
        wait_until("every device online", lambda: statuses(data) == {"online": DEVICES}, 90)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    wait_until("every device offline by its last will",
               lambda: statuses(data) == {"offline": DEVICES}, 60)

    # 2. a new run (new install ids, so nothing it sends looks like the killed run's),
    #    in two processes, with faults planted, and the broker restarted while it runs
    (root / "faults.toml").write_text(
        "malformed_every = 40\nduplicate_every = 20\nclock_unset_share = 0.02\n")
    refused_before = ingest.stats()["rejected_by_reason"]
    second = live_fleet(broker, root, 15, "restarted", "--scenario", str(root / "faults.toml"),
                        "--workers", "2")  # two processes, each half the devices
    wait_until("every device online again", lambda: statuses(data) == {"online": DEVICES}, 90)
    broker.stop()  # devices lose the broker and journal what they make meanwhile
    broker.start()
    # Some wills fire at the broker's shutdown, some devices are back before presence:
    # the view settles on every device online again.
    wait_until("every device shown online after the restart",
               lambda: statuses(data) == {"online": DEVICES}, 120)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, (root / "restarted.log").read_text()[-2000:]
    assert "every one acknowledged" in out
    truth = json.loads((root / "restarted.json").read_text())
    assert truth["devices"] == DEVICES and truth["messages"] > DEVICES
    # the simulator's own count: every device connected again after the restart
    assert all(p["connects"] >= 2 for p in truth["plan"].values())
    assert truth["sealed_offline"] > 0, "no envelope was journaled while the broker was away"

    # every record the broker acknowledged to the second run is stored, once, and no other
    want = (truth["readings"], truth["events"], truth["events_by_name"])
    got = wait_until("the second run's records stored",
                     lambda: (g := run_records(data, truth["plan"])) == want and g, 120)
    assert got == want
    # what the scenario planted is what ingest refused, by reason
    planted = truth["planted"]["faults"]
    assert sum(planted["malformed"].values()) > 0 and planted["clock_unset"]["records_refused"]
    refused = ingest.stats()["rejected_by_reason"]
    new = {k: refused.get(k, 0) - refused_before.get(k, 0) for k in refused}
    assert {k: new.get(k, 0) for k in planted["malformed"]} == planted["malformed"]
    assert new.get("bad_time", 0) == planted["clock_unset"]["records_refused"]
    wait_until("every device offline after its goodbye",
               lambda: statuses(data) == {"offline": DEVICES}, 60)


def statuses(data: Path) -> dict[str, int]:
    if not list(data.glob("presence/*/*.parquet")):
        return {}
    return dict(_query(data, "SELECT status, count(*) FROM devices "
                             "WHERE device_id LIKE 'sim-%' GROUP BY 1"))


def run_records(data: Path, plan: dict) -> tuple[int, int, dict[str, int]]:
    """Readings, events and events by name of the devices' installs in `plan`."""
    if not list(data.glob("events/*/*.parquet")):
        return (0, 0, {})
    run = pa.table({"device_id": list(plan), "iid": [p["iid"] for p in plan.values()]})
    con = connect(data)
    try:
        con.register("run", run)
        readings = con.execute("SELECT count(*) FROM readings JOIN run USING (device_id, iid)"
                               ).fetchone()[0]
        by_name = dict(con.execute("SELECT event, count(*) FROM events JOIN run "
                                   "USING (device_id, iid) GROUP BY 1").fetchall())
    finally:
        con.close()
    return readings, sum(by_name.values()), dict(sorted(by_name.items()))


def _query(data: Path, sql: str, params: list | None = None) -> list:
    con = connect(data)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_ctrl_c_sends_what_is_journaled_and_says_goodbye(fleet_site) -> None:
    """SIGINT to the command (as a kill -INT, which reaches only the parent of the worker
    processes): every device seals its batch, the broker acknowledges it, each sets its
    retained status to offline itself, and the truth file is written; exit 0."""
    import threading

    import paho.mqtt.client as mqtt

    broker, _, root, _ = fleet_site
    gw = broker.credentials("fleetpulse-gateway")
    status: dict[str, str] = {}
    seen = threading.Condition()

    def on_message(_c, _u, msg) -> None:
        with seen:
            status[msg.topic.split("/")[1]] = msg.payload.decode()
            seen.notify_all()

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ctrl-c-watcher")
    watcher.username_pw_set(gw.username, gw.password)
    watcher.on_message = on_message
    watcher.connect(broker.host, broker.port)
    watcher.subscribe("devices/+/status", qos=1)
    watcher.loop_start()
    n = 30
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetpulse", "simulate", "--live", "--provision",
             "--broker", broker.address, "--registry", str(broker.registry.dir),
             "--devices", str(n), "--workers", "2", "--truth", str(root / "ctrl-c.json"),
             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def all_are(state: str) -> bool:
            return sum(1 for d, s in status.items() if d < f"sim-{n:05d}" and s == state) == n

        with seen:
            assert seen.wait_for(lambda: all_are("online"), timeout=60), status
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        with seen:
            assert seen.wait_for(lambda: all_are("offline"), timeout=30), status
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    truth = json.loads((root / "ctrl-c.json").read_text())
    # every device had a batch at least (its power_on), sealed at the stop and acknowledged
    assert truth["events_by_name"]["power_on"] == n
    assert f"{truth['messages']:,} messages" in out
