"""Claim provisioning: one image and one claim for a batch; each board asks the
provisioning service for an account of its own and then reports as itself."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import wait_until

from fleetpulse.errors import UserError
from fleetpulse.firmware.loop import prepare_flash
from fleetpulse.gateway.broker import Broker
from fleetpulse.gateway.registry import ClaimRefused, Registry


def test_claim_rules_in_the_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry").init()
    claim = reg.create_claim("thermostat", 2)
    a = reg.provision(claim.username, claim.password, "A1")
    b = reg.provision(claim.username, claim.password, "B2")
    assert (a.username, b.username) == ("thermostat-A1", "thermostat-B2")
    assert reg.verify(a.username, a.password) and reg.verify(b.username, b.password)
    assert reg.devices()[a.username]["attributes"] == {"claim": claim.username, "serial": "A1"}
    # the same board again (its answer was lost): the same device, a new password
    again = reg.provision(claim.username, claim.password, "A1")
    assert again.username == a.username and reg.verify(a.username, again.password)
    assert not reg.verify(a.username, a.password)
    with pytest.raises(ClaimRefused, match="2 devices are all provisioned"):
        reg.provision(claim.username, claim.password, "C3")
    with pytest.raises(ClaimRefused, match="unknown or revoked claim"):
        reg.provision(claim.username, "guessed", "D4")
    listed = reg.create_claim("plug", 5, allow=["P1"], prefix="plug-eu")
    assert reg.provision(listed.username, listed.password, "P1").username == "plug-eu-P1"
    with pytest.raises(ClaimRefused, match="not on the claim's allow-list"):
        reg.provision(listed.username, listed.password, "P2")
    # the claim account is in mosquitto's files while the claim is active, and denied
    # the device topics the patterns would otherwise give it
    assert f"claim-{claim.username}:" in reg.passwd_path.read_text()
    assert f"user claim-{claim.username}\ntopic deny devices/#" in reg.acl_path.read_text()
    reg.revoke_claim(claim.username)
    with pytest.raises(ClaimRefused, match="unknown or revoked claim"):
        reg.provision(claim.username, claim.password, "A1")
    assert f"claim-{claim.username}:" not in reg.passwd_path.read_text()
    assert reg.verify(b.username, b.password)  # what it provisioned stays
    with pytest.raises(UserError, match="claim accounts"):
        reg.add("claim-sneaky")


def _telemetry_seen(broker: Broker) -> tuple[mqtt.Client, set[str]]:
    seen: set[str] = set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="prov-test-watch")
    cred = broker.credentials("fleetpulse-ingest")
    c.username_pw_set(cred.username, cred.password)
    subscribed = threading.Event()
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = lambda _c, _u, m: seen.add(m.topic.split("/")[1])
    c.connect(broker.host, broker.port)
    c.subscribe("devices/+/telemetry", qos=1)
    c.loop_start()
    assert subscribed.wait(10)
    return c, seen


def _claim_client(broker: Broker, claim_id: str, secret: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="prov-Z9",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(f"claim-{claim_id}", secret)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_one_image_one_claim_distinct_devices_with_the_firmware(
        broker: Broker, tmp_path: Path) -> None:
    reg = broker.registry
    claim = reg.create_claim("thermostat-batch7", 2)
    service = subprocess.Popen([sys.executable, "-m", "fleetpulse", "gateway",
                                "provision", "--broker", broker.address,
                                "--registry", str(reg.dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch, seen = _telemetry_seen(broker)
    probe = _claim_client(broker, claim.username, claim.password)
    try:
        # the service is up once it answers (a request with a wrong secret: no device)
        answers: list[dict] = []
        probe.on_message = lambda _c, _u, m: answers.append(json.loads(m.payload))
        probe.subscribe("provision/prov-Z9/response", qos=1)

        def ask() -> bool:
            probe.publish("provision/prov-Z9/request",
                          json.dumps({"claim": claim.username, "secret": "wrong",
                                      "serial": "Z9"}), qos=1)
            return bool(answers)
        wait_until("the provisioning service to answer", ask, timeout=20, interval=0.5)
        assert answers[0] == {"error": "unknown or revoked claim"}

        # the claim account itself cannot publish telemetry, as itself or as a device
        acks: dict[int, int] = {}
        probe.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, reason.value)
        mids = [probe.publish(f"devices/claim-{claim.username}/telemetry", b"{}", qos=1).mid,
                probe.publish("devices/thermostat-batch7-A1/telemetry", b"{}", qos=1).mid]
        wait_until("both publishes answered", lambda: set(mids) <= set(acks), timeout=10)
        assert [acks[m] for m in mids] == [135, 135]  # Not authorized

        # one image: the same config.json on every board, only the chip id differs
        image = tmp_path / "config.json"
        image.write_text(json.dumps({
            "claim": {"id": claim.username, "secret": claim.password},
            "mqtt": {"host": broker.host, "port": broker.port},
            "settings": {"sample_s": 5}}))
        outputs = {}
        for serial in ("A1", "B2", "C3"):
            root = tmp_path / serial
            root.mkdir()
            prepare_flash(root / "flash", image)
            (root / "scenario.json").write_text(json.dumps(
                {"serial": serial, "speed": 10, "duration_s": 40}))
            r = subprocess.run([sys.executable, "-m", "fleetpulse", "firmware",
                                "run", "--scenario", str(root / "scenario.json"),
                                "--flash", str(root / "flash")],
                               capture_output=True, text=True, timeout=120)
            outputs[serial] = r.stdout + r.stderr
        for serial in ("A1", "B2"):
            out = outputs[serial]
            assert f"provisioned as thermostat-batch7-{serial}" in out, out
            assert "all acknowledged" in out, out
            ident = json.loads((tmp_path / serial / "flash" / "identity.json").read_text())
            assert reg.verify(ident["device_id"], ident["password"])
        wait_until("both devices' telemetry, each as itself",
                   lambda: {"thermostat-batch7-A1", "thermostat-batch7-B2"} <= seen, timeout=10)
        # the third board of a claim for two is refused, says so, and sends nothing
        assert "claim refused: the claim's 2 devices are all provisioned" in outputs["C3"]
        assert not (tmp_path / "C3" / "flash" / "identity.json").exists()
        assert "thermostat-batch7-C3" not in reg.devices() and "thermostat-batch7-C3" not in seen
    finally:
        probe.loop_stop()
        probe.disconnect()
        watch.loop_stop()
        watch.disconnect()
        service.terminate()
        service.wait(10)
