"""Staged rollouts: the plan and its state, the guard's statistics, its SQL, a simulated
fleet with planted releases, and the service over a real broker."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from conftest import fleetpulse, wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.experiments import confidence_sequence
from fleetpulse.analytics.rollout_guard import MIN_DEVICES, guard_rows, judge
from fleetpulse.errors import UserError
from fleetpulse.gateway.rollout import (
    Plan,
    Rollout,
    RolloutStore,
    change_state,
    parse_duration,
    parse_stages,
    step,
)
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.simulators.rollout_sim import run_rollout

START = date(2026, 11, 2)


def plan(**kw: object) -> Plan:
    args: dict = {"version": "1.6.0", "previous": "1.4.0", "release": {"files": []},
                  "stages": [0.05, 0.25, 0.5, 1.0], "soak_s": 86400.0}
    args.update(kw)
    return Plan(**args)


# -- the plan and its state ---------------------------------------------------------------


def test_stages_and_durations_parse_or_say_what_to_write() -> None:
    assert parse_stages("1%,5%,25%,50%,100%") == [0.01, 0.05, 0.25, 0.5, 1.0]
    assert parse_stages("10%,50%") == [0.1, 0.5, 1.0]  # every rollout that succeeds ends at all
    for bad in ("5%,1%", "0%", "150%", "five"):
        with pytest.raises(UserError):
            parse_stages(bad)
    assert parse_duration("6h") == 6 * 3600
    assert parse_duration("2d") == 2 * 86400
    assert parse_duration("90") == 90
    with pytest.raises(UserError):
        parse_duration("soon")


def test_a_device_stays_in_its_cohort_as_stages_grow() -> None:
    r = Rollout(plan(), started_ms=0)
    devices = [f"dev-{i}" for i in range(2000)]
    cohorts = [{d for d in devices if r.in_stage(d, s)} for s in range(4)]
    assert cohorts[0] <= cohorts[1] <= cohorts[2] <= cohorts[3] == set(devices)
    # about the planned shares of 2000 (binomial: within 4 standard deviations)
    for share, cohort in zip((0.05, 0.25, 0.5), cohorts, strict=False):
        assert abs(len(cohort) - 2000 * share) < 4 * math.sqrt(2000 * share * (1 - share))


def test_state_survives_a_restart_and_one_rollout_runs_at_a_time(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path)
    r = store.start(plan(auto_rollback=True), 1000)
    sent: list[tuple[str, dict]] = []
    step(r, 2000, ["a", "b"], [], lambda d, m: sent.append((d, m)))
    store.save(r)
    again = RolloutStore(tmp_path).load("1.6.0")
    assert again == r
    with pytest.raises(UserError, match=r"abort 1\.6\.0"):
        store.start(plan(version="1.7.0"), 3000)
    change_state(again, "pause", 4000)
    assert step(again, 5000, ["a", "b"], [], lambda d, m: sent.append((d, m))) is None
    with pytest.raises(UserError, match="paused"):
        change_state(again, "pause", 5000)
    change_state(again, "abort", 6000, lambda d, m: sent.append((d, m)))
    assert again.state == "aborted"
    assert [m for _, m in sent if m.get("rollback")] == [
        {"version": "1.4.0", "rollback": True}] * len(again.sent)
    with pytest.raises(UserError, match=r"no rollout of 9\.9\.9"):
        store.load("9.9.9")


# -- the guard ----------------------------------------------------------------------------


def rows_of(arm: str, values: list[tuple[int, int]]) -> list[dict]:
    """Per device (device_days, crash_days), heartbeats all received, no reboots."""
    return [{"device_id": f"{arm}-{i}", "arm": arm, "device_days": days, "crash_days": crashes,
             "crashes": crashes, "reboots": 0, "heartbeats": 24 * days,
             "expected_heartbeats": 24 * days} for i, (days, crashes) in enumerate(values)]


def test_guard_difference_and_sequence_by_hand() -> None:
    # control: 12 devices of 4 days, 2 of them with one crash day -> values 1 x10, 0.75 x2
    # updated: 10 devices of 2 days, 5 with one crash day -> values 1 x5, 0.5 x5
    control = rows_of("control", [(4, 0)] * 10 + [(4, 1)] * 2)
    updated = rows_of("updated", [(2, 0)] * 5 + [(2, 1)] * 5)
    v = judge(control + updated, ["crash_free"], tuning_n=22)
    g = v.results[0]
    assert g.control == pytest.approx((10 + 1.5) / 12)  # 0.9583
    assert g.updated == pytest.approx(0.75)
    # Welch: var(control) = 2 * (0.25 - 0.0417)^2 ... computed as the sample variances
    vc = np.var([1.0] * 10 + [0.75] * 2, ddof=1)  # 0.01136
    vu = np.var([1.0] * 5 + [0.5] * 5, ddof=1)  # 0.06944
    se = math.sqrt(vc / 12 + vu / 10)
    low, high, _ = confidence_sequence(0.75 - 11.5 / 12, se, 22, 0.05, tuning_n=22)
    assert (g.low, g.high) == pytest.approx((low, high))
    # -0.208 with se 0.089: the sequence (wider than a fixed-horizon interval, since it
    # may be looked at every hour) still holds zero
    assert low < 0 < high and not v.loss
    # twice the devices of each kind: the same means, the loss now clear
    v2 = judge(rows_of("control", [(4, 0)] * 40 + [(4, 1)] * 8)
               + rows_of("updated", [(2, 0)] * 20 + [(2, 1)] * 20), ["crash_free"],
               tuning_n=88)
    assert v2.loss and v2.results[0].high < 0
    assert "crash_free 0.9583 on the old version vs 0.7500 on the new" in v2.summary()


def test_guard_does_not_judge_small_arms_or_no_noise() -> None:
    few = judge(rows_of("control", [(4, 0)] * 30)
                + rows_of("updated", [(2, 2)] * (MIN_DEVICES - 1)), ["crash_free"])
    assert not few.loss and few.results[0].low is None
    assert few.summary() == f"not judged yet: {MIN_DEVICES - 1} devices in the smaller arm, " \
                            f"{MIN_DEVICES} needed"
    alike = judge(rows_of("control", [(4, 0)] * 30) + rows_of("updated", [(2, 0)] * 30),
                  ["crash_free"])
    assert not alike.loss and alike.results[0].low is None
    assert alike.summary() == "no clear loss: every device alike in both arms"
    # no noise and a difference: every updated device crashed on every day, no other did
    apart = judge(rows_of("control", [(4, 0)] * 30) + rows_of("updated", [(2, 2)] * 12),
                  ["crash_free"])
    assert apart.loss and (apart.results[0].low, apart.results[0].high) == (-1.0, -1.0)
    nothing_left = judge(rows_of("updated", [(2, 0)] * 30), ["crash_free"])
    assert nothing_left.summary() == "no control left: every device in scope is on the new " \
                                     "version"


def test_guard_rows_from_the_dataset_by_hand(tmp_path: Path) -> None:
    """Two devices, hand-made: one stays on 1.4.0, one is updated on the second day."""
    day = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
    h = 3_600_000
    pipe = Pipeline(tmp_path, "t")

    def send(dev: str, boot: int, seq: int, fw: str, records: list[dict]) -> None:
        env = {"v": 1, "device_id": dev, "boot": boot, "seq": seq, "fw": fw, "hw": "x",
               "sent_ms": records[-1]["t"], "records": records}
        pipe.handle(f"devices/{dev}/telemetry", orjson.dumps(env), env["sent_ms"])

    def beat(t: int) -> dict:
        return {"t": t, "type": "event", "event": "heartbeat", "uptime_s": 1, "reconnects": 0,
                "free_mem": 1, "interval_s": 3600}

    for dev in ("stay", "move"):
        send(dev, 1, 0, "1.4.0", [{"t": day, "type": "event", "event": "power_on"},
                                  *(beat(day + i * h + 1) for i in range(24))])
    # day 2: "stay" crashes once; "move" updates at 06:00 and crashes at 12:00 on 1.6.0
    send("stay", 2, 0, "1.4.0", [{"t": day + 26 * h, "type": "event", "event": "power_on",
                                  "reset_cause": "watchdog"}])
    send("move", 1, 1, "1.4.0", [beat(day + (24 + i) * h + 1) for i in range(6)])
    send("move", 2, 0, "1.6.0", [
        {"t": day + 30 * h, "type": "event", "event": "power_on", "reset_cause": "update"},
        {"t": day + 36 * h, "type": "event", "event": "power_on", "reset_cause": "exception"}])
    pipe.flush()
    con = connect(tmp_path)
    rows = guard_rows(con, "1.6.0", "1.4.0", date(2026, 11, 2),
                      datetime(2026, 11, 4, 0, 30, tzinfo=UTC))
    by = {r["device_id"]: r for r in rows}
    assert by["stay"]["arm"] == "control" and by["move"]["arm"] == "updated"
    assert (by["stay"]["device_days"], by["stay"]["crash_days"], by["stay"]["reboots"]) == (2, 1, 2)
    # "move" counts its day on 1.6.0 only: one device-day, its crash, and the crash's
    # reboot (the update's own boot is not one)
    assert (by["move"]["device_days"], by["move"]["crash_days"], by["move"]["reboots"]) == (1, 1, 1)
    # heartbeats over whole days only: "stay"'s second day (none of the 24 it expects),
    # nothing of "move", whose one day on 1.6.0 is its first
    assert (by["stay"]["heartbeats"], by["stay"]["expected_heartbeats"]) == (0, 24)
    assert (by["move"]["heartbeats"], by["move"]["expected_heartbeats"]) == (0, 0)
    # a look during the second day sees the first only: "move" is not updated yet there
    early = guard_rows(con, "1.6.0", "1.4.0", date(2026, 11, 2),
                       datetime(2026, 11, 3, 23, 0, tzinfo=UTC))
    assert {r["device_id"]: r["arm"] for r in early} == {"stay": "control", "move": "control"}


# -- simulated fleets ---------------------------------------------------------------------

OLD, BAD, GOOD = 0.0005, 0.05, 0.0002  # crashes per device-hour


@pytest.mark.parametrize("new_rate,expect", [(BAD, "halted"), (OLD, "completed"),
                                              (GOOD, "completed")],
                         ids=["bad release", "A/A", "good release"])
def test_simulated_fleet_rollout(tmp_path: Path, new_rate: float, expect: str) -> None:
    p = plan(auto_rollback=True)
    run = run_rollout(tmp_path / "data", tmp_path / "state", p, {"1.4.0": OLD, "1.6.0": new_rate},
                      devices=400, days=5 if expect == "completed" else 2, seed=11, start=START)
    r = run.rollout
    assert r.state == expect, r.history
    versions = Counter(run.versions().values())
    if expect == "halted":
        # at the first stage, with the guard's numbers; nobody outside it was sent anything
        assert r.stage == 0 and "halted at stage 1 (5%): crash_free" in r.history[-2]["what"]
        stage1 = {d.device_id for d in run.fleet.devices if r.in_stage(d.device_id, 0)}
        assert set(r.sent) == stage1 and len(stage1) >= 10
        assert {d for _, d, _ in run.sends} == stage1
        # auto-rollback: every updated device is back on 1.4.0, and said so
        assert set(r.rolled_back) == stage1 and versions == {"1.4.0": 400}
        con = connect(tmp_path / "data")
        n = len(stage1)
        assert con.execute("FROM rollout_progress()").fetchall() == [("1.6.0", n, n, n, n)]
        arms = dict(con.execute("SELECT arm, devices FROM rollout_guard('1.6.0', '1.4.0')"
                                ).fetchall())
        assert arms == {"control": 400 - n, "updated": n}
    else:
        assert versions == {"1.6.0": 400} and not r.rolled_back
        con = connect(tmp_path / "data")
        assert con.execute("FROM rollout_progress()").fetchall() == [("1.6.0", 400, 400, 400, 0)]
        assert r.history[-1]["what"].startswith("completed")
        assert [h["what"].split(":")[0] for h in r.history[:-1]] == [
            "started", "stage 2 (25%) started", "stage 3 (50%) started",
            "stage 4 (100%) started"]


# -- the service over a real broker -------------------------------------------------------


def test_cli_start_run_status_over_the_broker(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    pipe = Pipeline(data, "t")
    t0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
    reg = broker.registry
    creds = {}
    for i in range(30):
        device_id = f"ota-{tmp_path.name[-8:]}-{i}"
        creds[device_id] = reg.add(device_id, model="ota-test").password
        env = {"v": 1, "device_id": device_id, "boot": 1, "seq": 0,
               "fw": "1.5.0" if i < 20 else "1.4.0", "hw": "x", "sent_ms": t0,
               "records": [{"t": t0, "type": "event", "event": "power_on"}]}
        pipe.handle(f"devices/{device_id}/telemetry", orjson.dumps(env), t0)
    pipe.flush()
    release = tmp_path / "build"
    release.mkdir()
    (release / "manifest.json").write_text(json.dumps({
        "board": "esp32", "firmware_version": "1.6.0",
        "files": [{"path": "app.mpy", "bytes": 10, "sha256": "0" * 64}]}))
    common = ["--registry", str(reg.dir)]
    started = fleetpulse("rollout", "start", "--release", str(release), "--stages", "50%",
                         "--soak", "1d", "--model", "ota-test", "--data", str(data), *common)
    assert started.returncode == 0, started.stderr
    # 20 devices run 1.5.0, 10 run 1.4.0: the most common is the previous
    assert "over 30 devices on 1.5.0" in started.stderr
    again = fleetpulse("rollout", "start", "--release", str(release), "--model", "ota-test",
                       "--data", str(data), *common)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "abort 1.6.0" in again.stderr
    ran = fleetpulse("rollout", "run", "--once", "--broker", broker.address, "--data", str(data),
                     *common)
    assert ran.returncode == 0, ran.stderr
    status = json.loads(fleetpulse("rollout", "status", "--format", "json", "--data", str(data),
                                   *common).stdout)
    (s,) = status
    sent = s["sent"]
    assert s["state"] == "running" and s["stage"] == "1/2" and 0 < sent < 30
    # what the devices reported: nothing yet (none of them runs the firmware here)
    assert (s["applied"], s["confirmed"], s["rolled_back"]) == (0, 0, 0)
    # a device of the first stage hears its update, retained, with its own account
    store = RolloutStore(reg.dir / "rollouts")
    device_id = sorted(store.load("1.6.0").sent)[0]
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{device_id}")
    c.username_pw_set(device_id, creds[device_id])
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.connect(broker.host, broker.port)
    c.subscribe(f"devices/{device_id}/update", qos=1)
    c.loop_start()
    try:
        wait_until("the retained update", lambda: got, 10)
    finally:
        c.disconnect()
        c.loop_stop()
    assert json.loads(got[0]) == {"version": "1.6.0", "files": [
        {"path": "app.mpy", "bytes": 10, "sha256": "0" * 64}]}
    table = fleetpulse("rollout", "status", *common)
    assert "1.6.0" in table.stdout and "running" in table.stdout
    assert "history of 1.6.0" in table.stdout and "started: stage 1 (50%)" in table.stdout
    paused = fleetpulse("rollout", "pause", "1.6.0", *common)
    assert paused.returncode == 0 and "paused" in paused.stderr
    aborted = fleetpulse("rollout", "abort", "1.6.0", "--rollback", "--broker", broker.address,
                         *common)
    assert aborted.returncode == 0, aborted.stderr
    final = fleetpulse("rollout", "status", "1.6.0", "--format", "json", "--data",
                       str(tmp_path / "nowhere"), *common)
    assert "left out: no dataset at" in final.stderr
    done = json.loads(final.stdout)[0]
    assert done["state"] == "aborted" and done["sent_back"] == sent


def test_the_service_serves_a_running_rollouts_files_only(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`rollout run`'s chunk server: a device asks for a piece of a file of the running
    rollout's release and gets it with its hash; a file the manifest does not name, or a
    version no rollout runs, gets nothing."""
    import hashlib

    from fleetpulse.gateway.rollout_service import MqttSender, Serving

    release = tmp_path / "release"
    (release / "hw").mkdir(parents=True)
    body = bytes(range(256)) * 10
    (release / "hw" / "sim.mpy").write_bytes(body)
    (release / "secret.txt").write_text("not in the manifest")
    (release / "manifest.json").write_text(json.dumps({"firmware_version": "2.0.0", "files": [
        {"path": "hw/sim.mpy", "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}]}))
    r = Rollout(plan(version="2.0.0", release_dir=str(release)), started_ms=0)
    serving = Serving()
    serving.update([r])
    gw = broker.credentials("fleetpulse-gateway")
    sender = MqttSender(broker.host, broker.port, gw.username, gw.password)
    sender.serve(serving)
    device_id = f"chunk-{tmp_path.name[-8:]}"
    password = broker.registry.add(device_id).password
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
    c.username_pw_set(device_id, password)
    subscribed: list[int] = []
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.on_subscribe = lambda _c, _u, mid, _codes, _p: subscribed.append(mid)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        c.subscribe(f"devices/{device_id}/ota/chunk", qos=0)
        wait_until("the SUBACK", lambda: subscribed, 10)
        for ask in ("2.0.0 secret.txt 0 100", "1.9.0 hw/sim.mpy 0 100",
                    "2.0.0 hw/sim.mpy 1000 1024"):
            c.publish(f"devices/{device_id}/ota/req", ask, qos=1).wait_for_publish(10)
        wait_until("a chunk", lambda: got, 10)
    finally:
        c.disconnect()
        c.loop_stop()
        sender.close()
    head, data = got[0].split(b"\n", 1)
    assert data == body[1000:2024]
    assert head.decode() == f"hw/sim.mpy 1000 {hashlib.sha256(data).hexdigest()}"
    assert len(got) == 1  # the two requests before it were not answered


def test_scope_is_the_registered_devices_of_the_model_and_attributes(tmp_path: Path) -> None:
    from fleetpulse.gateway.registry import Registry
    from fleetpulse.gateway.rollout_service import scope_of

    reg = Registry(tmp_path / "registry")
    reg.add("a", model="thermo", attributes={"region": "eu-west"})
    reg.add("b", model="thermo", attributes={"region": "us-east"})
    reg.add("c", model="plug", attributes={"region": "eu-west"})
    reg.add("d", model="thermo", attributes={"region": "eu-west"})
    reg.revoke("d")
    assert scope_of(reg, plan(model="thermo", attrs={"region": "eu-west"})) == ["a"]
    assert scope_of(reg, plan(model="thermo")) == ["a", "b"]
    assert scope_of(reg, plan(attrs={"region": "eu-west"})) == ["a", "c"]
