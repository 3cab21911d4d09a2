"""Security and gateway services, against the real broker started from mosquitto.conf."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.registry import Registry, check_password, hash_password

T = 1767268800000


def _client(broker, username: str | None, password: str | None, client_id: str = "",
            will: bool = False, tls: ssl.SSLContext | None = None) -> tuple[mqtt.Client, dict]:
    """Connect and wait for the CONNACK; returns the client and what happened to it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    state: dict = {"disconnects": 0}
    done = threading.Event()
    if username:
        c.username_pw_set(username, password)
    if will:
        c.will_set(f"devices/{client_id}/status", "offline", qos=1, retain=True)
    if tls:
        c.tls_set_context(tls)

    def on_connect(cl, u, flags, rc, props) -> None:
        state["rc"] = str(rc)
        done.set()

    def on_disconnect(cl, u, flags, rc, props) -> None:
        state["disconnects"] += 1
        state.setdefault("rc", str(rc))
        done.set()

    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    c.connect(broker.host, broker.tls_port if tls else broker.port)
    c.loop_start()
    assert done.wait(10), "no answer from the broker"
    return c, state


def _envelope(device: str, seq: int) -> str:
    return json.dumps({"v": 1, "device_id": device, "boot": 1, "seq": seq, "fw": "1", "hw": "h",
                       "sent_ms": T, "records": [{"t": T + seq, "type": "reading",
                                                  "temperature_c": 20.0, "humidity_pct": 40}]})


def test_anonymous_and_wrong_password_are_refused(broker) -> None:
    c, s = _client(broker, None, None)
    assert s["rc"] == "Not authorized"
    c.loop_stop()
    dev = broker.registry.add("sec-wrongpw")
    c, s = _client(broker, dev.username, dev.password + "x")
    assert s["rc"] == "Not authorized"
    c.loop_stop()
    c, s = _client(broker, dev.username, dev.password, client_id="sec-wrongpw")
    assert s["rc"] == "Success"
    c.disconnect()
    c.loop_stop()


def test_a_device_cannot_publish_as_another(broker, start_ingest) -> None:
    ingest = start_ingest()
    ingest.wait_subscribed()
    a = broker.registry.add("sec-a")
    broker.registry.add("sec-b")
    c, s = _client(broker, a.username, a.password, client_id="sec-a")
    assert s["rc"] == "Success"
    c.publish("devices/sec-b/telemetry", _envelope("sec-b", 1), qos=1)  # spoof: dropped
    c.loop_stop()
    c, s = _client(broker, a.username, a.password, client_id="sec-a")
    c.publish("devices/sec-a/telemetry", _envelope("sec-a", 2), qos=1).wait_for_publish(5)
    ingest.wait_messages(1, timeout=20)
    assert ingest.stop() == 0
    rows = connect(ingest.data_dir).execute("SELECT device_id, seq FROM readings").fetchall()
    assert rows == [("sec-a", 2)]
    assert ingest.stats()["messages"] == 1, "the spoofed message never reached ingest"
    c.loop_stop()


def test_revoked_device_is_cut_off_while_others_stay_connected(broker) -> None:
    keep = broker.registry.add("sec-keep")
    gone = broker.registry.add("sec-gone")
    ck, sk = _client(broker, keep.username, keep.password, client_id="sec-keep")
    cg, sg = _client(broker, gone.username, gone.password, client_id="sec-gone")
    cg.reconnect_delay_set(60, 60)  # no quick reconnect attempts hiding the refusal
    assert sk["rc"] == sg["rc"] == "Success"
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "devices", "revoke",
                        "sec-gone", "--registry", str(broker.registry.dir)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_until("the revoked device to be disconnected", lambda: sg["disconnects"] > 0, 10)
    c2, s2 = _client(broker, gone.username, gone.password, client_id="sec-gone")
    assert s2["rc"] == "Not authorized"
    c2.loop_stop()
    assert ck.publish("devices/sec-keep/status", "online", qos=1).wait_for_publish(5) is None
    assert sk["disconnects"] == 0, "the other device's connection stayed up through the reload"
    for c in (ck, cg):
        c.loop_stop()


def test_rotate_replaces_the_password(broker) -> None:
    first = broker.registry.add("sec-rot")
    second = broker.registry.rotate("sec-rot")
    c, s = _client(broker, first.username, first.password)
    assert s["rc"] == "Not authorized"
    c.loop_stop()
    c, s = _client(broker, second.username, second.password, client_id="sec-rot")
    assert s["rc"] == "Success"
    c.disconnect()
    c.loop_stop()


def test_tls_listener_needs_the_generated_ca(broker) -> None:
    dev = broker.registry.add("sec-tls")
    trusting = ssl.create_default_context(cafile=str(broker.certs / "ca.crt"))
    c, s = _client(broker, dev.username, dev.password, client_id="sec-tls", tls=trusting)
    assert s["rc"] == "Success"
    c.disconnect()
    c.loop_stop()
    stranger = ssl.create_default_context()  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(broker, dev.username, dev.password, client_id="sec-tls2", tls=stranger)


def test_password_file_matches_mosquitto_passwd(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev-x", "s3cret"], check=True)
    ours_format = pw.read_text().strip().split(":", 1)[1]
    assert check_password("s3cret", ours_format) and not check_password("other", ours_format)
    mine = hash_password("s3cret")
    assert mine.startswith("$7$101$") and check_password("s3cret", mine)


def test_devices_cli_add_list(tmp_path: Path) -> None:
    reg = tmp_path / "reg"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fleetpulse", "devices", *args,
                               "--registry", str(reg)], capture_output=True, text=True,
                              timeout=30, env={**os.environ, "COLUMNS": "200"})

    r = cli("add", "thermo-1", "--model", "thermostat-esp32")
    assert r.returncode == 0 and "password:" in r.stdout
    secret = r.stdout.split("password:")[1].split()[0]
    assert check_password(secret, Registry(reg).devices()["thermo-1"]["password_hash"])
    assert secret not in (reg / "registry.json").read_text(), "only the hash is stored"
    r = cli("add", "thermo-1")
    assert r.returncode == 2 and "exists" in r.stderr
    r = cli("add", "fleetpulse-ingest")
    assert r.returncode == 2 and "service account" in r.stderr
    before = {p.name: p.read_bytes() for p in reg.iterdir() if p.name != ".lock"}
    r = cli("add", "thermo-2\n")  # a trailing newline used to land in mosquitto's passwd
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in reg.iterdir() if p.name != ".lock"} == before
    assert oct((reg / "registry.json").stat().st_mode & 0o777) == "0o600"
    empty = tmp_path / "empty-reg"
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "devices", "add",
                        "bad id", "--registry", str(empty)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and not empty.exists(), "a refused id created the registry"
    cli("revoke", "thermo-1")
    r = cli("list")
    assert "thermo-1" in r.stdout and "revoked" in r.stdout and "thermostat-esp32" in r.stdout


def test_presence_shows_a_cut_connection_as_offline(broker, tmp_path: Path) -> None:
    data = tmp_path / "data"
    gw = broker.credentials("fleetpulse-gateway")
    env = {**os.environ, "FLEETPULSE_MQTT_USERNAME": gw.username,
           "FLEETPULSE_MQTT_PASSWORD": gw.password}
    presence = subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "gateway", "presence", "--broker",
         broker.address, "--data", str(data), "--registry", str(broker.registry.dir)],
        env=env, stderr=subprocess.PIPE, text=True)
    dev = broker.registry.add("sec-presence")
    try:
        c, _ = _client(broker, dev.username, dev.password, client_id="sec-presence", will=True)
        c.publish("devices/sec-presence/status", "online", qos=1, retain=True).wait_for_publish(5)

        def status() -> tuple | None:
            if not list(data.glob("presence/*/*.parquet")):
                return None
            row = connect(data).execute("SELECT status, last_seen FROM devices WHERE "
                                        "device_id = 'sec-presence'").fetchall()
            return row[0] if row else None

        wait_until("the device to show online", lambda: (status() or ("",))[0] == "online", 20)
        cut_at = time.time()
        c.loop_stop()
        c.socket().shutdown(socket.SHUT_RDWR)  # the cable is cut: no DISCONNECT, the will fires
        c.socket().close()
        row = wait_until("the device to show offline",
                         lambda: (s := status()) and s[0] == "offline" and s, timeout=60)
        assert abs(row[1].timestamp() - cut_at) < 60, "last seen is when it dropped off"
        devices = Registry(broker.registry.dir).devices()
        assert devices["sec-presence"]["last_seen"] is not None
    finally:
        presence.terminate()
        presence.wait(10)
    assert presence.returncode == 0


def test_serial_bridge_through_a_pty_with_unplug(broker, start_ingest, tmp_path: Path) -> None:
    ingest = start_ingest()
    ingest.wait_subscribed()
    broker.registry.add("wired-1")
    link = tmp_path / "ttyWIRED"  # a stable name, like /dev/serial/by-id/...
    stats_file = tmp_path / "bridge.json"

    def plug() -> int:
        master, slave = os.openpty()
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(slave))
        os.close(slave)
        return master

    master = plug()
    gw = broker.credentials("fleetpulse-gateway")
    env = {**os.environ, "FLEETPULSE_MQTT_USERNAME": gw.username,
           "FLEETPULSE_MQTT_PASSWORD": gw.password}
    bridge = subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "-v", "gateway", "serial", "--serial-port",
         str(link), "--broker", broker.address, "--registry", str(broker.registry.dir),
         "--stats-file", str(stats_file)], env=env, stderr=subprocess.PIPE, text=True)

    def stats() -> dict:
        try:
            return json.loads(stats_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    try:
        wait_until("the bridge to open the port", lambda: stats().get("port_opened", 0) >= 1, 20)
        lines = [_envelope("wired-1", 0), "this is not json", _envelope("wired-1", 1),
                 _envelope("stranger", 0), _envelope("wired-1", 2)[:-5]]
        os.write(master, ("\n".join(lines) + "\n").encode())
        wait_until("five lines read", lambda: stats().get("lines", 0) >= 5, 20)
        os.close(master)  # unplug
        wait_until("the bridge to notice", lambda: stats().get("port_lost", 0) >= 1, 20)
        master = plug()  # replug
        wait_until("the bridge to reopen", lambda: stats().get("port_opened", 0) >= 2, 20)
        os.write(master, (_envelope("wired-1", 3) + "\n").encode())
        wait_until("the line after replug published", lambda: stats().get("acked", 0) >= 3, 20)
        s = stats()
        assert s["published"] == 3 and s["rejected"] == 3
        assert s["rejected_by_reason"] == {"bad_json": 2, "unknown_device": 1}
        assert bridge.poll() is None, "bad lines and unplugging are never fatal"
        ingest.wait_messages(3, timeout=20)
        assert ingest.stop() == 0
        rows = connect(ingest.data_dir).execute(
            "SELECT device_id, seq FROM readings ORDER BY seq").fetchall()
        assert rows == [("wired-1", 0), ("wired-1", 1), ("wired-1", 3)]
    finally:
        bridge.terminate()
        bridge.wait(10)
        os.close(master)
    assert bridge.returncode == 0


def test_certificates_are_never_regenerated_silently(tmp_path: Path) -> None:
    from fleetpulse.errors import UserError
    from fleetpulse.gateway.certs import ensure_certs

    ensure_certs(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    ensure_certs(tmp_path)  # all there: kept as they are
    assert (tmp_path / "ca.crt").read_bytes() == ca
    (tmp_path / "server.crt").unlink()
    with pytest.raises(UserError, match=r"not server\.crt: restore them"):
        ensure_certs(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == ca, "the CA devices trust was replaced"
