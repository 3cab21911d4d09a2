"""Secrets never need the command line: a file, the environment or a prompt, with a
warning when argv is used anyway; certificates are never replaced silently."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

from fleetpulse.gateway.certs import check_certs


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")}
    return subprocess.run([sys.executable, "-m", "fleetpulse.gateway.cli", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**clean, **(env or {})})


def test_firmware_config_takes_the_password_from_a_file_or_the_environment(tmp_path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    r = cli("firmware", "config", "d1", "--password-file", str(pw), "--ssid", "home",
            "--wifi-password-file", str(pw))
    assert r.returncode == 0 and r.stderr == ""
    cfg = json.loads(r.stdout)
    assert cfg["mqtt"]["password"] == "from-file" and cfg["wifi"]["password"] == "from-file"
    r = cli("firmware", "config", "d1", env={"FLEETPULSE_DEVICE_PASSWORD": "from-env"})
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout)["mqtt"]["password"] == "from-env"


def test_a_password_on_argv_works_but_warns(tmp_path) -> None:
    r = cli("firmware", "config", "d1", "--password", "on-argv")
    assert r.returncode == 0 and json.loads(r.stdout)["mqtt"]["password"] == "on-argv"
    [warning] = r.stderr.splitlines()
    assert "visible to every user" in warning and "--password-file" in warning


def test_no_password_and_no_terminal_is_one_clear_line(tmp_path) -> None:
    r = cli("firmware", "config", "d1")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert "--password-file" in line and "FLEETPULSE_DEVICE_PASSWORD" in line
    r = cli("firmware", "config", "d1", "--password-file", str(tmp_path / "missing"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1


def test_services_read_the_password_file(tmp_path) -> None:
    from fleetpulse.gateway import config
    from fleetpulse.gateway.cli import build_parser

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
