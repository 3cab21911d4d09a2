"""The broker launcher renders the repository's mosquitto.conf and manages mosquitto."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetpulse.errors import UserError
from fleetpulse.gateway.broker import DEFAULT_CONF, Broker, free_port, render_conf


def test_render_sets_only_the_launch_time_values(tmp_path: Path) -> None:
    original = DEFAULT_CONF.read_text()
    rendered = render_conf(original, [43210, 43211], tmp_path, tmp_path / "reg", tmp_path / "c")
    assert "listener 43210 127.0.0.1" in rendered
    assert "listener 43211" in rendered
    assert f"persistence_location {tmp_path}/" in rendered
    assert f"user {getpass.getuser()}" in rendered
    assert f"password_file {tmp_path}/reg/passwd" in rendered
    assert f"keyfile {tmp_path}/c/server.key" in rendered
    assert "allow_anonymous false" in rendered
    removed = set(original.splitlines()) - set(rendered.splitlines())
    assert len(removed) == 9  # 2 listeners, persistence dir, user, 2 auth files, 3 TLS files
    assert DEFAULT_CONF.read_text() == original


def test_session_broker_accepts_connections(broker: Broker) -> None:
    with socket.create_connection((broker.host, broker.port), timeout=2):
        pass
    assert (broker.data_dir / "mosquitto.conf").exists()


def test_port_in_use_is_a_clear_error(broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="already in use"):
        Broker(broker.port, tmp_path).start()


def test_stop_ends_the_process_and_keeps_persistence(tmp_path: Path) -> None:
    b = Broker(free_port(), tmp_path).start()
    proc = b.proc
    b.stop()
    assert proc is not None and proc.poll() == 0
    assert (tmp_path / "mosquitto.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_broker_command_stops_mosquitto_on_signal(tmp_path: Path, sig: int) -> None:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "fleetpulse", "broker", "--port",
                          str(port), "--tls-port", str(free_port()), "--broker-data",
                          str(tmp_path)],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    pid_file = tmp_path / "registry" / "broker.pid"
    # mosquitto creates its pid file before it writes the number into it
    while not (pid_file.exists() and pid_file.read_text().strip().isdigit()):
        assert time.monotonic() < deadline and p.poll() is None, p.stderr
        time.sleep(0.05)
    mosquitto_pid = int(pid_file.read_text())
    while not _accepts(port):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p.send_signal(sig)
    assert p.wait(20) == 0
    with pytest.raises(ProcessLookupError):  # no mosquitto left behind
        os.kill(mosquitto_pid, 0)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
