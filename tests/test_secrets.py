"""Secrets never need the command line: a file, the environment or a prompt, with a
warning when argv is used anyway; certificates are never replaced silently."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from fleetpulse.gateway.certs import check_certs
from fleetpulse.gateway.registry import Registry


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")}
    return subprocess.run([sys.executable, "-m", "fleetpulse", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**clean, **(env or {})})


def registered(tmp_path: Path) -> tuple[list[str], str]:
    """Flags naming a registry that holds device d1, and d1's password."""
    reg = Registry(tmp_path / "registry").init()
    creds = reg.add("d1")
    return ["--registry", str(reg.dir), "--host", "10.0.0.2"], creds.password


def test_firmware_config_takes_the_password_from_a_file_or_the_environment(tmp_path) -> None:
    flags, password = registered(tmp_path)
    pw = tmp_path / "pw"
    pw.write_text(password + "\n")
    wifi = tmp_path / "wifi"
    wifi.write_text("wifi-secret\n")
    r = cli("firmware", "config", "d1", "--password-file", str(pw), "--ssid", "home",
            "--wifi-password-file", str(wifi), *flags)
    assert r.returncode == 0 and r.stderr == ""
    cfg = json.loads(r.stdout)
    assert cfg["mqtt"]["password"] == password and cfg["wifi"]["password"] == "wifi-secret"
    assert cfg["mqtt"]["host"] == "10.0.0.2"
    r = cli("firmware", "config", "d1", *flags, env={"FLEETPULSE_DEVICE_PASSWORD": password})
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout)["mqtt"]["password"] == password


def test_a_password_on_argv_works_but_warns(tmp_path) -> None:
    flags, password = registered(tmp_path)
    # --password=VALUE: a generated password may start with "-" (1 in 64), which
    # argparse would take for an option after a bare --password
    r = cli("firmware", "config", "d1", f"--password={password}", *flags)
    assert r.returncode == 0 and json.loads(r.stdout)["mqtt"]["password"] == password
    [warning] = r.stderr.splitlines()
    assert "visible to every user" in warning and "--password-file" in warning


def test_firmware_config_checks_the_host_the_device_and_its_password(tmp_path) -> None:
    flags, password = registered(tmp_path)
    env = {"FLEETPULSE_DEVICE_PASSWORD": password}
    r = cli("firmware", "config", "d1", "--registry", flags[1], env=env)
    assert r.returncode == 2 and r.stdout == "" and "needs --host" in r.stderr
    r = cli("firmware", "config", "d2", *flags, env=env)
    assert r.returncode == 2 and r.stdout == "" and "no device d2 in the registry" in r.stderr
    r = cli("firmware", "config", "d1", *flags, env={"FLEETPULSE_DEVICE_PASSWORD": "wrong"})
    assert r.returncode == 2 and r.stdout == "" and "not d1's current password" in r.stderr
    # without a registry it still writes the file, and says that nothing was checked
    r = cli("firmware", "config", "d1", "--registry", str(tmp_path / "none"), "--host", "h",
            env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["mqtt"]["username"] == "d1"
    [warning] = r.stderr.splitlines()
    assert "not checked" in warning


def test_no_password_and_no_terminal_is_one_clear_line(tmp_path) -> None:
    r = cli("firmware", "config", "d1", "--host", "h")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert "--password-file" in line and "FLEETPULSE_DEVICE_PASSWORD" in line
    r = cli("firmware", "config", "d1", "--host", "h", "--password-file",
            str(tmp_path / "missing"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1


def test_services_read_the_password_file(tmp_path) -> None:
    from fleetpulse import config
    from fleetpulse.cli import build_parser

    pw = tmp_path / "pw"
    pw.write_text("svc-secret\n")
    args = build_parser().parse_args(["ingest", "--username", "svc", "--password-file",
                                      str(pw)])
    assert config.resolve_auth(args) == ("svc", "svc-secret")


def test_certificates_are_replaced_only_on_purpose(tmp_path) -> None:
    out = tmp_path / "certs"
    assert cli("gateway", "certs", "--out", str(out)).returncode == 0
    ca = (out / "ca.crt").read_bytes()
    r = cli("gateway", "certs", "--out", str(out))
    assert r.returncode == 2 and "--rotate" in r.stderr and len(r.stderr.splitlines()) == 1
    assert (out / "ca.crt").read_bytes() == ca
    r = cli("gateway", "certs", "--out", str(out), "--check")
    assert r.returncode == 0 and "ca.crt" in r.stdout and "server.crt" in r.stdout
    assert cli("gateway", "certs", "--out", str(out), "--rotate").returncode == 0
    assert (out / "ca.crt").read_bytes() != ca


def test_check_reports_days_left(tmp_path) -> None:
    assert cli("gateway", "certs", "--out", str(tmp_path)).returncode == 0
    now = dt.datetime.now(dt.UTC)
    ca, server = check_certs(tmp_path, now)
    assert ca.name == "ca.crt" and 3640 < ca.days_left <= 3650
    assert 815 < server.days_left <= 825
    later = check_certs(tmp_path, now + dt.timedelta(days=826))
    assert later[1].days_left < 0
