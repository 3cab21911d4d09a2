"""CPython tooling for the MicroPython firmware in firmware/: bundle builds with
mpy-cross, the firmware-in-the-loop runner, and the type-check against board stubs."""

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

# firmware/ holds what goes onto a device; this package (firmware/tools) never does.
FIRMWARE_DIR = Path(__file__).resolve().parent.parent
COMMON = ("otaboot.py", "start.py", "buffers.py", "app.py", "conf.py", "configfile.py", "flash.py",
          "clock.py", "journal.py", "lowpower.py", "mqtt.py", "ota.py", "provision.py",
          "resetnote.py", "version.py", "hw/__init__.py")
BOARDS = {
    # board -> (its hardware modules, mpy-cross architecture or None for bytecode only)
    "esp32": (("hw/board.py", "hw/esp32.py"), "xtensawin"),
    "rp2": (("hw/board.py", "hw/rp2.py"), "armv6m"),
    "sim": (("hw/sim.py",), None),
}


def board_modules(board: str) -> list[str]:
    """Every module a board's firmware consists of, main.py last."""
    return [*COMMON, *BOARDS[board][0], "main.py"]


def setting_names() -> set[str]:
    """The settings the firmware accepts from its config topic (conf.DEFAULTS), taken
    from the firmware itself so server and device cannot disagree."""
    return set(_device_conf().DEFAULTS)


def default_settings() -> dict[str, object]:
    """The settings a device starts with (conf.DEFAULTS), a copy."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in _device_conf().DEFAULTS.items()}


def check_settings(settings: object) -> str | None:
    """What the firmware would refuse in these settings (None: nothing): the firmware's
    own check, so server and device agree on values as well as names."""
    problem: str | None = _device_conf().check_settings(settings)
    return problem


@functools.cache
def _device_conf() -> ModuleType:
    """firmware/conf.py, which is plain Python, loaded once on the CPython side."""
    spec = importlib.util.spec_from_file_location("_fleetpulse_device_conf",
                                                  FIRMWARE_DIR / "conf.py")
    assert spec is not None and spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf
