"""Over-the-air updates, firmware in the loop: the real firmware in the MicroPython unix
port on the sim board, a real broker, the update's files served chunk by chunk by the
gateway's chunk server (gateway/ota_chunks.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from conftest import wait_until
from firmwarelib import SimDevice

from fleetpulse.firmware import FIRMWARE_DIR, board_modules
from fleetpulse.firmware.bundle import firmware_version
from fleetpulse.gateway.broker import Broker
from fleetpulse.gateway.ota_chunks import Release, answer

RUNNING = firmware_version()


def make_release(out: Path, version: str, crash_at_boot: bool = False) -> Release:
    """The sim board's modules as a release of `version` (sources: the unix port runs
    them as a board runs the .mpy files of `firmware build`)."""
    files = []
    for rel in board_modules("sim"):
        if rel == "main.py":
            continue
        data = (FIRMWARE_DIR / rel).read_bytes()
        if rel == "version.py":
            data = f'FW_VERSION = "{version}"\n'.encode()
        if rel == "app.py" and crash_at_boot:
            data += b'\nraise RuntimeError("bad release")\n'
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        files.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (out / "manifest.json").write_text(json.dumps({"firmware_version": version, "files": files}))
    return Release(out)


class Gateway:
    """The gateway's side for one device: its retained update, a chunk server that can
    spoil one answer, and the device's telemetry as it arrives."""

    def __init__(self, broker: Broker, device_id: str, release: Release,
                 spoil_answer: int | None = None) -> None:
        self.device_id = device_id
        self.release = release
        self.spoil = spoil_answer
        self.requests: list[tuple[str, int]] = []
        self.records: list[dict] = []  # every record, with the envelope's fw as "fw"
        self.on_record: list = []
        self.lock = threading.Lock()
        cred = broker.credentials("fleetpulse-gateway")
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{device_id}")
        self.c.username_pw_set(cred.username, cred.password)
        self.c.message_callback_add(f"devices/{device_id}/ota/req", self._request)
        self.c.message_callback_add(f"devices/{device_id}/telemetry", self._telemetry)
        self.c.connect(broker.host, broker.port)
        self.c.subscribe([(f"devices/{device_id}/ota/req", 0),
                          (f"devices/{device_id}/telemetry", 1)])
        self.c.loop_start()

    def send_update(self, message: dict) -> None:
        self.c.publish(f"devices/{self.device_id}/update", json.dumps(message), qos=1,
                       retain=True).wait_for_publish(10)

    def manifest(self) -> dict:
        return {"version": json.loads((self.release.directory / "manifest.json").read_text())[
            "firmware_version"], "files": list(self.release.files.values())}

    def _request(self, client, _u, m) -> None:  # type: ignore[no-untyped-def]
        out = answer(m.payload, lambda v: self.release)
        if out is None:
            return
        _, version_path, offset, _ = m.payload.decode().split(" ")
        self.requests.append((version_path, int(offset)))
        payload = out[1]
        if self.spoil is not None and len(self.requests) == self.spoil:
            payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])  # a flipped bit in transit
        client.publish(f"devices/{self.device_id}/ota/chunk", payload, qos=0)

    def _telemetry(self, _c, _u, m) -> None:  # type: ignore[no-untyped-def]
        env = json.loads(m.payload)
        with self.lock:
            for r in env["records"]:
                rec = {**r, "fw": env["fw"], "boot": env["boot"]}
                self.records.append(rec)
                for hook in self.on_record:
                    hook(rec)

    def events(self, name: str) -> list[dict]:
        with self.lock:
            return [r for r in self.records if r.get("event") == name]

    def close(self) -> None:
        self.c.publish(f"devices/{self.device_id}/update", b"", retain=True).wait_for_publish(10)
        self.c.disconnect()
        self.c.loop_stop()


def test_update_staged_through_a_cut_and_a_bad_chunk_applied_confirmed_then_rolled_back(
        broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    new = "1.7.0-test"
    release = make_release(tmp_path / "release", new)
    dev = SimDevice(broker, tmp_path / "dev", "ota-0001",
                    settings={"sample_s": 30, "flush_s": 5},
                    # WiFi gone from 4 s to 30 s: in the middle of the download
                    scenario={"speed": 20, "duration_s": 300, "network_down": [[4, 30]]})
    gw = Gateway(broker, "ota-0001", release, spoil_answer=3)
    try:
        gw.send_update(gw.manifest())

        # once the new version has confirmed itself, the server sends the old one back
        def roll_back(rec: dict) -> None:
            if rec.get("event") == "update_confirmed":
                threading.Thread(target=gw.send_update,
                                 args=({"version": RUNNING, "rollback": True},)).start()
        gw.on_record.append(roll_back)
        out = dev.run(timeout=240)
        wait_until("the rollback reported", lambda: gw.events("update_rolled_back"), 20)
    finally:
        gw.close()
    lines = [ln for ln in out.splitlines() if ln.startswith("fleetpulse:")]

    def at(text: str) -> int:
        return next(i for i, ln in enumerate(lines) if text in ln)

    # the download began, the connection went, came back, a spoiled chunk was refused,
    # the update was staged and the board restarted into it, which confirmed itself
    assert at(f"update {new}: staging") < at("offline (") < at("connected again") \
        < at(f"update {new} staged: restarting")
    assert "refused: its hash does not match" in out
    assert at(f"update {new} staged") < at(f"update {new} confirmed") < at(
        f"rolling back to {RUNNING}")
    # resumed, not begun again: per file the offsets asked for never go back, and only
    # the spoiled chunk was asked for twice
    for path in release.files:
        offsets = [o for p, o in gw.requests if p == path]
        assert offsets == sorted(offsets), (path, offsets)
    repeats = len(gw.requests) - len(set(gw.requests))
    chunks = sum(-(-f["bytes"] // 1024) for f in release.files.values())
    assert len(set(gw.requests)) == chunks and 1 <= repeats <= 3, (repeats, chunks)
    # every step reported, under the version that made it
    (started,) = gw.events("update_started")
    assert (started["fw"], started["name"], started["value"]) == (RUNNING, new, RUNNING)
    update_boots = [e for e in gw.events("power_on") if e.get("reset_cause") == "update"]
    assert [e["fw"] for e in update_boots] == [new, RUNNING]
    (applied,) = gw.events("update_applied")
    (confirmed,) = gw.events("update_confirmed")
    assert applied["fw"] == confirmed["fw"] == new and confirmed["value"] == RUNNING
    (back,) = gw.events("update_rolled_back")
    assert (back["fw"], back["name"], back["value"]) == (RUNNING, RUNNING, new)
    pointer = json.loads((dev.flash / "ota.json").read_text())
    assert pointer["slot"] is None and pointer["failed"] == [new]
    assert (dev.flash / "ota" / "a" / "app.py").read_bytes() == (
        release.directory / "app.py").read_bytes()


def test_a_release_that_crashes_at_boot_is_rolled_back_on_its_own(broker, tmp_path: Path
                                                                  ) -> None:  # type: ignore[no-untyped-def]
    bad = "1.7.0-bad"
    release = make_release(tmp_path / "release", bad, crash_at_boot=True)
    dev = SimDevice(broker, tmp_path / "dev", "ota-0002", settings={"sample_s": 30, "flush_s": 5},
                    scenario={"speed": 20, "duration_s": 120})
    gw = Gateway(broker, "ota-0002", release)
    try:
        gw.send_update(gw.manifest())
        out = dev.run(timeout=240)
        wait_until("the rollback reported", lambda: gw.events("update_rolled_back"), 20)
    finally:
        gw.close()
    assert "unexpected error, resetting the board in 10 s: RuntimeError: bad release" in out
    assert f"{bad} did not confirm itself; rolling back to {RUNNING}" in out
    (back,) = gw.events("update_rolled_back")
    assert (back["fw"], back["name"], back["value"]) == (RUNNING, RUNNING, bad)
    crash = [e for e in gw.events("power_on") if e.get("reset_cause") == "exception"]
    assert [(e["fw"], e["last_error"]) for e in crash] == [(RUNNING, "RuntimeError: bad release")]
    # nothing ran on the bad version long enough to send, and the retained update does not
    # install it again
    assert not gw.events("update_applied") and not gw.events("update_confirmed")
    assert out.count(f"update {bad}: staging") == 1
    assert json.loads((dev.flash / "ota.json").read_text())["failed"] == [bad]
