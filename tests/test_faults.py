"""Faults planted from a scenario file: what the truth file says was planted is what
ingest counts (refusals by reason, dropped re-sends, refused records), and the dataset
still equals the truth's accepted part. Real broker, real ingest process."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from conftest import fleet_credentials, ingest_credentials

from fleetpulse.analytics.dataset import connect
from fleetpulse.errors import UserError
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess
from fleetpulse.simulators.faults import Faults, Scenario
from fleetpulse.simulators.fleet import Fleet
from fleetpulse.simulators.simulate import simulate

SCENARIO = """
malformed_every = 15
duplicate_every = 10
clock_unset_share = 0.1

[clock_skew]
share = 0.1
hours = -30

[crash_loop]
fw = "1.4.0"

[outage]
after_hours = 20
hours = 10
"""


def scenario(tmp_path: Path, text: str = SCENARIO) -> Scenario:
    path = tmp_path / "faults.toml"
    path.write_text(text)
    return Scenario.load(path)


def test_planted_faults_are_what_ingest_counts(tmp_path: Path) -> None:
    with Broker(free_port(), tmp_path / "broker") as broker:
        ingest = IngestProcess(broker.address, tmp_path / "data", client_id="faults-ingest",
                               extra_args=["--flush-seconds", "0.3"],
                               log_path=tmp_path / "ingest.log",
                               credentials=ingest_credentials(broker)).start()
        try:
            ingest.wait_subscribed()
            user, password = fleet_credentials(broker)
            truth = simulate(broker.host, broker.port, devices=40, days=4, seed=5,
                             truth_path=tmp_path / "truth.json", progress=False,
                             username=user, password=password, workers=2,
                             scenario=scenario(tmp_path))
            planted = truth["planted"]["faults"]
            sent = (truth["messages"] + planted["duplicates"] + sum(planted["malformed"].values())
                    + _clock_unset_messages(tmp_path))
            stats = ingest.wait_messages(sent, timeout=120)
            assert ingest.stop() == 0
        finally:
            ingest.kill()
    stats = ingest.stats()
    assert all(planted["malformed"].get(k, 0) > 0 for k in ("bad_json", "bad_type",
                                                            "unsupported_version"))
    assert planted["duplicates"] > 0 and planted["held_by_outage"] > 0
    assert planted["clock_unset"]["records_refused"] > 0
    assert planted["clock_skew_devices"] > 0 and planted["crash_loop_reboots"] > 0
    refused = stats["rejected_by_reason"]
    assert {k: refused.get(k, 0) for k in planted["malformed"]} == planted["malformed"]
    assert refused.get("bad_time", 0) == planted["clock_unset"]["records_refused"]
    assert stats["duplicates"] == planted["duplicates"]
    assert stats["messages"] == sent
    con = connect(tmp_path / "data")
    try:
        readings, events = con.execute(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events)").fetchone()
        dau = {str(d): n for d, n in con.execute("SELECT day, dau FROM active_devices()")
               .fetchall()}
        health = {fw: {"devices": n, "crash_free_devices": ok} for fw, n, ok in con.execute(
            "SELECT segment, devices, crash_free_devices FROM fleet_health()").fetchall()}
    finally:
        con.close()
    assert (readings, events) == (truth["readings"], truth["events"])
    assert dau == {d: v["active_devices"] for d, v in truth["days"].items() if v["active_devices"]}
    # the looping firmware: every device that sent on it crashed
    assert health == truth["fleet_health"]
    assert health["1.4.0"]["crash_free_devices"] == 0


def _clock_unset_messages(tmp_path: Path) -> int:
    """Envelopes of clock-unset devices: sent, not in the truth's messages."""
    t = json.loads((tmp_path / "truth.json").read_text())
    faults = Faults(scenario(tmp_path), t["seed"])
    return sum(1 for _, envs in Fleet(t["devices"], t["days_simulated"], t["seed"],
                                      date.fromisoformat(t["start"])).hours()
               for dev, _ in envs if faults.clock_unset(dev))


def test_the_same_faults_whatever_the_number_of_workers(tmp_path: Path) -> None:
    def planted(parts: int) -> dict:
        out = Faults(scenario(tmp_path), 5)
        for k in range(parts):
            f = Faults(scenario(tmp_path), 5)
            for _, envs in Fleet(30, 2, 5, date(2026, 1, 1), part=(k, parts)).hours():
                for dev, env in envs:
                    f.messages(f"devices/{dev}/telemetry", env)
            out.planted.merge(f.planted)
        return out.planted.to_dict(out.scenario)

    assert planted(1) == planted(3)


@pytest.mark.parametrize("text, words", [
    ("typo_every = 3", "unknown fault 'typo_every'"),
    ("duplicate_every = -1", "duplicate_every must be a whole number"),
    ("clock_unset_share = 2", "clock_unset_share must be between 0 and 1"),
    ("[outage]\nat = 3", "[outage] takes after_hours and hours"),
    ("[clock_skew]\nshare = 0.1\nhours = 24", "clock_skew hours must be from -720"),
    ("malformed_every = ", "cannot read the scenario"),
    ("[[cause]]\nkind = \"usage\"\nfactor = 2\nwhere = {hw = \"x\"}",
     "factor must be a number >= 0"),
    ("[[cause]]\nkind = \"mood\"\nfactor = 1\nwhere = {hw = \"x\"}", "kind must be one of"),
    ("[[cause]]\nkind = \"crashes\"\nfactor = 2\nwhere = {city = \"x\"}",
     "where names devices by hw, fw, region, humidity"),
    ("[[cause]]\nkind = \"crashes\"\nfactor = 2\nwhere = {humidity = \"high\"}",
     "humidity is a 10 % band"),
    ("stationary = 1", "stationary is true or false"),
])
def test_a_wrong_scenario_is_one_clear_error(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")):
        scenario(tmp_path, text)


CAUSES = """
stationary = true

[[cause]]
kind = "crashes"
factor = 100
from_day = 2
where = {hw = "purifier-esp32", fw = "1.5.0"}

[[cause]]
kind = "usage"
factor = 0.2
from_day = 2
where = {region = "us-east"}

[[cause]]
kind = "connectivity"
factor = 0.5
from_day = 2
where = {humidity = "60-70 %"}
"""


def test_planted_causes_through_the_broker_are_the_offline_fleets(tmp_path: Path) -> None:
    """`simulate` with causes over two workers and the broker keeps the same truth,
    counterfactual included, as the fleet written offline (one process)."""
    from fleetpulse.simulators.offline import write_dataset

    s = scenario(tmp_path, CAUSES)
    with Broker(free_port(), tmp_path / "broker") as broker:
        user, password = fleet_credentials(broker)
        truth = simulate(broker.host, broker.port, devices=60, days=4, seed=8,
                         progress=False, username=user, password=password, workers=2,
                         scenario=s, start=date(2026, 1, 5))
    offline = write_dataset(tmp_path / "data", 60, 4, 8, date(2026, 1, 5), stationary=True,
                            causes=s.causes)
    without = truth["without_causes"]
    assert without == offline["without_causes"]
    assert (truth["records"], truth["days"]) == (offline["records"], offline["days"])
    # the usage and connectivity causes took days of use and heartbeats away; the crash
    # cause added crashes: fewer devices crash in the counterfactual than in the truth
    assert sum(without["extra_active_device_days"].values()) > 0
    crashed = sum(h["devices"] - h["crash_free_devices"] for h in truth["fleet_health"].values())
    assert crashed > len(without["crash_days"])
    assert sum(without["extra_heartbeats"].values()) > 0
    assert truth["planted"]["causes"][0] == {
        "kind": "crashes", "factor": 100.0, "from_day": 2,
        "where": {"hw": "purifier-esp32", "fw": "1.5.0"}}
