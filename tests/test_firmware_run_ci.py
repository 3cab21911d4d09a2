"""`fleetpulse firmware run` as CI uses it: mistakes in its inputs are refused before the
firmware boots, one line each, and a device that never reaches its broker fails the job."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import fleetpulse

from fleetpulse.firmware.scenario import scenario_mistakes
from fleetpulse.gateway.broker import free_port


def _config(tmp_path: Path, port: int, tls: bool) -> Path:
    mqtt = {"host": "127.0.0.1", "port": port, "username": "ci-1", "password": "pw"}
    if tls:
        mqtt |= {"tls": True, "ca": "ca.crt"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"device_id": "ci-1", "mqtt": mqtt}))
    return path


def _errors(p) -> list[str]:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("error: ") for ln in lines), p.stderr
    return lines


def test_a_scenario_with_mistakes_gets_a_line_for_each(tmp_path: Path) -> None:
    sc = tmp_path / "scenario.json"
    sc.write_text(json.dumps({"duraton_s": 60, "speed": 0, "stall_at_s": [5],
                              "inputs": [{"at_s": 1, "button": "eco"}]}))
    lines = _errors(fleetpulse("firmware", "run", "--scenario", str(sc), "--flash",
                               str(tmp_path / "flash"), "--config",
                               str(_config(tmp_path, 1, tls=False))))
    assert len(lines) == 3, lines
    assert "unknown key 'duraton_s' (did you mean 'duration_s'?)" in lines[0]
    assert "speed must be a number above 0" in lines[1]
    assert "stall_at_s must be [at_s, seconds], not [5]" in lines[2]  # brackets kept
    assert not (tmp_path / "flash").exists()  # refused before anything was written


def test_a_missing_scenario_is_refused(tmp_path: Path) -> None:
    (line,) = _errors(fleetpulse("firmware", "run", "--scenario", str(tmp_path / "nope.json"),
                                 "--flash", str(tmp_path / "flash")))
    assert "nope.json: No such file or directory" in line


def test_scenario_mistakes() -> None:
    assert scenario_mistakes({"speed": 20, "duration_s": 600, "ntp_after_s": 0,
                              "environment": {"temperature_c": [21.0, 2.0, 3600]},
                              "inputs": [{"at_s": 12, "button": "eco"}],
                              "network_down": [[100, 160]]}) == []
    assert scenario_mistakes([]) == ["must hold a JSON object"]
    assert scenario_mistakes({"network_down": [[160, 100]]})  # ends before it starts
    assert scenario_mistakes({"environment": {"t": [1, 2, 0]}})  # a period of 0
    assert scenario_mistakes({"inputs": [{"at_s": 1}]})  # no button
    assert scenario_mistakes({"speed": True})  # JSON true is not a number


def test_tls_without_the_ca_on_the_flash_names_the_flag(tmp_path: Path) -> None:
    (line,) = _errors(fleetpulse("firmware", "run", "--config",
                                 str(_config(tmp_path, 8883, tls=True)),
                                 "--flash", str(tmp_path / "flash")))
    assert "asks for TLS with the CA ca.crt, which is not on the flash" in line
    assert "--ca" in line
    (line,) = _errors(fleetpulse("firmware", "run", "--config",
                                 str(_config(tmp_path, 8883, tls=True)), "--flash",
                                 str(tmp_path / "flash"), "--ca", str(tmp_path / "none.crt")))
    assert "--ca" in line and "does not exist" in line


def test_a_device_that_never_connects_fails_within_the_timeout(tmp_path: Path) -> None:
    # nothing listens on the port: the firmware retries as a board would, for ever
    t0 = time.monotonic()
    p = fleetpulse("firmware", "run", "--config", str(_config(tmp_path, free_port(), tls=False)),
                   "--flash", str(tmp_path / "flash"), "--timeout", "3")
    took = time.monotonic() - t0
    assert p.returncode == 3, (p.stdout, p.stderr)
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: the device did not connect within 3 s (its last line: ")
    assert "offline" in p.stdout or "retrying" in p.stdout  # the board's console passed on
    assert took < 30


def test_a_device_whose_scenario_ends_before_it_connects_fails(tmp_path: Path) -> None:
    sc = tmp_path / "scenario.json"
    sc.write_text(json.dumps({"speed": 50, "duration_s": 60}))
    p = fleetpulse("firmware", "run", "--config", str(_config(tmp_path, free_port(), tls=False)),
                   "--flash", str(tmp_path / "flash"), "--scenario", str(sc), "--timeout", "60")
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert "stopped without ever connecting" in p.stderr
