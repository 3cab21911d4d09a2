"""The firmware, unmodified, in the real MicroPython interpreter (the unix port) on the
sim board, publishing through the real mosquitto into real ingest and Parquet."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import wait_until
from firmwarelib import ENVIRONMENT, SimDevice, expected_value, raw_count, rows

from fleetpulse.analytics.assignment import variant
from fleetpulse.firmware import BOARDS
from fleetpulse.firmware.bundle import build, firmware_version
from fleetpulse.firmware.typecheck import check
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.gateway.certs import ensure_certs
from fleetpulse.ingest.contract import parse_message

BUNDLE_LIMIT = 48 * 1024


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_bundle_compiles_for_board(board: str, tmp_path: Path) -> None:
    m = build(board, tmp_path / board)
    assert m["arch"] == BOARDS[board][1] and m["firmware_version"] == firmware_version()
    paths = {f["path"] for f in m["files"]}
    assert {"main.py", "app.mpy", "mqtt.mpy", "journal.mpy", f"hw/{board}.mpy"} <= paths
    other = {b for b in BOARDS if b != board}
    assert not any(f"hw/{b}.mpy" in paths for b in other), "another board's code in the bundle"
    for f in m["files"]:
        data = (tmp_path / board / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        if f["path"].endswith(".mpy"):
            assert data[0] == ord("M") and data[1] == 6, f"{f['path']} is not .mpy v6"
    assert m["total_bytes"] < BUNDLE_LIMIT


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_firmware_type_checks_against_board_stubs(board: str) -> None:
    ok, out = check(board)
    assert ok, out


def _captured(broker: Broker, device_id: str) -> tuple[mqtt.Client, list[bytes]]:
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"capture-{device_id}")
    c.username_pw_set(*_ingest_like(broker))
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.connect(broker.host, broker.port)
    c.subscribe(f"devices/{device_id}/telemetry", qos=1)
    c.loop_start()
    return c, got


def _ingest_like(broker: Broker) -> tuple[str, str]:
    cred = broker.credentials("fleetpulse-ingest")
    return cred.username, cred.password


def test_firmware_in_the_loop_rows_equal_the_scenario(broker, start_ingest, tmp_path) -> None:
    """Readings and events in Parquet are exactly what the scenario produced. The device
    boots offline with its clock unset, so its first records carry uptime and are
    placed in time after NTP; their values still match the sensor at that time."""
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "fil-0001",
                    settings={"sample_s": 10, "flush_s": 60, "heartbeat_s": 200},
                    scenario={"speed": 40, "duration_s": 600, "network_down": [[0, 45]],
                              "inputs": [{"at_s": 12.3, "button": "eco"},
                                         {"at_s": 70, "button": "eco"},
                                         {"at_s": 500, "button": "fan"}]})
    cap, payloads = _captured(broker, dev.device_id)
    out = dev.run()
    assert "all acknowledged" in out, out

    readings = wait_until("all 60 readings stored",
                          lambda: len(r := rows(tmp_path / "data", "readings", "fil-0001")) >= 60
                          and r, timeout=30)
    assert len(readings) == 600 // 10
    times = [int(r["ts"].timestamp() * 1000) for r in readings]
    assert [b - a for a, b in itertools.pairwise(times)] == [10_000] * 59
    for r, t in zip(readings, times, strict=True):
        for key, spec in ENVIRONMENT.items():
            assert abs(r[key] - expected_value(spec, t)) < 0.006, (key, t, r[key])
        assert r["boot"] == 0 and r["fw"] == firmware_version() and r["hw"] == "thermostat-sim"
    assert raw_count(tmp_path / "data", "readings", "fil-0001") == (60, 60)

    events = rows(tmp_path / "data", "events", "fil-0001")
    kinds = Counter(e["event"] for e in events)
    # power_on; one session (inputs 12.3 s, 70 s, 500 s are within 300 s of each other? no:
    # 70 -> 500 is a gap of 430 s, so two sessions); heartbeats at 200 and 400 s
    assert kinds == Counter({"power_on": 1, "session_start": 2, "session_end": 2,
                             "button_press": 3, "feature_used": 2, "heartbeat": 2})
    t0 = times[0]
    presses = [e for e in events if e["event"] == "button_press"]
    assert [int(e["ts"].timestamp() * 1000) - t0 for e in presses] == [12_300, 70_000, 500_000]
    assert [e["button"] for e in presses] == ["eco", "eco", "fan"]
    assert {e["feature"] for e in events if e["event"] == "feature_used"} == {"eco_mode"}
    hb = [e for e in events if e["event"] == "heartbeat"]
    assert [e["uptime_s"] for e in hb] == [200, 400] and hb[0]["reconnects"] == 0
    assert all(e["free_mem"] > 0 and e["reset_cause"] == "power_on" for e in hb)

    # every envelope the device sent passes the contract, within the size devices aim at
    cap.loop_stop()
    cap.disconnect()
    seqs = []
    for p in payloads:
        parsed = parse_message("devices/fil-0001/telemetry", p, int(time.time() * 1000))
        assert not parsed.rejects and len(p) <= 1200
        seqs.append(parsed.seq)
    assert sorted(set(seqs)) == list(range(max(seqs) + 1))
    stats = ingest.stats()
    assert stats["messages_rejected"] == 0 and stats["records_rejected"] == 0


def test_firmware_publishes_over_tls_trusting_the_broker_ca(broker, start_ingest,
                                                          tmp_path) -> None:
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "tls-0001", tls=True,
                    settings={"sample_s": 10, "flush_s": 30},
                    scenario={"speed": 40, "duration_s": 60})
    out = dev.run()
    assert f"connected to localhost:{broker.tls_port}" in out and "all acknowledged" in out
    wait_until("6 readings over TLS", lambda: raw_count(tmp_path / "data", "readings",
                                                        "tls-0001")[1] == 6, timeout=30)
    # a CA the broker's certificate does not chain to is refused: the device stays
    # offline and journals instead of sending to a broker it cannot verify
    ensure_certs(tmp_path / "other-certs")
    shutil.copyfile(tmp_path / "other-certs" / "ca.crt", dev.flash / "ca.crt")
    out = dev.run(must_connect=False)
    assert "offline (" in out and "connected" not in out and "some still journaled" in out
    # no CA on the device at all: a config error naming the fix, not a plain connection
    # (`firmware run` refuses to boot without it, tests/test_firmware_run_ci.py; a board
    # says it on its console)
    (dev.flash / "ca.crt").unlink()
    proc = dev.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert ("config error: ca.crt is missing: copy the broker's CA onto the device "
            "(mpremote cp ca.crt :ca.crt); retrying in 10 s") in first


def test_firmware_runs_from_a_romfs_image(broker, start_ingest, tmp_path) -> None:
    """Deployed as a ROM partition (bytecode in place from flash), the same firmware
    delivers the same rows; only main.py and the device's own files are on the flash,
    which comes first on sys.path as on a board."""
    m = build("sim", tmp_path / "bundle", romfs=True)
    image = (tmp_path / "bundle" / "romfs.img").read_bytes()
    assert image[:3] == b"\xd2\xcd\x31"  # the ROMFS header
    assert m["romfs"]["bytes"] == len(image)
    assert m["romfs"]["sha256"] == hashlib.sha256(image).hexdigest()
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "rom-0001", romfs=tmp_path / "bundle" / "romfs.img",
                    settings={"sample_s": 10, "flush_s": 30},
                    scenario={"speed": 40, "duration_s": 120, "network_down": [[40, 70]],
                              "inputs": [{"at_s": 15, "button": "eco"}]})
    out = dev.run()
    assert "mounted at /rom" in out and "all acknowledged" in out, out
    assert sorted(p.name for p in dev.flash.iterdir() if p.suffix in (".py", ".mpy")) == [
        "main.py"]
    wait_until("12 readings from ROMFS", lambda: raw_count(tmp_path / "data", "readings",
                                                           "rom-0001") == (12, 12), timeout=30)
    reads = rows(tmp_path / "data", "readings", "rom-0001")
    t0 = int(reads[0]["ts"].timestamp() * 1000)
    assert [int(r["ts"].timestamp() * 1000) - t0 for r in reads] == list(range(0, 120_000,
                                                                              10_000))


def test_config_message_is_applied_persisted_and_reported(broker, start_ingest, tmp_path) -> None:
    def configure(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "fleetpulse", "devices", "configure",
                        *args, "--broker", broker.address, "--registry", str(broker.registry.dir)],
                       check=True, capture_output=True)

    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "cfg-0001", settings={"sample_s": 60},
                    scenario={"speed": 40, "duration_s": 120})
    cfg = {"sample_s": 5, "features": {"eco_mode": False},
           "experiments": {"eco_nudge": 0.5, "forced": "B"}}
    configure("cfg-0001", json.dumps(cfg))
    dev.run()
    # the retained config arrives at connect, right after the first reading (t=0): from
    # then on, readings every 5 s instead of 60
    readings = wait_until("24 readings", lambda: len(
        r := rows(tmp_path / "data", "readings", "cfg-0001")) >= 24 and r, timeout=30)
    assert len(readings) == 120 // 5
    changed = {e["name"]: e["value"] for e in rows(tmp_path / "data", "events", "cfg-0001")
               if e["event"] == "setting_changed"}
    assert changed == {"sample_s": "5", "features.eco_mode": "false",
                       "experiment.eco_nudge": variant("eco_nudge", "cfg-0001", 0.5),
                       "experiment.forced": "B"}
    assert json.loads((dev.flash / "settings.json").read_text()) == cfg

    # after a reboot the same retained config changes nothing, so nothing is reported
    dev.run()
    configure("cfg-0001", "--clear")
    wait_until("second boot stored", lambda: any(
        e["boot"] == 1 for e in rows(tmp_path / "data", "events", "cfg-0001")), timeout=30)
    again = [e for e in rows(tmp_path / "data", "events", "cfg-0001")
             if e["boot"] == 1 and e["event"] == "setting_changed"]
    assert again == []


def test_broken_config_prints_one_clear_line_and_retries(broker, start_ingest, tmp_path) -> None:
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "bad-0001", scenario={"speed": 50,
                                                                    "duration_s": 60})
    good = (dev.flash / "config.json").read_text()
    (dev.flash / "config.json").write_text('{"device_id": "bad-0001", "mqtt": ')
    proc = dev.start()
    lines: list[str] = []
    assert proc.stdout is not None
    while len([ln for ln in lines if "config error" in ln]) < 3:
        line = proc.stdout.readline()
        assert line, f"firmware exited: {lines}"
        lines.append(line)
    assert proc.poll() is None, "the firmware must keep running"
    assert lines[0].strip() == ("fleetpulse: config error: config.json is not valid JSON: "
                                "fix it and copy it again; retrying in 10 s")
    assert not any("Traceback" in ln for ln in lines)
    # a fixed config is picked up by the next retry, without a restart
    (dev.flash / "config.json").write_text(good)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "connected to" in rest, rest


def test_missing_config_names_the_file_and_the_fix(tmp_path, broker) -> None:
    dev = SimDevice(broker, tmp_path / "dev", "none-0001", scenario={"speed": 100,
                                                                     "duration_s": 25})
    (dev.flash / "config.json").unlink()
    out = dev.run(must_connect=False)
    assert out.count("fleetpulse: config error: config.json is missing: copy one onto the "
                     "device (mpremote cp config.json :config.json); retrying in 10 s") == 3


def test_reboot_delivers_the_journal_and_counts_boots(broker, start_ingest, tmp_path) -> None:
    """Killed while offline with a journal on flash, the device boots again: the boot
    counter goes up, the journaled envelopes arrive with their original identity, and
    sequence numbers restart at 0."""
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "boot-0001",
                    settings={"sample_s": 5, "flush_s": 20},
                    scenario={"speed": 20, "duration_s": 100000, "network_down": [[30, 1e9]]})
    proc = dev.start()
    journal = dev.flash / "outbox"

    def journaled() -> list[tuple[int, int, int]]:
        out = []
        for seg in sorted(journal.glob("*.jl")):
            for line in seg.read_bytes().splitlines():
                env = json.loads(line.split(b" ", 1)[1])
                out.append((env["boot"], env["seq"], len(env["records"])))
        return out

    wait_until("4 envelopes journaled", lambda: len(journaled()) >= 4, timeout=60)
    proc.kill()
    proc.wait()
    kept = journaled()
    assert {b for b, _, _ in kept} == {0}
    sent_before = ingest.stats()["messages"]
    assert sent_before >= 1, "the device published before the outage"

    dev.scenario = {"speed": 20, "duration_s": 60}
    dev.write()
    dev.run()
    assert json.loads((dev.flash / "state.json").read_text())["boot"] == 1
    assert list(journal.glob("*.jl")) == []

    def stored() -> set[tuple[int, int]]:
        evs = rows(tmp_path / "data", "events", "boot-0001")
        rds = rows(tmp_path / "data", "readings", "boot-0001")
        return {(r["boot"], r["seq"]) for r in evs + rds}

    want = {(b, s) for b, s, _ in kept}
    have = wait_until("journaled envelopes stored", lambda: want <= (s := stored()) and s,
                      timeout=30)
    assert min(s for b, s in have if b == 1) == 0
    boots = [e for e in rows(tmp_path / "data", "events", "boot-0001")
             if e["event"] == "power_on"]
    assert [(e["boot"], e["reset_cause"]) for e in boots] == [(0, "power_on"), (1, "power_on")]
    n, distinct = raw_count(tmp_path / "data", "readings", "boot-0001")
    assert n >= distinct  # re-sent envelopes may be stored twice, the views count them once

    # The install id stays across reboots; erasing the flash makes a new one, so the
    # restarted boot 0 is new data, not a redelivery of the first boot 0.
    state = json.loads((dev.flash / "state.json").read_text())
    assert {e["iid"] for e in boots} == {state["iid"]} and len(state["iid"]) == 16
    (dev.flash / "state.json").unlink()
    dev.run()
    erased = json.loads((dev.flash / "state.json").read_text())
    assert erased["boot"] == 0 and erased["iid"] != state["iid"]
    wait_until("the erased device's first boot stored", lambda: [
        e for e in rows(tmp_path / "data", "events", "boot-0001")
        if e["event"] == "power_on" and e["iid"] == erased["iid"] and e["boot"] == 0],
        timeout=30)


def test_unhandled_exception_is_reported_by_the_next_boot(broker, start_ingest,
                                                          tmp_path) -> None:
    """An exception the application does not handle is noted on flash and resets the
    board after a pause; the next boot's power_on says reset_cause "exception" with the
    exception's one line. No boot sends a second power_on."""
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "crash-0001",
                    settings={"sample_s": 30, "flush_s": 5},
                    scenario={"speed": 50, "duration_s": 90, "fault_at_s": 20})
    out = dev.run()
    assert "unexpected error, resetting the board in 10 s: RuntimeError: sim fault" in out

    def power_ons() -> list[tuple[int, str, str | None]]:
        return sorted((e["boot"], e["reset_cause"], e["last_error"])
                      for e in rows(tmp_path / "data", "events", "crash-0001")
                      if e["event"] == "power_on")

    got = wait_until("both boots' power_on stored", lambda: len(p := power_ons()) >= 2 and p,
                     timeout=30)
    assert got == [(0, "power_on", None), (1, "exception", "RuntimeError: sim fault at 20 s")]
    assert not (dev.flash / "reset.json").exists()  # the note is used up


def test_watchdog_reset_is_reported_by_the_next_boot(broker, start_ingest, tmp_path) -> None:
    """A hang the watchdog ends: nothing can be noted before that reset, so the next
    boot reports the board's own cause, "watchdog"."""
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "hang-0001",
                    settings={"sample_s": 30, "flush_s": 5},
                    scenario={"speed": 50, "duration_s": 120, "stall_at_s": [20, 40]})
    out = dev.run()
    assert "watchdog reset" in out

    def power_ons() -> list[tuple[int, str]]:
        return sorted((e["boot"], e["reset_cause"])
                      for e in rows(tmp_path / "data", "events", "hang-0001")
                      if e["event"] == "power_on")

    assert wait_until("both boots' power_on stored", lambda: len(p := power_ons()) >= 2 and p,
                      timeout=30) == [(0, "power_on"), (1, "watchdog")]


def test_keepalive_holds_across_the_tick_wrap(broker, tmp_path) -> None:
    """The tick counter wraps a second after boot (on an ESP32: after 12.4 days). The
    client still pings within the keepalive, so the broker keeps the connection; with
    a plain subtraction of ticks no PINGREQ went out after the wrap and the broker
    dropped the device after 1.5 keepalives."""
    dev = SimDevice(broker, tmp_path / "dev", "wrap-0001", keepalive=2,
                    settings={"sample_s": 3600, "flush_s": 3600, "heartbeat_s": 3600},
                    scenario={"speed": 1, "duration_s": 8, "ticks_wrap_in_s": 1})
    out = dev.run()
    assert "connected to" in out and "offline" not in out and "connected again" not in out, out
    assert "all acknowledged" in out, out


def test_low_power_mode_samples_journals_and_sleeps(broker, start_ingest, tmp_path) -> None:
    """Each wake samples once and journals; every third wake connects and drains. The
    journal and boot counter survive the deep sleeps (each wake is a new process)."""
    ingest = start_ingest()
    ingest.wait_subscribed()
    dev = SimDevice(broker, tmp_path / "dev", "lp-0001",
                    settings={"low_power": True, "sleep_s": 60, "publish_every": 3},
                    scenario={"speed": 200, "duration_s": 600})
    out = dev.run()
    assert "low-power" in out
    wakes = json.loads((dev.flash / "state.json").read_text())["wakes"]
    assert wakes >= 9
    readings = wait_until(f"{wakes} readings", lambda: len(
        r := rows(tmp_path / "data", "readings", "lp-0001")) >= wakes and r, timeout=30)
    assert sorted(r["boot"] for r in readings) == list(range(wakes))
    times = [int(r["ts"].timestamp() * 1000) for r in readings]
    # 60 s of sleep, plus the time awake: longer on wakes that connect and wait for acks
    # (at speed 200 a tenth of a second awake is 20 s of device time, so a loaded machine
    # stretches those; a sleep missed or doubled would not fit)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(60_000 <= g < 120_000 for g in gaps) and gaps.count(60_000) >= wakes // 2, gaps
    power_on = [e for e in rows(tmp_path / "data", "events", "lp-0001")
                if e["event"] == "power_on"]
    assert len(power_on) == 1, "a wake from deep sleep is not a power-on"


@pytest.fixture
def own_broker(tmp_path: Path):
    b = Broker(free_port(), tmp_path / "broker")
    with b:
        yield b


def test_broker_outage_loses_nothing_and_duplicates_nothing(own_broker, tmp_path) -> None:
    """The broker is down for 15 s (300 s of device time) while the firmware keeps
    sampling; after it is back every record arrives, none twice after de-duplication on
    record identity."""
    from fleetpulse.ingest.process import IngestProcess

    cred = own_broker.credentials("fleetpulse-ingest")
    ingest = IngestProcess(own_broker.address, tmp_path / "data", client_id="outage-ingest",
                           extra_args=["--flush-seconds", "0.3", "--session-expiry", "300"],
                           log_path=tmp_path / "ingest.log",
                           credentials=(cred.username, cred.password)).start()
    try:
        ingest.wait_subscribed()
        dev = SimDevice(own_broker, tmp_path / "dev", "out-0001",
                        settings={"sample_s": 5, "flush_s": 30, "heartbeat_s": 100000},
                        scenario={"speed": 20, "duration_s": 800})
        proc = dev.start()
        ingest.wait_messages(2, timeout=60)
        own_broker.stop()
        outage_start = time.monotonic()
        wait_until("the outage's 15 s", lambda: time.monotonic() - outage_start >= 15,
                   timeout=20, interval=0.5)
        assert proc.poll() is None
        own_broker.start()
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "all acknowledged" in out, out
        assert "offline" in out and "connected again" in out
        want = 800 // 5
        wait_until(f"{want} readings", lambda: raw_count(tmp_path / "data", "readings",
                                                         "out-0001")[1] >= want, timeout=60)
        _n, distinct = raw_count(tmp_path / "data", "readings", "out-0001")
        assert distinct == want
        readings = rows(tmp_path / "data", "readings", "out-0001")
        assert len(readings) == want  # the view: each record once
        times = [int(r["ts"].timestamp() * 1000) for r in readings]
        assert [b - a for a, b in itertools.pairwise(times)] == [5000] * (want - 1)
    finally:
        ingest.kill()


def test_board_modules_run_in_micropython_against_fake_hardware(tmp_path: Path) -> None:
    """hw/esp32.py and hw/rp2.py executed by the real MicroPython VM, with fakes only
    for machine, network and dht (the hardware edge)."""
    from fleetpulse.firmware import FIRMWARE_DIR
    from fleetpulse.firmware.loop import micropython_binary

    here = Path(__file__).parent
    env = {"MICROPYPATH": f"{here / 'mpfakes'}:{FIRMWARE_DIR}"}
    proc = subprocess.run([micropython_binary(), str(here / "mp_boards.py")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["esp32_env"] == {"temperature_c": 22.5, "humidity_pct": 41.0}
    assert out["esp32_env_failed"] is None  # a failed read is skipped, not invented
    assert out["esp32_press"] == ["fan"] and out["esp32_held"] == []
    assert out["esp32_again"] == ["fan"]
    assert out["esp32_wlan"] == [False, True, -61]
    assert out["esp32_cause"] == "deepsleep" and out["rp2_cause"] == "watchdog"
    # MicroPython's ESP32 port says HARD_RESET for a panic and for machine.reset(): the
    # firmware notes its own resets, so an unnoted one is a panic
    assert out["esp32_hard"] == "panic"
    # an RP2's machine.reset() reads as WDT_RESET: the note says what it was
    assert out["noted"] == [["software_reset", None], ["watchdog", None]]
    assert out["noted_exception"] == ["exception", "ValueError: bad"]
    # 27 - (14000 * 3.3 / 65535 - 0.706) / 0.001721
    assert out["rp2_env"] == {"temperature_c": round(27 - (14000 * 3.3 / 65535 - 0.706)
                                                     / 0.001721, 2), "humidity_pct": 40.0}
    assert out["rp2_no_humidity"] is None
    assert out["fake"]["wdt"] == [["start", 30000], ["feed"], ["start", 8388]]
    assert out["fake"]["slept"] == 60000
